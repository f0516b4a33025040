//! Text to image, as diffusers' `StableDiffusionPipeline.__call__` does it: the same
//! prompt, seed and settings give the same latents and image (fixtures check it).
//!
//! 1. prompt and negative prompt -> CLIP ids (77, padded) -> text embeddings, in one
//!    batch `[negative, prompt]` for classifier-free guidance;
//! 2. initial latents `randn((count, 4, h, w))` from a torch-compatible generator, times
//!    the scheduler's `init_noise_sigma`;
//! 3. per timestep: UNet on `[latents, latents]`, `uncond + g * (cond - uncond)`,
//!    scheduler step (Euler ancestral draws its noise from the same generator);
//! 4. VAE decode of `latents / scaling_factor`, `(x / 2 + 0.5).clamp(0, 1)`.
//!
//! Memory ([`MemoryPlan`]): by default the UNet's weights leave the GPU once the last
//! step has run, so that the VAE decode (whose 512x512 maps are 128-256 MiB each) never
//! shares the GPU with them, and [`Pipeline::ensure_unet`] brings them back from the
//! checkpoint before the next generation. Between stages the buffer pool is trimmed.
//! That keeps a whole 512x512 generation within 1.5 GB at int8 and 1.1 GB at int4
//! (BENCHMARKS.md, "Memory") without changing a single value.
//!
//! Latents live on the CPU in torch's NCHW order between steps (32 K numbers at
//! 512x512: the UNet call dominates by far), so seeds, noise and schedulers match torch
//! element for element; the GPU sees NHWC.

use crate::checkpoint::{Checkpoint, FileSource};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::{AutoencoderKL, ClipTextModel, UNet2DConditionModel, UNetConfig};
use crate::ops::AttentionMaps;
use crate::rng::TorchGenerator;
use crate::schedulers::{self, SchedulerConfig, SchedulerKind};
use crate::tokenizer::{ClipTokenizer, TokenizerFiles};
pub use crate::word_maps::WordMaps;

/// The largest guidance scale accepted.
pub const MAX_GUIDANCE: f32 = 100.0;
/// The most steps accepted (the schedulers' 1000 training timesteps).
pub const MAX_STEPS: usize = 1000;
/// The largest image side accepted (RoentGen is trained at 512).
pub const MAX_SIZE: usize = 2048;
/// The most images from one request.
pub const MAX_COUNT: usize = 64;

/// RoentGen's published inference recipe (MISSION.md): PNDM, 75 steps, guidance 4,
/// 512x512, unconditional prompt "".
pub const ROENTGEN_STEPS: usize = 75;
pub const ROENTGEN_GUIDANCE: f32 = 4.0;
pub const ROENTGEN_SIZE: usize = 512;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
    /// Images drawn together from one seed (diffusers' `num_images_per_prompt`).
    pub count: usize,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: ROENTGEN_STEPS,
            guidance: ROENTGEN_GUIDANCE,
            seed: 0,
            scheduler: SchedulerKind::Pndm,
            width: ROENTGEN_SIZE,
            height: ROENTGEN_SIZE,
            count: 1,
        }
    }
}

/// One image of [`Pipeline::generate_batch`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchItem {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
}

/// An image to edit: image-to-image (SDEdit, diffusers' `StableDiffusionImg2ImgPipeline`)
/// or, with a mask, inpainting with the ordinary 4-channel UNet (diffusers'
/// `StableDiffusionInpaintPipeline` for a 4-channel UNet).
#[derive(Clone, Copy, Debug)]
pub struct Edit<'a> {
    /// RGB in [0, 1], row-major `[height, width, 3]`, the request's width and height
    /// (diffusers' `VaeImageProcessor` output before `2x - 1`).
    pub rgb: &'a [f32],
    /// `[height, width]`, true = repaint (the binarised mask); `None`: image-to-image.
    pub mask: Option<&'a [bool]>,
    /// How far into the schedule to start, in (0, 1]: `steps · strength` steps run
    /// (rounded down), from `timesteps[steps - that]`. 1 starts from pure noise.
    pub strength: f32,
}

