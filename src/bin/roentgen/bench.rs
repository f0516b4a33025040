//! `roentgen bench`: the text encoder, one guided UNet call, the VAE decode and whole
//! generations at RoentGen's real shapes with random weights (no checkpoint needed);
//! kernels alone, profiles, peak memory, quantization fidelity (BENCHMARKS.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roentgen_web::generation::GenerateRequest;
use roentgen_web::gpu::{Gpu, Tensor, WeightFormat};
use roentgen_web::loader::{Loader, MatrixFormat};
use roentgen_web::models::config::presets;
use roentgen_web::models::{
    AutoencoderKL, BertConfig, BertModel, ClipTextConfig, ClipTextModel, TextEncoder,
    UNet2DConditionModel, UNetConfig, VaeConfig,
};
use roentgen_web::pipeline::{Control, MemoryPlan, Pipeline};
use roentgen_web::schedulers::SchedulerKind;

/// What stays on the GPU during a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryArg {
    /// the UNet's weights leave before the VAE decodes
    Lean,
    /// everything stays
    Resident,
}

/// Weight storage formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    F32,
    F16,
    Int8,
    Int4,
}

/// The stages a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Text,
    /// RadEdit's text encoder: CXR-BERT (BERT-base) on 2 x 128 tokens.
    Bert,
    Unet,
    Vae,
    Generate,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Stages to run, comma-separated: text (CLIP), bert (RadEdit's CXR-BERT), unet, vae,
    /// (with --fidelity: the components compared; the CLIP text encoder always) and
    /// `generate`: a whole
    /// generation (text encoder, --steps PNDM steps with guidance, VAE decode) with
    /// all three models loaded, as `generate` runs it.
    #[arg(
        long,
        value_enum,
        default_value = "text,unet,vae",
        value_delimiter = ','
    )]
    stages: Vec<Stage>,
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
    #[arg(long, value_enum, default_value = "lean")]
    memory: MemoryArg,
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
    /// Take the model configs from this diffusers folder (or ORG/NAME[@REV], fetched into
    /// the Hub cache) instead of SD 1.4's.
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
    #[arg(long, value_enum, default_value = "f32")]
    format: FormatArg,
    /// Time every dispatch on its own and print the time per kernel family (slower
    /// overall; shows where the time goes). With ROENTGEN_PROFILE_SHAPES=1: per
    /// kernel and workgroup grid.
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

fn config_json(model: &Option<PathBuf>, file: &str, preset: &str) -> Result<String> {
    match model {
        Some(m) => {
            let dir = crate::hub::model_dir(m, false)?;
            let p = dir.join(file);
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        }
        None => Ok(preset.to_string()),
    }
}

