//! `roentgen generate`: a prompt (and optionally an image to edit) to PNG or DICOM files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use roentgen_web::generation::{EditRequest, Inversion, Prompts, RADEDIT_SKIP, Request, Sampling};
use roentgen_web::gpu::Gpu;
use roentgen_web::image_io::encode_npy_f32;
use roentgen_web::output::write_atomically;
use roentgen_web::pipeline::{Control, Outcome, Pipeline, WordMaps};
use roentgen_web::schedulers::SchedulerKind;

/// The schedulers, by their short names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulerArg {
    /// PNDM (PLMS), RoentGen's
    Pndm,
    /// DDIM, η = 0
    Ddim,
    /// DPM-Solver++ 2M
    #[value(name = "dpm++2m")]
    DpmSolverMultistep,
    /// Euler ancestral
    #[value(name = "euler-a")]
    EulerAncestral,
}

impl From<SchedulerArg> for SchedulerKind {
    fn from(s: SchedulerArg) -> SchedulerKind {
        match s {
            SchedulerArg::Pndm => SchedulerKind::Pndm,
            SchedulerArg::Ddim => SchedulerKind::Ddim,
            SchedulerArg::DpmSolverMultistep => SchedulerKind::DpmSolverMultistep,
            SchedulerArg::EulerAncestral => SchedulerKind::EulerAncestral,
        }
    }
}

/// The settings `generate` and `batch` share. Each one left out comes from the model's
/// recipe (the settings used are printed before the run).
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Denoising steps [default: the model's recipe: 75 for RoentGen v1 and v2; 50 for a
    /// model of no known family]
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale [default: the model's recipe: 4 for RoentGen v1
    /// (SD 1.x), 3 for RoentGen v2 (SD 2.x), 7.5 for a model of no known family]
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f32>,
    /// [default: the model's recipe: pndm for RoentGen v1 and v2; for a model of no
    /// known family the scheduler its scheduler_config.json names]
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerArg>,
    /// [default: 512, or an init image's width]
    #[arg(long, allow_negative_numbers = true)]
    pub width: Option<usize>,
    /// [default: 512, or an init image's height]
    #[arg(long, allow_negative_numbers = true)]
    pub height: Option<usize>,
}

impl SamplingArgs {
    pub fn sampling(&self) -> Sampling {
        Sampling {
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler.map(Into::into),
            width: self.width,
            height: self.height,
        }
    }
}

/// Which text encoder folder a checkpoint with both is loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TextEncoderArg {
    /// diffusers' choice
    #[value(name = "text_encoder")]
    Plain,
    /// saved by RoentGen v2's training code; its own tokenizer too, where it has one
    #[value(name = "text_encoder_and_tokenizer")]
    Combined,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The checkpoint: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a Hugging Face Hub repo ORG/NAME[@REVISION], a known model (`roentgen models`) or a recipe .json; an existing folder wins.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Seed of the torch-compatible generator (same seed, same image as diffusers).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Images from the one seed (out.png, out-1.png, ...).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    count: usize,
    /// Output: a PNG (grayscale unless --rgb), or with `.dcm` a DICOM Secondary Capture
    /// marked synthetic (8-bit MONOCHROME2, the PNG's pixels).
    #[arg(long, default_value = "out.png")]
    output: PathBuf,
    /// Write RGB as the VAE decodes it instead of grayscale.
    #[arg(long)]
    rgb: bool,
    /// Also write the final latents (before the VAE) as a float32 .npy, NCHW.
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// Prefer `*.fp16.*` weight files (half the GPU memory; f32 arithmetic).
    #[arg(long)]
    f16: bool,
    /// Which text encoder folder to load where a checkpoint has both.
    #[arg(long, value_enum, default_value = "text_encoder")]
    text_encoder: TextEncoderArg,
    /// Image-to-image (SDEdit): start from this PNG, JPEG or DICOM file instead of
    /// noise. Its size is the output size (sides multiples of 8).
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// Inpainting (needs --init-image): white repaints, black keeps; the mask's size
    /// must be the init image's.
    #[arg(long, requires = "init_image")]
    mask: Option<PathBuf>,
    /// How much of the schedule an edit runs, in (0, 1]: 0.6 runs 60 % of the steps
    /// and keeps the layout. Default: 0.8 for image-to-image and 1.0 for inpainting
    /// (diffusers' defaults).
    #[arg(long, allow_negative_numbers = true, requires = "init_image")]
    strength: Option<f32>,
    /// RadEdit's edit (needs --init-image): white is where the prompt may change the
    /// image. The image is inverted (edit-friendly DDPM inversion on DDIM's schedule)
    /// and regenerated with the prompt; see docs/WORKBENCH.md.
    #[arg(long, requires = "init_image", conflicts_with_all = ["mask", "strength"])]
    edit_mask: Option<PathBuf>,
    /// With --edit-mask: white is kept exactly as the input. Default: everything the
    /// edit mask leaves out.
    #[arg(long, requires = "edit_mask")]
    keep_mask: Option<PathBuf>,
    /// With --edit-mask: the share of the steps not run again, in [0, 1) (RadEdit:
    /// 0.3). Lower changes more.
    #[arg(long, allow_negative_numbers = true, requires = "edit_mask")]
    skip: Option<f32>,
    /// With --edit-mask: the prompt the image is inverted with (default "").
    #[arg(long, requires = "edit_mask")]
    invert_prompt: Option<String>,
    /// Write per-word attention maps into this folder: tokens.npy (float32
    /// [tokens, h/8, w/8]), words.json (word -> token indices) and one PNG overlay
    /// per word (needs --count 1).
    #[arg(long)]
    attention_maps: Option<PathBuf>,
}

