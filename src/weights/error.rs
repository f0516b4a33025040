//! Errors of the weight loader: each says which file, which tensor where there is one,
//! what was expected and what was found, in a sentence a user can act on.

use std::ops::Range;

use super::dtype::DType;

/// Everything that can go wrong while reading a checkpoint's weight files.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    /// The file ends before a piece of it that the index says exists.
    #[error(
        "{file} is truncated: {what} needs bytes {}..{} but the file has {file_len} bytes; re-download the file",
        needed.start, needed.end
    )]
    Truncated {
        file: String,
        /// What needed the bytes, e.g. "tensor `conv_in.weight`" or "the JSON header".
        what: String,
        needed: Range<usize>,
        file_len: usize,
    },

    /// The bytes are not a well-formed weight file.
    #[error(
        "{file} is corrupt or not a weight file: {detail}; re-download it, or check that it is a .safetensors or PyTorch .bin checkpoint"
    )]
    Corrupt { file: String, detail: String },

    /// A quantized file (`roentgen quantize`) whose packing cannot be used.
    #[error("{file} is a quantized checkpoint that cannot be read: {detail}")]
    Quantization { file: String, detail: String },

    /// A tensor's stored byte count does not match its dtype and shape.
    #[error(
        "{file} is corrupt: tensor `{tensor}` ({dtype}, shape {shape:?}) should take {expected_bytes} bytes but the file gives it {found_bytes}; re-download the file"
    )]
    SizeMismatch {
        file: String,
        tensor: String,
        dtype: DType,
        shape: Vec<usize>,
        expected_bytes: usize,
        found_bytes: usize,
    },

    /// The file is well formed but uses something this loader does not read.
    #[error("{file} uses {what}, which this loader does not support; {hint}")]
    Unsupported {
        file: String,
        what: String,
        hint: String,
    },

    /// A tensor is stored with strides that are not contiguous row-major.
    #[error(
        "{file}: tensor `{tensor}` (shape {shape:?}) is stored with strides {stride:?}, not contiguous row-major {expected:?}; re-save the state dict after calling .contiguous() on every tensor"
    )]
    NonContiguous {
        file: String,
        tensor: String,
        shape: Vec<usize>,
        stride: Vec<usize>,
        expected: Vec<usize>,
    },

    /// The model asked for a tensor the file does not hold.
    #[error(
        "{file} has no tensor `{tensor}`{}; the checkpoint may be for a different model or an old diffusers layout",
        suggestion_text(suggestions)
    )]
    MissingTensor {
        file: String,
        tensor: String,
        /// Names in the file close to the one asked for, closest first.
        suggestions: Vec<String>,
    },

    /// A tensor has another shape than the model config implies.
    #[error(
        "{file}: tensor `{tensor}` has shape {found:?} but the model expects {expected:?}; the checkpoint does not match this model's config.json"
    )]
    ShapeMismatch {
        file: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor's element type cannot be turned into the type asked for.
    #[error("{file}: tensor `{tensor}` is stored as {dtype}, which cannot be read as {wanted}")]
    DTypeNotConvertible {
        file: String,
        tensor: String,
        dtype: DType,
        wanted: &'static str,
    },

    /// No weight file for a model component.
    #[error(
        "no weight file for `{component}`: looked for {} but `{component}/` holds {}; download the component's weights into that folder",
        looked_for.join(", "),
        list_or_nothing(found)
    )]
    MissingFile {
        component: String,
        looked_for: Vec<String>,
        found: Vec<String>,
    },

    /// The component is split into shards, which is not read yet.
    #[error(
        "`{component}` is stored as a sharded checkpoint ({index_file}); sharded checkpoints are not supported yet: merge the shards into one file, e.g. with diffusers `save_pretrained(..., max_shard_size=\"20GB\")`"
    )]
    Sharded {
        component: String,
        index_file: String,
    },

    /// A streaming reader has not fetched a byte range yet (never returned for a whole file in memory).
    #[error("{file}: bytes {}..{} are needed for {what} but have not been loaded yet", needed.start, needed.end)]
    NotLoaded {
        file: String,
        what: String,
        needed: Range<usize>,
    },
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = suggestions.iter().map(|s| format!("`{s}`")).collect();
        format!(" (did you mean {}?)", quoted.join(", "))
    }
}

fn list_or_nothing(found: &[String]) -> String {
    if found.is_empty() {
        "nothing".to_owned()
    } else {
        found.join(", ")
    }
}

/// Names in `names` close to `wanted`, closest first (at most `max`).
///
/// Closeness is the edit distance in bytes; a name counts as close when at most a third
/// of the wanted name (and at least 3 bytes) differs, which catches renamed segments
/// (`query` vs `to_q`), missing prefixes and off-by-one indices.
pub(crate) fn close_names<'a>(
    wanted: &str,
    names: impl Iterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let limit = (wanted.len() / 3).max(3);
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|n| {
            // Cheap length filter first: the distance is at least the length difference.
            if n.len().abs_diff(wanted.len()) > limit {
                return None;
            }
            let d = edit_distance(wanted.as_bytes(), n.as_bytes());
            (d <= limit).then_some((d, n))
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(max)
        .map(|(_, n)| n.to_owned())
        .collect()
}

fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance(b"", b""), 0);
        assert_eq!(edit_distance(b"abc", b""), 3);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        assert_eq!(edit_distance(b"to_q", b"to_k"), 1);
    }

    #[test]
    fn close_names_finds_renames() {
        let names = [
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight",
            "conv_in.weight",
        ];
        let got = close_names(
            "mid_block.attentions.0.transformer_blocks.0.attn1.query.weight",
            names.iter().copied(),
            3,
        );
        // Both attention projections are as close to `query`; the unrelated name is not.
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().any(|n| n.contains("to_q")), "{got:?}");
    }
}
