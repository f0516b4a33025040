//! Tensors (f32 activations) and weights (f32 or f16 storage) in GPU buffers.

use std::sync::Arc;

use super::pool::PooledBuffer;

/// An f32 tensor on the GPU. Activations are row-major; images are NHWC
/// (`[batch, height, width, channels]`) and token sequences `[batch, tokens, channels]`,
/// so a transformer reads a feature map without a transpose.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
}

impl Tensor {
    pub(crate) fn new(buf: PooledBuffer, shape: Vec<usize>) -> Tensor {
        Tensor {
            buf: Arc::new(buf),
            shape,
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
    /// The same data seen with another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.numel(),
            "reshape {:?} -> {:?}",
            self.shape,
            shape
        );
        Tensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        }
    }
    pub fn dim(&self, i: isize) -> usize {
        let i = if i < 0 {
            self.shape.len() as isize + i
        } else {
            i
        };
        self.shape[i as usize]
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

/// How a weight is stored on the GPU. Kernels read weights through one WGSL function,
/// `w_at(i) -> f32`, generated per format, so a new format (int8/int4 with per-block
/// scales) is a new prelude, not a new kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    /// IEEE half, two per u32 word, unpacked with `unpack2x16float` (core WGSL: no
    /// `shader-f16` needed); arithmetic stays f32.
    F16,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
        }
    }

    /// WGSL that declares the weight binding `w` at `binding` and its reader `w_at`.
    pub fn wgsl(self, binding: u32) -> String {
        match self {
            WeightFormat::F32 => format!(
                "@group(0) @binding({binding}) var<storage, read> w: array<f32>;\n\
                 fn w_at(i: u32) -> f32 {{ return w[i]; }}\n"
            ),
            WeightFormat::F16 => format!(
                "@group(0) @binding({binding}) var<storage, read> w: array<u32>;\n\
                 fn w_at(i: u32) -> f32 {{ let p = unpack2x16float(w[i >> 1u]); return select(p.x, p.y, (i & 1u) == 1u); }}\n"
            ),
        }
    }
}

impl WeightFormat {
    /// Like [`WeightFormat::wgsl`] for kernels that read 4 consecutive weights at a time:
    /// `w4(i) -> vec4<f32>` with `i % 4 == 0` (buffers are padded to 16 bytes).
    pub fn wgsl_vec4(self, binding: u32) -> String {
        match self {
            WeightFormat::F32 => format!(
                "@group(0) @binding({binding}) var<storage, read> w: array<vec4<f32>>;\n\
                 fn w4(i: u32) -> vec4<f32> {{ return w[i >> 2u]; }}\n"
            ),
            WeightFormat::F16 => format!(
                "@group(0) @binding({binding}) var<storage, read> w: array<vec2<u32>>;\n\
                 fn w4(i: u32) -> vec4<f32> {{ let q = w[i >> 2u]; return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)); }}\n"
            ),
        }
    }
}

/// A weight tensor on the GPU in its storage format.
pub struct Weight {
    pub(crate) buf: PooledBuffer,
    pub shape: Vec<usize>,
    pub format: WeightFormat,
}

impl Weight {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight<{}>{:?}", self.format.name(), self.shape)
    }
}
