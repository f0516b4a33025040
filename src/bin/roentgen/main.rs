//! `roentgen`: the native command line. Only this edge uses `anyhow` and blocks on the
//! async engine (`pollster`); the library stays async for the browser. A file per
//! subcommand; each turns its flags into a [`roentgen_web::generation::Request`] (or
//! its own task) and writes what the library returns.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod batch;
#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod generate;
#[cfg(not(target_arch = "wasm32"))]
mod hub;
#[cfg(not(target_arch = "wasm32"))]
mod progress;
#[cfg(not(target_arch = "wasm32"))]
mod quantize;
#[cfg(not(target_arch = "wasm32"))]
mod tokenize;

#[cfg(not(target_arch = "wasm32"))]
use anyhow::{Context, Result};
#[cfg(not(target_arch = "wasm32"))]
use clap::{Parser, Subcommand};
#[cfg(not(target_arch = "wasm32"))]
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};

#[cfg(not(target_arch = "wasm32"))]
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

#[cfg(not(target_arch = "wasm32"))]
#[derive(Subcommand)]
enum Command {
    /// Time the text encoder, one guided UNet call and the VAE decode at RoentGen's
    /// real shapes with random weights (no checkpoint needed).
    Bench(bench::BenchArgs),
    /// Generate chest X-rays from a prompt with a diffusers checkpoint folder; settings
    /// left out come from the model's recipe (RoentGen v1: PNDM, 75 steps, guidance 4;
    /// RoentGen v2: guidance 3; 512x512).
    Generate(generate::GenerateArgs),
    /// Turn a table of prompts and labels (CSV or JSONL) into a dataset: images, one
    /// manifest per shard, resumable, sharded across a cluster (docs/BATCH.md).
    Batch(batch::BatchArgs),
    /// Print a prompt's CLIP token ids as a JSON array.
    Tokenize(tokenize::TokenizeArgs),
    /// Convert a diffusers folder to int8/int4 block-quantized (or f16) weights: a
    /// folder of the same layout that loads wherever a folder loads
    /// (docs/QUANTIZATION.md). Streams tensor by tensor.
    Quantize(quantize::QuantizeArgs),
    /// Download a model from the Hugging Face Hub into the shared cache
    /// (~/.cache/huggingface/hub, as huggingface_hub) without generating: ORG/NAME[@REV],
    /// a known model or a recipe .json. Prints the folder.
    Download(hub::DownloadArgs),
    /// The known models (short names for --model): their repos, revisions and defaults.
    Models {
        /// The recipes as JSON (the form of a recipe file for --model).
        #[arg(long)]
        json: bool,
    },
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(a) => pollster::block_on(bench::bench(a)),
        Command::Generate(a) => pollster::block_on(generate::generate(a)),
        Command::Batch(a) => pollster::block_on(batch::batch(a)),
        Command::Tokenize(a) => pollster::block_on(tokenize::tokenize(a)),
        Command::Quantize(a) => quantize::quantize(a),
        Command::Download(a) => hub::download(a),
        Command::Models { json: false } => hub::models(),
        Command::Models { json: true } => hub::models_json(),
    }
}

/// A checkpoint: `--model` as a folder, or a Hub repo / known model / recipe fetched
/// into the cache first ([`hub::model_dir`]).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn open(model: &std::path::Path, prefer_f16: bool) -> Result<Checkpoint<DirSource>> {
    open_with(model, prefer_f16, false)
}

/// [`open`]; `combined`: a Hub repo's `text_encoder_and_tokenizer/` is fetched too.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn open_with(
    model: &std::path::Path,
    prefer_f16: bool,
    combined: bool,
) -> Result<Checkpoint<DirSource>> {
    let options = LoadOptions {
        prefer_f16,
        text_encoder_and_tokenizer: combined,
        ..Default::default()
    };
    let dir = hub::model_dir_with(model, prefer_f16, combined)?;
    Checkpoint::new(DirSource::new(&dir)?, options)
        .with_context(|| format!("opening {}", model.display()))
}

/// Randomness for a DICOM file's three UIDs and the time now (Unix seconds): what
/// [`roentgen_web::pipeline::Outcome::dicom`] asks its caller for.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn dicom_entropy() -> ([u128; 3], u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    ([entropy(), entropy(), entropy()], now)
}

/// 128 bits no two calls share: SipHash with the process's random keys over the time,
/// the pid and a counter.
#[cfg(not(target_arch = "wasm32"))]
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
