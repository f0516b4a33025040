//! From a weight file to GPU weights: one place that knows tensor names, storage
//! formats and layout changes (conv weights to `[Cout, KH, KW, Cin]`), and the
//! renames between old and new checkpoint layouts.

use crate::error::Result;
use crate::gpu::{Gpu, HostWeight, Weight, WeightFormat};
use crate::quant::{Layout, PackedIndex, QuantFormat, Quantized, SCALES_SUFFIX, TensorPlan};
use std::cell::{Cell, OnceCell, RefCell};
use std::ops::Range;

use crate::weights::{ByteSource, DType, WeightError, WeightIndex};

/// Synchronous random access to one file: natively a `std::fs::File`; in the browser's
/// worker a `Blob` read with `FileReaderSync` or an Origin Private File System sync
/// access handle (both synchronous in dedicated workers). Model loading asks for one
/// tensor at a time, so a 3.4 GB UNet never sits whole in (wasm32's 4 GB of) memory.
pub trait RangeRead {
    /// The file's length in bytes.
    fn len(&self) -> u64;
    /// Exactly `len` bytes at `offset` (an error, never a short read).
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole file in memory.
impl RangeRead for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = offset as usize;
        Ok(self
            .get(start..start + len)
            .ok_or_else(|| crate::Error::Internal(format!("read past the end ({start}+{len})")))?
            .to_vec())
    }
}

/// A file read through as it is parsed: a range no earlier read covers is read from
/// the [`RangeRead`] there and then (the first read at least [`METADATA_READ`] bytes,
/// later ones [`LATER_READ`]), kept, and lent to the parser, so one parse indexes the
/// file (it used to stop at each missing range and start again: for a torch `.bin`
/// one restart, pickle included, per tensor). Only the metadata's bytes are kept.
/// A failed read is kept for [`WeightFile::open`] to report.
struct ReadThrough<'r> {
    reader: &'r dyn RangeRead,
    len: usize,
    /// The reads so far, as a chain whose last link is empty. A link's bytes never
    /// move once set, so the slices lent out stay valid while `self` lives.
    head: Link,
    reads: Cell<usize>,
    /// Bytes kept; more than [`METADATA_MAX`] is refused (a hostile zip of a million
    /// entries would otherwise make its index as large as it likes).
    kept: Cell<usize>,
    name: &'r str,
    error: RefCell<Option<crate::Error>>,
}

/// The most bytes a weight file's metadata may take to index.
const METADATA_MAX: usize = 256 << 20;

#[derive(Default)]
struct Link {
    read: OnceCell<(usize, Box<[u8]>)>,
    next: OnceCell<Box<Link>>,
}

impl<'r> ReadThrough<'r> {
    fn new(name: &'r str, reader: &'r dyn RangeRead) -> Self {
        ReadThrough {
            len: reader.len() as usize,
            reader,
            head: Link::default(),
            reads: Cell::new(0),
            kept: Cell::new(0),
            name,
            error: RefCell::new(None),
        }
    }
}

impl ByteSource for ReadThrough<'_> {
    fn file_len(&self) -> usize {
        self.len
    }
    fn bytes(&self, range: Range<usize>) -> Option<&[u8]> {
        let mut link = &self.head;
        while let Some((start, data)) = link.read.get() {
            if range.start >= *start && range.end <= start + data.len() {
                return Some(&data[range.start - start..range.end - start]);
            }
            link = link.next.get_or_init(Default::default);
        }
        if self.error.borrow().is_some() || range.end > self.len {
            return None;
        }
        let least = if self.reads.get() == 0 {
            METADATA_READ
        } else {
            LATER_READ
        };
        let end = range.end.max(range.start + least).min(self.len);
        self.kept.set(self.kept.get() + (end - range.start));
        if self.kept.get() > METADATA_MAX {
            *self.error.borrow_mut() = Some(
                WeightError::Corrupt {
                    file: self.name.into(),
                    detail: format!(
                        "its metadata takes more than {} MiB to read (a file of countless tensors?)",
                        METADATA_MAX >> 20
                    ),
                }
                .into(),
            );
            return None;
        }
        match self.reader.read_at(range.start as u64, end - range.start) {
            Ok(data) => {
                self.reads.set(self.reads.get() + 1);
                let (start, data) = link.read.get_or_init(|| (range.start, data.into()));
                link.next.get_or_init(Default::default);
                data.get(range.start - start..range.end - start)
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                None
            }
        }
    }
}