struct Timed {
    name: &'static str,
    times: Vec<Duration>,
    flops: u64,
    /// Dispatches per run, and the host time of recording them (the run's call before
    /// its result is read back) per dispatch, median over the runs.
    dispatches: u64,
    record_per_dispatch: Duration,
    /// The same, recorded without submitting (no kernel running meanwhile).
    record_alone: Duration,
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
) -> Result<Timed> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
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
    gpu.take_dispatches();
    let mut times = Vec::new();
    let mut records = Vec::new();
    let mut flops = 0;
    let mut dispatches = 0;
    for i in 0..a.reps {
        let t0 = Instant::now();
        let out = run()?;
        // Recording: every op's host work and the batched submissions (on a CPU driver
        // the kernels of earlier batches run meanwhile on the same cores: an upper bound)
        let recorded = t0.elapsed();
        dispatches = gpu.take_dispatches();
        records.push(recorded / dispatches.max(1) as u32);
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
    records.sort();
    // The host's share alone: the same call recorded and dropped unsubmitted, so that
    // no kernel shares the cores meanwhile (the figure issue 23's targets are about).
    let mut alone = Vec::new();
    gpu.set_record_only(true);
    for _ in 0..a.reps.max(3) {
        let t0 = Instant::now();
        let out = run()?;
        gpu.flush();
        let n = gpu.take_dispatches().max(1);
        alone.push(t0.elapsed() / n as u32);
        drop(out);
    }
    gpu.set_record_only(false);
    gpu.take_flops();
    alone.sort();
    eprintln!(
        "  {name}: {dispatches} dispatches per run, recorded in {:.1} µs each (median host time of the run's call before the read-back, per dispatch)",
        records[records.len() / 2].as_secs_f64() * 1e6
    );
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
    Ok(Timed {
        name,
        times,
        flops,
        dispatches,
        record_per_dispatch: records[records.len() / 2],
        record_alone: alone[alone.len() / 2],
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
    let name = format!("{:?}", a.format).to_ascii_lowercase();
    WeightFormat::from_name(&name).with_context(|| format!("--format {name}: not a weight format"))
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

fn memory_plan(m: MemoryArg) -> MemoryPlan {
    match m {
        MemoryArg::Lean => MemoryPlan::Lean,
        MemoryArg::Resident => MemoryPlan::Resident,
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
    use roentgen_web::tokenizer::{PromptTokenizer, TokenizerFiles};
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
    let tokenizer = PromptTokenizer::from_files(TokenizerFiles {
        vocab_json: Some(br#"{"<|startoftext|>": 49406, "<|endoftext|>": 49407}"#),
        merges_txt: Some(b"#version: 0.2\n"),
        vocab_txt: None,
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
        TextEncoder::Clip(text_encoder),
        unet,
        vae,
        scheduler_config,
    )?;
    pipe.memory = memory_plan(a.memory);
    let side = a.latent * pipe.vae_config.scale_factor();
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
    let plan = pipe.plan(req)?;
    pipe.generate(gpu, &plan, &mut |p| {
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
        format!("{:?}", a.memory).to_ascii_lowercase(),
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

/// Two rows of 128 WordPiece ids as RadEdit gives them: [CLS], words, [SEP], [PAD]s.
fn bert_ids(cfg: &BertConfig) -> Vec<Vec<u32>> {
    (0..2)
        .map(|b| {
            (0..128)
                .map(|j| match j {
                    0 => 2,
                    j if j < 12 + b => ((j * 7919 + b * 31) % cfg.vocab_size) as u32,
                    j if j == 12 + b => 3,
                    _ => 0,
                })
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
    let bert_cfg = BertConfig::from_json("text_encoder/config.json", presets::BIOVIL_T_BERT)?;
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
            ("CXR-BERT text encoder (128 tokens)", vec![]),
            ("UNet guided call", vec![]),
            ("VAE decode", vec![]),
        ];
        let has = |s: Stage| a.stages.contains(&s);
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
            if has(Stage::Bert) {
                let bert = BertModel::load(
                    &loader(heavy, 4, f).component("text_encoder"),
                    bert_cfg.clone(),
                )?;
                let out = bert.forward(gpu, &bert_ids(&bert_cfg))?;
                rows[1].1.push(gpu.read(&out).await?);
                drop((bert, out));
            }
            if has(Stage::Unet) {
                // the UNet gets the f32 text encoder's context, so that its own error shows
                let unet = UNet2DConditionModel::load(
                    &loader(heavy, 2, f).component("unet"),
                    unet_cfg.clone(),
                )?;
                let x = gpu.upload(&sample, &[2, a.latent, a.latent, lc])?;
                let ctx_f32 = gpu.upload(&rows[0].1[0], ctx.shape())?;
                let eps = unet.forward(gpu, &x, 801.0, &ctx_f32)?;
                rows[2].1.push(gpu.read(&eps).await?);
                drop((unet, eps, ctx_f32, x));
            }
            drop(ctx);
            gpu.trim();
            if has(Stage::Vae) {
                let vae = AutoencoderKL::load(
                    &loader(heavy, 3, f).component("vae"),
                    vae_cfg.clone(),
                    false,
                )?;
                let zt = gpu.upload(&z, &[1, a.latent, a.latent, zlat])?;
                let img = vae.decode(gpu, &zt);
                rows[3].1.push(gpu.read(&img).await?);
                drop((vae, img, zt));
                gpu.trim();
            }
            eprintln!("  {kind}, {name}: {:.1?}", t0.elapsed());
        }
        rows.retain(|(_, outs)| !outs.is_empty());
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

pub async fn bench(mut a: BenchArgs) -> Result<()> {
    // A Hub repo is fetched (or found in the cache) once, before any timing.
    if let Some(m) = &a.model {
        a.model = Some(crate::hub::model_dir(m, false)?);
    }
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

    let clip_cfg = ClipTextConfig::from_json(
        "text_encoder/config.json",
        &config_json(&a.model, "text_encoder/config.json", presets::SD14_CLIP)?,
    )?;
    if a.memory_only {
        eprintln!("memory only: buffers are allocated, no kernel runs");
        gpu.set_dry_run(true);
    }
    if a.stages.contains(&Stage::Generate) {
        bench_generation(&gpu, &a, format, &clip_cfg).await?;
    }
    if a.stages.contains(&Stage::Text) {
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
    if a.stages.contains(&Stage::Bert) {
        eprintln!("CXR-BERT text encoder: loading random weights");
        let cfg = BertConfig::from_json("text_encoder/config.json", presets::BIOVIL_T_BERT)?;
        let ids = bert_ids(&cfg);
        let model = BertModel::load(
            &Loader::random(&gpu, 4, format).component("text_encoder"),
            cfg,
        )?;
        stages.push(
            time_stage(
                &gpu,
                "CXR-BERT text encoder (batch 2, 128 tokens)",
                &a,
                full_shape.then_some(0.0447e12),
                || Ok(model.forward(&gpu, &ids)?),
            )
            .await?,
        );
        drop(model);
        gpu.trim();
    }
    if a.stages.contains(&Stage::Unet) {
        let cfg = bench_unet_config(&a)?;
        eprintln!("unet {:?}: loading random weights", cfg.block_out_channels);
        let latent_ch = cfg.in_channels;
        let ctx_dim = cfg.cross_attention_dim;
        let unet =
            UNet2DConditionModel::load(&Loader::random(&gpu, 2, format).component("unet"), cfg)?;
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
    if a.stages.contains(&Stage::Vae) {
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
        "\n| stage | median | min | GFLOP/s (our count) | GFLOP/s (PyTorch's count) | weights | peak GPU memory | peak in use | dispatches | host µs / dispatch | recording alone µs / dispatch |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in &stages {
        let med = s.times[s.times.len() / 2].as_secs_f64();
        let min = s.times[0].as_secs_f64();
        println!(
            "| {} | {:.3} s | {:.3} s | {:.1} ({:.3} TFLOP) | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} | {:.1} | {:.2} |",
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
            s.dispatches,
            s.record_per_dispatch.as_secs_f64() * 1e6,
            s.record_alone.as_secs_f64() * 1e6,
        );
    }
    Ok(())
}
