//! The front door of a generation: what a user asks for ([`Request`]), every limit on
//! it (named constants), the model family and its published recipe ([`Family`],
//! [`Recipe`]), and the check that turns a request into a [`Plan`] against a loaded
//! model. The CLI's `generate` and `batch`, the page's protocol and the worker all come
//! through here, so the same bad value gets the same sentence everywhere.
//!
//! Two checks, in order:
//! 1. [`Request::check`]: the values on their own (ranges, the edit's strength, an empty
//!    mask), before anything is loaded: a typo is said in milliseconds, not after the
//!    model has loaded.
//! 2. [`Plan::new`]: against the loaded model ([`ModelFacts`]): the family's recipe fills
//!    what the user left out, and sizes meet the VAE's factor.
//!
//! Scheduler *values* (betas, spacing, offsets, prediction type) always come from the
//! folder's `scheduler/scheduler_config.json`; the recipe picks only which scheduler
//! runs, how many steps and the guidance, and the user's options override it.

use crate::error::{Error, Result};
use crate::models::config::TextConfig;
use crate::schedulers::{SchedulerConfig, SchedulerKind};

/// The most steps accepted (the schedulers' 1000 training timesteps).
pub const MAX_STEPS: usize = 1000;
/// The guidance scale accepted: `0..=MAX_GUIDANCE` (1 or less turns guidance off).
pub const MAX_GUIDANCE: f32 = 100.0;
/// The smallest image side: one 8x8 latent block (the VAEs here scale by 8).
pub const MIN_SIZE: usize = 8;
/// The largest image side accepted (RoentGen is trained at 512).
pub const MAX_SIZE: usize = 2048;
/// Image sides are multiples of this (every Stable Diffusion VAE scales by 8; a VAE
/// with another factor is checked again in [`Plan::new`]).
pub const SIZE_STEP: usize = 8;
/// The most images from one request (one prompt with a count, or one batch).
pub const MAX_COUNT: usize = 64;

/// RoentGen's published inference settings (MISSION.md; its authors' inference code):
/// PNDM, 75 steps, guidance 4 (v1) or 3 (v2), 512x512, unconditional prompt "".
pub const ROENTGEN_STEPS: usize = 75;
pub const ROENTGEN_GUIDANCE: f32 = 4.0;
pub const ROENTGEN_V2_GUIDANCE: f32 = 3.0;
pub const ROENTGEN_SIZE: usize = 512;

/// RadEdit's settings (microsoft/radedit's card and CheXGenBench's runs): DDIM from the
/// folder's `scheduler_config.json` (linear betas, trailing spacing), 100 steps, guidance
/// 7.5, 512x512, unconditional prompt "", prompts of 128 WordPiece tokens.
pub const RADEDIT_STEPS: usize = 100;
pub const RADEDIT_GUIDANCE: f32 = 7.5;
pub const RADEDIT_SIZE: usize = 512;
pub const RADEDIT_CONTEXT: usize = 128;

/// diffusers' `StableDiffusionPipeline.__call__` defaults, for a model of no known
/// family: `num_inference_steps=50`, `guidance_scale=7.5`.
pub const DIFFUSERS_STEPS: usize = 50;
pub const DIFFUSERS_GUIDANCE: f32 = 7.5;

/// A model family: the architecture and the recipe its authors run it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// RoentGen v1: Stable Diffusion 1.x (CLIP ViT-L/14 text tower, `quick_gelu`).
    Sd1,
    /// RoentGen v2: Stable Diffusion 2.x (OpenCLIP ViT-H text tower, `gelu`; 2.1-768 is
    /// v-prediction).
    Sd2,
    /// RadEdit (Microsoft, ECCV 2024): an SD-1.x-sized UNet conditioned on CXR-BERT
    /// (BioViL-T), SDXL's VAE, DDIM.
    RadEdit,
}