/// One tensor's bytes at their place in the file.
struct Window {
    start: usize,
    data: Vec<u8>,
    file_len: usize,
}

impl ByteSource for Window {
    fn file_len(&self) -> usize {
        self.file_len
    }
    fn bytes(&self, range: Range<usize>) -> Option<&[u8]> {
        let (s, e) = (
            range.start.checked_sub(self.start)?,
            range.end.checked_sub(self.start)?,
        );
        self.data.get(s..e)
    }
}

/// One weight file: its index (read from the file's metadata parts only) and a reader
/// for the tensors' bytes.
pub struct WeightFile {
    pub index: WeightIndex,
    /// The packed tensors of a quantized file (`roentgen quantize`).
    pub packed: Option<PackedIndex>,
    reader: Box<dyn RangeRead>,
}

/// The smallest read while looking for a file's metadata (a safetensors header, a zip
/// directory, `data.pkl`, local headers): few round trips, little waste.
const METADATA_READ: usize = 64 << 10;
const LATER_READ: usize = 4 << 10;

impl WeightFile {
    /// A whole file already in memory.
    pub fn parse(name: &str, bytes: Vec<u8>) -> Result<WeightFile> {
        let index = WeightIndex::parse(name, &bytes)?;
        Self::new(index, Box::new(bytes))
    }

    fn new(index: WeightIndex, reader: Box<dyn RangeRead>) -> Result<WeightFile> {
        let packed = PackedIndex::from_metadata(&index.metadata).map_err(|detail| {
            WeightError::Quantization {
                file: index.file.clone(),
                detail,
            }
        })?;
        Ok(WeightFile {
            index,
            packed,
            reader,
        })
    }

