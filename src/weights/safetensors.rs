//! safetensors: `[u64 LE header length N][N bytes of JSON][data]`.
//!
//! The JSON maps each tensor name to `{"dtype": "F32", "shape": [..], "data_offsets":
//! [begin, end]}`, offsets relative to the first data byte (8 + N); the optional
//! `__metadata__` entry (string → string) is kept in the index (quantized files name
//! their scheme there). Spec:
//! <https://github.com/huggingface/safetensors#format>.
//!
//! Only the first `8 + N` bytes are needed to build the index: a streaming reader can
//! read 8 bytes, call [`safetensors_header_len`], read the header and call
//! [`parse_header`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ByteSource, DType, TensorInfo, WeightError, read_range};

/// The safetensors reference implementation refuses headers above 100 MB; so do we, so
/// that a garbage length cannot make us allocate gigabytes.
pub const MAX_HEADER_LEN: usize = 100_000_000;

/// The length of the JSON header, from the file's first 8 bytes. The data starts at
/// `8 + safetensors_header_len(..)`.
pub fn safetensors_header_len(file_name: &str, first8: &[u8]) -> Result<usize, WeightError> {
    let Some(b) = first8.get(..8) else {
        return Err(WeightError::Truncated {
            file: file_name.to_owned(),
            what: "the safetensors header length".into(),
            needed: 0..8,
            file_len: first8.len(),
        });
    };
    let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if n > MAX_HEADER_LEN as u64 {
        return Err(WeightError::Corrupt {
            file: file_name.to_owned(),
            detail: format!(
                "the first 8 bytes give a safetensors header length of {n} bytes, more than the 100 MB limit, so this is not a safetensors file"
            ),
        });
    }
    if n < 2 {
        return Err(WeightError::Corrupt {
            file: file_name.to_owned(),
            detail: format!(
                "the safetensors header length is {n} bytes, too short for any JSON object"
            ),
        });
    }
    Ok(n as usize)
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Builds the index from the JSON `header` (the bytes after the first 8).
///
/// `file_len` is the whole file's length, used to check every tensor lies inside it.
pub fn parse_header(
    file_name: &str,
    header: &[u8],
    file_len: usize,
) -> Result<BTreeMap<String, TensorInfo>, WeightError> {
    Ok(parse_header_and_metadata(file_name, header, file_len)?.0)
}

/// [`parse_header`] that also returns the `__metadata__` map (empty when absent).
pub fn parse_header_and_metadata(
    file_name: &str,
    header: &[u8],
    file_len: usize,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>), WeightError> {
    let corrupt = |detail: String| WeightError::Corrupt {
        file: file_name.to_owned(),
        detail,
    };
    let data_start = 8 + header.len();
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| corrupt(format!("the safetensors JSON header does not parse ({e})")))?;

    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value).map_err(|e| {
                corrupt(format!(
                    "the `__metadata__` entry must map strings to strings ({e})"
                ))
            })?;
            continue;
        }
        let entry: RawEntry = serde_json::from_value(value).map_err(|e| {
            corrupt(format!(
                "the header entry for tensor `{name}` is malformed ({e})"
            ))
        })?;
        let dtype =
            DType::from_safetensors_name(&entry.dtype).ok_or_else(|| WeightError::Unsupported {
                file: file_name.to_owned(),
                what: format!("dtype `{}` for tensor `{name}`", entry.dtype),
                hint: "convert the checkpoint to f32, f16 or bf16".into(),
            })?;
        let (begin, end) = entry.data_offsets;
        if begin > end {
            return Err(corrupt(format!(
                "tensor `{name}` has data offsets [{begin}, {end}], which run backwards"
            )));
        }
        let expected = entry
            .shape
            .iter()
            .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor `{name}` has an impossibly large shape {:?}",
                    entry.shape
                ))
            })?;
        if end - begin != expected {
            return Err(WeightError::SizeMismatch {
                file: file_name.to_owned(),
                tensor: name,
                dtype,
                shape: entry.shape,
                expected_bytes: expected,
                found_bytes: end - begin,
            });
        }
        let (Some(abs_begin), Some(abs_end)) =
            (data_start.checked_add(begin), data_start.checked_add(end))
        else {
            return Err(corrupt(format!(
                "tensor `{name}` has impossible data offsets"
            )));
        };
        if abs_end > file_len {
            return Err(WeightError::Truncated {
                file: file_name.to_owned(),
                what: format!("tensor `{name}`"),
                needed: abs_begin..abs_end,
                file_len,
            });
        }
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape: entry.shape,
                range: abs_begin..abs_end,
            },
        );
    }
    Ok((tensors, metadata))
}

/// Reads the header through `src` and builds the index.
pub(crate) fn parse_index<S: ByteSource + ?Sized>(
    file_name: &str,
    src: &S,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>), WeightError> {
    let file_len = src.file_len();
    let first8 = if file_len < 8 {
        // Report the truncation through safetensors_header_len's message.
        read_range(src, file_name, || "the header length".into(), 0, file_len)?
    } else {
        read_range(src, file_name, || "the header length".into(), 0, 8)?
    };
    let n = safetensors_header_len(file_name, first8)?;
    let header = read_range(
        src,
        file_name,
        || "the safetensors JSON header".into(),
        8,
        n,
    )?;
    parse_header_and_metadata(file_name, header, file_len)
}
