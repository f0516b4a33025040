//! A diffusers checkpoint folder (`model_index.json`, `unet/`, `text_encoder/`,
//! `tokenizer/`, `vae/`, `scheduler/`), read through a [`FileSource`] so that the same
//! code loads from a native directory, the browser's Origin Private File System or a URL.
//! `safety_checker/` and `feature_extractor/` are never read: the safety checker
//! blacks out chest X-rays.

use std::future::Future;

use crate::error::{Error, Result};
use crate::generation::Family;
use crate::gpu::Gpu;
use crate::loader::{Loader, MatrixFormat, RangeRead, WeightFile};
use crate::models::{
    AutoencoderKL, TextConfig, TextEncoder, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::{PromptTokenizer, TokenizerFiles};
use crate::weights::pick_weight_file;

/// Where a checkpoint's files come from. Paths are relative to the checkpoint root and
/// use `/`.
pub trait FileSource {
    /// Every file path under the root.
    fn list(&self) -> Vec<String>;
    /// The whole file (configs, tokenizer files: small).
    fn read(&self, path: &str) -> impl Future<Output = Result<Vec<u8>>>;
    /// Random access to a (large) file, for weights: read tensor by tensor.
    fn open(&self, path: &str) -> Result<Box<dyn RangeRead>>;
}

/// `Send + Sync` natively (a pipeline may be shared between threads), nothing in the
/// browser (JS handles are neither, and there is one thread).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> MaybeSendSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSendSync for T {}

#[cfg(not(target_arch = "wasm32"))]
type Opener = Box<dyn Fn(&str) -> Result<Box<dyn RangeRead>> + Send + Sync>;
#[cfg(target_arch = "wasm32")]
type OpenerWeb = Box<dyn Fn(&str) -> Result<Box<dyn RangeRead>>>;

/// A loaded pipeline's way back to its checkpoint's weights: the UNet again after the
/// lean memory plan released it, the VAE with its encoder for an edit.
pub struct Reload {
    #[cfg(not(target_arch = "wasm32"))]
    open: Opener,
    #[cfg(target_arch = "wasm32")]
    open: OpenerWeb,
    unet: String,
    vae: String,
    format: MatrixFormat,
}

impl Reload {
    pub fn unet(&self, gpu: &Gpu, config: UNetConfig) -> Result<UNet2DConditionModel> {
        let w = WeightFile::open(&self.unet, (self.open)(&self.unet)?)?;
        UNet2DConditionModel::load(&Loader::new(gpu, &w, self.format).component("unet"), config)
    }

    pub fn vae(&self, gpu: &Gpu, config: VaeConfig, with_encoder: bool) -> Result<AutoencoderKL> {
        let w = WeightFile::open(&self.vae, (self.open)(&self.vae)?)?;
        AutoencoderKL::load(
            &Loader::new(gpu, &w, self.format).component("vae"),
            config,
            with_encoder,
        )
    }
}

/// Options for loading a checkpoint's models.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Prefer `*.fp16.*` weight files where a folder has both.
    pub prefer_f16: bool,
    pub matrix_format: MatrixFormat,
    /// Load the text encoder (and its tokenizer, where the folder has one) from
    /// `text_encoder_and_tokenizer/`, which RoentGen v2's training code may save beside
    /// `text_encoder/`. By default `text_encoder/` is used, as diffusers'
    /// `from_pretrained` does (the other folder only where `text_encoder/` is missing).
    pub text_encoder_and_tokenizer: bool,
}

/// RoentGen v2's training code's folder of the fine-tuned text encoder and tokenizer.
pub const COMBINED_TEXT_DIR: &str = "text_encoder_and_tokenizer";

pub struct Checkpoint<S: FileSource> {
    pub source: S,
    pub files: Vec<String>,
    pub options: LoadOptions,
}

impl<S: FileSource> Checkpoint<S> {
    pub fn new(source: S, options: LoadOptions) -> Result<Self> {
        let files = source.list();
        if !files
            .iter()
            .any(|f| f == "model_index.json" || f.starts_with("unet/"))
        {
            return Err(Error::MissingFile {
                path: "model_index.json".into(),
                hint: "pick the diffusers folder itself (the one holding model_index.json, unet/, vae/, text_encoder/, tokenizer/)".into(),
            });
        }
        Ok(Checkpoint {
            source,
            files,
            options,
        })
    }