    /// Indexes a file reading only its metadata, as the parser asks for it (see
    /// [`ReadThrough`]): a safetensors file takes one or two reads, a torch zip one
    /// more per tensor for its local header.
    pub fn open(name: &str, reader: Box<dyn RangeRead>) -> Result<WeightFile> {
        let through = ReadThrough::new(name, &*reader);
        let parsed = WeightIndex::parse_source(name, &through);
        let read_error = through.error.borrow_mut().take();
        match (parsed, read_error) {
            (Ok(index), _) => Self::new(index, reader),
            // the parser stopped because a read failed: that is the error to report
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// The bytes of tensor `name`, read from the file now.
    fn window(&self, name: &str) -> Result<Window> {
        let info = self.index.get(name)?;
        let file_len = self.reader.len() as usize;
        if info.range.end > file_len {
            return Err(WeightError::Truncated {
                file: self.index.file.clone(),
                what: format!("tensor `{name}`"),
                needed: info.range.clone(),
                file_len,
            }
            .into());
        }
        Ok(Window {
            start: info.range.start,
            data: self
                .reader
                .read_at(info.range.start as u64, info.range.len())?,
            file_len,
        })
    }
}

impl WeightFile {
    /// The raw bytes of tensor `name` (its dtype and shape as stored).
    pub fn tensor_data(&self, name: &str) -> Result<(crate::weights::TensorInfo, Vec<u8>)> {
        let w = self.window(name)?;
        let (info, data) = self.index.tensor_bytes_source(&w, name)?;
        Ok((info.clone(), data.to_vec()))
    }

    /// Tensor `name` of a quantized file, packed, with its PyTorch shape and layout, or
    /// None when it is stored plainly. Lengths are checked against the shape: a missing
    /// scales tensor or a packed tensor of the wrong length is refused, naming both.
    pub fn packed_tensor(&self, name: &str) -> Result<Option<(Quantized, Vec<usize>, Layout)>> {
        let Some(entry) = self.packed.as_ref().and_then(|p| p.tensors.get(name)) else {
            return Ok(None);
        };
        let bad = |detail: String| WeightError::Quantization {
            file: self.index.file.clone(),
            detail,
        };
        let format = QuantFormat::from_name(&entry.format).expect("checked at open");
        let scales_name = format!("{name}{SCALES_SUFFIX}");
        if !self.index.contains(&scales_name) {
            return Err(bad(format!(
                "tensor `{name}` is packed as {} but its scales `{scales_name}` are missing",
                entry.format
            ))
            .into());
        }
        let (info, data) = self.tensor_data(name)?;
        let (sinfo, sdata) = self.tensor_data(&scales_name)?;
        if !matches!(info.dtype, DType::I8 | DType::U8) || sinfo.dtype != DType::F16 {
            return Err(bad(format!(
                "tensor `{name}` is stored as {} with scales as {}; packed tensors are i8/u8 with f16 scales",
                info.dtype, sinfo.dtype
            ))
            .into());
        }
        let q = Quantized {
            format,
            numel: entry.shape.iter().product(),
            data,
            scales: sdata
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        };
        q.check()
            .map_err(|d| bad(format!("tensor `{name}` of shape {:?}: {d}", entry.shape)))?;
        Ok(Some((q, entry.shape.clone(), entry.layout)))
    }
}

/// How matrices (linear and conv weights) are stored on the GPU. Biases and norm
/// parameters are always f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatrixFormat {
    /// Keep the file's precision: f16 files stay f16 (half the memory), f32 stays f32.
    #[default]
    AsStored,
    /// Every matrix in this format.
    Force(WeightFormat),
    /// Quantized at load by the converter's policy ([`crate::quant::tensor_plan`]):
    /// what `roentgen quantize` would write, without writing it.
    Quantize(QuantFormat),
}

impl MatrixFormat {
    /// The random-weight benchmarks' meaning of a weight format: f32/f16 every matrix,
    /// int8/int4 by the converter's policy.
    pub fn for_format(f: WeightFormat) -> MatrixFormat {
        match f.quant() {
            Some(q) => MatrixFormat::Quantize(q),
            None => MatrixFormat::Force(f),
        }
    }
}

/// Where a loader's tensors come from.
#[derive(Clone, Copy)]
enum Backing<'a> {
    File(&'a WeightFile),
    /// Random weights of the shapes the model asks for (benchmarks at real shapes
    /// without a checkpoint): matrices ~ U(-a, a) with variance 1/fan_in, norm scales
    /// near 1, small biases; seeded per tensor name so runs repeat.
    Random {
        seed: u64,
        /// Trained-like instead: Student-t (3 degrees of freedom) values of the same
        /// variance, and 3 input channels of every matrix scaled by 6 (the outlier
        /// channels trained SD weights have; what quantization finds hardest).
        heavy: bool,
    },
}

/// Reads tensors under a name prefix (`down_blocks.0.resnets.1.`) onto the GPU.
#[derive(Clone)]
pub struct Loader<'a> {
    pub gpu: &'a Gpu,
    backing: Backing<'a>,
    prefix: String,
    format: MatrixFormat,
    /// `unet`, `text_encoder` or `vae`: which quantization policy applies.
    component: &'static str,
}

