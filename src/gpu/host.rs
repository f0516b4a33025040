//! Weights on the host, in the forms a checkpoint holds them, and their conversion to
//! the storage format a GPU buffer holds (f32/f16 by `half`, int8/int4 by
//! [`crate::quant::quantize`]): pure CPU work, apart from the device (`Gpu::weight`
//! uploads what [`HostWeight::encode`] returns).

use super::WeightFormat;
use crate::quant::{Quantized, quantize};

/// A weight's values on the host, in one of the forms a checkpoint holds them.
#[derive(Clone, Copy)]
pub enum HostWeight<'a> {
    F32(&'a [f32]),
    /// IEEE half bits.
    F16(&'a [u16]),
    /// Already packed (a quantized checkpoint): uploaded as it is, in its own format.
    Quantized(&'a Quantized),
}

impl<'a> From<&'a [f32]> for HostWeight<'a> {
    fn from(v: &'a [f32]) -> Self {
        HostWeight::F32(v)
    }
}

impl<'a> From<&'a Vec<f32>> for HostWeight<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        HostWeight::F32(v)
    }
}

impl HostWeight<'_> {
    pub(super) fn numel(&self) -> usize {
        match self {
            HostWeight::F32(v) => v.len(),
            HostWeight::F16(v) => v.len(),
            HostWeight::Quantized(q) => q.numel,
        }
    }
}

impl HostWeight<'_> {
    /// The bytes (and, quantized, the per-block scales) of this weight in `format`. A
    /// packed weight keeps its own format, whatever `format` asks: it is never
    /// dequantised.
    pub fn encode(self, format: WeightFormat) -> (WeightFormat, Vec<u8>, Option<Vec<u16>>) {
        let to_f32 = |bits: &[u16]| -> Vec<f32> {
            bits.iter()
                .map(|&b| half::f16::from_bits(b).to_f32())
                .collect()
        };
        match (self, format) {
            (HostWeight::Quantized(q), _) => (
                WeightFormat::from_quant(q.format),
                q.data.clone(),
                Some(q.scales.clone()),
            ),
            (HostWeight::F32(v), WeightFormat::F32) => {
                (format, bytemuck::cast_slice(v).to_vec(), None)
            }
            (HostWeight::F16(b), WeightFormat::F32) => {
                (format, bytemuck::cast_slice(&to_f32(b)).to_vec(), None)
            }
            (HostWeight::F16(b), WeightFormat::F16) => {
                (format, bytemuck::cast_slice(b).to_vec(), None)
            }
            (HostWeight::F32(v), WeightFormat::F16) => {
                let bits: Vec<u16> = v
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_bits())
                    .collect();
                (format, bytemuck::cast_slice(&bits).to_vec(), None)
            }
            (h, f) => {
                let q = f
                    .quant()
                    .expect("the f32 and f16 targets are matched above");
                let q = match h {
                    HostWeight::F32(v) => quantize(v, q),
                    HostWeight::F16(b) => quantize(&to_f32(b), q),
                    HostWeight::Quantized(_) => unreachable!("matched by the first arm"),
                };
                (f, q.data, Some(q.scales))
            }
        }
    }
}
