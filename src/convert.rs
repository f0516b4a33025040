//! `roentgen quantize`: a checkpoint's weight file converted to a quantized (or f16)
//! safetensors file, tensor by tensor. The plan (the output header, every size known
//! from the input's index) comes first, so the output streams: header, then one
//! tensor's bytes at a time; the whole model is never in memory. Target-independent:
//! the native CLI writes files, the page can write OPFS files the same way.
//!
//! Output layout (documented in `docs/QUANTIZATION.md`): a packed tensor keeps its
//! name and holds i8 (int8) or u8 (int4, two per byte) data, its scales sit beside it
//! as `NAME.scales` (f16), and `__metadata__` names the scheme, its version, the block
//! size and each packed tensor's PyTorch shape and element order.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::quant::{
    BLOCK, Layout, PackedEntry, QuantFormat, SCALES_SUFFIX, SCHEME_VERSION, TensorPlan, meta,
    permute_oihw_to_ohwi, quantize, tensor_plan,
};
use crate::weights::{DType, TensorInfo, WeightIndex, to_f32};

/// What to convert to: block-quantized, or plain f16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    F16,
    Quant(QuantFormat),
}

impl Target {
    pub fn from_name(s: &str) -> Option<Target> {
        match s {
            "f16" => Some(Target::F16),
            _ => QuantFormat::from_name(s).map(Target::Quant),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Target::F16 => "f16",
            Target::Quant(q) => q.name(),
        }
    }
}

/// One input tensor's conversion.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub plan: TensorPlan,
    pub layout: Layout,
}

/// A component's conversion: the output's header bytes (length prefix included) and
/// the steps whose outputs follow it, in order.
pub struct ComponentPlan {
    pub header: Vec<u8>,
    pub steps: Vec<Step>,
    /// Total output bytes (header included).
    pub total_bytes: u64,
}