/// An edit's strength: `given`, or diffusers' default (0.8 for image-to-image, 1.0 for
/// inpainting); a sentence unless it is in (0, 1]. The CLI, the page and
/// [`Pipeline::check_edit`] all ask here.
pub fn edit_strength(given: Option<f32>, masked: bool) -> Result<f32> {
    let s = given.unwrap_or(if masked { 1.0 } else { 0.8 });
    if !(s > 0.0 && s <= 1.0) {
        return Err(Error::Unsupported(format!(
            "the strength must be a number greater than 0 and at most 1 (0.6 keeps the image's layout, 1 repaints from noise), not {s}"
        )));
    }
    Ok(s)
}

/// The steps a strength keeps, as diffusers' `get_timesteps`:
/// `init_timestep = min(int(steps * strength), steps)`; returns `t_start`, the first
/// call run (the schedulers' `order` is 1).
pub fn edit_start(steps: usize, strength: f32) -> usize {
    let init = ((steps as f64 * strength as f64).floor() as usize).min(steps);
    steps - init
}

/// Where a generation's random numbers come from: one generator for all its images
/// (`num_images_per_prompt`), or one per image (a batch of separately seeded images).
enum Noise {
    Shared(Box<TorchGenerator>),
    Each(Vec<TorchGenerator>),
}

impl Noise {
    /// One plane per image, drawn once from a shared generator (and repeated, as
    /// diffusers repeats the latents of a single init image) or once per generator.
    fn randn_per_image(&mut self, n: usize, plane: usize) -> Vec<f32> {
        match self {
            Noise::Shared(g) => g.randn(plane).repeat(n),
            Noise::Each(gs) => gs.iter_mut().flat_map(|g| g.randn(plane)).collect(),
        }
    }

    /// `n` planes of `plane` standard normal numbers.
    fn randn(&mut self, n: usize, plane: usize) -> Vec<f32> {
        match self {
            Noise::Shared(g) => g.randn(n * plane),
            Noise::Each(gs) => {
                debug_assert_eq!(gs.len(), n);
                gs.iter_mut().flat_map(|g| g.randn(plane)).collect()
            }
        }
    }
}

/// Reported after every UNet call.
pub struct Progress<'a> {
    /// UNet calls done and in all (PNDM makes one more call than it has steps).
    pub call: usize,
    pub calls: usize,
    /// Cheap RGB preview of the first image's current latents (`latent size`, RGB8).
    pub preview: &'a Preview,
}

/// A latent-space preview: a linear map from the 4 latent channels to RGB.
pub struct Preview {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Whether to go on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Cancel,
}

/// One finished image.
pub struct GeneratedImage {
    pub width: usize,
    pub height: usize,
    /// RGB in [0, 1], row-major `[height, width, 3]` (diffusers' `output_type="np"`).
    pub rgb: Vec<f32>,
    /// Final latents before the VAE, NCHW `latent_shape` = `[4, h, w]` (diffusers'
    /// `output_type="latent"`).
    pub latents: Vec<f32>,
    pub latent_shape: [usize; 3],
}

impl GeneratedImage {
    /// 8-bit RGB as diffusers' `numpy_to_pil`: `round(x * 255)`.
    pub fn rgb8(&self) -> Vec<u8> {
        self.rgb
            .iter()
            .map(|&v| (v * 255.0).round() as u8)
            .collect()
    }