impl Family {
    /// The family told from the configs: the text encoder (a BERT is RadEdit's; a CLIP
    /// tower's activation tells SD 1.x from 2.x) and the scheduler's prediction type.
    /// `None`: no family we know (a recipe is then taken from the folder, as diffusers
    /// does).
    pub fn of(text: &TextConfig, v_prediction: bool) -> Option<Family> {
        let TextConfig::Clip(clip) = text else {
            return Some(Family::RadEdit);
        };
        match clip.hidden_act.as_str() {
            _ if v_prediction => Some(Family::Sd2),
            "gelu" => Some(Family::Sd2),
            "quick_gelu" => Some(Family::Sd1),
            _ => None,
        }
    }

    /// The prompt length the family was trained with, where it overrides the tokenizer
    /// config's: RadEdit's assembly passes `model_max_length=128` to BioViL-T's tokenizer.
    pub fn context_length(self) -> Option<usize> {
        match self {
            Family::RadEdit => Some(RADEDIT_CONTEXT),
            Family::Sd1 | Family::Sd2 => None,
        }
    }

    /// The line a model list shows under the model's name: whose terms it comes under.
    pub fn license(self) -> &'static str {
        match self {
            Family::Sd1 | Family::Sd2 => {
                "PhysioNet credentialed access (MIMIC-CXR); research use, not for clinical use"
            }
            Family::RadEdit => {
                "Microsoft research license (click-through on the Hub); research use, not for clinical use"
            }
        }
    }

    /// This family's recipe ([`Recipe::of`]).
    pub fn recipe(self) -> Recipe {
        Recipe::of(
            Some(self),
            &SchedulerConfig::stable_diffusion_v1(),
            ROENTGEN_SIZE,
        )
    }

    /// The model this family serves, for messages.
    pub fn model(self) -> &'static str {
        match self {
            Family::Sd1 => "RoentGen v1 (SD 1.x)",
            Family::Sd2 => "RoentGen v2 (SD 2.x)",
            Family::RadEdit => "RadEdit (CXR-BERT)",
        }
    }
}

/// The settings a model is run with when the user gives none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub family: Option<Family>,
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance: f32,
    pub width: usize,
    pub height: usize,
}

impl Recipe {
    /// A known family's recipe (RoentGen v1: PNDM 75 steps guidance 4; v2: guidance 3,
    /// as both authors' inference code runs them), or for a model of no known family
    /// diffusers' behaviour: the scheduler class its `scheduler_config.json` names (PNDM
    /// where that class is not one of ours), 50 steps, guidance 7.5, and the UNet's
    /// `sample_size` times the VAE's factor.
    pub fn of(family: Option<Family>, scheduler: &SchedulerConfig, default_side: usize) -> Recipe {
        match family {
            Some(f) => {
                let (scheduler, steps, guidance, side) = match f {
                    Family::Sd1 => (
                        SchedulerKind::Pndm,
                        ROENTGEN_STEPS,
                        ROENTGEN_GUIDANCE,
                        ROENTGEN_SIZE,
                    ),
                    Family::Sd2 => (
                        SchedulerKind::Pndm,
                        ROENTGEN_STEPS,
                        ROENTGEN_V2_GUIDANCE,
                        ROENTGEN_SIZE,
                    ),
                    Family::RadEdit => (
                        SchedulerKind::Ddim,
                        RADEDIT_STEPS,
                        RADEDIT_GUIDANCE,
                        RADEDIT_SIZE,
                    ),
                };
                Recipe {
                    family,
                    scheduler,
                    steps,
                    guidance,
                    width: side,
                    height: side,
                }
            }
            None => Recipe {
                family,
                scheduler: scheduler
                    .class_name
                    .as_deref()
                    .and_then(SchedulerKind::from_class_name)
                    .unwrap_or(SchedulerKind::Pndm),
                steps: DIFFUSERS_STEPS,
                guidance: DIFFUSERS_GUIDANCE,
                width: default_side,
                height: default_side,
            },
        }
    }

