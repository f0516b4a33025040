//! Checkpoint weight files, parsed in pure Rust without torch: bytes in, tensors out.
//!
//! Two formats are read:
//! - **safetensors** (`*.safetensors`): an 8-byte little-endian header length, a JSON
//!   header, then the tensor data ([`safetensors`]).
//! - **PyTorch `.bin`** (`torch.save`'s zip format, what diffusers
//!   `save_pretrained(safe_serialization=False)` writes and what RoentGen-era checkpoints
//!   ship): a zip archive holding a pickled state dict (`<archive>/data.pkl`) and one
//!   stored entry per tensor storage (`<archive>/data/<key>`) ([`zip`], [`pickle`] and
//!   the private `pytorch` module). No Python code is ever run: the pickle is read into a small value
//!   tree and only the handful of torch constructors a state dict uses are understood.
//!
//! Both parsers only read the metadata parts of a file (the safetensors header; the zip
//! directory, `data.pkl` and the small local headers) through [`ByteSource`], so a
//! streaming reader that holds only some byte ranges can build the same
//! [`WeightIndex`] and then fetch each tensor's [`TensorInfo::range`] itself
//! (`loader::WeightFile::open` does: checkpoints stream tensor by tensor into GPU
//! buffers and are never held whole in memory).
//!
//! Nothing here touches the filesystem, spawns threads or blocks, so it builds for
//! `wasm32-unknown-unknown`.

pub mod dtype;
mod error;
pub mod pick;
pub mod pickle;
mod pytorch;
pub mod safetensors;
pub mod zip;

use std::collections::BTreeMap;
use std::ops::Range;

pub use dtype::{ConvertError, DType, bf16_to_f32, f16_to_f32, f32_to_f16, to_f32};
pub use error::WeightError;
pub use pick::pick_weight_file;
pub use safetensors::safetensors_header_len;

/// One tensor of a weight file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    /// Row-major dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file; the data there is contiguous row-major,
    /// little-endian, `numel × dtype.size_bytes()` bytes long.
    pub range: Range<usize>,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of bytes of data.
    pub fn byte_len(&self) -> usize {
        self.range.len()
    }
}

/// Which container a weight file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    SafeTensors,
    /// `torch.save`'s zip archive (PyTorch ≥ 1.6), usually named `*.bin`, `*.pt` or `*.ckpt`.
    PyTorchZip,
}

/// Where every tensor of one weight file lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightIndex {
    /// The file's name as given by the caller (used in every error message).
    pub file: String,
    pub format: FileFormat,
    pub tensors: BTreeMap<String, TensorInfo>,
    /// safetensors' `__metadata__` (empty for torch files).
    pub metadata: BTreeMap<String, String>,
}

/// Random access to (parts of) a file's bytes.
///
/// A whole file in memory (`[u8]`) holds every range. A streaming reader that holds only
/// some ranges returns `None` for the rest; the parsers then fail with
/// [`WeightError::NotLoaded`] naming the range to fetch, and can be run again once it is.
pub trait ByteSource {
    /// The full length of the file (not only of the loaded parts).
    fn file_len(&self) -> usize;
    /// The bytes of `range`, which lies within `0..file_len()`, if they are loaded.
    fn bytes(&self, range: Range<usize>) -> Option<&[u8]>;
}

impl ByteSource for [u8] {
    fn file_len(&self) -> usize {
        self.len()
    }
    fn bytes(&self, range: Range<usize>) -> Option<&[u8]> {
        self.get(range)
    }
}

/// Reads `len` bytes at `start` from `src`, or says the file is truncated / the range is
/// not loaded. `what` names the piece for the error message.
pub(crate) fn read_range<'a, S: ByteSource + ?Sized>(
    src: &'a S,
    file: &str,
    what: impl FnOnce() -> String,
    start: usize,
    len: usize,
) -> Result<&'a [u8], WeightError> {
    let file_len = src.file_len();
    let Some(end) = start.checked_add(len) else {
        return Err(WeightError::Corrupt {
            file: file.to_owned(),
            detail: format!(
                "{} claims an impossible size ({start} + {len} bytes)",
                what()
            ),
        });
    };
    if end > file_len {
        return Err(WeightError::Truncated {
            file: file.to_owned(),
            what: what(),
            needed: start..end,
            file_len,
        });
    }
    src.bytes(start..end).ok_or_else(|| WeightError::NotLoaded {
        file: file.to_owned(),
        what: what(),
        needed: start..end,
    })
}

impl WeightIndex {
    /// Parses a weight file, choosing the format by content: a zip archive (`PK\x03\x04`)
    /// is read as a PyTorch checkpoint, anything else as safetensors.
    pub fn parse(file_name: &str, bytes: &[u8]) -> Result<Self, WeightError> {
        Self::parse_source(file_name, bytes)
    }

