//! BYTES tensors to and from ONNX Runtime string tensors.
//!
//! `ort`'s own string helpers go through `CString` and `String`, which reject
//! a NUL byte inside an element and anything that is not UTF-8. The protocol's
//! BYTES elements are arbitrary bytes (an encoded image is a common one), and
//! ONNX Runtime stores each element as a `std::string`, which holds any bytes.
//! So this module uses the length-carrying C API calls directly: every byte
//! string survives the round trip, and each element is copied exactly once.

use std::ffi::c_void;
use std::ptr;

use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, TensorElementType};
use ort::AsPointer;

/// Builds a string tensor of `shape` from `elements`.
///
/// `elements` must hold exactly as many items as `shape` calls for (the caller
/// has validated the tensor).
pub(crate) fn string_tensor<'a>(
    shape: &[i64],
    elements: impl ExactSizeIterator<Item = &'a [u8]>,
) -> ort::Result<DynTensor> {
    let allocator = Allocator::default();
    let mut tensor = DynTensor::new(&allocator, TensorElementType::String, shape)?;
    let value = tensor.ptr_mut();
    for (index, element) in elements.enumerate() {
        let mut buffer: *mut std::ffi::c_char = ptr::null_mut();
        // SAFETY: `value` is a live string tensor with `index` in range (the
        // iterator has one item per element); ONNX Runtime resizes element
        // `index` to `element.len()` bytes and returns its buffer, which we fill
        // before any other call touches the tensor.
        unsafe {
            ort::Error::result_from_status((ort::api().GetResizedStringTensorElementBuffer)(
                value,
                index,
                element.len(),
                &mut buffer,
            ))?;
            if !element.is_empty() {
                if buffer.is_null() {
                    return Err(ort::Error::new(
                        "ONNX Runtime returned no buffer for a string element",
                    ));
                }
                ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), element.len());
            }
        }
    }
    Ok(tensor)
}

/// Encodes the `count` elements of the string tensor `value` in the protocol's
/// binary BYTES form: each a u32 little-endian length, then its bytes.
pub(crate) fn encode_strings(value: &DynValue, count: usize) -> Result<Vec<u8>, String> {
    let api = ort::api();
    let raw = value.ptr();
    let mut total = 0usize;
    // SAFETY: `raw` is a live string tensor (the caller checked its element type).
    unsafe { ort::Error::result_from_status((api.GetStringTensorDataLength)(raw, &mut total)) }
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(total.saturating_add(count.saturating_mul(4)));
    for index in 0..count {
        let mut len = 0usize;
        // SAFETY: `index < count`, the tensor's element count.
        unsafe {
            ort::Error::result_from_status((api.GetStringTensorElementLength)(raw, index, &mut len))
        }
        .map_err(|e| e.to_string())?;
        let prefix = u32::try_from(len).map_err(|_| {
            format!("string element {index} is {len} bytes, more than a BYTES element can hold")
        })?;
        out.extend_from_slice(&prefix.to_le_bytes());
        let start = out.len();
        out.resize(start + len, 0);
        // SAFETY: `out[start..]` is exactly `len` writable bytes, the size
        // ONNX Runtime just reported for this element.
        unsafe {
            ort::Error::result_from_status((api.GetStringTensorElement)(
                raw,
                len,
                index,
                out.as_mut_ptr().add(start).cast::<c_void>(),
            ))
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}