    /// "RoentGen v2 (SD 2.x): pndm, 75 steps, guidance 3, 512x512".
    pub fn describe(&self) -> String {
        let who = match self.family {
            Some(f) => format!("{} recipe", f.model()),
            None => "no known family: the folder's scheduler and diffusers' defaults".into(),
        };
        format!(
            "{who}: {}, {} steps, guidance {}, {}x{}",
            self.scheduler.name(),
            self.steps,
            self.guidance,
            self.width,
            self.height
        )
    }
}

/// The sampling settings a user may give; what is left `None` comes from the recipe.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub scheduler: Option<SchedulerKind>,
    pub width: Option<usize>,
    pub height: Option<usize>,
}

/// One image of a batch: its own prompt, negative prompt and seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchItem {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
}

/// Whose prompts and seeds.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompts {
    /// `count` images from one prompt and one seed (diffusers' `num_images_per_prompt`).
    One {
        prompt: String,
        negative_prompt: String,
        seed: u64,
        count: usize,
    },
    /// One image per item, each with its own generator, the UNet calls batched together.
    Batch(Vec<BatchItem>),
}

impl Prompts {
    /// Images the request makes.
    pub fn count(&self) -> usize {
        match self {
            Prompts::One { count, .. } => *count,
            Prompts::Batch(items) => items.len(),
        }
    }
}

/// An image to edit: image-to-image (SDEdit, diffusers' `StableDiffusionImg2ImgPipeline`)
/// or, with a mask, inpainting with the ordinary 4-channel UNet (diffusers'
/// `StableDiffusionInpaintPipeline` for a 4-channel UNet). Its size is the output size.
#[derive(Clone, Debug, PartialEq)]
pub struct EditRequest {
    pub width: usize,
    pub height: usize,
    /// RGB in [0, 1], row-major `[height, width, 3]` (diffusers' `VaeImageProcessor`
    /// output before `2x - 1`).
    pub rgb: Vec<f32>,
    /// `[height, width]`, true = repaint (the binarised mask); `None`: image-to-image.
    pub mask: Option<Vec<bool>>,
    /// `None`: diffusers' default (0.8 for image-to-image, 1.0 for inpainting).
    pub strength: Option<f32>,
    /// RadEdit's edit instead of image-to-image or inpainting: `mask` is then the edit
    /// mask (required) and the image is inverted rather than noised.
    pub inversion: Option<Inversion>,
}

/// RadEdit's edit (docs/WORKBENCH.md, "RadEdit's edit"): edit-friendly DDPM inversion
/// (η = 1) of the image with the inversion prompt, then a guided reverse process from
/// the inverted latents `skip` of the way down, with the inversion's own noise maps; the
/// prompt acts inside the edit mask, and the keep region is pasted back from the
/// inverted trajectory after every step (the input's own latents after the last).
#[derive(Clone, Debug, PartialEq)]
pub struct Inversion {
    /// `[height, width]`, true = keep as the input; `None`: the edit mask's complement.
    pub keep: Option<Vec<bool>>,
    /// The share of the inverted steps not run again, in `[0, 1)`: 0.3 starts the
    /// reverse process at step `int(0.3 · steps)`.
    pub skip: f32,
    /// The prompt the image is inverted with ("": the unconditional prediction).
    pub invert_prompt: String,
}

/// RadEdit's defaults: skip ratio 0.3, inversion prompt "".
pub const RADEDIT_SKIP: f32 = 0.3;

impl Default for Inversion {
    fn default() -> Self {
        Inversion {
            keep: None,
            skip: RADEDIT_SKIP,
            invert_prompt: String::new(),
        }
    }
}

/// The skipped steps of an inversion edit: `int(steps · skip)` (RadEdit's pipeline).
pub fn inversion_skip(steps: usize, skip: f32) -> usize {
    ((steps as f64 * skip as f64).floor() as usize).min(steps)
}