    /// 8-bit grayscale (ITU-R BT.601 luma), what CXR tools expect.
    pub fn gray8(&self) -> Vec<u8> {
        self.rgb
            .chunks_exact(3)
            .map(|p| {
                ((0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect()
    }
}

/// Which weights stay on the GPU between the stages of a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemoryPlan {
    /// The UNet's weights are released before the VAE decodes and reloaded from the
    /// checkpoint by [`Pipeline::ensure_unet`] for the next generation: the peak is the
    /// larger of the two stages, not their sum (at int8, 1.3 GB instead of 1.9 GB at
    /// 512x512), for one reload per generation.
    #[default]
    Lean,
    /// Everything stays loaded: no reload between generations, more memory.
    Resident,
}

/// A loaded checkpoint, ready to generate.
pub struct Pipeline {
    pub name: String,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    /// `None` once a [`MemoryPlan::Lean`] generation has released it.
    unet: std::sync::Mutex<Option<std::sync::Arc<UNet2DConditionModel>>>,
    pub unet_config: UNetConfig,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    pub memory: MemoryPlan,
}

/// SD 1.x latent-to-RGB factors for previews (a least-squares fit of decoded colours on
/// latents, as used by ComfyUI's `latent_rgb_factors` for SD 1.5).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

#[allow(clippy::needless_range_loop)] // c indexes the factor columns
fn preview(latents: &[f32], h: usize, w: usize) -> Preview {
    let plane = h * w;
    let mut rgb = Vec::with_capacity(plane * 3);
    for i in 0..plane {
        for c in 0..3 {
            let v: f32 = (0..4)
                .map(|k| latents[k * plane + i] * LATENT_RGB[k][c])
                .sum();
            rgb.push(((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8);
        }
    }
    Preview {
        width: w,
        height: h,
        rgb,
    }
}

/// `scaling_factor · (mean + std · ε)` per image (`DiagonalGaussianDistribution.sample`:
/// log-variance clamped to [-30, 20], std = exp(logvar / 2)); `eps` holds `plane` numbers
/// per image, `moments` one image's mean and log-variance planes.
fn sample_latents(moments: &[f32], eps: &[f32], plane: usize, lc: usize, scale: f32) -> Vec<f32> {
    debug_assert_eq!(moments.len(), 2 * plane);
    debug_assert_eq!(plane % lc, 0);
    let (mean, logvar) = moments.split_at(plane);
    eps.iter()
        .enumerate()
        .map(|(k, &e)| {
            let i = k % plane;
            let std = (0.5 * logvar[i].clamp(-30.0, 20.0)).exp();
            scale * (mean[i] + std * e)
        })
        .collect()
}

fn nchw_to_nhwc(x: &[f32], b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                out[(bi * h * w + p) * c + ci] = x[(bi * c + ci) * h * w + p];
            }
        }
    }
    out
}

fn nhwc_to_nchw(x: &[f32], b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                out[(bi * c + ci) * h * w + p] = x[(bi * h * w + p) * c + ci];
            }
        }
    }
    out
}

/// The checkpoint's `tokenizer/` folder (or `text_encoder_and_tokenizer/`'s own, see
/// [`Checkpoint::tokenizer_dir`]), in either layout (`vocab.json` + `merges.txt`
/// as RoentGen-era folders ship it, or `tokenizer.json`).
pub async fn load_tokenizer<S: FileSource>(ck: &Checkpoint<S>) -> Result<ClipTokenizer> {
    let dir = ck.tokenizer_dir();
    let read = |p: &'static str| async move {
        let path = format!("{dir}/{p}");
        if ck.files.contains(&path) {
            Some(ck.source.read(&path).await)
        } else {
            None
        }
    };
    let vocab = read("vocab.json").await.transpose()?;
    let merges = read("merges.txt").await.transpose()?;
    let tokenizer_json = read("tokenizer.json").await.transpose()?;
    let config = read("tokenizer_config.json").await.transpose()?;
    let special = read("special_tokens_map.json").await.transpose()?;
    ClipTokenizer::from_files(TokenizerFiles {
        vocab_json: vocab.as_deref(),
        merges_txt: merges.as_deref(),
        tokenizer_json: tokenizer_json.as_deref(),
        tokenizer_config_json: config.as_deref(),
        special_tokens_map_json: special.as_deref(),
    })
}

impl Pipeline {
    /// Loads every part of a checkpoint. `on_part` hears each part's name before it loads
    /// (loading RoentGen's 4.3 GB takes a while).
    pub async fn load<S: FileSource>(
        gpu: &Gpu,
        ck: &Checkpoint<S>,
        on_part: &mut dyn FnMut(&str),
    ) -> Result<Pipeline> {
        on_part("tokenizer");
        let tokenizer = load_tokenizer(ck).await?;
        on_part("scheduler");
        let file = "scheduler/scheduler_config.json";
        let scheduler_config = SchedulerConfig::from_json(file, &ck.read_text(file).await?)?;
        on_part("text encoder");
        let text_encoder = ck.text_encoder(gpu).await?;
        on_part("unet");
        let unet = ck.unet(gpu).await?;
        on_part("vae");
        let vae = ck.vae(gpu, false).await?;
        let name = match ck.read_text("model_index.json").await {
            Ok(s) => match serde_json::from_str::<serde_json::Value>(&s) {
                Ok(v) => v
                    .get("_name_or_path")
                    .and_then(|n| n.as_str())
                    .map(String::from)
                    .unwrap_or_default(),
                Err(e) => {
                    // Nothing in it is needed to generate, so load anyway, but say so.
                    log::warn!(
                        "model_index.json is not valid JSON ({e}); the model loads without its name"
                    );
                    String::new()
                }
            },
            Err(_) => String::new(),
        };
        Ok(Pipeline::new(
            name,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
        ))
    }

