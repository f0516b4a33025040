//! Element types of stored tensors, and their conversion to `f32`.
//!
//! All stored data is little-endian (safetensors by definition; PyTorch archives say so
//! in their `byteorder` entry, which the PyTorch parser checks).

use std::fmt;

/// The element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, no infinities (`torch.float8_e4m3fn`).
    F8E4M3,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits (`torch.float8_e5m2`).
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether [`to_f32`] reads this type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// The name safetensors headers use (`"F32"`, `"BF16"`, `"BOOL"`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Parses a safetensors header dtype name.
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        Some(match name {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F8_E4M3" => DType::F8E4M3,
            "F8_E5M2" => DType::F8E5M2,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U64" => DType::U64,
            "U32" => DType::U32,
            "U16" => DType::U16,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype of a legacy typed PyTorch storage class (`torch.FloatStorage`, ...).
    pub fn from_torch_storage(class: &str) -> Option<DType> {
        Some(match class {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            // Holds raw bytes; `_rebuild_tensor_v3` names the real dtype separately.
            "UntypedStorage" => DType::U8,
            _ => return None,
        })
    }

    /// The dtype of a `torch.<name>` dtype object as pickled (`torch.float16`, ...).
    pub fn from_torch_dtype(name: &str) -> Option<DType> {
        Some(match name {
            "float64" | "double" => DType::F64,
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "float8_e4m3fn" => DType::F8E4M3,
            "float8_e5m2" => DType::F8E5M2,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint64" => DType::U64,
            "uint32" => DType::U32,
            "uint16" => DType::U16,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8e4m3",
            DType::F8E5M2 => "f8e5m2",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// Why raw bytes could not be converted (the caller adds file and tensor names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} values cannot be converted to f32 by this loader")]
    NotFloat(DType),
    #[error("{len} bytes are not a whole number of {dtype} values ({} bytes each)", dtype.size_bytes())]
    RaggedLength { dtype: DType, len: usize },
}

/// Converts little-endian `bytes` of `dtype` (F32, F16, BF16 or F64) to `f32`.
///
/// F64 values round to the nearest f32 (overflowing to ±inf), as `tensor.float()` does.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>, ConvertError> {
    if !dtype.is_float() {
        return Err(ConvertError::NotFloat(dtype));
    }
    let n = dtype.size_bytes();
    if !bytes.len().is_multiple_of(n) {
        return Err(ConvertError::RaggedLength {
            dtype,
            len: bytes.len(),
        });
    }
    let mut out = vec![0.0f32; bytes.len() / n];
    to_f32_into(dtype, bytes, &mut out)?;
    Ok(out)
}

/// Like [`to_f32`] but writes into `out`, which must hold exactly `bytes.len() / size` values.
pub fn to_f32_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), ConvertError> {
    let n = dtype.size_bytes();
    if !bytes.len().is_multiple_of(n) || bytes.len() / n != out.len() {
        return Err(ConvertError::RaggedLength {
            dtype,
            len: bytes.len(),
        });
    }
    // `chunks_exact` + `from_le_bytes` works on unaligned input and compiles to plain loads.
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                *o = f64::from_le_bytes(b) as f32;
            }
        }
        other => return Err(ConvertError::NotFloat(other)),
    }
    Ok(())
}

/// IEEE 754 binary16 bits to f32, exactly (every f16 value is an f32 value), by the
/// `half` crate.
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// bfloat16 bits to f32, exactly (bf16 is the top half of an f32).
pub fn bf16_to_f32(b: u16) -> f32 {
    half::bf16::from_bits(b).to_f32()
}

/// f32 to IEEE 754 binary16 bits, rounding to nearest with ties to even (as
/// `tensor.half()` does), by the `half` crate.
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(DType::F32.size_bytes(), 4);
        assert_eq!(DType::BF16.size_bytes(), 2);
        assert_eq!(DType::Bool.size_bytes(), 1);
        for d in [DType::F64, DType::F8E5M2, DType::U16, DType::Bool] {
            assert_eq!(DType::from_safetensors_name(d.safetensors_name()), Some(d));
        }
    }

    #[test]
    fn ragged_and_non_float() {
        assert!(matches!(
            to_f32(DType::F32, &[0; 6]),
            Err(ConvertError::RaggedLength { .. })
        ));
        assert!(matches!(
            to_f32(DType::I64, &[0; 8]),
            Err(ConvertError::NotFloat(DType::I64))
        ));
        assert_eq!(
            to_f32(DType::F64, &1.5f64.to_le_bytes()).unwrap(),
            vec![1.5]
        );
    }
}
