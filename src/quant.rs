//! Block quantization of weights (int8, int4), on the CPU: the converter
//! (`roentgen quantize`), the page's quantizing import and `--format int8|int4` loads
//! all pack weights here; the GPU kernels read the packed form directly (see
//! [`crate::gpu::WeightFormat`]) and never see a dequantised copy.
//!
//! The scheme (version [`SCHEME_VERSION`], documented for other tools in
//! `docs/QUANTIZATION.md`):
//! - A weight is flattened in the order the kernels read it (linear `[N, K]` row-major;
//!   a conv `[Cout, KH, KW, Cin]`, the engine's layout) and cut into blocks of
//!   [`BLOCK`] consecutive elements; the last block may be short. Where K is a
//!   multiple of 32 (every RoentGen matrix that is quantized) a block lies in one row.
//! - **int8**, symmetric: `scale = f16(absmax / 127)`, `q = clamp(round(x / scale),
//!   -127, 127)`, value `q * scale`. 8.5 bits per weight.
//! - **int4** with a per-block minimum: `scale = f16((max - min) / 15)`, `mn = f16(min)`,
//!   `q = clamp(round((x - mn) / scale), 0, 15)`, value `q * scale + mn`. 5 bits per
//!   weight. The minimum was measured worth its 0.5 bit: 36 dB against 33 dB for
//!   symmetric int4 in the fake-quantization study the issue cites.
//!
//! Rounding is half away from zero (`f32::round`); scales and minima are rounded to
//! f16 (nearest, ties to even) before the weights are quantized against them, so the
//! packed values and the stored scales agree exactly.

use half::f16;

/// Weights per block, each block with its own f16 scale (and, for int4, minimum).
pub const BLOCK: usize = 32;

/// The version of the packing written into a quantized file's `__metadata__`.
pub const SCHEME_VERSION: u32 = 1;

/// A block-quantized format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Int8,
    Int4,
}

impl QuantFormat {
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Int8 => "int8",
            QuantFormat::Int4 => "int4",
        }
    }

    pub fn from_name(s: &str) -> Option<QuantFormat> {
        match s {
            "int8" => Some(QuantFormat::Int8),
            "int4" => Some(QuantFormat::Int4),
            _ => None,
        }
    }

    /// Bytes of packed data for `numel` weights.
    pub fn data_bytes(self, numel: usize) -> usize {
        match self {
            QuantFormat::Int8 => numel,
            QuantFormat::Int4 => numel.div_ceil(2),
        }
    }

    /// f16 values of scales (and minima) for `numel` weights.
    pub fn scale_halves(self, numel: usize) -> usize {
        let blocks = numel.div_ceil(BLOCK);
        match self {
            QuantFormat::Int8 => blocks,
            QuantFormat::Int4 => 2 * blocks,
        }
    }
}

/// A quantized weight on the CPU: packed values and per-block f16 scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub format: QuantFormat,
    pub numel: usize,
    /// int8: one signed byte per weight; int4: two weights per byte, the even one in
    /// the low nibble.
    pub data: Vec<u8>,
    /// f16 bits: int8 one scale per block; int4 `(scale, min)` per block, interleaved.
    pub scales: Vec<u16>,
}

impl Quantized {
    /// Checks that the packed lengths fit `numel` weights; `what` names the tensor.
    pub fn check(&self) -> Result<(), String> {
        let (d, s) = (
            self.format.data_bytes(self.numel),
            self.format.scale_halves(self.numel),
        );
        if self.data.len() != d {
            return Err(format!(
                "{} packed bytes for {} {} weights, which need {d}",
                self.data.len(),
                self.numel,
                self.format.name()
            ));
        }
        if self.scales.len() != s {
            return Err(format!(
                "{} scale values for {} {} weights in blocks of {BLOCK}, which need {s}",
                self.scales.len(),
                self.numel,
                self.format.name()
            ));
        }
        // int8 is symmetric: -128 is no value of the scheme (a kernel may read it as
        // -127), so a file holding one is damaged or not ours.
        if self.format == QuantFormat::Int8
            && let Some(i) = find_byte(&self.data, 0x80)
        {
            return Err(format!(
                "packed byte {i} is -128, outside int8's -127..127 (the file is damaged or was not written by this scheme)"
            ));
        }
        if let Some(i) = self
            .scales
            .iter()
            .position(|&h| !f16::from_bits(h).is_finite())
        {
            return Err(format!(
                "scale value {i} is not a finite number (the file is damaged)"
            ));
        }
        Ok(())
    }

