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

use crate::checkpoint::{Checkpoint, FileSource, MaybeSendSync, Reload};
use crate::error::{Error, Result};
use crate::generation::{Family, ModelFacts, Plan, Prompts, Recipe, Request, Settings};
use crate::gpu::Gpu;
use crate::image_io::{ImageMetadata, encode_png};
use crate::models::text::check_tokenizer;
use crate::models::{
    AutoencoderKL, TextConfig, TextEncoder, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::ops::AttentionMaps;
use crate::rng::TorchGenerator;
use crate::schedulers::{self, SchedulerConfig};
use crate::tokenizer::PromptTokenizer;
pub use crate::word_maps::WordMaps;

pub use crate::generation::{
    BatchItem, GenerateRequest, MAX_COUNT, MAX_GUIDANCE, MAX_SIZE, MAX_STEPS, ROENTGEN_GUIDANCE,
    ROENTGEN_SIZE, ROENTGEN_STEPS, edit_start, edit_strength,
};

/// An edit as the denoising loop reads it (from a plan's [`crate::generation::EditRequest`]).
#[derive(Clone, Copy, Debug)]
struct Edit<'a> {
    /// RGB in [0, 1], `[height, width, 3]`.
    rgb: &'a [f32],
    /// `[height, width]`, true = repaint; `None`: image-to-image.
    mask: Option<&'a [bool]>,
    /// In (0, 1]: `steps · strength` steps run from `timesteps[steps - that]`.
    strength: f32,
}

/// A mutex's value; a thread that panicked while holding it left a value that is still
/// whole (each guarded value is replaced in one assignment).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parts of a checkpoint agree: the UNet attends to contexts as wide as the text
/// encoder's output, and its latents have the VAE's channels. A mismatch is said naming
/// both parts and both numbers, before any weight is read.
pub fn check_parts(
    text: &TextConfig,
    text_file: &str,
    unet: &UNetConfig,
    vae: &VaeConfig,
) -> Result<()> {
    if text.hidden_size() != unet.cross_attention_dim {
        return Err(Error::Input(format!(
            "the parts of this model do not fit together: the text encoder ({text_file}) gives {}-wide hidden states, but the UNet (unet/config.json) expects a cross_attention_dim of {}; the folder mixes two models: take both from the same checkpoint",
            text.hidden_size(),
            unet.cross_attention_dim
        )));
    }
    for (what, n) in [
        ("in_channels", unet.in_channels),
        ("out_channels", unet.out_channels),
    ] {
        if n != vae.latent_channels {
            return Err(Error::Input(format!(
                "the parts of this model do not fit together: the VAE (vae/config.json) has {} latent channels, but the UNet (unet/config.json) has {what} {n}; the folder mixes two models: take both from the same checkpoint",
                vae.latent_channels
            )));
        }
    }
    Ok(())
}

/// What [`Pipeline::generate`] made: the images (none when cancelled), the word maps
/// when asked, and for each image its metadata, file stem, PNG and DICOM.
pub struct Outcome {
    pub images: Vec<GeneratedImage>,
    pub word_maps: Option<WordMaps>,
    /// The model's name in metadata.
    pub model: String,
    pub settings: Settings,
    /// (prompt, negative prompt, seed) per image.
    pub prompts: Vec<(String, String, u64)>,
    /// `roentgen`, `roentgen-img2img` or `roentgen-inpaint`.
    pub mode: &'static str,
    pub strength: Option<f32>,
}

