//! Core tensors to ONNX Runtime values and back.
//!
//! Inputs are borrowed, not copied, whenever the request's bytes can be read
//! in place: a binary request's tensor is a slice of the request body, and on
//! a little-endian machine a suitably aligned slice already is the array ONNX
//! Runtime wants. Otherwise (unaligned slices, BOOL, BYTES, big-endian hosts)
//! the data is copied once. Outputs are copied once (one `memcpy` on a
//! little-endian host), out of ONNX Runtime's buffers into a `Bytes` the
//! server can slice per request.

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor};
use half::f16;
use ort::session::SessionInputValue;
use ort::value::{DynValue, TensorRef, ValueType};

use crate::element::{data_type, Numeric};
use crate::strings;

/// Converts one input. `name` is only for messages.
///
/// The tensor is re-validated here because `Tensor`'s fields are public: the
/// server validates requests, but a backend handed inconsistent data must fail
/// the run, never read out of bounds or panic.
pub(crate) fn to_ort<'t>(tensor: &'t Tensor, name: &str) -> Result<SessionInputValue<'t>, String> {
    Tensor::new(tensor.dtype, tensor.shape.clone(), tensor.data.clone())
        .map_err(|e| format!("input '{name}': {e}"))?;
    let shape = tensor.shape.as_slice();
    let data = &tensor.data[..];
    let value = match tensor.dtype {
        DataType::Bool => {
            // Any non-zero byte is true, as in the protocol's binary form.
            let bools: Vec<bool> = data.iter().map(|&b| b != 0).collect();
            ort::value::Tensor::from_array((shape.to_vec(), bools)).map(SessionInputValue::from)
        }
        DataType::Uint8 => numeric_input::<u8>(shape, data),
        DataType::Uint16 => numeric_input::<u16>(shape, data),
        DataType::Uint32 => numeric_input::<u32>(shape, data),
        DataType::Uint64 => numeric_input::<u64>(shape, data),
        DataType::Int8 => numeric_input::<i8>(shape, data),
        DataType::Int16 => numeric_input::<i16>(shape, data),
        DataType::Int32 => numeric_input::<i32>(shape, data),
        DataType::Int64 => numeric_input::<i64>(shape, data),
        DataType::Fp16 => numeric_input::<f16>(shape, data),
        DataType::Fp32 => numeric_input::<f32>(shape, data),
        DataType::Fp64 => numeric_input::<f64>(shape, data),
        DataType::Bytes => {
            let elements = tensor.string_elements();
            strings::string_tensor(shape, elements.into_iter()).map(SessionInputValue::from)
        }
    };
    value.map_err(|e| format!("input '{name}': {e}"))
}

/// A view of `data` when it can be read in place, else a one-copy tensor.
fn numeric_input<'t, T: Numeric>(
    shape: &[i64],
    data: &'t [u8],
) -> ort::Result<SessionInputValue<'t>> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `T: Numeric` has no padding and no invalid bit patterns, so
        // any aligned run of its size in bytes is a valid `T`.
        let (head, body, tail) = unsafe { data.align_to::<T>() };
        if head.is_empty() && tail.is_empty() {
            return TensorRef::from_array_view((shape.to_vec(), body)).map(SessionInputValue::from);
        }
    }
    let values: Vec<T> = data.chunks_exact(T::SIZE).map(T::read_le).collect();
    ort::value::Tensor::from_array((shape.to_vec(), values)).map(SessionInputValue::from)
}

/// Converts one output value into a core tensor. `name` is only for messages.
pub(crate) fn from_ort(value: &DynValue, name: &str) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(format!(
            "output '{name}' is a {}, not a tensor",
            value.dtype()
        ));
    };
    let dtype = data_type(*ty).ok_or_else(|| {
        format!(
            "output '{name}' has element type {ty}, which the Open Inference Protocol cannot carry"
        )
    })?;
    let shape: Vec<i64> = shape.to_vec();
    let data = match dtype {
        DataType::Bool => {
            let (_, values) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| e.to_string())?;
            values.iter().map(|&b| u8::from(b)).collect()
        }
        DataType::Uint8 => numeric_output::<u8>(value)?,
        DataType::Uint16 => numeric_output::<u16>(value)?,
        DataType::Uint32 => numeric_output::<u32>(value)?,
        DataType::Uint64 => numeric_output::<u64>(value)?,
        DataType::Int8 => numeric_output::<i8>(value)?,
        DataType::Int16 => numeric_output::<i16>(value)?,
        DataType::Int32 => numeric_output::<i32>(value)?,
        DataType::Int64 => numeric_output::<i64>(value)?,
        DataType::Fp16 => numeric_output::<f16>(value)?,
        DataType::Fp32 => numeric_output::<f32>(value)?,
        DataType::Fp64 => numeric_output::<f64>(value)?,
        DataType::Bytes => {
            let count = shape
                .iter()
                .try_fold(1usize, |n, &d| {
                    usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
                })
                .ok_or_else(|| format!("output '{name}' has an invalid shape {shape:?}"))?;
            strings::encode_strings(value, count).map_err(|e| format!("output '{name}': {e}"))?
        }
    };
    Ok(Tensor {
        dtype,
        shape,
        data: Bytes::from(data),
    })
}

/// One copy of the output, as one `memcpy` on a little-endian host.
fn numeric_output<T: Numeric>(value: &DynValue) -> Result<Vec<u8>, String> {
    let (_, values) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `T: Numeric` is plain data of `T::SIZE` bytes with no
        // padding, so its elements' memory is `len * SIZE` initialised bytes,
        // already in little-endian order on this host.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * T::SIZE)
        };
        Ok(bytes.to_vec())
    }
    #[cfg(target_endian = "big")]
    {
        let mut out = vec![0u8; values.len() * T::SIZE];
        for (chunk, &v) in out.chunks_exact_mut(T::SIZE).zip(values) {
            v.write_le(chunk);
        }
        Ok(out)
    }
}