    /// The values the kernels compute with (the CPU reference of the GPU readers).
    pub fn dequantize(&self) -> Vec<f32> {
        let s = |i: usize| f16::from_bits(self.scales[i]).to_f32();
        (0..self.numel)
            .map(|i| {
                let b = i / BLOCK;
                match self.format {
                    QuantFormat::Int8 => self.data[i] as i8 as f32 * s(b),
                    QuantFormat::Int4 => {
                        let q = (self.data[i / 2] >> (4 * (i % 2))) & 15;
                        q as f32 * s(2 * b) + s(2 * b + 1)
                    }
                }
            })
            .collect()
    }
}

/// f32 -> f16 -> f32 (nearest, ties to even).
fn round_f16(x: f32) -> (u16, f32) {
    let h = f16::from_f32(x);
    (h.to_bits(), h.to_f32())
}

/// Quantizes `values` (flattened in the kernels' order) in blocks of [`BLOCK`].
pub fn quantize(values: &[f32], format: QuantFormat) -> Quantized {
    let n = values.len();
    let mut data = vec![0u8; format.data_bytes(n)];
    let mut scales = Vec::with_capacity(format.scale_halves(n));
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let i0 = b * BLOCK;
        match format {
            QuantFormat::Int8 => {
                let amax = block.iter().fold(0f32, |m, &x| m.max(x.abs()));
                let (bits, scale) = round_f16(amax / 127.0);
                scales.push(bits);
                if scale > 0.0 {
                    for (j, &x) in block.iter().enumerate() {
                        let q = (x / scale).round().clamp(-127.0, 127.0) as i8;
                        data[i0 + j] = q as u8;
                    }
                }
            }
            QuantFormat::Int4 => {
                let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let (sbits, scale) = round_f16((hi - lo) / 15.0);
                let (mbits, mn) = round_f16(lo);
                scales.push(sbits);
                scales.push(mbits);
                if scale > 0.0 {
                    for (j, &x) in block.iter().enumerate() {
                        let q = ((x - mn) / scale).round().clamp(0.0, 15.0) as u8;
                        let i = i0 + j;
                        data[i / 2] |= q << (4 * (i % 2));
                    }
                }
            }
        }
    }
    Quantized {
        format,
        numel: n,
        data,
        scales,
    }
}

/// What a conversion does with one tensor of a component (`unet`, `text_encoder`,
/// `vae`), by the measured policy of `docs/QUANTIZATION.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorPlan {
    Quantize(QuantFormat),
    /// Matrices kept out of quantization, stored as f16.
    F16,
    /// Biases, norm parameters and non-float tensors: as stored.
    AsIs,
}

/// The policy (scheme version 1): every matrix (ndim >= 2) of the UNet and the text
/// encoder is quantized except the UNet's `conv_in`, `conv_out` and `time_embedding`
/// (0.1 % of its weights, the ones every pixel or step goes through) and the text
/// encoder's embeddings (read on the CPU, 77 rows per prompt); the VAE stays f16. With
/// `target` None (an f16 conversion) every float matrix becomes f16.
pub fn tensor_plan(
    component: &str,
    name: &str,
    shape: &[usize],
    target: Option<QuantFormat>,
) -> TensorPlan {
    if shape.len() < 2 {
        return TensorPlan::AsIs;
    }
    let Some(q) = target else {
        return TensorPlan::F16;
    };
    let kept = match component {
        "unet" => ["conv_in.", "conv_out.", "time_embedding."]
            .iter()
            .any(|p| name.starts_with(p)),
        "text_encoder" => name.contains("embeddings."),
        "vae" => true,
        _ => false,
    };
    if kept {
        TensorPlan::F16
    } else {
        TensorPlan::Quantize(q)
    }
}