    /// A pipeline from loaded parts, with the default [`MemoryPlan`].
    pub fn new(
        name: String,
        tokenizer: ClipTokenizer,
        text_encoder: ClipTextModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler_config: SchedulerConfig,
    ) -> Pipeline {
        Pipeline {
            name,
            tokenizer,
            text_encoder,
            unet_config: unet.config.clone(),
            unet: std::sync::Mutex::new(Some(std::sync::Arc::new(unet))),
            vae,
            scheduler_config,
            memory: MemoryPlan::default(),
        }
    }

    /// Whether the UNet's weights are on the GPU.
    pub fn unet_loaded(&self) -> bool {
        self.unet.lock().unwrap().is_some()
    }

    /// Loads the UNet's weights again from `ck` if a lean generation released them
    /// (a no-op otherwise). `ck` must be the checkpoint the pipeline was loaded from.
    pub async fn ensure_unet<S: FileSource>(&self, gpu: &Gpu, ck: &Checkpoint<S>) -> Result<()> {
        if self.unet_loaded() {
            return Ok(());
        }
        let unet = ck.unet(gpu).await?;
        *self.unet.lock().unwrap() = Some(std::sync::Arc::new(unet));
        Ok(())
    }

    /// The model family, told from the configs (`crate::findings::Family::of`).
    pub fn family(&self) -> crate::findings::Family {
        crate::findings::Family::of(
            &self.text_encoder.config.hidden_act,
            self.scheduler_config.prediction_type == crate::schedulers::PredictionType::VPrediction,
        )
    }

    /// Generates `req.count` images from one prompt and one seed, as diffusers'
    /// `num_images_per_prompt` draws them. `on_call` hears after every UNet call and may
    /// cancel (then `Ok(vec![])` is returned).
    pub async fn generate(
        &self,
        gpu: &Gpu,
        req: &GenerateRequest,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        self.check(req, req.count)?;
        let cond = self.tokenizer.encode(&req.prompt)?.ids;
        let uncond = self.tokenizer.encode(&req.negative_prompt)?.ids;
        let texts = vec![(cond, uncond); req.count];
        self.run(
            gpu,
            req,
            texts,
            Noise::Shared(Box::new(TorchGenerator::new(req.seed))),
            None,
            None,
            on_call,
        )
        .await
    }

    /// Generates one image (`req.count` must be 1), edited when `edit` is given, and
    /// its per-word attention maps ([`WordMaps`]; DAAM's aggregation). The maps cost
    /// two small kernels per cross-attention layer (BENCHMARKS.md); without this call
    /// nothing of them runs. `Ok(None)` when cancelled.
    pub async fn generate_mapped(
        &self,
        gpu: &Gpu,
        req: &GenerateRequest,
        edit: Option<&Edit<'_>>,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Option<(GeneratedImage, WordMaps)>> {
        self.check(req, 1)?;
        if req.count != 1 {
            return Err(Error::Unsupported(format!(
                "attention maps are made for one image at a time; ask for 1 image, not {}",
                req.count
            )));
        }
        if let Some(e) = edit {
            self.check_edit(req, e)?;
        }
        let enc = self.tokenizer.encode(&req.prompt)?;
        let uncond = self.tokenizer.encode(&req.negative_prompt)?.ids;
        // the prompt's tokens: after BOS, before EOS
        let tokens = enc.tokens_used.saturating_sub(2);
        if tokens == 0 {
            return Err(Error::Unsupported(
                "attention maps show where each word of the prompt acts, and this prompt has no words; type a prompt".into(),
            ));
        }
        let f = self.vae.config.scale_factor();
        let (h, w) = (req.height / f, req.width / f);
        // the conditional half's first image: batch index 1 with guidance ([uncond, cond])
        let batch = usize::from(req.guidance > 1.0);
        let maps = AttentionMaps::new(gpu, batch, 1, tokens, h, w)?;
        let ids = enc.ids[1..1 + tokens].to_vec();
        let mut images = self
            .run(
                gpu,
                req,
                vec![(enc.ids, uncond)],
                Noise::Shared(Box::new(TorchGenerator::new(req.seed))),
                edit,
                Some(&maps),
                on_call,
            )
            .await?;
        let Some(image) = images.pop() else {
            return Ok(None);
        };
        let values = gpu.read(&maps.acc).await?;
        let word_maps = WordMaps::new(&self.tokenizer, ids, values, h, w);
        Ok(Some((image, word_maps)))
    }