    fn has(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == path)
    }

    /// The folder the text encoder loads from: `text_encoder` or
    /// `text_encoder_and_tokenizer` ([`LoadOptions::text_encoder_and_tokenizer`]).
    pub fn text_encoder_dir(&self) -> &'static str {
        let combined = self.has(&format!("{COMBINED_TEXT_DIR}/config.json"));
        if combined
            && (self.options.text_encoder_and_tokenizer || !self.has("text_encoder/config.json"))
        {
            COMBINED_TEXT_DIR
        } else {
            "text_encoder"
        }
    }

    /// The tokenizer's folder: the combined folder's own tokenizer where the text
    /// encoder comes from there and it has one, else `tokenizer`.
    pub fn tokenizer_dir(&self) -> &'static str {
        let dir = self.text_encoder_dir();
        let has_tok = ["vocab.json", "tokenizer.json", "vocab.txt"]
            .iter()
            .any(|f| self.has(&format!("{dir}/{f}")));
        if dir == COMBINED_TEXT_DIR && has_tok {
            COMBINED_TEXT_DIR
        } else {
            "tokenizer"
        }
    }

    /// What to tell the user when the folder offers both text encoders (or the one asked
    /// for is missing).
    pub fn text_encoder_note(&self) -> Option<String> {
        let combined = self.has(&format!("{COMBINED_TEXT_DIR}/config.json"));
        let plain = self.has("text_encoder/config.json");
        match (plain, combined, self.options.text_encoder_and_tokenizer) {
            (true, true, false) => Some(format!(
                "this folder has both text_encoder/ and {COMBINED_TEXT_DIR}/: using text_encoder/ (as diffusers does); choose the other with --text-encoder {COMBINED_TEXT_DIR}"
            )),
            (true, true, true) => Some(format!(
                "this folder has both text_encoder/ and {COMBINED_TEXT_DIR}/: using {COMBINED_TEXT_DIR}/ (text encoder and {} tokenizer), as asked",
                if self.tokenizer_dir() == COMBINED_TEXT_DIR {
                    "its own"
                } else {
                    "tokenizer/'s"
                }
            )),
            (_, false, true) => Some(format!(
                "--text-encoder {COMBINED_TEXT_DIR}: this folder has no {COMBINED_TEXT_DIR}/config.json; using text_encoder/"
            )),
            (false, true, false) => Some(format!(
                "this folder has no text_encoder/: using {COMBINED_TEXT_DIR}/"
            )),
            _ => None,
        }
    }

    pub async fn read_text(&self, path: &str) -> Result<String> {
        if !self.files.iter().any(|f| f == path) {
            return Err(Error::MissingFile {
                path: path.into(),
                hint: "the checkpoint folder is incomplete; copy the whole folder again".into(),
            });
        }
        let bytes = self.source.read(path).await?;
        String::from_utf8(bytes).map_err(|_| Error::Config {
            file: path.into(),
            message: "not UTF-8 text".into(),
        })
    }

    /// The weight files the models load, one per component (text encoder, UNet, VAE),
    /// as paths in the checkpoint.
    pub fn weight_files(&self) -> Result<Vec<String>> {
        [self.text_encoder_dir(), "unet", "vae"]
            .iter()
            .map(|c| Ok(pick_weight_file(c, &self.files, self.options.prefer_f16)?))
            .collect()
    }

    async fn weights(&self, component: &str) -> Result<WeightFile> {
        let path = pick_weight_file(component, &self.files, self.options.prefer_f16)?;
        WeightFile::open(&path, self.source.open(&path)?)
    }

    /// The text encoder (CLIP or BERT, as its config says).
    pub async fn text_encoder(&self, gpu: &Gpu) -> Result<TextEncoder> {
        let config = self.text_encoder_config().await?;
        let w = self.weights(self.text_encoder_dir()).await?;
        TextEncoder::load(
            &Loader::new(gpu, &w, self.options.matrix_format).component("text_encoder"),
            config,
        )
    }

    pub async fn unet(&self, gpu: &Gpu) -> Result<UNet2DConditionModel> {
        let config = self.unet_config().await?;
        let w = self.weights("unet").await?;
        UNet2DConditionModel::load(
            &Loader::new(gpu, &w, self.options.matrix_format).component("unet"),
            config,
        )
    }

    /// The tokenizer: `tokenizer/` (or `text_encoder_and_tokenizer/`'s own, see
    /// [`Checkpoint::tokenizer_dir`]), in any layout (`vocab.json` + `merges.txt` as
    /// RoentGen-era folders ship it, `tokenizer.json`, or BERT's `vocab.txt`).
    pub async fn tokenizer(&self) -> Result<PromptTokenizer> {
        let dir = self.tokenizer_dir();
        let read = |p: &'static str| async move {
            let path = format!("{dir}/{p}");
            if self.has(&path) {
                Some(self.source.read(&path).await)
            } else {
                None
            }
        };
        let vocab = read("vocab.json").await.transpose()?;
        let merges = read("merges.txt").await.transpose()?;
        let vocab_txt = read("vocab.txt").await.transpose()?;
        let tokenizer_json = read("tokenizer.json").await.transpose()?;
        let config = read("tokenizer_config.json").await.transpose()?;
        let special = read("special_tokens_map.json").await.transpose()?;
        PromptTokenizer::from_files(TokenizerFiles {
            vocab_json: vocab.as_deref(),
            merges_txt: merges.as_deref(),
            vocab_txt: vocab_txt.as_deref(),
            tokenizer_json: tokenizer_json.as_deref(),
            tokenizer_config_json: config.as_deref(),
            special_tokens_map_json: special.as_deref(),
        })
    }

    /// `scheduler/scheduler_config.json`.
    pub async fn scheduler_config(&self) -> Result<SchedulerConfig> {
        let file = "scheduler/scheduler_config.json";
        SchedulerConfig::from_json(file, &self.read_text(file).await?)
    }

    /// The family its configs say ([`Family::of`]: the text encoder's config and the
    /// scheduler's prediction type), `None` for no family we know.
    pub async fn family(&self) -> Result<Option<Family>> {
        let text = self.text_encoder_config().await?;
        let v = self.scheduler_config().await?.prediction_type
            == crate::schedulers::PredictionType::VPrediction;
        Ok(Family::of(&text, v))
    }

    /// `_name_or_path` from `model_index.json`, or "" (nothing in it is needed to
    /// generate: an unreadable one is logged and the model loads without its name).
    pub async fn model_name(&self) -> String {
        let Ok(s) = self.read_text("model_index.json").await else {
            return String::new();
        };
        match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(v) => v
                .get("_name_or_path")
                .and_then(|n| n.as_str())
                .map(String::from)
                .unwrap_or_default(),
            Err(e) => {
                log::warn!(
                    "model_index.json is not valid JSON ({e}); the model loads without its name"
                );
                String::new()
            }
        }
    }

    /// `unet/config.json`.
    pub async fn unet_config(&self) -> Result<UNetConfig> {
        let file = "unet/config.json";
        UNetConfig::from_json(file, &self.read_text(file).await?)
    }

    /// `vae/config.json`.
    pub async fn vae_config(&self) -> Result<VaeConfig> {
        let file = "vae/config.json";
        VaeConfig::from_json(file, &self.read_text(file).await?)
    }

    /// The text encoder's `config.json` (see [`Checkpoint::text_encoder_dir`]).
    pub async fn text_encoder_config(&self) -> Result<TextConfig> {
        let file = format!("{}/config.json", self.text_encoder_dir());
        TextConfig::from_json(&file, &self.read_text(&file).await?)
    }

    /// What a loaded pipeline keeps of this checkpoint to read weights again later.
    pub fn reload(&self) -> Result<Reload>
    where
        S: Clone + MaybeSendSync + 'static,
    {
        let source = self.source.clone();
        Ok(Reload {
            open: Box::new(move |path| source.open(path)),
            unet: pick_weight_file("unet", &self.files, self.options.prefer_f16)?,
            vae: pick_weight_file("vae", &self.files, self.options.prefer_f16)?,
            format: self.options.matrix_format,
        })
    }

    pub async fn vae(&self, gpu: &Gpu, with_encoder: bool) -> Result<AutoencoderKL> {
        let config = self.vae_config().await?;
        let w = self.weights("vae").await?;
        AutoencoderKL::load(
            &Loader::new(gpu, &w, self.options.matrix_format).component("vae"),
            config,
            with_encoder,
        )
    }
}

