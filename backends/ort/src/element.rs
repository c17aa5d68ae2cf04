//! The correspondence between protocol datatypes and ONNX Runtime element types.

use ferroserve_backend_core::DataType;
use half::f16;
use ort::value::{PrimitiveTensorElementType, TensorElementType};

/// The protocol datatype for an ONNX Runtime element type, or `None` for the
/// types the Open Inference Protocol cannot carry (bfloat16, complex, 8-bit
/// and 4-bit floats, packed ints).
pub(crate) fn data_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// A fixed-size numeric element whose every bit pattern is a valid value.
///
/// That property is what makes it sound to view a little-endian byte buffer as
/// `&[Self]` without copying (see `convert::numeric_input`); `bool` is not one
/// of these because only 0 and 1 are valid `bool`s.
///
/// # Safety
/// Implementors must be plain data: no padding, no invalid bit patterns, and
/// `SIZE == size_of::<Self>()`.
pub(crate) unsafe trait Numeric:
    PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static
{
    const SIZE: usize;
    /// Reads one element from exactly `SIZE` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// Writes this element as `SIZE` little-endian bytes (little-endian
    /// hosts copy outputs whole instead).
    #[cfg(target_endian = "big")]
    fn write_le(self, out: &mut [u8]);
}

macro_rules! numeric {
    ($($t:ty),*) => {$(
        // SAFETY: primitive integers, floats and `half::f16` (a transparent
        // `u16`) have no padding and no invalid bit patterns.
        unsafe impl Numeric for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            #[inline]
            #[cfg(target_endian = "big")]
            fn write_le(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

numeric!(u8, u16, u32, u64, i8, i16, i32, i64, f16, f32, f64);
