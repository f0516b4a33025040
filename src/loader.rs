//! From a weight file to GPU weights: one place that knows tensor names, storage
//! formats and layout changes (conv weights to `[Cout, KH, KW, Cin]`), and the
//! renames between old and new checkpoint layouts.

use crate::error::Result;
use crate::gpu::{Gpu, Weight, WeightFormat};
use crate::weights::{DType, WeightError, WeightIndex};

/// One weight file, indexed, with its bytes.
pub struct WeightFile {
    pub index: WeightIndex,
    pub bytes: Vec<u8>,
}

impl WeightFile {
    pub fn parse(name: &str, bytes: Vec<u8>) -> Result<WeightFile> {
        let index = WeightIndex::parse(name, &bytes)?;
        Ok(WeightFile { index, bytes })
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
            Backing::File(f) => Ok(f.index.read_f32(&f.bytes, &self.name(name), shape)?),
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
        let (info, data) = file.index.tensor_bytes(&file.bytes, &full)?;
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
                let v = file.index.read_f32(&file.bytes, &full, &info.shape)?;
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
