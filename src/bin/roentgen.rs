//! `roentgen`: the native command line. Only this edge uses `anyhow` and blocks on the
//! async engine (`pollster`); the library stays async for the browser.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    native::main()
}

#[cfg(not(target_arch = "wasm32"))]
#[path = "roentgen/batch.rs"]
mod batch;
#[cfg(not(target_arch = "wasm32"))]
#[path = "roentgen/progress.rs"]
mod progress;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use clap::{Parser, Subcommand};
    use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
    use roentgen_web::gpu::{Gpu, Tensor, WeightFormat};
    use roentgen_web::image_io::{ImageMetadata, encode_npy_f32, encode_png};
    use roentgen_web::loader::{Loader, MatrixFormat};
    use roentgen_web::models::config::presets;
    use roentgen_web::models::{
        AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
    };
    use roentgen_web::output::write_atomically;
    use roentgen_web::pipeline::{
        Control, Edit, GenerateRequest, MemoryPlan, Pipeline, load_tokenizer,
    };
    use roentgen_web::schedulers::SchedulerKind;

    #[derive(Parser)]
    #[command(
        name = "roentgen",
        version,
        about = "RoentGen chest X-ray diffusion on wgpu compute shaders"
    )]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Time the text encoder, one guided UNet call and the VAE decode at RoentGen's
        /// real shapes with random weights (no checkpoint needed).
        Bench(BenchArgs),
        /// Generate chest X-rays from a prompt with a diffusers checkpoint folder
        /// (RoentGen defaults: PNDM, 75 steps, guidance 4, 512x512).
        Generate(GenerateArgs),
        /// Turn a table of prompts and labels (CSV or JSONL) into a dataset: images, one
        /// manifest per shard, resumable, sharded across a cluster (docs/BATCH.md).
        Batch(crate::batch::BatchArgs),
        /// Print a prompt's CLIP token ids as a JSON array.
        Tokenize(TokenizeArgs),
        /// Convert a diffusers folder to int8/int4 block-quantized (or f16) weights: a
        /// folder of the same layout that loads wherever a folder loads
        /// (docs/QUANTIZATION.md). Streams tensor by tensor.
        Quantize(QuantizeArgs),
    }

    #[derive(clap::Args)]
    struct QuantizeArgs {
        /// The diffusers folder to convert (.safetensors or .bin; f32, f16 or bf16).
        #[arg(long)]
        model: PathBuf,
        /// int8 | int4 | f16
        #[arg(long)]
        format: String,
        /// The folder to write (created; must not be the input).
        #[arg(long)]
        output: PathBuf,
    }

    /// The settings `generate` and `batch` share (RoentGen's recipe by default).
    #[derive(clap::Args)]
    pub(crate) struct Sampling {
        #[arg(long, allow_negative_numbers = true, default_value_t = roentgen_web::pipeline::ROENTGEN_STEPS)]
        pub steps: usize,
        #[arg(long, allow_negative_numbers = true, default_value_t = roentgen_web::pipeline::ROENTGEN_GUIDANCE)]
        pub guidance: f32,
        /// pndm | ddim | dpm++2m | euler-a
        #[arg(long, default_value = "pndm")]
        pub scheduler: String,
        #[arg(long, allow_negative_numbers = true, default_value_t = roentgen_web::pipeline::ROENTGEN_SIZE)]
        pub width: usize,
        #[arg(long, allow_negative_numbers = true, default_value_t = roentgen_web::pipeline::ROENTGEN_SIZE)]
        pub height: usize,
    }

    impl Sampling {
        /// A request with these settings (prompts, seed and count left at their defaults).
        pub(crate) fn request(&self) -> Result<GenerateRequest> {
            let scheduler: SchedulerKind = self
                .scheduler
                .parse()
                .map_err(|e| anyhow::anyhow!("--scheduler: {e}"))?;
            Ok(GenerateRequest {
                steps: self.steps,
                guidance: self.guidance,
                scheduler,
                width: self.width,
                height: self.height,
                ..Default::default()
            })
        }
    }

    #[derive(clap::Args)]
    struct GenerateArgs {
        /// The checkpoint: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "")]
        negative_prompt: String,
        #[command(flatten)]
        sampling: Sampling,
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
        /// Which text encoder folder to load where a checkpoint has both: `text_encoder`
        /// (diffusers' choice, the default) or `text_encoder_and_tokenizer` (saved by
        /// RoentGen v2's training code; its own tokenizer too, where it has one).
        #[arg(long, default_value = "text_encoder", value_parser = ["text_encoder", "text_encoder_and_tokenizer"])]
        text_encoder: String,
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
        /// Write per-word attention maps into this folder: tokens.npy (float32
        /// [tokens, h/8, w/8]), words.json (word -> token indices) and one PNG overlay
        /// per word (needs --count 1).
        #[arg(long)]
        attention_maps: Option<PathBuf>,
    }

    #[derive(clap::Args)]
    struct TokenizeArgs {
        #[arg(long)]
        model: PathBuf,
        text: String,
        /// Print the 77 ids the text encoder sees (padded, truncated).
        #[arg(long)]
        padded: bool,
    }

    #[derive(clap::Args)]
    struct BenchArgs {
        /// Stages to run, comma-separated: text, unet, vae, and `generate`: a whole
        /// generation (text encoder, --steps PNDM steps with guidance, VAE decode) with
        /// all three models loaded, as `generate` runs it.
        #[arg(long, default_value = "text,unet,vae", value_delimiter = ',')]
        stages: Vec<String>,
        /// Steps of the `generate` stage (PNDM: steps + 1 UNet calls; the buffer pool
        /// is warm after the first, so 2 shows the peak of 75).
        #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
        steps: usize,
        /// Allocate every buffer as the run would, run no kernel: the peak memory of
        /// full-size stages in seconds (allocation never depends on values; tests check
        /// that a dry and a real generation report the same peak). Times are meaningless.
        #[arg(long)]
        memory_only: bool,
        /// What stays on the GPU during a generation: lean (the UNet's weights leave
        /// before the VAE decodes) or resident (everything stays).
        #[arg(long, default_value = "lean")]
        memory: String,
        /// Timed repetitions per stage (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Untimed runs first (pipeline compilation, buffer pool warm-up).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// With the unet stage: also time the same call computing per-word attention maps
        /// for this many prompt tokens (9 for "Small right-sided pleural effusion."), side
        /// by side with the plain call in one run.
        #[arg(long)]
        attention_maps: Option<usize>,
        /// Take the model configs from this diffusers folder instead of SD 1.4's.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Scale the UNet's block widths (0.5: the half-width UNet other runtimes are
        /// compared on).
        #[arg(long, default_value_t = 1.0)]
        unet_width_scale: f64,
        /// Latent side (64 for 512x512 images).
        #[arg(long, default_value_t = 64)]
        latent: usize,
        /// UNet batch (2 = one classifier-free-guided call).
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Store linear and conv weights as f16 (same as --format f16).
        #[arg(long)]
        f16: bool,
        /// Weight storage: f32 | f16 | int8 | int4 (int8/int4 quantize by the
        /// converter's policy: docs/QUANTIZATION.md; single kernels take the format as is).
        #[arg(long, default_value = "f32")]
        format: String,
        /// Time every dispatch on its own and print the time per kernel family (slower
        /// overall; shows where the time goes).
        #[arg(long)]
        profile: bool,
        /// Time single kernels at the UNet's shapes (at --latent and --unet-width-scale)
        /// instead of whole stages.
        #[arg(long)]
        kernels: bool,
        /// Quantization error at full weight size: each component (text encoder, one
        /// guided UNet call at --latent, VAE decode of a --latent map) with f32, int8 and
        /// int4 weights from the same random values, plain and trained-like
        /// (heavy-tailed, outlier input channels); relative L2 against f32.
        #[arg(long)]
        fidelity: bool,
    }

    pub fn main() -> Result<()> {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        let cli = Cli::parse();
        match cli.command {
            Command::Bench(a) => pollster::block_on(bench(a)),
            Command::Generate(a) => pollster::block_on(generate(a)),
            Command::Batch(a) => pollster::block_on(crate::batch::batch(a)),
            Command::Tokenize(a) => pollster::block_on(tokenize(a)),
            Command::Quantize(a) => quantize(a),
        }
    }

    fn quantize(a: QuantizeArgs) -> Result<()> {
        use roentgen_web::convert::{Target, convert_folder};
        let target = Target::from_name(&a.format)
            .with_context(|| format!("--format {}: use int8, int4 or f16", a.format))?;
        let t0 = Instant::now();
        convert_folder(&a.model, &a.output, target, &mut |r| {
            eprintln!(
                "{}: {} {:.1} MB -> {} {:.1} MB ({:.2}x), {:.1} s",
                r.component,
                r.input,
                r.input_bytes as f64 / 1e6,
                r.output,
                r.output_bytes as f64 / 1e6,
                r.output_bytes as f64 / r.input_bytes.max(1) as f64,
                t0.elapsed().as_secs_f64()
            )
        })
        .with_context(|| format!("converting {}", a.model.display()))?;
        eprintln!("wrote {} ({})", a.output.display(), target.name());
        Ok(())
    }

    /// A DICOM file of an 8-bit gray image with fresh UIDs and today's date.
    pub(crate) fn dicom_bytes(
        gray: &[u8],
        width: usize,
        height: usize,
        meta: &ImageMetadata,
    ) -> Result<Vec<u8>> {
        use roentgen_web::dicom::{Created, Uids, encode_dicom};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(encode_dicom(
            gray,
            width,
            height,
            meta,
            &Uids::from_entropy([entropy(), entropy(), entropy()]),
            &Created::from_unix(now.as_secs()),
        )?)
    }

    /// 128 bits no two calls share: SipHash with the process's random keys over the
    /// time, the pid and a counter.
    fn entropy() -> u128 {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let half = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(t);
            h.write_u32(std::process::id());
            h.write_u64(n);
            h.write_u64(salt);
            h.finish()
        };
        (u128::from(half(1)) << 64) | u128::from(half(2))
    }

    /// The model's name in PNG metadata and manifests: `_name_or_path` from
    /// model_index.json, else the folder as given.
    pub(crate) fn model_name(pipe: &Pipeline, model: &std::path::Path) -> String {
        if pipe.name.is_empty() {
            model.display().to_string()
        } else {
            pipe.name.clone()
        }
    }

    pub(crate) fn open(model: &std::path::Path, prefer_f16: bool) -> Result<Checkpoint<DirSource>> {
        let options = LoadOptions {
            prefer_f16,
            ..Default::default()
        };
        Checkpoint::new(DirSource::new(model)?, options)
            .with_context(|| format!("opening {}", model.display()))
    }

    fn numbered(path: &std::path::Path, k: usize) -> PathBuf {
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

    async fn tokenize(a: TokenizeArgs) -> Result<()> {
        let tok = load_tokenizer(&open(&a.model, false)?).await?;
        let enc = tok.encode(&a.text)?;
        if let Some(d) = &enc.dropped {
            eprintln!(
                "warning: the prompt is longer than {} tokens; the text encoder never sees: {d}",
                tok.max_length()
            );
        }
        let ids = if a.padded {
            enc.ids
        } else {
            tok.encode_unpadded(&a.text)?
        };
        println!("{}", serde_json::to_string(&ids)?);
        Ok(())
    }

    /// The init image and mask of an edit, read and checked before the model loads.
    struct EditInput {
        image: roentgen_web::image_in::InputImage,
        mask: Option<roentgen_web::image_in::InputMask>,
        strength: f32,
    }

    fn read_edit(a: &GenerateArgs) -> Result<Option<EditInput>> {
        let Some(path) = &a.init_image else {
            return Ok(None);
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let name = |p: &PathBuf| p.display().to_string();
        let image = roentgen_web::image_in::decode_image(&name(path), &read(path)?)?;
        for note in &image.notes {
            eprintln!("note: {}: {note}", path.display());
        }
        let default = roentgen_web::pipeline::ROENTGEN_SIZE;
        for (flag, given, got) in [
            ("--width", a.sampling.width, image.width),
            ("--height", a.sampling.height, image.height),
        ] {
            if given != default && given != got {
                bail!(
                    "{flag} {given}: the init image {} is {}x{}, and an edit keeps its size; leave {flag} out or resize the image",
                    path.display(),
                    image.width,
                    image.height
                );
            }
        }
        if image.width % 8 != 0 || image.height % 8 != 0 {
            bail!(
                "the init image {} is {}x{}; its sides must be multiples of 8 for the VAE: crop or resize it to {}x{}",
                path.display(),
                image.width,
                image.height,
                image.width / 8 * 8,
                image.height / 8 * 8
            );
        }
        let mask = match &a.mask {
            None => None,
            Some(m) => {
                let mask = roentgen_web::image_in::decode_mask(&name(m), &read(m)?)?;
                if (mask.width, mask.height) != (image.width, image.height) {
                    bail!(
                        "the mask {} is {}x{} but the init image is {}x{}; draw the mask at the image's size",
                        m.display(),
                        mask.width,
                        mask.height,
                        image.width,
                        image.height
                    );
                }
                if !mask.repaint.iter().any(|&r| r) {
                    eprintln!(
                        "warning: the mask {} has no white pixels, so nothing is repainted",
                        m.display()
                    );
                }
                Some(mask)
            }
        };
        let strength = roentgen_web::pipeline::edit_strength(a.strength, mask.is_some())
            .map_err(|e| anyhow::anyhow!("--strength: {e}"))?;
        Ok(Some(EditInput {
            image,
            mask,
            strength,
        }))
    }

    async fn generate(a: GenerateArgs) -> Result<()> {
        let mut base = a.sampling.request()?;
        let edit_input = read_edit(&a)?;
        if let Some(e) = &edit_input {
            base.width = e.image.width;
            base.height = e.image.height;
        }
        let scheduler = base.scheduler;
        let gpu = Gpu::new().await?;
        eprintln!("adapter: {} ({})", gpu.info.adapter_name, gpu.info.backend);
        let mut ck = open(&a.model, a.f16)?;
        ck.options.text_encoder_and_tokenizer = a.text_encoder == "text_encoder_and_tokenizer";
        if let Some(note) = ck.text_encoder_note() {
            eprintln!("note: {note}");
        }
        let t0 = Instant::now();
        let mut pipe = Pipeline::load(&gpu, &ck, &mut |part| {
            eprintln!("loading {part} ({:.1?})", t0.elapsed())
        })
        .await?;
        if edit_input.is_some() {
            eprintln!("loading the VAE's encoder ({:.1?})", t0.elapsed());
            pipe.load_vae_encoder(&gpu, &ck).await?;
        }
        eprintln!(
            "model ready in {:.1?}, {} MiB on the GPU",
            t0.elapsed(),
            gpu.memory().weights >> 20
        );
        let req = GenerateRequest {
            prompt: a.prompt.clone(),
            negative_prompt: a.negative_prompt.clone(),
            seed: a.seed,
            count: a.count,
            ..base
        };
        let enc = pipe.tokenizer.encode(&a.prompt)?;
        if let Some(d) = &enc.dropped {
            eprintln!(
                "warning: the prompt is longer than {} tokens; the text encoder never sees: {d}",
                pipe.tokenizer.max_length()
            );
        }
        let edit = edit_input.as_ref().map(|e| Edit {
            rgb: &e.image.rgb,
            mask: e.mask.as_ref().map(|m| m.repaint.as_slice()),
            strength: e.strength,
        });
        if let Some(e) = &edit {
            pipe.check_edit(&req, e)?;
        }
        // the maps' folder is checked before the long run, not after it
        if let Some(dir) = &a.attention_maps {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the attention-map folder {}", dir.display()))?;
        }
        let mut bar: Option<crate::progress::Progress> = None;
        let mut on_call = |p: roentgen_web::pipeline::Progress| {
            let b = bar.get_or_insert_with(|| {
                crate::progress::Progress::new("steps", p.calls as u64, 0, false)
            });
            b.set(p.call as u64, "", false);
            Control::Continue
        };
        let mut maps = None;
        let images = if a.attention_maps.is_some() {
            match pipe
                .generate_mapped(&gpu, &req, edit.as_ref(), &mut on_call)
                .await?
            {
                Some((image, m)) => {
                    maps = Some(m);
                    vec![image]
                }
                None => vec![],
            }
        } else if let Some(e) = &edit {
            pipe.generate_edit(&gpu, &req, e, &mut on_call).await?
        } else {
            pipe.generate(&gpu, &req, &mut on_call).await?
        };
        if let Some(b) = &bar {
            b.finish();
        }
        for (k, img) in images.iter().enumerate() {
            let meta = ImageMetadata {
                prompt: a.prompt.clone(),
                negative_prompt: a.negative_prompt.clone(),
                seed: a.seed,
                steps: req.steps,
                guidance: req.guidance,
                scheduler: scheduler.name().into(),
                model: model_name(&pipe, &a.model),
            };
            let dicom = a
                .output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
            let bytes = if dicom {
                if a.rgb {
                    bail!(
                        "--rgb: a DICOM output is grayscale (MONOCHROME2); drop --rgb or write a .png"
                    );
                }
                dicom_bytes(&img.gray8(), img.width, img.height, &meta)?
            } else if a.rgb {
                encode_png(&img.rgb8(), img.width, img.height, 3, &meta)?
            } else {
                encode_png(&img.gray8(), img.width, img.height, 1, &meta)?
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
                let [c, h, w] = img.latent_shape;
                write_atomically(&p, &encode_npy_f32(&img.latents, &[1, c, h, w]))
                    .with_context(|| format!("writing {}", p.display()))?;
                eprintln!("wrote {}", p.display());
            }
            if let (Some(dir), Some(m)) = (&a.attention_maps, &maps) {
                write_maps(dir, m, img, &meta)?;
            }
        }
        Ok(())
    }

    /// `tokens.npy`, `words.json` and `NN-word.png` per word into `dir`.
    fn write_maps(
        dir: &std::path::Path,
        m: &roentgen_web::pipeline::WordMaps,
        img: &roentgen_web::pipeline::GeneratedImage,
        meta: &ImageMetadata,
    ) -> Result<()> {
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            write_atomically(&p, bytes).with_context(|| format!("writing {}", p.display()))
        };
        write("tokens.npy", &m.tokens_npy())?;
        write("words.json", m.words_json().as_bytes())?;
        let gray = img.gray8();
        for (i, (word, _)) in m.words.iter().enumerate() {
            // a file name from the word: letters and digits, the rest as '_'
            let safe: String = word
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { '_' })
                .collect();
            let png = m.overlay_png(i, &gray, img.width, img.height, meta)?;
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

    fn config_json(model: &Option<PathBuf>, file: &str, preset: &str) -> Result<String> {
        match model {
            Some(dir) => {
                let p = dir.join(file);
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            }
            None => Ok(preset.to_string()),
        }
    }

    struct Stage {
        name: &'static str,
        times: Vec<Duration>,
        flops: u64,
        reference_flops: Option<f64>,
        weights: u64,
        peak: u64,
        in_use_peak: u64,
    }

    async fn time_stage(
        gpu: &Gpu,
        name: &'static str,
        a: &BenchArgs,
        reference_flops: Option<f64>,
        mut run: impl FnMut() -> Result<Tensor>,
    ) -> Result<Stage> {
        let weights = gpu.memory().weights;
        gpu.reset_peak_memory();
        gpu.set_profiling(false);
        for i in 0..a.warmup {
            let t0 = Instant::now();
            let out = run()?;
            gpu.read(&out).await?;
            eprintln!(
                "  {name}: warm-up {}/{} {:.2?}",
                i + 1,
                a.warmup,
                t0.elapsed()
            );
        }
        gpu.take_flops();
        let mut times = Vec::new();
        let mut flops = 0;
        for i in 0..a.reps {
            let t0 = Instant::now();
            let out = run()?;
            // Read the result back: `sync` alone would not surface a failed kernel.
            let v = gpu.read(&out).await?;
            let dt = t0.elapsed();
            if v.iter().any(|x| !x.is_finite()) {
                bail!("{name} produced non-finite values");
            }
            flops = gpu.take_flops();
            eprintln!("  {name}: run {}/{} {:.2?}", i + 1, a.reps, dt);
            times.push(dt);
        }
        times.sort();
        if a.profile {
            gpu.set_profiling(true);
            let out = run()?;
            gpu.read(&out).await?;
            let report = gpu.profile_report();
            gpu.set_profiling(false);
            let total: f64 = report.iter().map(|r| r.2).sum();
            eprintln!("  {name}: profile (each dispatch alone, {total:.2} s in all)");
            for (k, n, t) in report {
                eprintln!(
                    "    {k:<28} {n:>5} dispatches {t:>8.3} s {:>5.1} %",
                    100.0 * t / total
                );
            }
        }
        Ok(Stage {
            name,
            times,
            flops,
            reference_flops,
            weights,
            peak: gpu.memory().peak,
            in_use_peak: gpu.memory().in_use_peak,
        })
    }

    fn bench_format(a: &BenchArgs) -> Result<WeightFormat> {
        if a.f16 {
            return Ok(WeightFormat::F16);
        }
        WeightFormat::from_name(&a.format)
            .with_context(|| format!("--format {}: use f32, f16, int8 or int4", a.format))
    }

    async fn bench_kernels(gpu: &Gpu, a: &BenchArgs) -> Result<()> {
        use roentgen_web::bench::{PreparedCase, time_case, unet_cases};
        let format = bench_format(a)?;
        let base = (320.0 * a.unet_width_scale).round() as usize;
        let start = Instant::now();
        let now = move || start.elapsed().as_secs_f64();
        println!("\n| kernel | median | GFLOP/s |");
        println!("| --- | --- | --- |");
        for case in unet_cases(a.latent, base) {
            let p = PreparedCase::new(gpu, case, format)?;
            let t = time_case(gpu, &p, a.reps, &now).await?;
            let med = t[t.len() / 2];
            println!(
                "| {} | {:.1} ms | {:.1} |",
                case.name(),
                med * 1e3,
                case.flops() / med / 1e9
            );
        }
        Ok(())
    }

    fn memory_plan(name: &str) -> Result<MemoryPlan> {
        match name {
            "lean" => Ok(MemoryPlan::Lean),
            "resident" => Ok(MemoryPlan::Resident),
            _ => bail!("--memory {name}: use lean or resident"),
        }
    }

    fn bench_unet_config(a: &BenchArgs) -> Result<UNetConfig> {
        let mut cfg = UNetConfig::from_json(
            "unet/config.json",
            &config_json(&a.model, "unet/config.json", presets::SD14_UNET)?,
        )?;
        if a.unet_width_scale != 1.0 {
            cfg.block_out_channels = cfg
                .block_out_channels
                .iter()
                .map(|&c| (c as f64 * a.unet_width_scale).round() as usize)
                .collect();
        }
        Ok(cfg)
    }

    /// A whole generation through `Pipeline::generate` on random weights: its peak
    /// memory is what a user's GPU must hold.
    async fn bench_generation(
        gpu: &Gpu,
        a: &BenchArgs,
        format: MatrixFormat,
        clip_cfg: &ClipTextConfig,
    ) -> Result<()> {
        use roentgen_web::schedulers::SchedulerConfig;
        use roentgen_web::tokenizer::{ClipTokenizer, TokenizerFiles};
        eprintln!("generate: loading random weights (text encoder, unet, vae)");
        let text_encoder = ClipTextModel::load(
            &Loader::random(gpu, 1, format).component("text_encoder"),
            clip_cfg.clone(),
        )?;
        let unet = UNet2DConditionModel::load(
            &Loader::random(gpu, 2, format).component("unet"),
            bench_unet_config(a)?,
        )?;
        let vae_cfg = VaeConfig::from_json(
            "vae/config.json",
            &config_json(&a.model, "vae/config.json", presets::SD14_VAE)?,
        )?;
        let vae = AutoencoderKL::load(
            &Loader::random(gpu, 3, format).component("vae"),
            vae_cfg,
            false,
        )?;
        // Empty prompts: the tokenizer needs only its two special tokens (the ids'
        // values do not change the work).
        let tokenizer = ClipTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(br#"{"<|startoftext|>": 49406, "<|endoftext|>": 49407}"#),
            merges_txt: Some(b"#version: 0.2\n"),
            tokenizer_json: None,
            tokenizer_config_json: None,
            special_tokens_map_json: None,
        })?;
        let scheduler_config = SchedulerConfig::from_json(
            "scheduler/scheduler_config.json",
            &config_json(
                &a.model,
                "scheduler/scheduler_config.json",
                presets::SD14_SCHEDULER,
            )?,
        )?;
        let mut pipe = Pipeline::new(
            "random".into(),
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
        );
        pipe.memory = memory_plan(&a.memory)?;
        let side = a.latent * pipe.vae.config.scale_factor();
        let req = GenerateRequest {
            steps: a.steps,
            guidance: 4.0,
            scheduler: SchedulerKind::Pndm,
            width: side,
            height: side,
            ..Default::default()
        };
        let weights = gpu.memory().weights;
        gpu.reset_peak_memory();
        let t0 = Instant::now();
        pipe.generate(gpu, &req, &mut |p| {
            eprintln!(
                "  generate: call {}/{} {:.1?}",
                p.call,
                p.calls,
                t0.elapsed()
            );
            Control::Continue
        })
        .await?;
        let m = gpu.memory();
        let mib = |b: u64| b as f64 / 1048576.0;
        println!("\n| whole generation | time | weights | peak GPU memory | peak in use |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| {side}x{side}, PNDM {} steps, guided, {} plan{} | {:.1} s | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
            a.steps,
            a.memory,
            if a.memory_only { " (memory only)" } else { "" },
            t0.elapsed().as_secs_f64(),
            mib(weights),
            mib(m.peak),
            mib(m.in_use_peak)
        );
        drop(pipe);
        gpu.trim();
        Ok(())
    }

    /// Two rows of token ids (a guided batch) spread over the vocabulary.
    fn bench_ids(clip_cfg: &ClipTextConfig) -> Vec<Vec<u32>> {
        (0..2)
            .map(|b| {
                (0..clip_cfg.max_position_embeddings)
                    .map(|j| ((j * 7919 + b * 31) % clip_cfg.vocab_size) as u32)
                    .collect()
            })
            .collect()
    }

    fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
        let (mut num, mut den) = (0f64, 0f64);
        for (&g, &w) in got.iter().zip(want) {
            num += (g as f64 - w as f64).powi(2);
            den += (w as f64).powi(2);
        }
        (num / den.max(1e-30)).sqrt()
    }

    async fn bench_fidelity(gpu: &Gpu, a: &BenchArgs) -> Result<()> {
        use roentgen_web::quant::QuantFormat;
        let clip_cfg = ClipTextConfig::from_json(
            "text_encoder/config.json",
            &config_json(&a.model, "text_encoder/config.json", presets::SD14_CLIP)?,
        )?;
        let vae_cfg = VaeConfig::from_json(
            "vae/config.json",
            &config_json(&a.model, "vae/config.json", presets::SD14_VAE)?,
        )?;
        let unet_cfg = bench_unet_config(a)?;
        let formats = [
            ("f32", MatrixFormat::Force(WeightFormat::F32)),
            ("int8", MatrixFormat::Quantize(QuantFormat::Int8)),
            ("int4", MatrixFormat::Quantize(QuantFormat::Int4)),
        ];
        let loader = |heavy: bool, seed: u64, f: MatrixFormat| {
            if heavy {
                Loader::random_heavy(gpu, seed, f)
            } else {
                Loader::random(gpu, seed, f)
            }
        };
        let ids = bench_ids(&clip_cfg);
        let lc = unet_cfg.in_channels;
        let n = 2 * a.latent * a.latent * lc;
        let sample: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let zlat = vae_cfg.latent_channels;
        let z: Vec<f32> = (0..a.latent * a.latent * zlat)
            .map(|i| ((i * 29 % 89) as f32 / 44.0) - 1.0)
            .collect();
        println!(
            "\n| weights | component | int8 rel L2 vs f32 | int4 rel L2 vs f32 |\n| --- | --- | --- | --- |"
        );
        for heavy in [false, true] {
            let kind = if heavy {
                "trained-like (t3, outlier channels x6)"
            } else {
                "uniform"
            };
            let mut rows: Vec<(&str, Vec<Vec<f32>>)> = vec![
                ("text encoder (77 tokens)", vec![]),
                ("UNet guided call", vec![]),
                ("VAE decode", vec![]),
            ];
            for (name, f) in formats {
                let t0 = Instant::now();
                let te = ClipTextModel::load(
                    &loader(heavy, 1, f).component("text_encoder"),
                    clip_cfg.clone(),
                )?;
                // a real prompt's embeddings: what the UNet sees
                let ctx = te.forward(gpu, &ids)?;
                rows[0].1.push(gpu.read(&ctx).await?);
                drop(te);
                // the UNet gets the f32 text encoder's context, so that its own error shows
                let unet = UNet2DConditionModel::load(
                    &loader(heavy, 2, f).component("unet"),
                    unet_cfg.clone(),
                )?;
                let x = gpu.upload(&sample, &[2, a.latent, a.latent, lc])?;
                let ctx_f32 = gpu.upload(&rows[0].1[0], ctx.shape())?;
                let eps = unet.forward(gpu, &x, 801.0, &ctx_f32)?;
                rows[1].1.push(gpu.read(&eps).await?);
                drop((unet, eps, ctx, ctx_f32, x));
                gpu.trim();
                let vae = AutoencoderKL::load(
                    &loader(heavy, 3, f).component("vae"),
                    vae_cfg.clone(),
                    false,
                )?;
                let zt = gpu.upload(&z, &[1, a.latent, a.latent, zlat])?;
                let img = vae.decode(gpu, &zt);
                rows[2].1.push(gpu.read(&img).await?);
                drop((vae, img, zt));
                gpu.trim();
                eprintln!("  {kind}, {name}: {:.1?}", t0.elapsed());
            }
            for (component, outs) in &rows {
                println!(
                    "| {kind} | {component} | {:.2e} | {:.2e} |",
                    rel_l2(&outs[1], &outs[0]),
                    rel_l2(&outs[2], &outs[0])
                );
            }
        }
        Ok(())
    }

    async fn bench(a: BenchArgs) -> Result<()> {
        let gpu = Gpu::new().await?;
        let i = &gpu.info;
        println!(
            "adapter: {} ({}), shader-f16 {}, subgroups {}, max storage binding {} MiB",
            i.adapter_name,
            i.backend,
            i.shader_f16,
            i.subgroups,
            i.max_storage_binding >> 20
        );
        if a.kernels {
            return bench_kernels(&gpu, &a).await;
        }
        if a.fidelity {
            return bench_fidelity(&gpu, &a).await;
        }
        let format = MatrixFormat::for_format(bench_format(&a)?);
        eprintln!("weights: {}", bench_format(&a)?.name());
        let full_shape = a.model.is_none() && a.unet_width_scale == 1.0 && a.latent == 64;
        let mut stages = Vec::new();
        let known = ["text", "unet", "vae", "generate"];
        if let Some(s) = a.stages.iter().find(|s| !known.contains(&s.as_str())) {
            bail!("unknown stage `{s}`; stages are {}", known.join(", "));
        }

        let clip_cfg = ClipTextConfig::from_json(
            "text_encoder/config.json",
            &config_json(&a.model, "text_encoder/config.json", presets::SD14_CLIP)?,
        )?;
        if a.memory_only {
            eprintln!("memory only: buffers are allocated, no kernel runs");
            gpu.set_dry_run(true);
        }
        if a.stages.iter().any(|s| s == "generate") {
            bench_generation(&gpu, &a, format, &clip_cfg).await?;
        }
        if a.stages.iter().any(|s| s == "text") {
            eprintln!("text encoder: loading random weights");
            let model = ClipTextModel::load(
                &Loader::random(&gpu, 1, format).component("text_encoder"),
                clip_cfg.clone(),
            )?;
            let ids = bench_ids(&clip_cfg);
            stages.push(
                time_stage(
                    &gpu,
                    "text encoder (batch 2)",
                    &a,
                    full_shape.then_some(0.027e12),
                    || Ok(model.forward(&gpu, &ids)?),
                )
                .await?,
            );
            drop(model);
            gpu.trim();
        }
        if a.stages.iter().any(|s| s == "unet") {
            let cfg = bench_unet_config(&a)?;
            eprintln!("unet {:?}: loading random weights", cfg.block_out_channels);
            let latent_ch = cfg.in_channels;
            let ctx_dim = cfg.cross_attention_dim;
            let unet = UNet2DConditionModel::load(
                &Loader::random(&gpu, 2, format).component("unet"),
                cfg,
            )?;
            let n = a.batch * a.latent * a.latent * latent_ch;
            let sample = gpu.upload(
                &(0..n)
                    .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                    .collect::<Vec<_>>(),
                &[a.batch, a.latent, a.latent, latent_ch],
            )?;
            let t = clip_cfg.max_position_embeddings;
            let ctx = gpu.upload(
                &(0..a.batch * t * ctx_dim)
                    .map(|i| ((i * 13 % 97) as f32 / 48.0) - 1.0)
                    .collect::<Vec<_>>(),
                &[a.batch, t, ctx_dim],
            )?;
            let name = if a.batch == 2 {
                "unet guided call (batch 2)"
            } else {
                "unet call"
            };
            stages.push(
                time_stage(
                    &gpu,
                    name,
                    &a,
                    (full_shape && a.batch == 2).then_some(1.61e12),
                    || Ok(unet.forward(&gpu, &sample, 801.0, &ctx)?),
                )
                .await?,
            );
            if let Some(tokens) = a.attention_maps {
                let maps = roentgen_web::ops::AttentionMaps::new(
                    &gpu,
                    a.batch - 1,
                    1,
                    tokens.clamp(1, t - 2),
                    a.latent,
                    a.latent,
                )?;
                stages.push(
                    time_stage(&gpu, "unet call + attention maps", &a, None, || {
                        Ok(unet.forward_mapped(&gpu, &sample, 801.0, &ctx, &maps)?)
                    })
                    .await?,
                );
            }
            drop(unet);
            gpu.trim();
        }
        if a.stages.iter().any(|s| s == "vae") {
            let cfg = VaeConfig::from_json(
                "vae/config.json",
                &config_json(&a.model, "vae/config.json", presets::SD14_VAE)?,
            )?;
            eprintln!("vae decoder: loading random weights");
            let lat = cfg.latent_channels;
            let vae = AutoencoderKL::load(
                &Loader::random(&gpu, 3, format).component("vae"),
                cfg,
                false,
            )?;
            let n = a.latent * a.latent * lat;
            let z = gpu.upload(
                &(0..n)
                    .map(|i| ((i * 29 % 89) as f32 / 44.0) - 1.0)
                    .collect::<Vec<_>>(),
                &[1, a.latent, a.latent, lat],
            )?;
            stages.push(
                time_stage(
                    &gpu,
                    "vae decode (batch 1)",
                    &a,
                    full_shape.then_some(2.5e12),
                    || Ok(vae.decode(&gpu, &z)),
                )
                .await?,
            );
        }

        if stages.is_empty() {
            return Ok(());
        }
        println!(
            "\n| stage | median | min | GFLOP/s (our count) | GFLOP/s (PyTorch's count) | weights | peak GPU memory | peak in use |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for s in &stages {
            let med = s.times[s.times.len() / 2].as_secs_f64();
            let min = s.times[0].as_secs_f64();
            println!(
                "| {} | {:.3} s | {:.3} s | {:.1} ({:.3} TFLOP) | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
                s.name,
                med,
                min,
                s.flops as f64 / med / 1e9,
                s.flops as f64 / 1e12,
                s.reference_flops
                    .map_or("-".to_string(), |f| format!("{:.1}", f / med / 1e9)),
                s.weights as f64 / 1048576.0,
                s.peak as f64 / 1048576.0,
                s.in_use_peak as f64 / 1048576.0,
            );
        }
        Ok(())
    }
}
