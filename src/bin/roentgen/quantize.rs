//! `roentgen quantize`: a diffusers folder to int8/int4 block-quantized or f16 weights.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use roentgen_web::convert::{Target, convert_folder};

/// The storage formats `quantize` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Int8,
    Int4,
    F16,
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The diffusers folder to convert (.safetensors or .bin; f32, f16 or bf16), or a
    /// Hub repo ORG/NAME[@REV] / known model / recipe .json (fetched into the cache).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// The folder to write (created; must not be the input).
    #[arg(long)]
    output: PathBuf,
}

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    let name = match a.format {
        Format::Int8 => "int8",
        Format::Int4 => "int4",
        Format::F16 => "f16",
    };
    let target = Target::from_name(name).context("the converter knows every --format")?;
    let t0 = Instant::now();
    let model = crate::hub::model_dir(&a.model, false)?;
    convert_folder(&model, &a.output, target, &mut |r| {
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
