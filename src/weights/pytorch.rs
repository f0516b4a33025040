//! PyTorch checkpoints in `torch.save`'s zip format (PyTorch ≥ 1.6; diffusers'
//! `diffusion_pytorch_model.bin`, transformers' `pytorch_model.bin`).
//!
//! The archive holds `<archive>/data.pkl` (the pickled state dict, see [`super::pickle`]),
//! one STORED entry `<archive>/data/<key>` per tensor storage (raw little-endian
//! elements), and small entries such as `<archive>/version` and `<archive>/byteorder`.
//! `<archive>` is `archive` in recent torch and the file's stem in older ones, so it is
//! taken from wherever `data.pkl` is.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::pickle::{self, NodeId, Pickle, TensorRef, Value};
use super::zip::{self, ZipEntry};
use super::{ByteSource, TensorInfo, WeightError, read_range};

/// Nested dicts deeper than this are not searched for tensors.
const MAX_NESTING: usize = 8;

/// The most dict entries the tensor search walks. A dict the pickle references several
/// times (memo) is walked each time, so a few hundred bytes can describe a tree of 16⁸
/// entries (a 404-byte file hung the reader: fuzz/regressions/torch_bin); a checkpoint
/// has a few thousand entries.
const MAX_ENTRIES: usize = 100_000;

/// Reads the zip directory, `data.pkl` and the storage entries' local headers of `src`
/// and returns where every tensor's data lies.
pub(crate) fn parse_index<S: ByteSource + ?Sized>(
    file: &str,
    src: &S,
) -> Result<BTreeMap<String, TensorInfo>, WeightError> {
    let entries = zip::read_directory(file, src)?;

    // 1. Find the pickle; its folder is the archive's prefix.
    let pkl = entries
        .iter()
        .filter(|e| e.name.ends_with("/data.pkl") || e.name == "data.pkl")
        .min_by_key(|e| e.name.len())
        .ok_or_else(|| {
            let names: Vec<&str> = entries.iter().take(5).map(|e| e.name.as_str()).collect();
            WeightError::Corrupt {
                file: file.to_owned(),
                detail: format!(
                    "it is a zip archive but not a PyTorch checkpoint: there is no `data.pkl` entry (it holds {} entries, e.g. {names:?})",
                    entries.len()
                ),
            }
        })?;
    let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];

    // 2. Byte order: recent torch writes it (torch 2.15 does); older files, without it,
    //    were little-endian in practice.
    let byteorder_name = format!("{prefix}byteorder");
    if let Some(bo) = entries.iter().find(|e| e.name == byteorder_name) {
        let r = zip::entry_data_range(file, src, bo)?;
        let b = read_range(
            src,
            file,
            || format!("zip entry `{byteorder_name}`"),
            r.start,
            r.len(),
        )?;
        match b {
            b"little" => {}
            b"big" => {
                return Err(WeightError::Unsupported {
                    file: file.to_owned(),
                    what: "big-endian tensor data (saved on a big-endian machine)".into(),
                    hint: "load and re-save it on a little-endian machine, or convert it to safetensors".into(),
                });
            }
            other => {
                return Err(WeightError::Corrupt {
                    file: file.to_owned(),
                    detail: format!(
                        "its byte order entry says {:?}",
                        String::from_utf8_lossy(other)
                    ),
                });
            }
        }
    }

    // 3. The pickle.
    let r = zip::entry_data_range(file, src, pkl)?;
    let data = read_range(
        src,
        file,
        || format!("zip entry `{}`", pkl.name),
        r.start,
        r.len(),
    )?;
    let pickle = pickle::parse(file, &pkl.name, data)?;
    let mut found = Vec::new();
    match pickle.get(pickle.root) {
        Value::Dict(_) => {
            let mut walk = Walk {
                file,
                entry: &pkl.name,
                path: vec![pickle.root],
                entries: 0,
            };
            walk.flatten(&pickle, pickle.root, "", &mut found)?;
        }
        other => {
            return Err(WeightError::Unsupported {
                file: file.to_owned(),
                what: format!("a pickled {} instead of a state dict", kind(other)),
                hint: "save `model.state_dict()` with torch.save".into(),
            });
        }
    }
    if found.is_empty() {
        log::warn!("{file}: the state dict holds no tensors");
    }

    // 4. Each tensor's bytes, via its storage's zip entry.
    let by_name: HashMap<&str, &ZipEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut storages: HashMap<&str, Range<usize>> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for (name, t) in found {
        check_contiguous(file, &name, t)?;
        let storage_range = match storages.get(t.storage.key.as_str()) {
            Some(r) => r.clone(),
            None => {
                let entry_name = format!("{prefix}data/{}", t.storage.key);
                let entry = by_name.get(entry_name.as_str()).ok_or_else(|| WeightError::Corrupt {
                    file: file.to_owned(),
                    detail: format!("tensor `{name}` is stored in `{entry_name}`, which the archive does not have"),
                })?;
                let r = zip::entry_data_range(file, src, entry)?;
                storages.insert(t.storage.key.as_str(), r.clone());
                r
            }
        };
        let esize = t.dtype.size_bytes();
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = numel.and_then(|n| n.checked_mul(esize));
        let start = t
            .offset
            .checked_mul(esize)
            .and_then(|o| o.checked_add(storage_range.start));
        let end = start.zip(bytes).and_then(|(s, b)| s.checked_add(b));
        match (start, end) {
            (Some(start), Some(end)) if end <= storage_range.end => {
                tensors.insert(
                    name,
                    TensorInfo {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        range: start..end,
                    },
                );
            }
            _ => {
                return Err(WeightError::Corrupt {
                    file: file.to_owned(),
                    detail: format!(
                        "tensor `{name}` ({}, shape {:?}, starting at element {}) reaches past the end of its storage `{prefix}data/{}`, which holds {} bytes",
                        t.dtype,
                        t.shape,
                        t.offset,
                        t.storage.key,
                        storage_range.len()
                    ),
                });
            }
        }
    }
    Ok(tensors)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global { .. } => "class",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "single tensor",
    }
}