/// Plans the conversion of one component's weight file (`component`: `unet`,
/// `text_encoder`, `vae`). A BERT text encoder's heads and pooler, which generation
/// never reads ([`crate::models::bert::UNUSED_PREFIXES`]), are left out.
pub fn plan(component: &str, index: &WeightIndex, target: Target) -> Result<ComponentPlan> {
    if let Some(f) = index.metadata.get(meta::FORMAT) {
        return Err(Error::Input(format!(
            "{} is already converted ({f}); convert the original checkpoint instead",
            index.file
        )));
    }
    let quant = match target {
        Target::F16 => None,
        Target::Quant(q) => Some(q),
    };
    let mut header = serde_json::Map::new();
    let mut packed = BTreeMap::new();
    let mut steps = Vec::new();
    let mut offset = 0usize;
    let mut add = |header: &mut serde_json::Map<String, serde_json::Value>,
                   name: String,
                   dtype: DType,
                   shape: Vec<usize>,
                   bytes: usize| {
        header.insert(
            name,
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    };
    for (name, info) in &index.tensors {
        if component == "text_encoder" && crate::models::bert::unused(name) {
            continue;
        }
        let numel = info.numel();
        let plan = if info.dtype.is_float() {
            tensor_plan(component, name, &info.shape, quant)
        } else {
            TensorPlan::AsIs
        };
        let layout = if info.shape.len() == 4 && info.shape[2] * info.shape[3] > 1 {
            Layout::Ohwi
        } else {
            Layout::RowMajor
        };
        match plan {
            TensorPlan::Quantize(q) => {
                let (dtype, n) = match q {
                    QuantFormat::Int8 => (DType::I8, numel),
                    QuantFormat::Int4 => (DType::U8, numel.div_ceil(2)),
                };
                add(&mut header, name.clone(), dtype, vec![n], n);
                let s = q.scale_halves(numel);
                add(
                    &mut header,
                    format!("{name}{SCALES_SUFFIX}"),
                    DType::F16,
                    vec![s],
                    2 * s,
                );
                packed.insert(
                    name.clone(),
                    PackedEntry {
                        format: q.name().into(),
                        shape: info.shape.clone(),
                        layout,
                    },
                );
            }
            TensorPlan::F16 => add(
                &mut header,
                name.clone(),
                DType::F16,
                info.shape.clone(),
                2 * numel,
            ),
            TensorPlan::AsIs => add(
                &mut header,
                name.clone(),
                info.dtype,
                info.shape.clone(),
                info.byte_len(),
            ),
        }
        steps.push(Step {
            name: name.clone(),
            plan,
            layout,
        });
    }
    let metadata: BTreeMap<&str, String> = [
        (meta::FORMAT, target.name().to_string()),
        (meta::VERSION, SCHEME_VERSION.to_string()),
        (meta::BLOCK, BLOCK.to_string()),
        (
            meta::TENSORS,
            serde_json::to_string(&packed).expect("plain data"),
        ),
        (meta::SOURCE, index.file.clone()),
    ]
    .into_iter()
    .collect();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("plain data"),
    );
    let mut json = serde_json::to_vec(&header).expect("plain data");
    // pad with spaces so the data starts 8-byte aligned (as the reference writer does)
    json.resize((8 + json.len()).div_ceil(8) * 8 - 8, b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let total_bytes = (bytes.len() + offset) as u64;
    Ok(ComponentPlan {
        header: bytes,
        steps,
        total_bytes,
    })
}

/// The output bytes of one step from the input tensor's raw bytes, in output order
/// (a packed tensor: data, then scales).
pub fn convert_tensor(
    step: &Step,
    info: &TensorInfo,
    data: &[u8],
    file: &str,
) -> Result<Vec<Vec<u8>>> {
    let floats = || {
        to_f32(info.dtype, data).map_err(|e| {
            Error::Input(format!(
                "{file}: tensor `{}` cannot be read as floats ({e:?})",
                step.name
            ))
        })
    };
    Ok(match step.plan {
        TensorPlan::AsIs => vec![data.to_vec()],
        TensorPlan::F16 if info.dtype == DType::F16 => vec![data.to_vec()],
        TensorPlan::F16 => {
            let v = floats()?;
            vec![
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                    .collect(),
            ]
        }
        TensorPlan::Quantize(q) => {
            let v = floats()?;
            let v = if step.layout == Layout::Ohwi {
                permute_oihw_to_ohwi(&v, &info.shape)
            } else {
                v
            };
            let p = quantize(&v, q);
            vec![
                p.data,
                p.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ]
        }
    })
}

/// The file name a converted component's weights get.
pub fn output_name(component: &str) -> String {
    match component {
        "text_encoder" => "text_encoder/model.safetensors".into(),
        c => format!("{c}/diffusion_pytorch_model.safetensors"),
    }
}

/// What converting one component did.
#[derive(Clone, Debug)]
pub struct ComponentReport {
    pub component: String,
    pub input: String,
    pub input_bytes: u64,
    pub output: String,
    pub output_bytes: u64,
}

/// Converts the diffusers folder `model` into `output` (created): configs, tokenizer
/// and scheduler copied, each component's weight file converted tensor by tensor.
/// Each weight file is written under a temporary name and renamed when whole.
#[cfg(not(target_arch = "wasm32"))]
pub fn convert_folder(
    model: &std::path::Path,
    output: &std::path::Path,
    target: Target,
    progress: &mut dyn FnMut(&ComponentReport),
) -> Result<Vec<ComponentReport>> {
    use crate::checkpoint::{DirSource, FileSource, plan_import};
    use crate::loader::WeightFile;
    use std::io::Write;
    let io = |what: String| move |e: std::io::Error| Error::Input(format!("{what}: {e}"));
    if output.exists() && std::fs::canonicalize(output).ok() == std::fs::canonicalize(model).ok() {
        return Err(Error::Input(
            "the output folder must be another folder than the model".into(),
        ));
    }
    let src = DirSource::new(model)?;
    let mut reports = Vec::new();
    for (from, to) in plan_import(&src.list(), false)? {
        let dst = output.join(&to);
        let dir = dst.parent().expect("a file in a folder");
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        if !(to.ends_with(".safetensors") || to.ends_with(".bin")) {
            std::fs::copy(model.join(&from), &dst)
                .map_err(io(format!("copying {from} to {}", dst.display())))?;
            continue;
        }
        let component = to.split('/').next().expect("component/file").to_string();
        let wf = WeightFile::open(&from, src.open(&from)?)?;
        let p = plan(&component, &wf.index, target)?;
        let out_name = output_name(&component);
        let out = output.join(&out_name);
        let part = out.with_extension("safetensors.part");
        let werr = io(format!("writing {}", part.display()));
        let file =
            std::fs::File::create(&part).map_err(io(format!("creating {}", part.display())))?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&p.header).map_err(&werr)?;
        for step in &p.steps {
            let (info, data) = wf.tensor_data(&step.name)?;
            for piece in convert_tensor(step, &info, &data, &from)? {
                w.write_all(&piece).map_err(&werr)?;
            }
        }
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(&werr)?;
        std::fs::rename(&part, &out).map_err(io(format!("renaming {}", part.display())))?;
        let r = ComponentReport {
            component,
            input_bytes: std::fs::metadata(model.join(&from))
                .map(|m| m.len())
                .unwrap_or(0),
            input: from,
            output: out_name,
            output_bytes: p.total_bytes,
        };
        progress(&r);
        reports.push(r);
    }
    Ok(reports)
}