/// A mask on the latent grid, as F.interpolate(mode="nearest") puts it: cell (i, j)
/// takes pixel (f·i, f·j).
pub fn mask_on_grid(mask: &[bool], width: usize, height: usize, f: usize) -> Vec<bool> {
    let (h, w) = (height / f, width / f);
    (0..h)
        .flat_map(|i| (0..w).map(move |j| (i, j)))
        .map(|(i, j)| mask[(f * i) * width + f * j])
        .collect()
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub prompts: Prompts,
    pub sampling: Sampling,
    pub edit: Option<EditRequest>,
    /// Per-word attention maps (one image at a time).
    pub attention_maps: bool,
}

/// A request with every setting given (tests, benchmarks, the batch runner's shared
/// settings): each value is used as it is, the recipe fills nothing.
#[derive(Clone, Debug, PartialEq)]
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
    /// RoentGen v1's recipe.
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

impl GenerateRequest {
    /// Its sampling settings, all given.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            steps: Some(self.steps),
            guidance: Some(self.guidance),
            scheduler: Some(self.scheduler),
            width: Some(self.width),
            height: Some(self.height),
        }
    }
}

impl From<GenerateRequest> for Request {
    fn from(r: GenerateRequest) -> Request {
        Request {
            sampling: r.sampling(),
            prompts: Prompts::One {
                prompt: r.prompt,
                negative_prompt: r.negative_prompt,
                seed: r.seed,
                count: r.count,
            },
            edit: None,
            attention_maps: false,
        }
    }
}

impl Request {
    /// `count` images from one prompt and seed, every setting from the model's recipe.
    pub fn text(prompt: &str, seed: u64) -> Request {
        Request {
            prompts: Prompts::One {
                prompt: prompt.into(),
                negative_prompt: String::new(),
                seed,
                count: 1,
            },
            sampling: Sampling::default(),
            edit: None,
            attention_maps: false,
        }
    }

    /// The values on their own, before any model is loaded: steps, guidance, sides,
    /// count, the edit's strength and mask. [`Plan::new`] calls it again.
    pub fn check(&self) -> Result<()> {
        let s = &self.sampling;
        if let Some(steps) = s.steps {
            check_steps(steps)?;
        }
        if let Some(g) = s.guidance {
            check_guidance(g)?;
        }
        for (name, side) in [("width", s.width), ("height", s.height)] {
            if let Some(v) = side {
                check_side(name, v, SIZE_STEP)?;
            }
        }
        check_count(self.prompts.count())?;
        if let Some(e) = &self.edit {
            if e.inversion.is_some() {
                check_inversion(e, self.prompts.count())?;
            } else {
                edit_strength(e.strength, e.mask.is_some())?;
            }
            for (name, given, got) in [("width", s.width, e.width), ("height", s.height, e.height)]
            {
                if let Some(v) = given
                    && v != got
                {
                    return Err(Error::Input(format!(
                        "{name} {v}: the init image is {}x{}, and an edit keeps its size; leave the {name} out or resize the image",
                        e.width, e.height
                    )));
                }
            }
            if e.width % SIZE_STEP != 0 || e.height % SIZE_STEP != 0 {
                return Err(Error::Input(format!(
                    "the init image is {}x{}; its sides must be multiples of {SIZE_STEP} for the VAE: crop or resize it to {}x{}",
                    e.width,
                    e.height,
                    e.width / SIZE_STEP * SIZE_STEP,
                    e.height / SIZE_STEP * SIZE_STEP
                )));
            }
            check_side("the init image's width", e.width, SIZE_STEP)?;
            check_side("the init image's height", e.height, SIZE_STEP)?;
            let px = e.width * e.height;
            if e.rgb.len() != px * 3 {
                return Err(Error::Input(format!(
                    "the init image has {} values, but a {}x{} RGB image has {}",
                    e.rgb.len(),
                    e.width,
                    e.height,
                    px * 3
                )));
            }
            if let Some(m) = &e.mask {
                if m.len() != px {
                    return Err(Error::Input(format!(
                        "the mask has {} pixels, but the init image is {}x{} ({px} pixels); draw the mask at the image's size",
                        m.len(),
                        e.width,
                        e.height
                    )));
                }
                check_mask(m)?;
            }
        }
        if self.attention_maps && self.prompts.count() != 1 {
            return Err(Error::Input(format!(
                "attention maps are made for one image at a time; ask for 1 image, not {}",
                self.prompts.count()
            )));
        }
        Ok(())
    }
}

