//! Which weight file of a diffusers component folder to load.
//!
//! diffusers names a component's weights `diffusion_pytorch_model[.<variant>].{safetensors,bin}`
//! and transformers (the text encoder) `model[.<variant>].safetensors` /
//! `pytorch_model[.<variant>].bin`; the variant is usually `fp16` (SD 1.4's repository
//! also has `non_ema`).

use super::WeightError;

/// File stems that hold a whole component's weights.
pub const STEMS: [&str; 3] = ["diffusion_pytorch_model", "model", "pytorch_model"];
/// What is looked for, in the order of [`STEMS`] and extensions, for the error message.
const LOOKED_FOR: [&str; 4] = [
    "diffusion_pytorch_model[.fp16].safetensors",
    "model[.fp16].safetensors",
    "diffusion_pytorch_model[.fp16].bin",
    "pytorch_model[.fp16].bin",
];

/// Picks the weight file of `component` (e.g. `unet`, `text_encoder`) from `files`, the
/// checkpoint's file paths relative to its root.
///
/// safetensors beats `.bin` (it needs no pickle and can be streamed); within a format,
/// the `fp16` variant wins if `prefer_f16`, else the plain file, else the other of the
/// two, else any other variant (`non_ema`, ...) by name. Returns the chosen path as it
/// appears in `files`.
pub fn pick_weight_file(
    component: &str,
    files: &[String],
    prefer_f16: bool,
) -> Result<String, WeightError> {
    let component = component.trim_matches('/');
    let folder = format!("{component}/");
    // (format rank, variant rank, name) → the smallest wins.
    let mut best: Option<((u8, u8, &str), &String)> = None;
    let mut in_folder = Vec::new();
    let mut shard_index = None;
    for f in files {
        let norm = f.strip_prefix("./").unwrap_or(f);
        let Some(rest) = norm.strip_prefix(&folder) else {
            continue;
        };
        in_folder.push(rest.to_owned());
        if rest.contains('/') {
            continue;
        }
        if rest.ends_with(".safetensors.index.json") || rest.ends_with(".bin.index.json") {
            shard_index.get_or_insert_with(|| norm.to_owned());
            continue;
        }
        let (base, format_rank) = if let Some(b) = rest.strip_suffix(".safetensors") {
            (b, 0)
        } else if let Some(b) = rest.strip_suffix(".bin") {
            (b, 1)
        } else {
            continue;
        };
        let (stem, variant) = base.split_once('.').unwrap_or((base, ""));
        if !STEMS.contains(&stem) {
            continue;
        }
        let variant_rank = match (variant, prefer_f16) {
            ("fp16", true) | ("", false) => 0,
            ("", true) | ("fp16", false) => 1,
            _ => 2,
        };
        let key = (format_rank, variant_rank, rest);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, f));
        }
    }
    if let Some((_, f)) = best {
        return Ok(f.clone());
    }
    if let Some(index_file) = shard_index {
        return Err(WeightError::Sharded {
            component: component.to_owned(),
            index_file,
        });
    }
    in_folder.sort();
    Err(WeightError::MissingFile {
        component: component.to_owned(),
        looked_for: LOOKED_FOR.iter().map(|n| format!("{folder}{n}")).collect(),
        found: in_folder,
    })
}