    /// Edits an image (see [`Edit`]): `req.count` images from one prompt and one seed,
    /// as diffusers' image-to-image and inpainting pipelines make them from the same
    /// generator. Needs the VAE's encoder ([`Pipeline::load_vae_encoder`]).
    pub async fn generate_edit(
        &self,
        gpu: &Gpu,
        req: &GenerateRequest,
        edit: &Edit<'_>,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        self.check(req, req.count)?;
        self.check_edit(req, edit)?;
        let cond = self.tokenizer.encode(&req.prompt)?.ids;
        let uncond = self.tokenizer.encode(&req.negative_prompt)?.ids;
        let texts = vec![(cond, uncond); req.count];
        self.run(
            gpu,
            req,
            texts,
            Noise::Shared(Box::new(TorchGenerator::new(req.seed))),
            Some(edit),
            None,
            on_call,
        )
        .await
    }

    /// An edit's inputs against the request, before anything runs.
    pub fn check_edit(&self, req: &GenerateRequest, edit: &Edit<'_>) -> Result<()> {
        edit_strength(Some(edit.strength), edit.mask.is_some())?;
        if edit_start(req.steps, edit.strength) == req.steps {
            return Err(Error::Unsupported(format!(
                "strength {} with {} steps runs no step (steps x strength < 1); raise the strength or the steps",
                edit.strength, req.steps
            )));
        }
        let px = req.width * req.height;
        if edit.rgb.len() != px * 3 {
            return Err(Error::Unsupported(format!(
                "the init image has {} values, but a {}x{} RGB image has {}",
                edit.rgb.len(),
                req.width,
                req.height,
                px * 3
            )));
        }
        if let Some(m) = edit.mask
            && m.len() != px
        {
            return Err(Error::Unsupported(format!(
                "the mask has {} pixels, but the init image is {}x{} ({} pixels); draw the mask at the image's size",
                m.len(),
                req.width,
                req.height,
                px
            )));
        }
        if self.vae.encoder.is_none() {
            return Err(Error::Unsupported(
                "editing an image needs the VAE's encoder, which was not loaded (Pipeline::load_vae_encoder)".into(),
            ));
        }
        Ok(())
    }

    /// Loads the VAE again with its encoder (text-to-image leaves it out: 34 M
    /// parameters it does not need). A no-op when it is there.
    pub async fn load_vae_encoder<S: FileSource>(
        &mut self,
        gpu: &Gpu,
        ck: &Checkpoint<S>,
    ) -> Result<()> {
        if self.vae.encoder.is_none() {
            self.vae = ck.vae(gpu, true).await?;
        }
        Ok(())
    }

    /// Generates one image per item, each with its own prompt, negative prompt and seed,
    /// the items' UNet calls batched together (guidance doubles the batch). Image k is
    /// the image [`Pipeline::generate`] makes with item k's prompt, negative prompt and
    /// seed and `count` 1 (tests check it to the byte); `req`'s prompts, seed and count
    /// are not used.
    pub async fn generate_batch(
        &self,
        gpu: &Gpu,
        req: &GenerateRequest,
        items: &[BatchItem],
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        self.check(req, items.len())?;
        let mut texts = Vec::with_capacity(items.len());
        for it in items {
            let cond = self.tokenizer.encode(&it.prompt)?.ids;
            let uncond = self.tokenizer.encode(&it.negative_prompt)?.ids;
            texts.push((cond, uncond));
        }
        let generators = items
            .iter()
            .map(|it| TorchGenerator::new(it.seed))
            .collect();
        self.run(
            gpu,
            req,
            texts,
            Noise::Each(generators),
            None,
            None,
            on_call,
        )
        .await
    }