    /// [`WeightIndex::parse`] over any [`ByteSource`].
    pub fn parse_source<S: ByteSource + ?Sized>(
        file_name: &str,
        src: &S,
    ) -> Result<Self, WeightError> {
        let head_len = src.file_len().min(64);
        let head = read_range(
            src,
            file_name,
            || "the file's first bytes".into(),
            0,
            head_len,
        )?;
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            return Self::parse_pytorch_source(file_name, src);
        }
        if let Some(err) = recognise_wrong_content(file_name, head) {
            return Err(err);
        }
        Self::parse_safetensors_source(file_name, src)
    }

    /// Parses a safetensors file.
    pub fn parse_safetensors(file_name: &str, bytes: &[u8]) -> Result<Self, WeightError> {
        Self::parse_safetensors_source(file_name, bytes)
    }

    /// [`WeightIndex::parse_safetensors`] over any [`ByteSource`]; reads only the header.
    pub fn parse_safetensors_source<S: ByteSource + ?Sized>(
        file_name: &str,
        src: &S,
    ) -> Result<Self, WeightError> {
        let (tensors, metadata) = safetensors::parse_index(file_name, src)?;
        Ok(WeightIndex {
            file: file_name.to_owned(),
            format: FileFormat::SafeTensors,
            tensors,
            metadata,
        })
    }

    /// Parses a PyTorch zip checkpoint (`torch.save`, PyTorch ≥ 1.6).
    pub fn parse_pytorch(file_name: &str, bytes: &[u8]) -> Result<Self, WeightError> {
        Self::parse_pytorch_source(file_name, bytes)
    }

    /// [`WeightIndex::parse_pytorch`] over any [`ByteSource`]; reads the zip directory,
    /// `data.pkl` and the local header of each storage entry, never the tensor data.
    pub fn parse_pytorch_source<S: ByteSource + ?Sized>(
        file_name: &str,
        src: &S,
    ) -> Result<Self, WeightError> {
        let tensors = pytorch::parse_index(file_name, src)?;
        Ok(WeightIndex {
            file: file_name.to_owned(),
            format: FileFormat::PyTorchZip,
            tensors,
            metadata: BTreeMap::new(),
        })
    }

    /// The tensor called `name`, or an error naming it and the file and suggesting close names.
    pub fn get(&self, name: &str) -> Result<&TensorInfo, WeightError> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightError::MissingTensor {
                file: self.file.clone(),
                tensor: name.to_owned(),
                suggestions: error::close_names(name, self.tensors.keys().map(String::as_str), 3),
            })
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor called `name` and its raw little-endian bytes within `bytes` (the file).
    pub fn tensor_bytes<'a>(
        &self,
        bytes: &'a [u8],
        name: &str,
    ) -> Result<(&TensorInfo, &'a [u8]), WeightError> {
        self.tensor_bytes_source(bytes, name)
    }

    /// [`WeightIndex::tensor_bytes`] over any [`ByteSource`] holding the tensor's range.
    pub fn tensor_bytes_source<'a, S: ByteSource + ?Sized>(
        &self,
        bytes: &'a S,
        name: &str,
    ) -> Result<(&TensorInfo, &'a [u8]), WeightError> {
        let info = self.get(name)?;
        let data = read_range(
            bytes,
            &self.file,
            || format!("tensor `{name}`"),
            info.range.start,
            info.range.len(),
        )?;
        Ok((info, data))
    }

    /// The tensor called `name` as `f32`, checking that its shape is `expected_shape`.
    /// F32, F16, BF16 and F64 tensors are read; F16/BF16 widen exactly.
    pub fn read_f32(
        &self,
        bytes: &[u8],
        name: &str,
        expected_shape: &[usize],
    ) -> Result<Vec<f32>, WeightError> {
        self.read_f32_source(bytes, name, expected_shape)
    }

    /// [`WeightIndex::read_f32`] over any [`ByteSource`] holding the tensor's range.
    pub fn read_f32_source<S: ByteSource + ?Sized>(
        &self,
        bytes: &S,
        name: &str,
        expected_shape: &[usize],
    ) -> Result<Vec<f32>, WeightError> {
        let (info, data) = self.tensor_bytes_source(bytes, name)?;
        if info.shape != expected_shape {
            return Err(WeightError::ShapeMismatch {
                file: self.file.clone(),
                tensor: name.to_owned(),
                expected: expected_shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        to_f32(info.dtype, data).map_err(|e| match e {
            ConvertError::NotFloat(dtype) => WeightError::DTypeNotConvertible {
                file: self.file.clone(),
                tensor: name.to_owned(),
                dtype,
                wanted: "f32",
            },
            ConvertError::RaggedLength { dtype, len } => WeightError::SizeMismatch {
                file: self.file.clone(),
                tensor: name.to_owned(),
                dtype,
                shape: info.shape.clone(),
                expected_bytes: info.numel() * dtype.size_bytes(),
                found_bytes: len,
            },
        })
    }
}

/// Recognises files that are clearly not weights (a Git LFS pointer, an HTML error
/// page, a pre-1.6 torch pickle) so the error says what happened.
fn recognise_wrong_content(file: &str, head: &[u8]) -> Option<WeightError> {
    let text_start = head.trim_ascii_start();
    if head.starts_with(b"version https://git-lfs") {
        return Some(WeightError::Corrupt {
            file: file.to_owned(),
            detail: "it is a Git LFS pointer, not the weights themselves (run `git lfs pull` in the checkpoint folder, or download the file directly)".into(),
        });
    }
    let lower: Vec<u8> = text_start
        .iter()
        .take(15)
        .map(u8::to_ascii_lowercase)
        .collect();
    if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        return Some(WeightError::Corrupt {
            file: file.to_owned(),
            detail: "it is an HTML page (probably a login or error page saved in place of the download; gated models need an access token)".into(),
        });
    }
    // Legacy torch.save (PyTorch < 1.6) starts with a pickled magic number: PROTO 2,
    // LONG1 of 10 bytes (0x1950a86a20f9469cfc6c). No safetensors header is that long.
    if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return Some(WeightError::Unsupported {
            file: file.to_owned(),
            what: "the legacy (PyTorch < 1.6) non-zip torch.save format".into(),
            hint: "re-save it with a recent PyTorch (`torch.save(torch.load(f), f)`) or convert it to safetensors".into(),
        });
    }
    None
}