impl Outcome {
    /// Cancelled before an image was made.
    pub fn cancelled(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `k`'s settings, as its PNG text chunks and DICOM attributes carry them.
    pub fn metadata(&self, k: usize) -> ImageMetadata {
        let (prompt, negative_prompt, seed) = self.prompts[k].clone();
        ImageMetadata {
            prompt,
            negative_prompt,
            seed,
            steps: self.settings.steps,
            guidance: self.settings.guidance,
            scheduler: self.settings.scheduler.name().into(),
            model: self.model.clone(),
        }
    }

    /// A file name without extension: `roentgen-seed7`, `roentgen-img2img-seed7`,
    /// `roentgen-inpaint-seed7`; `-k` after it for the k-th image of one seed.
    pub fn file_stem(&self, k: usize) -> String {
        let stem = format!("{}-seed{}", self.mode, self.prompts[k].2);
        if k == 0 { stem } else { format!("{stem}-{k}") }
    }

    /// Image `k` as a PNG with its settings in text chunks: grayscale (what CXR tools
    /// expect), or RGB as the VAE decodes it.
    pub fn png(&self, k: usize, rgb: bool) -> Result<Vec<u8>> {
        let img = &self.images[k];
        let meta = self.metadata(k);
        if rgb {
            encode_png(&img.rgb8(), img.width, img.height, 3, &meta)
        } else {
            encode_png(&img.gray8(), img.width, img.height, 1, &meta)
        }
    }

    /// Image `k` as a DICOM Secondary Capture marked synthetic (the gray PNG's pixels).
    /// The caller brings the randomness of its UIDs (the OS natively,
    /// `crypto.getRandomValues` in the page) and the time.
    pub fn dicom(&self, k: usize, entropy: [u128; 3], unix_seconds: u64) -> Result<Vec<u8>> {
        let img = &self.images[k];
        crate::dicom::encode_dicom(
            &img.gray8(),
            img.width,
            img.height,
            &self.metadata(k),
            &crate::dicom::Uids::from_entropy(entropy),
            &crate::dicom::Created::from_unix(unix_seconds),
        )
    }
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

/// A loaded checkpoint, ready to generate: the one door every front end (the CLI's
/// `generate` and `batch`, the page's worker) goes through: [`Pipeline::plan`] checks a
/// [`Request`] against the model, [`Pipeline::generate`] runs the plan.
pub struct Pipeline {
    /// The model's name in metadata: `_name_or_path` from `model_index.json`, else
    /// what the front end named it ([`Pipeline::named_or`]).
    pub name: String,
    pub tokenizer: PromptTokenizer,
    pub text_encoder: TextEncoder,
    /// `None` once a [`MemoryPlan::Lean`] generation has released it.
    unet: std::sync::Mutex<Option<std::sync::Arc<UNet2DConditionModel>>>,
    pub unet_config: UNetConfig,
    /// Replaced by one with its encoder the first time an edit needs it.
    vae: std::sync::Mutex<std::sync::Arc<AutoencoderKL>>,
    pub vae_config: VaeConfig,
    pub scheduler_config: SchedulerConfig,
    pub memory: MemoryPlan,
    /// The way back to the checkpoint's weights; `None` for a pipeline built from parts
    /// in memory ([`Pipeline::new`]: benchmarks), which cannot reload.
    reload: Option<Reload>,
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

/// Tells `on_call` that UNet call `call` of `calls` is done, with a preview of the first
/// image's latents (`h x w`); its answer.
fn report(
    on_call: &mut dyn FnMut(Progress) -> Control,
    call: usize,
    calls: usize,
    latents: &[f32],
    h: usize,
    w: usize,
) -> Control {
    on_call(Progress {
        call,
        calls,
        preview: &preview(latents, h, w),
    })
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

impl Pipeline {
    /// Loads every part of a checkpoint, first checking that the parts fit together
    /// (the text encoder's width is the UNet's `cross_attention_dim`, the VAE's latent
    /// channels are the UNet's). `on_part` hears each part's name before it loads
    /// (loading RoentGen's 4.3 GB takes a while). The pipeline keeps a way back to the
    /// checkpoint's weights ([`Checkpoint::reload`]).
    pub async fn load<S: FileSource + Clone + MaybeSendSync + 'static>(
        gpu: &Gpu,
        ck: &Checkpoint<S>,
        on_part: &mut dyn FnMut(&str),
    ) -> Result<Pipeline> {
        on_part("tokenizer");
        let mut tokenizer = ck.tokenizer().await?;
        on_part("scheduler");
        let scheduler_config = ck.scheduler_config().await?;
        let text_config = ck.text_encoder_config().await?;
        let text_file = format!("{}/config.json", ck.text_encoder_dir());
        // RadEdit's assembly passes model_max_length=128 whatever the tokenizer config says
        let v_pred =
            scheduler_config.prediction_type == crate::schedulers::PredictionType::VPrediction;
        if let Some(n) = Family::of(&text_config, v_pred).and_then(Family::context_length) {
            tokenizer.set_max_length(n);
        }
        check_parts(
            &text_config,
            &text_file,
            &ck.unet_config().await?,
            &ck.vae_config().await?,
        )?;
        check_tokenizer(&text_config, &text_file, &tokenizer)?;
        let reload = ck.reload()?;
        on_part("text encoder");
        let text_encoder = ck.text_encoder(gpu).await?;
        on_part("unet");
        let unet = ck.unet(gpu).await?;
        on_part("vae");
        let vae = ck.vae(gpu, false).await?;
        let name = ck.model_name().await;
        let mut pipe = Pipeline::new(name, tokenizer, text_encoder, unet, vae, scheduler_config)?;
        pipe.reload = Some(reload);
        Ok(pipe)
    }

    /// A pipeline from loaded parts, with the default [`MemoryPlan`]; it cannot read
    /// weights again (a lean generation's UNet stays released).
    pub fn new(
        name: String,
        tokenizer: PromptTokenizer,
        text_encoder: TextEncoder,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler_config: SchedulerConfig,
    ) -> Result<Pipeline> {
        let text_config = text_encoder.config();
        check_parts(
            &text_config,
            "text_encoder/config.json",
            &unet.config,
            &vae.config,
        )?;
        check_tokenizer(&text_config, "text_encoder/config.json", &tokenizer)?;
        Ok(Pipeline {
            name,
            tokenizer,
            text_encoder,
            unet_config: unet.config.clone(),
            unet: std::sync::Mutex::new(Some(std::sync::Arc::new(unet))),
            vae_config: vae.config.clone(),
            vae: std::sync::Mutex::new(std::sync::Arc::new(vae)),
            scheduler_config,
            memory: MemoryPlan::default(),
            reload: None,
        })
    }

    /// This pipeline, named `fallback` where its `model_index.json` names nothing (the
    /// folder as the CLI was given it, the stored model's name in the page).
    pub fn named_or(mut self, fallback: &str) -> Pipeline {
        if self.name.is_empty() {
            self.name = fallback.to_string();
        }
        self
    }

    /// Whether the UNet's weights are on the GPU.
    pub fn unet_loaded(&self) -> bool {
        lock(&self.unet).is_some()
    }

    /// Loads the UNet's weights again if a lean generation released them (a no-op
    /// otherwise). [`Pipeline::generate`] calls it; a front end may call it early to
    /// show the reload as a stage of its own.
    pub fn ensure_unet(&self, gpu: &Gpu) -> Result<()> {
        if self.unet_loaded() {
            return Ok(());
        }
        let reload = self.reload.as_ref().ok_or_else(|| {
            Error::Internal(
                "the UNet's weights were released after the last generation, and this pipeline was built from parts in memory, so it cannot read them again (use MemoryPlan::Resident)".into(),
            )
        })?;
        let unet = reload.unet(gpu, self.unet_config.clone())?;
        *lock(&self.unet) = Some(std::sync::Arc::new(unet));
        Ok(())
    }

    /// Loads the VAE again with its encoder if it has none (text-to-image leaves it
    /// out: 34 M parameters it does not need).
    fn ensure_vae_encoder(&self, gpu: &Gpu) -> Result<()> {
        if lock(&self.vae).encoder.is_some() {
            return Ok(());
        }
        let reload = self.reload.as_ref().ok_or_else(|| {
            Error::Internal(
                "editing an image needs the VAE's encoder, and this pipeline was built from parts in memory without it".into(),
            )
        })?;
        let vae = reload.vae(gpu, self.vae_config.clone(), true)?;
        *lock(&self.vae) = std::sync::Arc::new(vae);
        Ok(())
    }

    /// The model family, told from the configs.
    pub fn family(&self) -> Option<Family> {
        Family::of(
            &self.text_encoder.config(),
            self.scheduler_config.prediction_type == crate::schedulers::PredictionType::VPrediction,
        )
    }

    /// What a [`Plan`] needs to know of this model.
    pub fn facts(&self) -> ModelFacts {
        let f = self.vae_config.scale_factor();
        ModelFacts {
            family: self.family(),
            scheduler: self.scheduler_config.clone(),
            vae_factor: f,
            default_side: self.unet_config.sample_size.unwrap_or(64) * f,
        }
    }

    /// The recipe this model runs with when a request leaves settings out.
    pub fn recipe(&self) -> Recipe {
        let facts = self.facts();
        Recipe::of(facts.family, &facts.scheduler, facts.default_side)
    }

    /// Checks `req` against this model and decides every setting ([`Plan::new`]).
    pub fn plan(&self, req: impl Into<Request>) -> Result<Plan> {
        Plan::new(req.into(), &self.facts())
    }

    /// Runs a plan: `count` images from one prompt and seed (as diffusers'
    /// `num_images_per_prompt` draws them), or one per batch item with its own
    /// generator (the items' UNet calls batched together; image k is byte for byte the
    /// image of item k alone); edited when the plan has an edit (image-to-image, or
    /// inpainting with its mask, as diffusers' pipelines with the same generator); with
    /// per-word attention maps when asked (DAAM's aggregation: two small kernels per
    /// cross-attention layer). The UNet is read again if a lean generation released it
    /// and the VAE's encoder loaded for an edit. `on_call` hears after every UNet call
    /// and may cancel: the outcome then has no image.
    pub async fn generate(
        &self,
        gpu: &Gpu,
        plan: &Plan,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Outcome> {
        let s = &plan.settings;
        // every map fits this GPU's bindings, or a sentence before anything runs
        crate::models::fit::check(
            crate::models::fit::BufferLimits::of(gpu),
            &self.unet_config,
            &self.vae_config,
            crate::models::fit::Job {
                images: plan.prompts.count(),
                guided: s.guidance > 1.0
                    || plan.edit.as_ref().is_some_and(|e| e.inversion.is_some()),
                width: s.width,
                height: s.height,
                encode: plan.edit.is_some(),
            },
        )?;
        if plan.edit.is_some() {
            self.ensure_vae_encoder(gpu)?;
        }
        self.ensure_unet(gpu)?;
        let mut texts = Vec::with_capacity(plan.prompts.count());
        let mut seeds = Vec::with_capacity(plan.prompts.count());
        let noise = match &plan.prompts {
            Prompts::One {
                prompt,
                negative_prompt,
                seed,
                count,
            } => {
                let cond = self.tokenizer.encode(prompt)?.ids;
                let uncond = self.tokenizer.encode(negative_prompt)?.ids;
                for _ in 0..*count {
                    texts.push((cond.clone(), uncond.clone()));
                    seeds.push((prompt.clone(), negative_prompt.clone(), *seed));
                }
                Noise::Shared(Box::new(TorchGenerator::new(*seed)))
            }
            Prompts::Batch(items) => {
                for it in items {
                    let cond = self.tokenizer.encode(&it.prompt)?.ids;
                    let uncond = self.tokenizer.encode(&it.negative_prompt)?.ids;
                    texts.push((cond, uncond));
                    seeds.push((it.prompt.clone(), it.negative_prompt.clone(), it.seed));
                }
                Noise::Each(
                    items
                        .iter()
                        .map(|it| TorchGenerator::new(it.seed))
                        .collect(),
                )
            }
        };
        let edit = plan.edit.as_ref().map(|e| Edit {
            rgb: &e.rgb,
            mask: e.mask.as_deref(),
            strength: plan.strength.unwrap_or(1.0),
        });
        // per-word maps: the first image's prompt tokens, after BOS, before EOS
        let maps = if plan.attention_maps {
            let prompt = &seeds[0].0;
            let enc = self.tokenizer.encode(prompt)?;
            let tokens = enc.tokens_used.saturating_sub(2);
            if tokens == 0 {
                return Err(Error::Input(
                    "attention maps show where each word of the prompt acts, and this prompt has no words; type a prompt".into(),
                ));
            }
            let f = self.vae_config.scale_factor();
            let (h, w) = (s.height / f, s.width / f);
            // the conditional half's first image: batch index 1 with guidance ([uncond, cond]);
            // an inversion edit always runs both halves
            let inverting = plan.edit.as_ref().is_some_and(|e| e.inversion.is_some());
            let batch = usize::from(s.guidance > 1.0 || inverting);
            let maps = AttentionMaps::new(gpu, batch, 1, tokens, h, w)?;
            Some((maps, enc.ids[1..1 + tokens].to_vec(), h, w))
        } else {
            None
        };
        let inversion = plan.edit.as_ref().filter(|e| e.inversion.is_some());
        let images = match inversion {
            Some(e) => {
                let seed = seeds[0].2;
                let text = texts.into_iter().next().ok_or_else(|| {
                    Error::Internal("an inversion edit reached the engine without a prompt".into())
                })?;
                self.run_inversion(gpu, s, text, seed, e, maps.as_ref().map(|m| &m.0), on_call)
                    .await?
            }
            None => {
                self.run(
                    gpu,
                    s,
                    texts,
                    noise,
                    edit.as_ref(),
                    maps.as_ref().map(|m| &m.0),
                    on_call,
                )
                .await?
            }
        };
        let word_maps = match maps {
            Some((maps, ids, h, w)) if !images.is_empty() => {
                let values = gpu.read(&maps.acc).await?;
                Some(WordMaps::new(&self.tokenizer, ids, values, h, w))
            }
            _ => None,
        };
        Ok(Outcome {
            images,
            word_maps,
            model: self.name.clone(),
            settings: *s,
            prompts: seeds,
            mode: plan.mode(),
            strength: plan.strength,
        })
    }

    /// The denoising loop and the decode, for `texts` = (prompt ids, negative ids) per
    /// image and the noise they draw.
    #[allow(clippy::too_many_arguments)] // each is one concern of a generation; private
    async fn run(
        &self,
        gpu: &Gpu,
        req: &Settings,
        texts: Vec<(Vec<u32>, Vec<u32>)>,
        mut noise: Noise,
        edit: Option<&Edit<'_>>,
        maps: Option<&AttentionMaps>,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        let f = self.vae_config.scale_factor();
        let vae = lock(&self.vae).clone();
        let unet = lock(&self.unet).clone().ok_or_else(|| {
            Error::Internal(
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
                let moments = encode_moments(&vae, gpu, e.rgb, req.height, req.width).await?;
                let eps = noise.randn_per_image(n, plane);
                let image_latents =
                    sample_latents(&moments, &eps, plane, lc, self.vae_config.scaling_factor);
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
            if report(on_call, i + 1 - start, calls, &latents[..plane], h, w) == Control::Cancel {
                return Ok(vec![]);
            }
        }

        // 4. The UNet's activations (and, in the lean plan, its weights) leave the GPU
        //    before the decode's large maps arrive.
        drop(context);
        self.release_unet(gpu, unet);

        // 5. decode each image
        self.decode(gpu, &vae, &latents, n, req).await
    }

    /// After the last UNet call: `unet` (this generation's handle) dropped, the weights
    /// released in the lean plan, the pool trimmed, so that the decode's large maps never
    /// share the GPU with them.
    fn release_unet(&self, gpu: &Gpu, unet: std::sync::Arc<UNet2DConditionModel>) {
        drop(unet);
        if self.memory == MemoryPlan::Lean {
            lock(&self.unet).take();
        }
        gpu.trim();
    }

    /// RadEdit's edit of one image (docs/WORKBENCH.md, "RadEdit's edit"): the image's
    /// latents (the VAE posterior's mean times the scaling factor), its edit-friendly
    /// DDPM inversion on DDIM's schedule (η = 1) with the inversion prompt for the
    /// `n − skip` levels the edit uses, then the sampler from `x_{n−skip}` with the
    /// inversion's noise maps: guidance `w·m_edit·(ε_c − ε_u)` (the prompt acts inside
    /// the edit mask), and the keep region set back to the inverted level after every
    /// step (to the image's own latents after the last).
    #[allow(clippy::too_many_arguments)] // each is one concern of a generation; private
    async fn run_inversion(
        &self,
        gpu: &Gpu,
        req: &Settings,
        (cond, uncond): (Vec<u32>, Vec<u32>),
        seed: u64,
        edit: &crate::generation::EditRequest,
        maps: Option<&AttentionMaps>,
        on_call: &mut dyn FnMut(Progress) -> Control,
    ) -> Result<Vec<GeneratedImage>> {
        use crate::generation::{inversion_skip, mask_on_grid};
        use crate::inversion::{Trajectory, reverse_step};
        const ETA: f32 = 1.0;
        let (Some(inv), Some(edit_mask)) = (&edit.inversion, &edit.mask) else {
            return Err(Error::Internal(
                "an inversion edit reached the engine without its edit mask".into(),
            ));
        };
        let f = self.vae_config.scale_factor();
        let vae = lock(&self.vae).clone();
        let unet = lock(&self.unet).clone().ok_or_else(|| {
            Error::Internal(
                "the UNet's weights were released after the last generation; reload them first (Pipeline::ensure_unet)".into(),
            )
        })?;
        let (h, w) = (req.height / f, req.width / f);
        let lc = self.unet_config.in_channels;
        let plane = lc * h * w;
        let n = req.steps;
        let skip = inversion_skip(n, inv.skip);
        let levels = n - skip;
        let sched = schedulers::Ddim::new(&self.scheduler_config, n)?;
        let timesteps = schedulers::Scheduler::timesteps(&sched).to_vec();
        let alphas = sched.alphas().to_vec();

        // the masks on the latent grid, one value per cell, every channel
        let edit_grid = mask_on_grid(edit_mask, req.width, req.height, f);
        let keep_grid: Vec<bool> = match &inv.keep {
            Some(k) => mask_on_grid(k, req.width, req.height, f),
            None => edit_grid.iter().map(|&e| !e).collect(),
        };

        // 1. contexts: [uncond] (or [uncond, inversion prompt]) for the inversion,
        //    [uncond, prompt] for the edit
        let inv_ids = self.tokenizer.encode(&inv.invert_prompt)?.ids;
        let inv_guided = !inv.invert_prompt.is_empty();
        let inv_context = if inv_guided {
            self.text_encoder.forward(gpu, &[uncond.clone(), inv_ids])?
        } else {
            self.text_encoder
                .forward(gpu, std::slice::from_ref(&uncond))?
        };
        let context = self.text_encoder.forward(gpu, &[uncond, cond])?;
        gpu.trim();

        // 2. the image's latents and its inverted levels
        let moments = encode_moments(&vae, gpu, &edit.rgb, req.height, req.width).await?;
        let x0: Vec<f32> = moments[..plane]
            .iter()
            .map(|v| v * self.vae_config.scaling_factor)
            .collect();
        let mut generator = TorchGenerator::new(seed);
        let mut tr = Trajectory::sample(&x0, &alphas, levels, &mut generator);
        let calls = 2 * levels;
        let mut done = 0;
        let call_unet =
            |x: &[f32], t: f32, ctx: &crate::gpu::Tensor, batch: usize, mapped: bool| {
                let mut nchw = Vec::with_capacity(batch * plane);
                for _ in 0..batch {
                    nchw.extend_from_slice(x);
                }
                let x = gpu.upload(&nchw_to_nhwc(&nchw, batch, lc, h, w), &[batch, h, w, lc])?;
                match maps {
                    Some(m) if mapped => unet.forward_mapped(gpu, &x, t, ctx, m),
                    _ => unet.forward(gpu, &x, t, ctx),
                }
            };
        let guide = |eps: Vec<f32>, g: f32, mask: Option<&[bool]>| -> Vec<f32> {
            let (u, c) = eps.split_at(plane);
            u.iter()
                .zip(c)
                .enumerate()
                .map(|(k, (&u, &c))| match mask {
                    Some(m) if !m[k % (h * w)] => u,
                    _ => u + g * (c - u),
                })
                .collect()
        };
        for i in (0..levels).rev() {
            let k = n - 1 - i;
            let batch = if inv_guided { 2 } else { 1 };
            let eps = call_unet(&tr.xts[i + 1], timesteps[k], &inv_context, batch, false)?;
            let eps = nhwc_to_nchw(&gpu.read(&eps).await?, batch, lc, h, w);
            let eps = if inv_guided {
                guide(eps, req.guidance, None)
            } else {
                eps
            };
            tr.invert_step(i, &eps, alphas[k], ETA);
            done += 1;
            if report(on_call, done, calls, &tr.xts[i], h, w) == Control::Cancel {
                return Ok(vec![]);
            }
        }
        drop(inv_context);

        // 3. the edit: the sampler from x_{n-skip} with the inversion's noise maps
        let mut x = tr.xts[levels].clone();
        for j in 0..levels {
            let k = skip + j;
            let i = levels - 1 - j;
            let eps = call_unet(&x, timesteps[k], &context, 2, true)?;
            let eps = nhwc_to_nchw(&gpu.read(&eps).await?, 2, lc, h, w);
            let eps = guide(eps, req.guidance, Some(&edit_grid));
            x = reverse_step(&x, &eps, alphas[k], ETA, &tr.zs[i]);
            let target = &tr.xts[i];
            for (k, v) in x.iter_mut().enumerate() {
                if keep_grid[k % (h * w)] {
                    *v = target[k];
                }
            }
            done += 1;
            if report(on_call, done, calls, &x, h, w) == Control::Cancel {
                return Ok(vec![]);
            }
        }
        drop(context);
        self.release_unet(gpu, unet);
        self.decode(gpu, &vae, &x, 1, req).await
    }

    /// `latents / scaling_factor` through the VAE's decoder, one image at a time, and
    /// `(x / 2 + 0.5).clamp(0, 1)`.
    async fn decode(
        &self,
        gpu: &Gpu,
        vae: &AutoencoderKL,
        latents: &[f32],
        n: usize,
        req: &Settings,
    ) -> Result<Vec<GeneratedImage>> {
        let f = self.vae_config.scale_factor();
        let (h, w) = (req.height / f, req.width / f);
        let lc = self.unet_config.in_channels;
        let plane = lc * h * w;
        let scale = 1.0 / self.vae_config.scaling_factor;
        let mut images = Vec::with_capacity(n);
        for k in 0..n {
            let lat = &latents[k * plane..(k + 1) * plane];
            let z: Vec<f32> = nchw_to_nhwc(lat, 1, lc, h, w)
                .iter()
                .map(|v| v * scale)
                .collect();
            let z = gpu.upload(&z, &[1, h, w, lc])?;
            let img = gpu.read(&vae.decode(gpu, &z)).await?;
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

/// The VAE's latent distribution of an RGB image in [0, 1] (`[h, w, 3]`): moments
/// NCHW `[2 * latent, h/8, w/8]`, mean then log-variance.
async fn encode_moments(
    vae: &AutoencoderKL,
    gpu: &Gpu,
    rgb: &[f32],
    height: usize,
    width: usize,
) -> Result<Vec<f32>> {
    let x: Vec<f32> = rgb.iter().map(|&v| 2.0 * v - 1.0).collect();
    let x = gpu.upload(&x, &[1, height, width, 3])?;
    let m = vae.encode(gpu, &x)?;
    let &[_, mh, mw, mc] = m.shape() else {
        return Err(Error::Internal(format!(
            "the VAE's moments are {:?}, not NHWC",
            m.shape()
        )));
    };
    let m = gpu.read(&m).await?;
    gpu.trim();
    Ok(nhwc_to_nchw(&m, 1, mc, mh, mw))
}
