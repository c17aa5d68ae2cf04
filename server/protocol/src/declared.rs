//! What a request says of one input before any model is consulted: its
//! datatype and element count, parsed the same for HTTP and gRPC.

use ferroserve_backend_core::DataType;

/// Parses what a request says of one input, the same for every protocol:
/// its datatype and the element count its shape implies (checked for
/// negative dims and overflow, so no later size computation can wrap).
pub fn declared(datatype: &str, shape: &[i64]) -> Result<(DataType, usize), String> {
    let dtype: DataType = datatype.parse().map_err(|e| format!("{e}"))?;
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(format!("shape {shape:?} has negative dimension {d}"));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    Ok((dtype, count))
}
