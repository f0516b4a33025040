//! Tensors (f32 activations) and weights (f32, f16, int8 or int4 storage) in GPU buffers.

use std::sync::Arc;

use super::pool::PooledBuffer;
use crate::quant::{BLOCK, QuantFormat};

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

/// How a weight is stored on the GPU. Kernels read weights through WGSL functions
/// generated per format (`w_at(i) -> f32`, `w4(i) -> vec4<f32>`), so each GEMM form
/// (subgroup, tiled, CPU-driver) reads every format from the packed data itself: no
/// kernel ever sees a dequantised copy of a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    /// IEEE half, two per u32 word, unpacked with `unpack2x16float` (core WGSL: no
    /// `shader-f16` needed); arithmetic stays f32.
    F16,
    /// Signed bytes, four per word, an f16 scale per [`BLOCK`] weights in a buffer of
    /// its own (`crate::quant`).
    Int8,
    /// Nibbles, eight per word, an f16 (scale, minimum) pair per [`BLOCK`] weights.
    Int4,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Int8 => "int8",
            WeightFormat::Int4 => "int4",
        }
    }

    pub fn from_name(s: &str) -> Option<WeightFormat> {
        [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::Int8,
            WeightFormat::Int4,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }

    /// The block-quantized format, if this is one.
    pub fn quant(self) -> Option<QuantFormat> {
        match self {
            WeightFormat::Int8 => Some(QuantFormat::Int8),
            WeightFormat::Int4 => Some(QuantFormat::Int4),
            _ => None,
        }
    }

    pub fn from_quant(q: QuantFormat) -> WeightFormat {
        match q {
            QuantFormat::Int8 => WeightFormat::Int8,
            QuantFormat::Int4 => WeightFormat::Int4,
        }
    }

    /// WGSL declaring the weight binding `w` at `binding` (and for quantized formats its
    /// scales `w_scale` at `scale_binding`) and the reader `w_at(i) -> f32`.
    pub fn wgsl(self, binding: u32, scale_binding: u32) -> String {
        let decl = self.declarations(binding, scale_binding);
        let body = match self {
            WeightFormat::F32 => "return w[i];".to_string(),
            WeightFormat::F16 => {
                "let p = unpack2x16float(w[i >> 1u]); return select(p.x, p.y, (i & 1u) == 1u);"
                    .to_string()
            }
            // byte i & 3 of the word, sign-extended by the arithmetic shift
            WeightFormat::Int8 => format!(
                "let q = (bitcast<i32>(w[i >> 2u]) << (24u - 8u * (i & 3u))) >> 24u; return f32(q) * w_scale8(i / {BLOCK}u);"
            ),
            WeightFormat::Int4 => format!(
                "let q = (w[i >> 3u] >> (4u * (i & 7u))) & 15u; let s = unpack2x16float(w_scale[i / {BLOCK}u]); return f32(q) * s.x + s.y;"
            ),
        };
        format!("{decl}fn w_at(i: u32) -> f32 {{ {body} }}\n")
    }

    /// Like [`WeightFormat::wgsl`] for kernels that read 4 consecutive weights at a time:
    /// `w4(i) -> vec4<f32>` with `i % 4 == 0` (buffers are padded to 16 bytes; the 4
    /// weights lie in one block since BLOCK % 4 == 0).
    pub fn wgsl_vec4(self, binding: u32, scale_binding: u32) -> String {
        let (decl, body) = match self {
            WeightFormat::F32 => (
                format!("@group(0) @binding({binding}) var<storage, read> w: array<vec4<f32>>;\n"),
                "return w[i >> 2u];".to_string(),
            ),
            WeightFormat::F16 => (
                format!("@group(0) @binding({binding}) var<storage, read> w: array<vec2<u32>>;\n"),
                "let q = w[i >> 2u]; return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));"
                    .to_string(),
            ),
            WeightFormat::Int8 => (
                self.declarations(binding, scale_binding),
                format!(
                    "let q = (vec4<i32>(bitcast<i32>(w[i >> 2u])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u); return vec4<f32>(q) * w_scale8(i / {BLOCK}u);"
                ),
            ),
            WeightFormat::Int4 => (
                self.declarations(binding, scale_binding),
                format!(
                    "let q = (vec4<u32>(w[i >> 3u]) >> (vec4<u32>(0u, 4u, 8u, 12u) + 4u * (i & 7u))) & vec4<u32>(15u); let s = unpack2x16float(w_scale[i / {BLOCK}u]); return fma(vec4<f32>(q), vec4<f32>(s.x), vec4<f32>(s.y));"
                ),
            ),
        };
        format!("{decl}fn w4(i: u32) -> vec4<f32> {{ {body} }}\n")
    }

    /// For kernels that walk K a whole block at a time (`BLOCK`-aligned rows): a
    /// quantized format's `w_block(i) -> vec2<f32>` (the scale, and int4's minimum, of
    /// the block holding weight `i`) and `w4s(i, s) -> vec4<f32>` (4 weights of that
    /// block from it), so the scale is decoded once per 32 weights, not per 4.
    pub fn wgsl_blocked(self, binding: u32, scale_binding: u32) -> Option<String> {
        let body = match self {
            // unpack4x8snorm gives q / 127 (|q| <= 127: never the clamped -128), so the
            // block's scale is taken times 127 once: one builtin per 4 weights instead of
            // two shifts and a conversion (a few ulp from q * scale; SwiftShader runs it
            // faster).
            WeightFormat::Int8 => format!(
                "fn w_block(i: u32) -> vec2<f32> {{ return vec2<f32>(127.0 * w_scale8(i / {BLOCK}u), 0.0); }}\n\
                 fn w4s(i: u32, s: vec2<f32>) -> vec4<f32> {{ return unpack4x8snorm(w[i >> 2u]) * s.x; }}\n"
            ),
            WeightFormat::Int4 => format!(
                "fn w_block(i: u32) -> vec2<f32> {{ return unpack2x16float(w_scale[i / {BLOCK}u]); }}\n\
                 fn w4s(i: u32, s: vec2<f32>) -> vec4<f32> {{ let q = (vec4<u32>(w[i >> 3u]) >> (vec4<u32>(0u, 4u, 8u, 12u) + 4u * (i & 7u))) & vec4<u32>(15u); return fma(vec4<f32>(q), vec4<f32>(s.x), vec4<f32>(s.y)); }}\n"
            ),
            WeightFormat::F32 | WeightFormat::F16 => return None,
        };
        Some(format!(
            "{}{body}",
            self.declarations(binding, scale_binding)
        ))
    }

    /// The scalar-indexed declarations: `w` as words and, quantized, `w_scale` (f16
    /// pairs: int8 two blocks' scales per word, int4 one block's (scale, min)).
    fn declarations(self, binding: u32, scale_binding: u32) -> String {
        let w = match self {
            WeightFormat::F32 => "array<f32>",
            _ => "array<u32>",
        };
        let mut s = format!("@group(0) @binding({binding}) var<storage, read> w: {w};\n");
        if self.quant().is_some() {
            s += &format!(
                "@group(0) @binding({scale_binding}) var<storage, read> w_scale: array<u32>;\n"
            );
        }
        if self == WeightFormat::Int8 {
            s += "fn w_scale8(b: u32) -> f32 { let s = unpack2x16float(w_scale[b >> 1u]); return select(s.x, s.y, (b & 1u) == 1u); }\n";
        }
        s
    }
}

/// A weight tensor on the GPU in its storage format: the packed data and, for the
/// quantized formats, its per-block scales in a buffer (and binding) of their own.
pub struct Weight {
    pub(crate) buf: PooledBuffer,
    pub(crate) scales: Option<PooledBuffer>,
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
    /// The per-block scales of a quantized weight.
    pub fn scales(&self) -> Option<&wgpu::Buffer> {
        self.scales.as_ref().map(|b| b.buffer())
    }
    /// Bytes on the GPU (data and scales).
    pub fn bytes(&self) -> u64 {
        self.buf.size() + self.scales.as_ref().map_or(0, |s| s.size())
    }
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight<{}>{:?}", self.format.name(), self.shape)
    }
}