/// The init image and mask of an edit, read before the model loads.
fn read_edit(a: &GenerateArgs) -> Result<Option<EditRequest>> {
    let Some(path) = &a.init_image else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let name = |p: &PathBuf| p.display().to_string();
    let image = roentgen_web::image_in::decode_image(&name(path), &read(path)?)?;
    for note in &image.notes {
        eprintln!("note: {}: {note}", path.display());
    }
    let mask_of = |m: &PathBuf, what: &str| -> Result<Vec<bool>> {
        let mask = roentgen_web::image_in::decode_mask(&name(m), &read(m)?)?;
        if (mask.width, mask.height) != (image.width, image.height) {
            bail!(
                "the {what} {} is {}x{} but the init image is {}x{}; draw the {what} at the image's size",
                m.display(),
                mask.width,
                mask.height,
                image.width,
                image.height
            );
        }
        Ok(mask.repaint)
    };
    let mask = match (&a.mask, &a.edit_mask) {
        (Some(m), _) => Some(mask_of(m, "mask")?),
        (None, Some(m)) => Some(mask_of(m, "edit mask")?),
        (None, None) => None,
    };
    let inversion = match &a.edit_mask {
        None => None,
        Some(_) => Some(Inversion {
            keep: a
                .keep_mask
                .as_ref()
                .map(|k| mask_of(k, "keep mask"))
                .transpose()?,
            skip: a.skip.unwrap_or(RADEDIT_SKIP),
            invert_prompt: a.invert_prompt.clone().unwrap_or_default(),
        }),
    };
    Ok(Some(EditRequest {
        width: image.width,
        height: image.height,
        rgb: image.rgb,
        mask,
        strength: a.strength,
        inversion,
    }))
}

/// `out.png`, `out-1.png`, ... for the k-th image.
fn numbered(path: &Path, k: usize) -> PathBuf {
    if k == 0 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{k}{ext}"))
}

