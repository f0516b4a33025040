//! A diffusers checkpoint folder (`model_index.json`, `unet/`, `text_encoder/`,
//! `tokenizer/`, `vae/`, `scheduler/`), read through a [`FileSource`] so that the same
//! code loads from a native directory, the browser's Origin Private File System or a URL.
//! `safety_checker/` and `feature_extractor/` are never read: the safety checker
//! blacks out chest X-rays.

use std::future::Future;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::loader::{Loader, MatrixFormat, WeightFile};
use crate::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::weights::pick_weight_file;

/// Where a checkpoint's files come from. Paths are relative to the checkpoint root and
/// use `/`.
pub trait FileSource {
    /// Every file path under the root.
    fn list(&self) -> Vec<String>;
    /// The whole file.
    fn read(&self, path: &str) -> impl Future<Output = Result<Vec<u8>>>;
}

/// Options for loading a checkpoint's models.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Prefer `*.fp16.*` weight files where a folder has both.
    pub prefer_f16: bool,
    pub matrix_format: MatrixFormat,
}

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

    async fn weights(&self, component: &str) -> Result<WeightFile> {
        let path = pick_weight_file(component, &self.files, self.options.prefer_f16)?;
        let bytes = self.source.read(&path).await?;
        WeightFile::parse(&path, bytes)
    }

    pub async fn text_encoder(&self, gpu: &Gpu) -> Result<ClipTextModel> {
        let file = "text_encoder/config.json";
        let config = ClipTextConfig::from_json(file, &self.read_text(file).await?)?;
        let w = self.weights("text_encoder").await?;
        ClipTextModel::load(&Loader::new(gpu, &w, self.options.matrix_format), config)
    }

    pub async fn unet(&self, gpu: &Gpu) -> Result<UNet2DConditionModel> {
        let file = "unet/config.json";
        let config = UNetConfig::from_json(file, &self.read_text(file).await?)?;
        let w = self.weights("unet").await?;
        UNet2DConditionModel::load(&Loader::new(gpu, &w, self.options.matrix_format), config)
    }

    pub async fn vae(&self, gpu: &Gpu, with_encoder: bool) -> Result<AutoencoderKL> {
        let file = "vae/config.json";
        let config = VaeConfig::from_json(file, &self.read_text(file).await?)?;
        let w = self.weights("vae").await?;
        AutoencoderKL::load(
            &Loader::new(gpu, &w, self.options.matrix_format),
            config,
            with_encoder,
        )
    }
}

/// A checkpoint folder on the native file system.
#[cfg(not(target_arch = "wasm32"))]
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
}
