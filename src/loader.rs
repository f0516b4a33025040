//! From a weight file to GPU weights: one place that knows tensor names, storage
//! formats and layout changes (conv weights to `[Cout, KH, KW, Cin]`), and the
//! renames between old and new checkpoint layouts.

use crate::error::Result;
use crate::gpu::{Gpu, Weight, WeightFormat};
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
            .ok_or_else(|| crate::Error::Unsupported(format!("read past the end ({start}+{len})")))?
            .to_vec())
    }
}

/// Bytes of a file known only in some ranges (what a streaming reader has fetched).
struct Sparse {
    len: usize,
    chunks: Vec<(usize, Vec<u8>)>,
}

impl ByteSource for Sparse {
    fn file_len(&self) -> usize {
        self.len
    }
    fn bytes(&self, range: Range<usize>) -> Option<&[u8]> {
        self.chunks.iter().find_map(|(start, data)| {
            let end = start + data.len();
            (range.start >= *start && range.end <= end)
                .then(|| &data[range.start - start..range.end - start])
        })
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
        Ok(WeightFile {
            index,
            reader: Box::new(bytes),
        })
    }

    /// Indexes a file reading only its metadata: the parser says which range it lacks,
    /// that range is read, and the parse runs again (a safetensors file takes two
    /// reads; a torch zip one more per tensor for its local header).
    pub fn open(name: &str, reader: Box<dyn RangeRead>) -> Result<WeightFile> {
        let len = reader.len() as usize;
        let mut sparse = Sparse {
            len,
            chunks: Vec::new(),
        };
        loop {
            match WeightIndex::parse_source(name, &sparse) {
                Err(WeightError::NotLoaded { needed, .. }) => {
                    if sparse.chunks.len() > 1_000_000 {
                        return Err(WeightError::Corrupt {
                            file: name.into(),
                            detail: "its metadata never ends (more than a million pieces)".into(),
                        }
                        .into());
                    }
                    // The first read takes a safetensors header or a zip directory
                    // whole; later ones (a zip's local headers, one per tensor) are small.
                    let least = if sparse.chunks.is_empty() {
                        METADATA_READ
                    } else {
                        LATER_READ
                    };
                    let start = needed.start;
                    let end = needed.end.max(start + least).min(len);
                    let data = reader.read_at(start as u64, end - start)?;
                    sparse.chunks.push((start, data));
                }
                Ok(index) => return Ok(WeightFile { index, reader }),
                Err(e) => return Err(e.into()),
            }
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

/// How matrices (linear and conv weights) are stored on the GPU. Biases and norm
/// parameters are always f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatrixFormat {
    /// Keep the file's precision: f16 files stay f16 (half the memory), f32 stays f32.
    #[default]
    AsStored,
    Force(WeightFormat),
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
    },
}

/// Reads tensors under a name prefix (`down_blocks.0.resnets.1.`) onto the GPU.
#[derive(Clone)]
pub struct Loader<'a> {
    pub gpu: &'a Gpu,
    backing: Backing<'a>,
    prefix: String,
    format: MatrixFormat,
}

fn random_values(name: &str, seed: u64, shape: &[usize]) -> Vec<f32> {
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
    (0..n).map(|_| a * next()).collect()
}

impl<'a> Loader<'a> {
    pub fn new(gpu: &'a Gpu, file: &'a WeightFile, format: MatrixFormat) -> Loader<'a> {
        Loader {
            gpu,
            backing: Backing::File(file),
            prefix: String::new(),
            format,
        }
    }

    /// Random weights, for benchmarks at a model's real shapes without its checkpoint.
    pub fn random(gpu: &'a Gpu, seed: u64, format: MatrixFormat) -> Loader<'a> {
        Loader {
            gpu,
            backing: Backing::Random { seed },
            prefix: String::new(),
            format,
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
                let w = f.window(&full)?;
                Ok(f.index.read_f32_source(&w, &full, shape)?)
            }
            Backing::Random { seed } => Ok(random_values(&self.name(name), seed, shape)),
        }
    }

    /// A bias or norm parameter (always f32 on the GPU).
    pub fn vector(&self, name: &str, len: usize) -> Result<Weight> {
        let v = self.f32(name, &[len])?;
        Ok(self.gpu.weight_f32(&self.name(name), &v, &[len]))
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
        let file = match self.backing {
            Backing::File(f) => f,
            Backing::Random { seed } => {
                let v = random_values(&full, seed, shape);
                let (v, shape) = if permute_conv && shape.len() == 4 {
                    // random values need no reordering, only the permuted shape
                    (v, vec![shape[0], shape[2], shape[3], shape[1]])
                } else {
                    (v, shape.to_vec())
                };
                return Ok(match self.format {
                    MatrixFormat::Force(WeightFormat::F16) => {
                        let bits: Vec<u16> =
                            v.iter().map(|&x| crate::weights::f32_to_f16(x)).collect();
                        self.gpu.weight_f16(&full, &bits, &shape)
                    }
                    _ => self.gpu.weight_f32(&full, &v, &shape),
                });
            }
        };
        let window = file.window(&full)?;
        let (info, data) = file.index.tensor_bytes_source(&window, &full)?;
        let ok = info.shape == shape || accept.is_some_and(|a| info.shape == a);
        if !ok {
            return Err(WeightError::ShapeMismatch {
                file: file.index.file.clone(),
                tensor: full,
                expected: shape.to_vec(),
                found: info.shape.clone(),
            }
            .into());
        }
        let stored = match info.dtype {
            DType::F16 => WeightFormat::F16,
            _ => WeightFormat::F32,
        };
        let format = match self.format {
            MatrixFormat::AsStored => stored,
            MatrixFormat::Force(f) => f,
        };
        let out_shape: Vec<usize> = if permute_conv && shape.len() == 4 {
            vec![shape[0], shape[2], shape[3], shape[1]]
        } else {
            shape.to_vec()
        };
        let perm = |v: &mut dyn FnMut(usize, usize)| {
            // dst index of src element i for [O, I, KH, KW] -> [O, KH, KW, I]
            let (o, ci, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
            for a in 0..o {
                for c in 0..ci {
                    for y in 0..kh {
                        for x in 0..kw {
                            let src = ((a * ci + c) * kh + y) * kw + x;
                            let dst = ((a * kh + y) * kw + x) * ci + c;
                            v(src, dst);
                        }
                    }
                }
            }
        };
        let needs_perm = permute_conv && shape.len() == 4 && !(shape[2] == 1 && shape[3] == 1);
        match format {
            WeightFormat::F16 if info.dtype == DType::F16 => {
                let bits: Vec<u16> = data
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let bits = if needs_perm {
                    let mut out = vec![0u16; bits.len()];
                    perm(&mut |s, d| out[d] = bits[s]);
                    out
                } else {
                    bits
                };
                Ok(self.gpu.weight_f16(&full, &bits, &out_shape))
            }
            _ => {
                let v = file.index.read_f32_source(&window, &full, &info.shape)?;
                let v = if needs_perm {
                    let mut out = vec![0f32; v.len()];
                    perm(&mut |s, d| out[d] = v[s]);
                    out
                } else {
                    v
                };
                match format {
                    WeightFormat::F32 => Ok(self.gpu.weight_f32(&full, &v, &out_shape)),
                    WeightFormat::F16 => {
                        let bits: Vec<u16> =
                            v.iter().map(|&x| crate::weights::f32_to_f16(x)).collect();
                        Ok(self.gpu.weight_f16(&full, &bits, &out_shape))
                    }
                }
            }
        }
    }
}