/// Random values for tensor `name` of PyTorch `shape` (see [`Backing::Random`]), in the
/// GPU's kernel order (row-major `[O, I]` linears, OHWI convs: the input channel is
/// innermost in both, which places `heavy`'s outlier channels).
fn random_values(name: &str, seed: u64, shape: &[usize], heavy: bool) -> Vec<f32> {
    // FNV-1a of the name, then xorshift64*.
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut state = h | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let n: usize = shape.iter().product();
    let is_norm = name.contains("norm");
    if shape.len() == 1 {
        let (center, spread) = if is_norm && name.ends_with("weight") {
            (1.0, 0.1)
        } else {
            (0.0, 0.05)
        };
        return (0..n).map(|_| center + spread * next()).collect();
    }
    let fan_in: usize = shape[1..].iter().product();
    let a = (3.0 / fan_in as f32).sqrt();
    if !heavy {
        return (0..n).map(|_| a * next()).collect();
    }
    // Student-t(3) = z / sqrt(chi2_3 / 3), variance 3: scaled to variance 1/fan_in.
    let mut normal = move || {
        let u1 = (next() * 0.5 + 0.5).max(1e-7);
        let u2 = next() * 0.5 + 0.5;
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    };
    let sd = (1.0 / (3.0 * fan_in as f32)).sqrt();
    let cin = shape[1];
    // the input channel is the innermost index of the GPU's layout (row-major [O, I]
    // linears, OHWI convs), so element i belongs to channel i % cin
    let outliers = [0, cin / 3, (2 * cin) / 3 + 1];
    (0..n)
        .map(|i| {
            let z = normal();
            let chi2 = (0..3).map(|_| normal().powi(2)).sum::<f32>().max(1e-6);
            let t = z / (chi2 / 3.0).sqrt() * sd;
            if outliers.contains(&(i % cin)) {
                6.0 * t
            } else {
                t
            }
        })
        .collect()
}