    /// The request's settings for `count` images, checked before anything runs (the
    /// generate functions call it; a batch run calls it before writing anything).
    pub fn check(&self, req: &GenerateRequest, count: usize) -> Result<()> {
        let req = &GenerateRequest {
            count,
            ..req.clone()
        };
        let f = self.vae.config.scale_factor();
        if req.width == 0
            || req.height == 0
            || !req.width.is_multiple_of(f)
            || !req.height.is_multiple_of(f)
        {
            return Err(Error::Unsupported(format!(
                "width and height must be positive multiples of {f} for this model (got {}x{})",
                req.width, req.height
            )));
        }
        if req.steps == 0 || req.count == 0 {
            return Err(Error::Unsupported(
                "steps and count must be at least 1".into(),
            ));
        }
        // Ranges (a NaN guidance used to generate a meaningless image): guidance is a
        // finite number in [0, MAX_GUIDANCE] (RoentGen uses 4, v2 3; 1 or less turns
        // guidance off), steps at most the scheduler's training timesteps, sizes and
        // counts within what a GPU can hold.
        if !req.guidance.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&req.guidance) {
            return Err(Error::Unsupported(format!(
                "guidance must be a number from 0 to {MAX_GUIDANCE} (RoentGen uses 4), not {}",
                req.guidance
            )));
        }
        if req.steps > MAX_STEPS {
            return Err(Error::Unsupported(format!(
                "steps must be at most {MAX_STEPS} (RoentGen uses 75), not {}",
                req.steps
            )));
        }
        if req.width > MAX_SIZE || req.height > MAX_SIZE || req.count > MAX_COUNT {
            return Err(Error::Unsupported(format!(
                "width and height must be at most {MAX_SIZE} and count at most {MAX_COUNT} (got {}x{}, {} images)",
                req.width, req.height, req.count
            )));
        }
        Ok(())
    }

    /// The VAE's latent distribution of an RGB image in [0, 1] (`[h, w, 3]`): moments
    /// NCHW `[2 * latent, h/8, w/8]`, mean then log-variance.
    async fn encode_moments(
        &self,
        gpu: &Gpu,
        rgb: &[f32],
        height: usize,
        width: usize,
    ) -> Result<Vec<f32>> {
        let x: Vec<f32> = rgb.iter().map(|&v| 2.0 * v - 1.0).collect();
        let x = gpu.upload(&x, &[1, height, width, 3])?;
        let m = self.vae.encode(gpu, &x)?;
        let [_, mh, mw, mc] = m.shape().try_into().expect("moments are NHWC");
        let m = gpu.read(&m).await?;
        gpu.trim();
        Ok(nhwc_to_nchw(&m, 1, mc, mh, mw))
    }

    /// The denoising loop and the decode, for `texts` = (prompt ids, negative ids) per
    /// image and the noise they draw.
    #[allow(clippy::too_many_arguments)] // each is one concern of a generation; private
    async fn run(
        &self,
        gpu: &Gpu,
        req: &GenerateRequest,
        texts: Vec<(Vec<u32>, Vec<u32>)>,
        mut noise: Noise,
        edit: Option<&Edit<'_>>,
        maps: Option<&AttentionMaps>,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        let f = self.vae.config.scale_factor();
        let unet = self.unet.lock().unwrap().clone().ok_or_else(|| {
            Error::Unsupported(
                "the UNet's weights were released after the last generation to make room for the VAE decode; reload them first (Pipeline::ensure_unet)".into(),
            )
        })?;
        let (h, w) = (req.height / f, req.width / f);
        let n = texts.len();
        let lc = self.unet_config.in_channels;
        let cfg = req.guidance > 1.0;

        // 1. text embeddings: [negative x n, prompt x n] (uncond first, as diffusers)
        let mut ids: Vec<Vec<u32>> = Vec::with_capacity(2 * n);
        if cfg {
            ids.extend(texts.iter().map(|(_, uncond)| uncond.clone()));
        }
        ids.extend(texts.into_iter().map(|(cond, _)| cond));
        let context = self.text_encoder.forward(gpu, &ids)?;
        // The text encoder's activations are not needed again.
        gpu.trim();

        // 2. scheduler and initial latents
        let mut scheduler = schedulers::build(req.scheduler, &self.scheduler_config, req.steps)?;
        let sigma = scheduler.init_noise_sigma();
        let plane = lc * h * w;
        let start = match edit {
            Some(e) => edit_start(req.steps, e.strength),
            None => 0,
        };
        scheduler.begin_at(start)?;
        let timesteps = scheduler.timesteps().to_vec();
        // For inpainting: the init image's latents, the noise they are noised with at
        // each step, and the mask on the latent grid.
        let mut inpaint: Option<(Vec<f32>, Vec<f32>, Vec<bool>)> = None;
        let mut latents: Vec<f32> = match edit {
            None => noise
                .randn(n, plane)
                .into_iter()
                .map(|v| v * sigma)
                .collect(),
            Some(e) => {
                // the init image's latents, *sampled* from the VAE's latent
                // distribution with the generator (retrieve_latents), times the
                // scaling factor, then the noise
                let moments = self
                    .encode_moments(gpu, e.rgb, req.height, req.width)
                    .await?;
                let eps = noise.randn_per_image(n, plane);
                let image_latents =
                    sample_latents(&moments, &eps, plane, lc, self.vae.config.scaling_factor);
                let fresh = noise.randn(n, plane);
                let latents = match e.mask {
                    Some(_) if e.strength == 1.0 => fresh.iter().map(|v| v * sigma).collect(),
                    _ => scheduler.add_noise(&image_latents, &fresh, start),
                };
                if let Some(mask) = e.mask {
                    // diffusers also encodes the masked image with the generator (its
                    // latents feed only 9-channel UNets): the draw is kept, the encode not
                    let _ = noise.randn_per_image(n, plane);
                    // F.interpolate(mode="nearest") to the latent grid: pixel (f·i, f·j)
                    let grid: Vec<bool> = (0..h)
                        .flat_map(|i| (0..w).map(move |j| (i, j)))
                        .map(|(i, j)| mask[(f * i) * req.width + f * j])
                        .collect();
                    inpaint = Some((image_latents, fresh, grid));
                }
                latents
            }
        };

        // 3. denoising loop
        let calls = timesteps.len() - start;
        for (i, &t) in timesteps.iter().enumerate().skip(start) {
            let mut input = latents.clone();
            scheduler.scale_model_input(&mut input, i);
            let batch = if cfg { 2 * n } else { n };
            let mut nchw = input.clone();
            if cfg {
                nchw.extend_from_slice(&input);
            }
            let x = gpu.upload(&nchw_to_nhwc(&nchw, batch, lc, h, w), &[batch, h, w, lc])?;
            let eps = match maps {
                None => unet.forward(gpu, &x, t, &context)?,
                Some(m) => unet.forward_mapped(gpu, &x, t, &context, m)?,
            };
            let eps = nhwc_to_nchw(&gpu.read(&eps).await?, batch, lc, h, w);
            let guided: Vec<f32> = if cfg {
                let (u, c) = eps.split_at(n * plane);
                u.iter()
                    .zip(c)
                    .map(|(&u, &c)| u + req.guidance * (c - u))
                    .collect()
            } else {
                eps
            };
            let noise = scheduler.needs_noise().then(|| noise.randn(n, plane));
            latents = scheduler.step(&guided, i, &latents, noise.as_deref());
            if let Some((image_latents, fresh, grid)) = &inpaint {
                // the kept region: the init latents noised to the next call's level
                // (un-noised after the last call)
                let kept = if i + 1 < timesteps.len() {
                    scheduler.add_noise(image_latents, fresh, i + 1)
                } else {
                    image_latents.clone()
                };
                for (k, v) in latents.iter_mut().enumerate() {
                    if !grid[k % (h * w)] {
                        *v = kept[k];
                    }
                }
            }
            let p = preview(&latents[..plane], h, w);
            if on_call(Progress {
                call: i + 1 - start,
                calls,
                preview: &p,
            }) == Control::Cancel
            {
                return Ok(vec![]);
            }
        }

        // 4. The UNet's activations (and, in the lean plan, its weights) leave the GPU
        //    before the decode's large maps arrive.
        drop(context);
        drop(unet);
        if self.memory == MemoryPlan::Lean {
            self.unet.lock().unwrap().take();
        }
        gpu.trim();

        // 5. decode each image
        let scale = 1.0 / self.vae.config.scaling_factor;
        let mut images = Vec::with_capacity(n);
        for k in 0..n {
            let lat = &latents[k * plane..(k + 1) * plane];
            let z: Vec<f32> = nchw_to_nhwc(lat, 1, lc, h, w)
                .iter()
                .map(|v| v * scale)
                .collect();
            let z = gpu.upload(&z, &[1, h, w, lc])?;
            let img = gpu.read(&self.vae.decode(gpu, &z)).await?;
            let rgb = img
                .iter()
                .map(|&v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
                .collect();
            images.push(GeneratedImage {
                width: req.width,
                height: req.height,
                rgb,
                latents: lat.to_vec(),
                latent_shape: [lc, h, w],
            });
        }
        gpu.trim();
        Ok(images)
    }
}