/// Steps in `1..=MAX_STEPS`, or a sentence.
pub fn check_steps(steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::Input(format!(
            "steps must be at least 1 (RoentGen uses {ROENTGEN_STEPS}), not 0"
        )));
    }
    if steps > MAX_STEPS {
        return Err(Error::Input(format!(
            "steps must be at most {MAX_STEPS} (the schedulers' training timesteps; RoentGen uses {ROENTGEN_STEPS}), not {steps}"
        )));
    }
    Ok(())
}

/// Guidance in `0..=MAX_GUIDANCE`, or a sentence (a NaN guidance used to generate a
/// meaningless image).
pub fn check_guidance(guidance: f32) -> Result<()> {
    if !guidance.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&guidance) {
        return Err(Error::Input(format!(
            "guidance must be a number from 0 to {MAX_GUIDANCE} (RoentGen v1 uses 4, v2 3), not {guidance}"
        )));
    }
    Ok(())
}

/// An image side: a multiple of `step` from [`MIN_SIZE`] to [`MAX_SIZE`], or a sentence
/// naming `name` ("width", "height").
pub fn check_side(name: &str, side: usize, step: usize) -> Result<()> {
    if side > MAX_SIZE {
        return Err(Error::Input(format!(
            "{name} must be at most {MAX_SIZE} pixels (RoentGen is trained at {ROENTGEN_SIZE}), not {side}"
        )));
    }
    if side < MIN_SIZE.max(step) || !side.is_multiple_of(step) {
        let near = (side / step * step).max(MIN_SIZE.max(step));
        return Err(Error::Input(format!(
            "{name} must be one of the multiples of {step} from {} to {MAX_SIZE} pixels, not {side} (try {near})",
            MIN_SIZE.max(step)
        )));
    }
    Ok(())
}

/// Images per request in `1..=MAX_COUNT`, or a sentence.
pub fn check_count(count: usize) -> Result<()> {
    if count == 0 {
        return Err(Error::Input(
            "count must be at least 1 (the images to make)".into(),
        ));
    }
    if count > MAX_COUNT {
        return Err(Error::Input(format!(
            "count at most {MAX_COUNT} per request, not {count}: run several requests"
        )));
    }
    Ok(())
}

/// A mask repaints something, or a sentence (the CLI warned and the page refused; both
/// refuse now: an empty mask would return the init image re-encoded).
pub fn check_mask(repaint: &[bool]) -> Result<()> {
    if !repaint.iter().any(|&r| r) {
        return Err(Error::Input(
            "the mask is empty (no white pixels), so nothing would be repainted: paint where the image should change, or leave the mask out for image-to-image".into(),
        ));
    }
    Ok(())
}