pub async fn generate(a: GenerateArgs) -> Result<()> {
    let dicom = a
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if dicom && a.rgb {
        bail!("--rgb: a DICOM output is grayscale (MONOCHROME2); drop --rgb or write a .png");
    }
    let req = Request {
        prompts: Prompts::One {
            prompt: a.prompt.clone(),
            negative_prompt: a.negative_prompt.clone(),
            seed: a.seed,
            count: a.count,
        },
        sampling: a.sampling.sampling(),
        edit: read_edit(&a)?,
        attention_maps: a.attention_maps.is_some(),
    };
    // Everything that can be said without the model is said before it loads.
    req.check()?;
    // the maps' folder is checked before the long run, not after it
    if let Some(dir) = &a.attention_maps {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the attention-map folder {}", dir.display()))?;
    }
    let gpu = Gpu::new().await?;
    eprintln!("adapter: {} ({})", gpu.info.adapter_name, gpu.info.backend);
    let mut ck = crate::open_with(&a.model, a.f16, a.text_encoder == TextEncoderArg::Combined)?;
    ck.options.text_encoder_and_tokenizer = a.text_encoder == TextEncoderArg::Combined;
    if let Some(note) = ck.text_encoder_note() {
        eprintln!("note: {note}");
    }
    let t0 = Instant::now();
    let pipe = Pipeline::load(&gpu, &ck, &mut |part| {
        eprintln!("loading {part} ({:.1?})", t0.elapsed())
    })
    .await
    .with_context(|| format!("loading the model {}", a.model.display()))?
    .named_or(&a.model.display().to_string());
    let plan = pipe.plan(req)?;
    eprintln!(
        "model ready in {:.1?}, {} MiB on the GPU; settings: {} ({})",
        t0.elapsed(),
        gpu.memory().weights >> 20,
        plan.settings.describe(),
        plan.recipe.describe()
    );
    let enc = pipe.tokenizer.encode(&a.prompt)?;
    if let Some(d) = &enc.dropped {
        eprintln!(
            "warning: the prompt is longer than {} tokens; the text encoder never sees: {d}",
            pipe.tokenizer.max_length()
        );
    }
    let mut bar: Option<crate::progress::Progress> = None;
    let outcome = pipe
        .generate(&gpu, &plan, &mut |p| {
            let b = bar.get_or_insert_with(|| {
                crate::progress::Progress::new("steps", p.calls as u64, 0, false)
            });
            b.set(p.call as u64, "", false);
            Control::Continue
        })
        .await?;
    if let Some(b) = &bar {
        b.finish();
    }
    for k in 0..outcome.images.len() {
        let bytes = if dicom {
            let (bits, now) = crate::dicom_entropy();
            outcome.dicom(k, bits, now)?
        } else {
            outcome.png(k, a.rgb)?
        };
        let out = numbered(&a.output, k);
        // whole or not at all: never a half PNG, never a good one replaced by one
        write_atomically(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {} (synthetic; the settings are in its metadata)",
            out.display()
        );
        if let Some(p) = &a.save_latents {
            let p = numbered(p, k);
            let img = &outcome.images[k];
            let [c, h, w] = img.latent_shape;
            write_atomically(&p, &encode_npy_f32(&img.latents, &[1, c, h, w]))
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        if let (Some(dir), Some(m)) = (&a.attention_maps, &outcome.word_maps) {
            write_maps(dir, m, &outcome, k)?;
        }
    }
    Ok(())
}

/// `tokens.npy`, `words.json` and `NN-word.png` per word into `dir`.
fn write_maps(dir: &Path, m: &WordMaps, outcome: &Outcome, k: usize) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        write_atomically(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    write("tokens.npy", &m.tokens_npy())?;
    write("words.json", m.words_json().as_bytes())?;
    let img = &outcome.images[k];
    let gray = img.gray8();
    let meta = outcome.metadata(k);
    for (i, (word, _)) in m.words.iter().enumerate() {
        // a file name from the word: letters and digits, the rest as '_'
        let safe: String = word
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect();
        let png = m.overlay_png(i, &gray, img.width, img.height, &meta)?;
        write(&format!("{i:02}-{safe}.png"), &png)?;
    }
    eprintln!(
        "wrote attention maps of {} words ({} tokens) into {}",
        m.words.len(),
        m.token_ids.len(),
        dir.display()
    );
    Ok(())
}