/// The state of the tensor search in the pickled dict tree.
struct Walk<'a> {
    file: &'a str,
    /// The pickle's zip entry, for messages.
    entry: &'a str,
    /// The dicts from the root to the one being walked (a cycle returns to one of them).
    path: Vec<NodeId>,
    /// Dict entries walked so far (see [`MAX_ENTRIES`]).
    entries: usize,
}

impl Walk<'_> {
    fn corrupt(&self, detail: String) -> WeightError {
        WeightError::Corrupt {
            file: self.file.to_owned(),
            detail,
        }
    }

    /// Collects the tensors of a (possibly nested) dict; nested keys are joined with `.`
    /// (a `{"state_dict": {...}}` checkpoint gives `state_dict.<name>`). Non-tensor values
    /// (`_metadata`, step counters) are skipped. A dict that contains itself, or a tree
    /// of more than [`MAX_ENTRIES`] entries, is an error (`torch.save` of a state dict
    /// writes neither).
    fn flatten<'p>(
        &mut self,
        p: &'p Pickle,
        id: NodeId,
        prefix: &str,
        out: &mut Vec<(String, &'p TensorRef)>,
    ) -> Result<(), WeightError> {
        let Value::Dict(items) = p.get(id) else {
            return Ok(());
        };
        for &(k, v) in items {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(self.corrupt(format!(
                    "the state dict in `{}` has more than {MAX_ENTRIES} entries (counting a dict each time it is referenced), where a checkpoint has a few thousand; the file is damaged or was not written by torch.save",
                    self.entry
                )));
            }
            let key = match p.get(k) {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match p.get(v) {
                Value::Tensor(t) => out.push((name, t)),
                Value::Dict(_) if self.path.contains(&v) => {
                    return Err(self.corrupt(format!(
                        "the state dict in `{}` contains itself (entry `{name}` refers back to a dict that holds it), which torch.save of a state dict never writes; the file is damaged or hand-made",
                        self.entry
                    )));
                }
                Value::Dict(_) if self.path.len() <= MAX_NESTING => {
                    self.path.push(v);
                    self.flatten(p, v, &name, out)?;
                    self.path.pop();
                }
                other => log::debug!("skipping non-tensor entry `{name}` ({})", kind(other)),
            }
        }
        Ok(())
    }
}

/// PyTorch's `is_contiguous`: strides are row-major, ignoring dimensions of size 1
/// (whose stride is arbitrary) and empty tensors.
fn check_contiguous(file: &str, name: &str, t: &TensorRef) -> Result<(), WeightError> {
    if t.shape.contains(&0) {
        return Ok(());
    }
    let mut expected = vec![0usize; t.shape.len()];
    let mut acc = 1usize;
    let mut ok = true;
    for i in (0..t.shape.len()).rev() {
        expected[i] = acc;
        if t.shape[i] != 1 && t.stride[i] != acc {
            ok = false;
        }
        acc = acc.saturating_mul(t.shape[i]);
    }
    if ok {
        Ok(())
    } else {
        Err(WeightError::NonContiguous {
            file: file.to_owned(),
            tensor: name.to_owned(),
            shape: t.shape.clone(),
            stride: t.stride.clone(),
            expected,
        })
    }
}
