//! `roentgen batch`: a prompt table to a dataset (docs/BATCH.md).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use roentgen_web::batch::run::{Event, RunSettings, merge, run_shard, weights_sha256};
use roentgen_web::batch::{PlanOptions, PromptTable, Shard, Template, manifest, plan};
use roentgen_web::generation::{BatchItem, Prompts, Request};
use roentgen_web::gpu::Gpu;
use roentgen_web::pipeline::{MemoryPlan, Pipeline};

use crate::generate::SamplingArgs;
use crate::open;
use crate::progress::Progress;

/// The files a dataset is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Png,
    /// DICOM Secondary Capture files marked synthetic (fresh UIDs, so a remade image has
    /// other bytes than the first; its pixels are the same)
    Dcm,
}

#[derive(clap::Args)]
pub struct BatchArgs {
    /// The checkpoint: a diffusers folder, or ORG/NAME[@REVISION] / a known model / a
    /// recipe .json (fetched into the Hub cache first).
    #[arg(long, required_unless_present = "merge")]
    model: Option<PathBuf>,
    /// The prompt table: .csv (header row) or .jsonl. Column `prompt` (or
    /// --prompt-template); optional `negative_prompt`, `seed`, `id`; every other column is
    /// a label carried into the manifest.
    #[arg(long, required_unless_present = "merge")]
    prompts: Option<PathBuf>,
    /// Where images (OUT/images/) and the shard's manifest (OUT/shard-K-of-N.jsonl) go.
    #[arg(long, required_unless_present = "merge")]
    output_dir: Option<PathBuf>,
    /// Images per row (image j of a row with a seed uses seed + j).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    images_per_prompt: usize,
    /// This process's share of the jobs, K/N with K from 0 to N-1 (job g goes to shard
    /// g mod N). Without it: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or
    /// JOB_COMPLETION_INDEX with --shards N, or the whole table.
    #[arg(long)]
    shard: Option<String>,
    /// The shard count for Kubernetes Indexed Jobs (JOB_COMPLETION_INDEX).
    #[arg(long)]
    shards: Option<usize>,
    /// Base of the seeds of rows without a `seed` (docs/BATCH.md: how they are derived).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Build each prompt from columns, e.g. "{age} year old {race} {sex}. {impression}".
    #[arg(long)]
    prompt_template: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long, value_enum, default_value = "png")]
    format: FileFormat,
    /// Images through the UNet together (guidance doubles the batch); the images are
    /// the same as one at a time.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    batch_size: usize,
    /// Prefer `*.fp16.*` weight files.
    #[arg(long)]
    f16: bool,
    /// Join the shards' manifests in OUT into OUT/metadata.jsonl (Hugging Face
    /// imagefolder: a `file_name` column) and OUT/manifest.csv, then stop.
    #[arg(long, value_name = "OUT")]
    merge: Option<PathBuf>,
}