impl<'a> Loader<'a> {
    pub fn new(gpu: &'a Gpu, file: &'a WeightFile, format: MatrixFormat) -> Loader<'a> {
        Loader {
            gpu,
            backing: Backing::File(file),
            prefix: String::new(),
            format,
            component: "",
        }
    }

    /// Random weights, for benchmarks at a model's real shapes without its checkpoint.
    pub fn random(gpu: &'a Gpu, seed: u64, format: MatrixFormat) -> Loader<'a> {
        Self::random_kind(gpu, seed, format, false)
    }

    /// Random weights that are trained-like: heavy-tailed, with outlier input channels
    /// (for measuring quantization error at full size).
    pub fn random_heavy(gpu: &'a Gpu, seed: u64, format: MatrixFormat) -> Loader<'a> {
        Self::random_kind(gpu, seed, format, true)
    }

    fn random_kind(gpu: &'a Gpu, seed: u64, format: MatrixFormat, heavy: bool) -> Loader<'a> {
        Loader {
            gpu,
            backing: Backing::Random { seed, heavy },
            prefix: String::new(),
            format,
            component: "",
        }
    }

    /// The loader for one component of a pipeline (`unet`, `text_encoder`, `vae`).
    pub fn component(mut self, component: &'static str) -> Loader<'a> {
        self.component = component;
        self
    }

    /// The GPU format of matrix `full` (PyTorch `shape`) stored as `stored`.
    fn target(&self, full: &str, shape: &[usize], stored: WeightFormat) -> WeightFormat {
        match self.format {
            MatrixFormat::AsStored => stored,
            MatrixFormat::Force(f) => f,
            MatrixFormat::Quantize(q) => {
                match crate::quant::tensor_plan(self.component, full, shape, Some(q)) {
                    TensorPlan::Quantize(q) => WeightFormat::from_quant(q),
                    TensorPlan::F16 => WeightFormat::F16,
                    TensorPlan::AsIs => stored,
                }
            }
        }
    }

    /// The loader for a child module: `pp("down_blocks").pp(0)`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Loader<'a> {
        let mut l = self.clone();
        l.prefix = format!("{}{}.", self.prefix, name);
        l
    }

    pub fn name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Whether the file holds `name` (random weights hold nothing: models then take
    /// the current diffusers layout).
    pub fn contains(&self, name: &str) -> bool {
        match self.backing {
            Backing::File(f) => f.index.contains(&self.name(name)),
            Backing::Random { .. } => false,
        }
    }

    /// A tensor as f32 with the expected shape.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.backing {
            Backing::File(f) => {
                let full = self.name(name);
                if let Some((q, stored, layout)) = f.packed_tensor(&full)? {
                    // CPU-side tensors (embeddings) of a quantized file: rows dequantized
                    if stored != shape || layout != Layout::RowMajor {
                        return Err(WeightError::ShapeMismatch {
                            file: f.index.file.clone(),
                            tensor: full,
                            expected: shape.to_vec(),
                            found: stored,
                        }
                        .into());
                    }
                    return Ok(q.dequantize());
                }
                let w = f.window(&full)?;
                Ok(f.index.read_f32_source(&w, &full, shape)?)
            }
            Backing::Random { seed, heavy } => {
                Ok(random_values(&self.name(name), seed, shape, heavy))
            }
        }
    }

    /// A bias or norm parameter (always f32 on the GPU).
    pub fn vector(&self, name: &str, len: usize) -> Result<Weight> {
        let v = self.f32(name, &[len])?;
        Ok(self
            .gpu
            .weight(&self.name(name), &v, &[len], WeightFormat::F32))
    }

    /// A matrix stored `[N, K]` (linear), or a conv weight `[Cout, Cin, KH, KW]` given
    /// with `shape`; `permute_conv` reorders the latter to `[Cout, KH, KW, Cin]`.
    /// 1x1 convs may be loaded as `[Cout, Cin]` matrices: pass `accept` with the
    /// alternative shape the file may hold.
    pub fn matrix(
        &self,
        name: &str,
        shape: &[usize],
        accept: Option<&[usize]>,
        permute_conv: bool,
    ) -> Result<Weight> {
        let full = self.name(name);
        let is_conv = permute_conv && shape.len() == 4;
        let out_shape: Vec<usize> = if is_conv {
            vec![shape[0], shape[2], shape[3], shape[1]]
        } else {
            shape.to_vec()
        };
        let file = match self.backing {
            Backing::File(f) => f,
            Backing::Random { seed, heavy } => {
                // random values need no reordering, only the permuted shape
                let v = random_values(&full, seed, shape, heavy);
                let format = self.target(&full, shape, WeightFormat::F32);
                return Ok(self.gpu.weight(&full, &v, &out_shape, format));
            }
        };
        let shape_ok = |found: &[usize]| found == shape || accept.is_some_and(|a| found == a);
        let mismatch = |found: Vec<usize>| WeightError::ShapeMismatch {
            file: file.index.file.clone(),
            tensor: full.clone(),
            expected: shape.to_vec(),
            found,
        };
        // A packed tensor goes to the GPU as it is.
        if let Some((q, stored, layout)) = file.packed_tensor(&full)? {
            if !shape_ok(&stored) {
                return Err(mismatch(stored).into());
            }
            let spatial = is_conv && shape[2] * shape[3] > 1;
            if spatial != (layout == Layout::Ohwi) {
                return Err(WeightError::Quantization {
                    file: file.index.file.clone(),
                    detail: format!(
                        "tensor `{full}` is packed in {layout:?} order, which does not suit a {} weight of shape {shape:?}",
                        if spatial { "conv" } else { "linear" }
                    ),
                }
                .into());
            }
            return Ok(self.gpu.weight(
                &full,
                HostWeight::Quantized(&q),
                &out_shape,
                WeightFormat::from_quant(q.format),
            ));
        }
        let window = file.window(&full)?;
        let (info, data) = file.index.tensor_bytes_source(&window, &full)?;
        if !shape_ok(&info.shape) {
            return Err(mismatch(info.shape.clone()).into());
        }
        let stored = match info.dtype {
            DType::F16 => WeightFormat::F16,
            _ => WeightFormat::F32,
        };
        let format = self.target(&full, shape, stored);
        let needs_perm = is_conv && !(shape[2] == 1 && shape[3] == 1);
        if format == WeightFormat::F16 && info.dtype == DType::F16 {
            // f16 stays f16 bit for bit
            let bits: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let bits = if needs_perm {
                crate::quant::permute_oihw_to_ohwi(&bits, shape)
            } else {
                bits
            };
            return Ok(self
                .gpu
                .weight(&full, HostWeight::F16(&bits), &out_shape, format));
        }
        let v = file.index.read_f32_source(&window, &full, &info.shape)?;
        let v = if needs_perm {
            crate::quant::permute_oihw_to_ohwi(&v, shape)
        } else {
            v
        };
        Ok(self.gpu.weight(&full, &v, &out_shape, format))
    }
}