/// `__metadata__` keys of a quantized safetensors file.
pub mod meta {
    /// `int8`, `int4` or `f16`: what the converter was asked for.
    pub const FORMAT: &str = "roentgen.quantization";
    /// [`super::SCHEME_VERSION`].
    pub const VERSION: &str = "roentgen.quantization.version";
    /// [`super::BLOCK`].
    pub const BLOCK: &str = "roentgen.quantization.block";
    /// JSON: tensor name -> `{"format", "shape", "layout"}` for every packed tensor.
    pub const TENSORS: &str = "roentgen.quantization.tensors";
    /// The file it was made from.
    pub const SOURCE: &str = "roentgen.quantization.source";
}

/// The suffix of the tensor holding a packed tensor's scales.
pub const SCALES_SUFFIX: &str = ".scales";

/// How a packed tensor's elements are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// As PyTorch's shape says (linear `[N, K]`, 1x1 convs).
    RowMajor,
    /// A conv `[Cout, Cin, KH, KW]` stored `[Cout, KH, KW, Cin]` (the kernels' order).
    Ohwi,
}

/// One packed tensor, as `roentgen.quantization.tensors` describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackedEntry {
    pub format: String,
    /// PyTorch's shape (what the model asks the loader for).
    pub shape: Vec<usize>,
    pub layout: Layout,
}

/// The quantization metadata of one file, checked: a file is refused whole when its
/// version or block size is not ours, before any tensor is read.
#[derive(Clone, Debug, Default)]
pub struct PackedIndex {
    pub format: String,
    pub tensors: std::collections::BTreeMap<String, PackedEntry>,
}