/// Set by SIGINT/SIGTERM: stop after the images in flight.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // A second Ctrl-C kills at once (the default action again).
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores an atomic and calls signal(2), both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub async fn batch(a: BatchArgs) -> Result<()> {
    if let Some(out) = &a.merge {
        let m = merge(out)?;
        for w in &m.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "merged {} images from {} shard(s) into {}: {} (Hugging Face imagefolder), {}, {} (CheXGenBench)",
            m.images,
            m.manifests,
            out.display(),
            manifest::METADATA,
            manifest::MANIFEST_CSV,
            manifest::CHEXGENBENCH_CSV
        );
        return Ok(());
    }
    let (model, prompts, out) = (
        a.model.clone().expect("clap requires it"),
        a.prompts.clone().expect("clap requires it"),
        a.output_dir.clone().expect("clap requires it"),
    );
    let dicom = a.format == FileFormat::Dcm;
    // The settings every image shares, checked before anything loads (a UNet batch of
    // --batch-size images stands for the request's count).
    let request = Request {
        prompts: Prompts::Batch(vec![BatchItem::default(); a.batch_size.max(1)]),
        sampling: a.sampling.sampling(),
        edit: None,
        attention_maps: false,
    };
    request.check()?;

    // Everything about the input is checked before the model loads.
    let bytes = std::fs::read(&prompts)
        .with_context(|| format!("reading the prompt table {}", prompts.display()))?;
    let name = prompts.display().to_string();
    let table = PromptTable::parse(&name, &bytes)?;
    let template = a
        .prompt_template
        .as_deref()
        .map(Template::parse)
        .transpose()?;
    let jobs = plan(
        &table,
        &PlanOptions {
            images_per_prompt: a.images_per_prompt,
            seed: a.seed,
            template: template.as_ref(),
            extension: if dicom { "dcm" } else { "png" },
        },
    )?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => match Shard::from_env(&|k| std::env::var(k).ok(), a.shards)? {
            Some((s, from)) => {
                eprintln!("shard {s} (from the {from})");
                s
            }
            None => match a.shards {
                Some(n) if n > 1 => bail!(
                    "--shards {n} without JOB_COMPLETION_INDEX: give --shard K/{n} to say which shard this is"
                ),
                _ => Shard::ALL,
            },
        },
    };

    let gpu = Gpu::new().await?;
    eprintln!("adapter: {} ({})", gpu.info.adapter_name, gpu.info.backend);
    let ck = open(&model, a.f16)?;
    eprintln!("hashing the weights (SHA-256, recorded in the manifest)");
    let weights = weights_sha256(&ck, &ck.source.root)?;
    let t0 = std::time::Instant::now();
    let mut pipe = Pipeline::load(&gpu, &ck, &mut |part| {
        eprintln!("loading {part} ({:.1?})", t0.elapsed())
    })
    .await
    .with_context(|| format!("loading the model {}", model.display()))?
    .named_or(&model.display().to_string());
    // loaded once per process: no reload between images
    pipe.memory = MemoryPlan::Resident;
    let plan = pipe.plan(request)?;
    eprintln!(
        "settings: {} ({})",
        plan.settings.describe(),
        plan.recipe.describe()
    );
    let settings = RunSettings {
        out: out.clone(),
        shard,
        plan,
        batch_size: a.batch_size,
        model_name: pipe.name.clone(),
        weights_sha256: weights,
        dicom: dicom.then_some(crate::dicom_entropy as roentgen_web::batch::run::Entropy),
    };
    catch_signals();
    let mut bar: Option<Progress> = None;
    let summary = run_shard(
        &gpu,
        &pipe,
        &table,
        &jobs,
        &settings,
        &STOP,
        &mut |e| match e {
            Event::Planned { total, done } => {
                eprintln!(
                    "shard {shard}: {total} of {} images, {done} already done, {} to make",
                    jobs.len(),
                    total - done
                );
                bar = Some(Progress::new("images", total as u64, done as u64, true));
            }
            Event::Step { call, calls } => {
                if let Some(b) = &bar {
                    b.message(&format!("step {call}/{calls}"));
                }
            }
            Event::Image { job, done, .. } => {
                if let Some(b) = &mut bar {
                    b.set(done as u64, &job.file, true);
                }
            }
            Event::Warning(w) => match &bar {
                Some(b) => b.println(&format!("warning: {w}")),
                None => eprintln!("warning: {w}"),
            },
        },
    )
    .await?;
    if let Some(b) = &bar {
        b.finish();
    }
    let manifest = out.join(shard.manifest_name());
    if summary.stopped {
        eprintln!(
            "stopped: {} of {} images done ({} made now); everything written is whole and in {}; run the same command again to go on",
            summary.skipped + summary.made,
            summary.total,
            summary.made,
            manifest.display()
        );
        std::process::exit(130);
    }
    eprintln!(
        "shard {shard} complete: {} images ({} made now, {} already there), manifest {}",
        summary.total,
        summary.made,
        summary.skipped,
        manifest.display()
    );
    Ok(())
}