/// The files of a picked folder that a checkpoint needs, as `(path in the picked folder,
/// path in the checkpoint)`: the configs, the tokenizer, the scheduler and one weight
/// file per model (chosen as [`Checkpoint`] would). `paths` are relative to the picked
/// folder, `/`-separated; the checkpoint's root is the folder holding the shallowest
/// `model_index.json`, so picking the checkpoint's parent works too.
///
/// Everything is checked before a byte is copied: a missing config or weight file is an
/// error that names it, and nothing half-imported is left behind.
pub fn plan_import(paths: &[String], prefer_f16: bool) -> Result<Vec<(String, String)>> {
    let root = paths
        .iter()
        .filter_map(|p| p.strip_suffix("model_index.json"))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('/'))
        .min_by_key(|prefix| prefix.matches('/').count())
        .ok_or_else(|| Error::MissingFile {
            path: "model_index.json".into(),
            hint: "pick the diffusers folder itself (the one holding model_index.json, unet/, vae/, text_encoder/, tokenizer/)".into(),
        })?
        .to_string();
    let inside: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix(root.as_str()).map(String::from))
        .collect();
    let mut wanted = vec!["model_index.json".to_string()];
    for component in ["text_encoder", "unet", "vae"] {
        let config = format!("{component}/config.json");
        if !inside.contains(&config) {
            return Err(Error::MissingFile {
                path: config,
                hint: "the folder is incomplete; copy the whole checkpoint again".into(),
            });
        }
        wanted.push(config);
        wanted.push(pick_weight_file(component, &inside, prefer_f16)?);
    }
    let scheduler = "scheduler/scheduler_config.json".to_string();
    if !inside.contains(&scheduler) {
        return Err(Error::MissingFile {
            path: scheduler,
            hint: "the folder is incomplete; copy the whole checkpoint again".into(),
        });
    }
    wanted.push(scheduler);
    let tokenizer: Vec<String> = inside
        .iter()
        .filter(|p| {
            p.strip_prefix("tokenizer/")
                .is_some_and(|f| !f.contains('/') && (f.ends_with(".json") || f.ends_with(".txt")))
        })
        .cloned()
        .collect();
    // CLIP's BPE (`vocab.json` + `merges.txt`, as RoentGen-era folders ship it), BERT's
    // WordPiece (`vocab.txt`, RadEdit's), or either as one `tokenizer.json`; the
    // `tokenizer_config.json` and `special_tokens_map.json` beside them come along.
    let has = |f: &str| tokenizer.iter().any(|p| p == &format!("tokenizer/{f}"));
    if !(has("tokenizer.json") || has("vocab.json") && has("merges.txt") || has("vocab.txt")) {
        return Err(Error::MissingFile {
            path: if has("vocab.json") {
                "tokenizer/merges.txt"
            } else {
                "tokenizer/vocab.json"
            }
            .into(),
            hint: "the tokenizer needs vocab.json and merges.txt (CLIP), vocab.txt (BERT WordPiece, RadEdit) or tokenizer.json".into(),
        });
    }
    wanted.extend(tokenizer);
    Ok(wanted
        .into_iter()
        .map(|p| (format!("{root}{p}"), p))
        .collect())
}