impl PackedIndex {
    /// `Ok(None)` for a plain checkpoint; an error sentence for one we cannot read.
    pub fn from_metadata(
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<PackedIndex>, String> {
        let Some(format) = metadata.get(meta::FORMAT) else {
            return Ok(None);
        };
        let version = metadata.get(meta::VERSION).map(String::as_str);
        if version != Some(&SCHEME_VERSION.to_string()) {
            return Err(format!(
                "it is quantized with scheme version {}, and this build reads version {SCHEME_VERSION}; convert the original checkpoint again with this build's `roentgen quantize`",
                version.unwrap_or("(none)")
            ));
        }
        let block = metadata.get(meta::BLOCK).map(String::as_str);
        if block != Some(&BLOCK.to_string()) {
            return Err(format!(
                "it is quantized in blocks of {}, and this build reads blocks of {BLOCK}; convert the original checkpoint again with this build's `roentgen quantize`",
                block.unwrap_or("(none)")
            ));
        }
        let tensors: std::collections::BTreeMap<String, PackedEntry> =
            serde_json::from_str(metadata.get(meta::TENSORS).map_or("{}", String::as_str))
                .map_err(|e| format!("its `{}` metadata does not parse ({e})", meta::TENSORS))?;
        for (name, e) in &tensors {
            if QuantFormat::from_name(&e.format).is_none() {
                return Err(format!(
                    "tensor `{name}` has the unknown packed format `{}` (known: int8, int4)",
                    e.format
                ));
            }
            if e.layout == Layout::Ohwi && e.shape.len() != 4 {
                return Err(format!(
                    "tensor `{name}` says it is a conv stored [Cout, KH, KW, Cin] but its shape {:?} is not 4-D",
                    e.shape
                ));
            }
        }
        Ok(Some(PackedIndex {
            format: format.clone(),
            tensors,
        }))
    }
}

/// Reorders a conv weight `[O, I, KH, KW]` to `[O, KH, KW, I]`.
pub fn permute_oihw_to_ohwi<T: Copy + Default>(v: &[T], shape: &[usize]) -> Vec<T> {
    let (o, ci, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![T::default(); v.len()];
    for a in 0..o {
        for c in 0..ci {
            for y in 0..kh {
                for x in 0..kw {
                    out[((a * kh + y) * kw + x) * ci + c] = v[((a * ci + c) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}

/// Relative L2 error `|a - b| / |b|`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// The first index of byte `b` in `data`, eight bytes at a time (every quantized tensor
/// is checked at each load, a lean generation's UNet reload included: ~0.9 GB at int8).
fn find_byte(data: &[u8], b: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * b as u64;
    let mut chunks = data.chunks_exact(8);
    for (k, c) in chunks.by_ref().enumerate() {
        let v = u64::from_le_bytes(c.try_into().unwrap()) ^ pattern;
        // a zero byte in v is a byte equal to b
        if v.wrapping_sub(LOW) & !v & HIGH != 0 {
            return c.iter().position(|&x| x == b).map(|p| 8 * k + p);
        }
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&x| x == b)
        .map(|p| data.len() - tail.len() + p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_byte_finds_the_first_at_every_place() {
        for len in [0usize, 1, 7, 8, 9, 31, 64, 100] {
            for at in 0..len {
                let mut d: Vec<u8> = (0..len).map(|i| (i % 127) as u8).collect();
                d[at] = 0x80;
                if at + 3 < len {
                    d[at + 3] = 0x80;
                }
                assert_eq!(super::find_byte(&d, 0x80), Some(at), "len {len} at {at}");
            }
            let d: Vec<u8> = (0..len).map(|i| (i % 127) as u8 ^ 0x7f).collect();
            assert_eq!(super::find_byte(&d, 0x80), None, "len {len}");
        }
    }

    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn int8_is_within_half_a_step_and_hits_127() {
        let v = values(1000, 1); // 1000 = 31 blocks + a short one of 8
        let q = quantize(&v, QuantFormat::Int8);
        q.check().unwrap();
        let d = q.dequantize();
        for (b, block) in v.chunks(BLOCK).enumerate() {
            let s = f16::from_bits(q.scales[b]).to_f32();
            let qs = &q.data[b * BLOCK..b * BLOCK + block.len()];
            assert!(
                qs.iter().any(|&x| (x as i8).unsigned_abs() >= 126),
                "block {b}"
            );
            for (j, &x) in block.iter().enumerate() {
                // f16 rounding of the scale moves the grid by up to 2^-11 of amax
                assert!((d[b * BLOCK + j] - x).abs() <= 0.5 * s + 1e-3 * s * 127.0);
            }
        }
        assert!(rel_l2(&d, &v) < 0.01, "{}", rel_l2(&d, &v));
    }

    #[test]
    fn int4_uses_the_block_minimum() {
        // a block of values in [5, 6]: symmetric int4 would waste half its levels
        let v: Vec<f32> = values(70, 2).iter().map(|x| 5.5 + 0.5 * x).collect();
        let q = quantize(&v, QuantFormat::Int4);
        q.check().unwrap();
        assert_eq!(q.data.len(), 35);
        assert_eq!(q.scales.len(), 6);
        let d = q.dequantize();
        for (b, block) in v.chunks(BLOCK).enumerate() {
            let s = f16::from_bits(q.scales[2 * b]).to_f32();
            for (j, &x) in block.iter().enumerate() {
                assert!((d[b * BLOCK + j] - x).abs() <= 0.5 * s + 0.01, "{b} {j}");
            }
        }
    }

    #[test]
    fn constant_and_zero_blocks() {
        for f in [QuantFormat::Int8, QuantFormat::Int4] {
            let q = quantize(&[0.0; 40], f);
            assert!(q.dequantize().iter().all(|&x| x == 0.0));
            let q = quantize(&[0.25; 40], f);
            assert!(
                q.dequantize().iter().all(|&x| (x - 0.25).abs() < 2e-3),
                "{f:?}"
            );
        }
    }

    #[test]
    fn check_names_the_wrong_length() {
        let mut q = quantize(&values(64, 3), QuantFormat::Int4);
        q.scales.pop();
        assert!(q.check().unwrap_err().contains("need 4"));
    }
}