/// An inversion edit on its own: an edit mask, a keep mask of the image's size, a skip
/// ratio in [0, 1), one image, no strength.
fn check_inversion(e: &EditRequest, count: usize) -> Result<()> {
    let Some(inv) = &e.inversion else {
        return Ok(());
    };
    let Some(edit) = &e.mask else {
        return Err(Error::Input(
            "an edit needs an edit mask: paint where the prompt may change the image".into(),
        ));
    };
    if !edit.iter().any(|&m| m) {
        return Err(Error::Input(
            "the edit mask is empty (no white pixels), so the prompt could change nothing: paint where the image should change".into(),
        ));
    }
    let px = e.width * e.height;
    if let Some(keep) = &inv.keep {
        if keep.len() != px {
            return Err(Error::Input(format!(
                "the keep mask has {} pixels, but the init image is {}x{} ({px} pixels); draw the keep mask at the image's size",
                keep.len(),
                e.width,
                e.height
            )));
        }
        if keep.iter().all(|&k| k) {
            return Err(Error::Input(
                "the keep mask covers the whole image, so nothing could change: leave out where the edit should happen".into(),
            ));
        }
    }
    if !(inv.skip.is_finite() && (0.0..1.0).contains(&inv.skip)) {
        return Err(Error::Input(format!(
            "the skip ratio must be a number from 0 to below 1 (RadEdit uses {RADEDIT_SKIP}: the first 30 % of the steps are not run again), not {}",
            inv.skip
        )));
    }
    if e.strength.is_some() {
        return Err(Error::Input(
            "an edit with an edit mask takes no strength: how far it goes back is the skip ratio (--skip)".into(),
        ));
    }
    if count != 1 {
        return Err(Error::Input(format!(
            "an edit makes one image (its noise comes from inverting the image), not {count}"
        )));
    }
    Ok(())
}

