//! Which of a repo's files the pipeline reads: the choice [`crate::checkpoint`] makes for
//! a picked folder ([`plan_import`]: configs, tokenizer, scheduler, one weight file per
//! model by [`pick_weight_file`]), applied to the Hub's listing. Never `safety_checker/`,
//! `feature_extractor/`, single-file checkpoints at the root or other variants.

use crate::checkpoint::plan_import;
use crate::error::Result;
use crate::weights::pick_weight_file;

/// One part a recipe takes from a repo's `subfolder` (`""`: the repo's root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A model (`unet`, `vae`, `text_encoder`): its `config.json` and one weight file.
    Model,
    /// A tokenizer: the folder's `*.json` and `*.txt` files.
    Tokenizer,
    /// `scheduler_config.json`.
    Scheduler,
}

/// A whole diffusers repo: what [`plan_import`] takes from a picked folder.
pub fn select(files: &[String], prefer_f16: bool) -> Result<Vec<String>> {
    Ok(plan_import(files, prefer_f16)?
        .into_iter()
        .map(|(path, _)| path)
        .collect())
}

/// RoentGen v2's `text_encoder_and_tokenizer/` (asked for with `--text-encoder
/// text_encoder_and_tokenizer`): its config, one weight file and its tokenizer files,
/// where the repo has it; nothing otherwise (the loader then says it uses
/// `text_encoder/`).
pub fn select_combined(files: &[String], prefer_f16: bool) -> Result<Vec<String>> {
    let dir = crate::checkpoint::COMBINED_TEXT_DIR;
    if !files.contains(&format!("{dir}/config.json")) {
        return Ok(Vec::new());
    }
    let mut out = select_part(files, dir, Part::Model, prefer_f16)?;
    if let Ok(tokenizer) = select_part(files, dir, Part::Tokenizer, prefer_f16) {
        out.extend(tokenizer);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One part from `subfolder` of a repo.
pub fn select_part(
    files: &[String],
    subfolder: &str,
    part: Part,
    prefer_f16: bool,
) -> Result<Vec<String>> {
    let sub = subfolder.trim_matches('/');
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub}/")
    };
    let missing = |path: String, hint: &str| crate::error::Error::MissingFile {
        path,
        hint: hint.into(),
    };
    match part {
        Part::Model => {
            let config = format!("{prefix}config.json");
            if !files.contains(&config) {
                return Err(missing(
                    config,
                    "the recipe names a folder without a model config",
                ));
            }
            // pick_weight_file looks inside a named folder: at the root, look at the files
            // as if under `root/`.
            let weight = if sub.is_empty() {
                let rooted: Vec<String> = files
                    .iter()
                    .filter(|f| !f.contains('/'))
                    .map(|f| format!("root/{f}"))
                    .collect();
                pick_weight_file("root", &rooted, prefer_f16)?["root/".len()..].to_string()
            } else {
                pick_weight_file(sub, files, prefer_f16)?
            };
            Ok(vec![config, weight])
        }
        Part::Tokenizer => {
            let out: Vec<String> = files
                .iter()
                .filter(|f| {
                    f.strip_prefix(prefix.as_str()).is_some_and(|name| {
                        !name.contains('/')
                            && (name.ends_with(".json") || name.ends_with(".txt"))
                            && !name.ends_with(".index.json")
                    })
                })
                .cloned()
                .collect();
            let has = |n: &str| out.iter().any(|f| f.ends_with(n));
            if !(has("tokenizer.json") || has("vocab.json") || has("vocab.txt")) {
                return Err(missing(
                    format!("{prefix}vocab.json"),
                    "the recipe's tokenizer folder has no vocab.json/merges.txt, vocab.txt or tokenizer.json",
                ));
            }
            Ok(out)
        }
        Part::Scheduler => {
            let f = format!("{prefix}scheduler_config.json");
            if !files.contains(&f) {
                return Err(missing(f, "the recipe names a scheduler folder without it"));
            }
            Ok(vec![f])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_what_the_pipeline_reads() {
        let listing = files(&[
            "model_index.json",
            "v1-5-pruned.safetensors",
            "safety_checker/config.json",
            "safety_checker/model.safetensors",
            "feature_extractor/preprocessor_config.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]);
        let mut got = select(&listing, false).unwrap();
        got.sort();
        assert_eq!(
            got,
            files(&[
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.safetensors",
                "tokenizer/merges.txt",
                "tokenizer/special_tokens_map.json",
                "tokenizer/vocab.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ])
        );
        let f16 = select(&listing, true).unwrap();
        assert!(f16.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(f16.contains(&"text_encoder/model.safetensors".to_string()));
    }

    #[test]
    fn roentgen_v2s_combined_text_encoder_only_when_asked_and_present() {
        let mut listing = files(&[
            "text_encoder_and_tokenizer/config.json",
            "text_encoder_and_tokenizer/model.safetensors",
            "text_encoder_and_tokenizer/pytorch_model.bin",
            "text_encoder_and_tokenizer/vocab.json",
            "text_encoder_and_tokenizer/merges.txt",
        ]);
        assert_eq!(
            select_combined(&listing, false).unwrap(),
            files(&[
                "text_encoder_and_tokenizer/config.json",
                "text_encoder_and_tokenizer/merges.txt",
                "text_encoder_and_tokenizer/model.safetensors",
                "text_encoder_and_tokenizer/vocab.json",
            ])
        );
        listing.retain(|f| !f.ends_with("config.json"));
        assert!(select_combined(&listing, false).unwrap().is_empty());
    }

    #[test]
    fn parts_from_a_root_or_a_subfolder() {
        let listing = files(&[
            "config.json",
            "pytorch_model.bin",
            "sdxl_vae.safetensors",
            "vocab.txt",
            "tokenizer_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
        ]);
        assert_eq!(
            select_part(&listing, "", Part::Model, false).unwrap(),
            files(&["config.json", "pytorch_model.bin"])
        );
        assert_eq!(
            select_part(&listing, "unet", Part::Model, false).unwrap(),
            files(&[
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ])
        );
        assert_eq!(
            select_part(&listing, "", Part::Tokenizer, false).unwrap(),
            files(&["config.json", "vocab.txt", "tokenizer_config.json"])
        );
        assert!(select_part(&listing, "vae", Part::Model, false).is_err());
    }
}