/// Every file of a diffusers folder that [`plan_import`] may choose, checkpoint-relative:
/// what a download from a URL asks the server for (HTTP has no folder listing), before
/// `plan_import` picks from those that exist, as it does for a picked folder.
pub fn remote_candidates() -> Vec<String> {
    let mut out = vec![
        "model_index.json".to_string(),
        "scheduler/scheduler_config.json".to_string(),
    ];
    for component in ["text_encoder", "unet", "vae"] {
        out.push(format!("{component}/config.json"));
        for stem in crate::weights::pick::STEMS {
            for variant in ["", ".fp16"] {
                for ext in ["safetensors", "bin"] {
                    out.push(format!("{component}/{stem}{variant}.{ext}"));
                }
            }
        }
    }
    for f in [
        "vocab.json",
        "merges.txt",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ] {
        out.push(format!("tokenizer/{f}"));
    }
    out
}

/// A checkpoint folder on the native file system.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct DirSource {
    pub root: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirSource {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Result<DirSource> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::MissingFile {
                path: root.display().to_string(),
                hint: "no such directory".into(),
            });
        }
        Ok(DirSource { root })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource for DirSource {
    fn list(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                // Never descend into the parts we do not use.
                if prefix.is_empty()
                    && matches!(name.as_str(), "safety_checker" | "feature_extractor")
                {
                    continue;
                }
                if e.path().is_dir() {
                    walk(&e.path(), &rel, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out.sort();
        out
    }

    fn read(&self, path: &str) -> impl Future<Output = Result<Vec<u8>>> {
        let full = self.root.join(path);
        let r = std::fs::read(&full).map_err(|e| Error::MissingFile {
            path: full.display().to_string(),
            hint: format!("could not read it: {e}"),
        });
        std::future::ready(r)
    }

    fn open(&self, path: &str) -> Result<Box<dyn RangeRead>> {
        let full = self.root.join(path);
        let file = std::fs::File::open(&full).map_err(|e| Error::MissingFile {
            path: full.display().to_string(),
            hint: format!("could not open it: {e}"),
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Box::new(NativeFile {
            file: std::sync::Mutex::new(file),
            len,
            path: full.display().to_string(),
        }))
    }
}

/// A native file read at offsets.
#[cfg(not(target_arch = "wasm32"))]
struct NativeFile {
    file: std::sync::Mutex<std::fs::File>,
    len: u64,
    path: String,
}

#[cfg(not(target_arch = "wasm32"))]
impl RangeRead for NativeFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self.file.lock().unwrap();
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::MissingFile {
                path: self.path.clone(),
                hint: format!("reading {len} bytes at {offset} failed: {e}"),
            })?;
        Ok(buf)
    }
}