/// An edit's strength: `given`, or diffusers' default (0.8 for image-to-image, 1.0 for
/// inpainting); a sentence unless it is in (0, 1].
pub fn edit_strength(given: Option<f32>, masked: bool) -> Result<f32> {
    let s = given.unwrap_or(if masked { 1.0 } else { 0.8 });
    if !(s > 0.0 && s <= 1.0) {
        return Err(Error::Input(format!(
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

/// An inversion edit against the settings: DDIM's schedule (the inversion's formulas
/// are DDPM's on it), a step left after the skip, and on the latent grid an edit region
/// that the keep mask does not cover.
fn check_inversion_plan(e: &EditRequest, s: &Settings, f: usize) -> Result<()> {
    let (Some(inv), Some(edit)) = (&e.inversion, &e.mask) else {
        return Ok(());
    };
    if s.scheduler != SchedulerKind::Ddim {
        return Err(Error::Input(format!(
            "an edit with an edit mask inverts the image on DDIM's schedule (edit-friendly DDPM inversion); choose the ddim scheduler or leave it out, not {}",
            s.scheduler.name()
        )));
    }
    if inversion_skip(s.steps, inv.skip) >= s.steps {
        return Err(Error::Input(format!(
            "skip ratio {} with {} steps leaves no step to run; lower the skip ratio or raise the steps",
            inv.skip, s.steps
        )));
    }
    let edit = mask_on_grid(edit, e.width, e.height, f);
    if !edit.iter().any(|&m| m) {
        return Err(Error::Input(format!(
            "the edit mask is too thin: it covers no cell of the {}x{} latent grid (one cell per {f}x{f} pixels); paint a larger region",
            e.width / f,
            e.height / f
        )));
    }
    if let Some(keep) = &inv.keep {
        let keep = mask_on_grid(keep, e.width, e.height, f);
        if edit.iter().zip(&keep).all(|(&ed, &k)| !ed || k) {
            return Err(Error::Input(
                "the keep mask covers the whole edit mask, so nothing could change: keep less, or edit elsewhere".into(),
            ));
        }
    }
    Ok(())
}

/// What a plan needs to know of the loaded model.
#[derive(Clone, Debug)]
pub struct ModelFacts {
    pub family: Option<Family>,
    pub scheduler: SchedulerConfig,
    /// The VAE's downscaling factor (8 for every SD VAE).
    pub vae_factor: usize,
    /// The UNet's `sample_size` times the VAE's factor (diffusers' default side).
    pub default_side: usize,
}

/// The settings that run, every value decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub steps: usize,
    pub guidance: f32,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
}

impl Settings {
    /// "pndm, 75 steps, guidance 3, 512x512".
    pub fn describe(&self) -> String {
        format!(
            "{}, {} steps, guidance {}, {}x{}",
            self.scheduler.name(),
            self.steps,
            self.guidance,
            self.width,
            self.height
        )
    }
}

/// A request checked against a model: what [`crate::pipeline::Pipeline::generate`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub settings: Settings,
    pub prompts: Prompts,
    /// The edit, its strength decided.
    pub edit: Option<EditRequest>,
    pub strength: Option<f32>,
    pub attention_maps: bool,
    /// The recipe the settings started from.
    pub recipe: Recipe,
}

impl Plan {
    /// Checks `req` ([`Request::check`]) and fills what it leaves out from the model's
    /// recipe; the sides must meet the VAE's factor.
    pub fn new(req: Request, model: &ModelFacts) -> Result<Plan> {
        req.check()?;
        let recipe = Recipe::of(model.family, &model.scheduler, model.default_side);
        let s = &req.sampling;
        let (width, height) = match &req.edit {
            Some(e) => (e.width, e.height),
            None => (
                s.width.unwrap_or(recipe.width),
                s.height.unwrap_or(recipe.height),
            ),
        };
        let f = model.vae_factor.max(1);
        check_side("width", width, f.max(SIZE_STEP))?;
        check_side("height", height, f.max(SIZE_STEP))?;
        let settings = Settings {
            steps: s.steps.unwrap_or(recipe.steps),
            guidance: s.guidance.unwrap_or(recipe.guidance),
            // an inversion edit runs on DDIM's schedule whatever the model's recipe
            scheduler: s.scheduler.unwrap_or(
                match req.edit.as_ref().and_then(|e| e.inversion.as_ref()) {
                    Some(_) => SchedulerKind::Ddim,
                    None => recipe.scheduler,
                },
            ),
            width,
            height,
        };
        let strength = match &req.edit {
            Some(e) if e.inversion.is_some() => {
                check_inversion_plan(e, &settings, f)?;
                None
            }
            Some(e) => {
                let strength = edit_strength(e.strength, e.mask.is_some())?;
                if edit_start(settings.steps, strength) == settings.steps {
                    return Err(Error::Input(format!(
                        "strength {strength} with {} steps runs no step (steps x strength < 1); raise the strength or the steps",
                        settings.steps
                    )));
                }
                Some(strength)
            }
            None => None,
        };
        Ok(Plan {
            settings,
            prompts: req.prompts,
            edit: req.edit,
            strength,
            attention_maps: req.attention_maps,
            recipe,
        })
    }

    /// What kind of image this makes, for file names: `roentgen`, `roentgen-img2img`,
    /// `roentgen-inpaint`, `roentgen-edit`.
    pub fn mode(&self) -> &'static str {
        match &self.edit {
            None => "roentgen",
            Some(e) if e.inversion.is_some() => "roentgen-edit",
            Some(e) if e.mask.is_some() => "roentgen-inpaint",
            Some(_) => "roentgen-img2img",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(family: Option<Family>, class: &str) -> ModelFacts {
        ModelFacts {
            family,
            scheduler: SchedulerConfig {
                class_name: Some(class.into()),
                ..SchedulerConfig::stable_diffusion_v1()
            },
            vae_factor: 8,
            default_side: 128,
        }
    }

    #[test]
    fn families_and_recipes() {
        let clip = |act: &str| {
            TextConfig::from_json(
                "c",
                &format!(
                    r#"{{"hidden_act": "{act}", "hidden_size": 32, "num_attention_heads": 4}}"#
                ),
            )
            .unwrap()
        };
        assert_eq!(Family::of(&clip("quick_gelu"), false), Some(Family::Sd1));
        assert_eq!(Family::of(&clip("gelu"), false), Some(Family::Sd2));
        assert_eq!(Family::of(&clip("quick_gelu"), true), Some(Family::Sd2));
        let bert = TextConfig::from_json("c", r#"{"model_type": "bert"}"#).unwrap();
        assert_eq!(Family::of(&bert, false), Some(Family::RadEdit));
        let r = Recipe::of(
            Some(Family::RadEdit),
            &SchedulerConfig::stable_diffusion_v1(),
            64,
        );
        assert_eq!(
            (r.scheduler, r.steps, r.guidance, r.width),
            (SchedulerKind::Ddim, 100, 7.5, 512)
        );
        let sd = SchedulerConfig::stable_diffusion_v1();
        let r = Recipe::of(Some(Family::Sd1), &sd, 64);
        assert_eq!(
            (r.scheduler, r.steps, r.guidance, r.width),
            (SchedulerKind::Pndm, 75, 4.0, 512)
        );
        let r = Recipe::of(Some(Family::Sd2), &sd, 64);
        assert_eq!(
            (r.scheduler, r.steps, r.guidance),
            (SchedulerKind::Pndm, 75, 3.0)
        );
        // no known family: the folder's scheduler class, diffusers' defaults
        let f = facts(None, "DDIMScheduler");
        let r = Recipe::of(None, &f.scheduler, 128);
        assert_eq!(
            (r.scheduler, r.steps, r.guidance, r.width),
            (SchedulerKind::Ddim, 50, 7.5, 128)
        );
        assert!(
            Recipe::of(Some(Family::Sd2), &sd, 64)
                .describe()
                .contains("RoentGen v2")
        );
    }

    #[test]
    fn user_options_override_the_recipe() {
        let mut req = Request::text("x", 1);
        let p = Plan::new(req.clone(), &facts(Some(Family::Sd2), "PNDMScheduler")).unwrap();
        assert_eq!(p.settings.guidance, 3.0);
        req.sampling.guidance = Some(5.0);
        req.sampling.scheduler = Some(SchedulerKind::Ddim);
        let p = Plan::new(req, &facts(Some(Family::Sd2), "PNDMScheduler")).unwrap();
        assert_eq!(
            (p.settings.guidance, p.settings.scheduler),
            (5.0, SchedulerKind::Ddim)
        );
    }

    #[test]
    fn bad_values_refused_with_sentences() {
        let with = |f: &dyn Fn(&mut Request)| {
            let mut r = Request::text("x", 0);
            f(&mut r);
            r.check().unwrap_err().to_string()
        };
        assert!(with(&|r| r.sampling.steps = Some(0)).contains("steps must be"));
        assert!(with(&|r| r.sampling.steps = Some(1001)).contains("at most 1000"));
        assert!(with(&|r| r.sampling.guidance = Some(f32::NAN)).contains("guidance must be"));
        assert!(with(&|r| r.sampling.width = Some(100)).contains("multiples of 8"));
        assert!(with(&|r| r.sampling.height = Some(4096)).contains("at most 2048"));
        let edit = EditRequest {
            width: 8,
            height: 8,
            rgb: vec![0.5; 192],
            mask: Some(vec![false; 64]),
            strength: None,
            inversion: None,
        };
        let msg = with(&|r| r.edit = Some(edit.clone()));
        assert!(msg.contains("mask is empty"), "{msg}");
        let msg = with(&|r| {
            r.edit = Some(EditRequest {
                mask: None,
                strength: Some(1.5),
                ..edit.clone()
            })
        });
        assert!(msg.contains("greater than 0 and at most 1"), "{msg}");
        // strength that runs no step, told once the steps are known
        let mut r = Request::text("x", 0);
        r.sampling.steps = Some(10);
        r.edit = Some(EditRequest {
            mask: None,
            strength: Some(0.05),
            ..edit
        });
        let msg = Plan::new(r, &facts(Some(Family::Sd1), "PNDMScheduler"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("runs no step"), "{msg}");
    }
}
