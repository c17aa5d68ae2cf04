//! Warm-up: a new version answers the bundle's warm-up samples through its
//! real request path (validation, batcher, backend) before it gets any
//! traffic, so the first live request does not pay for lazy
//! initialisation, and a version that cannot answer never goes live.
//! Warm-up requests are left out of the statistics extension.

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor};

use ferroserve_runtime::Model;

type Sample = Vec<(String, Tensor)>;

/// The bundle's samples (its `warmup` file: one v2 JSON request or a list
/// of them), or `None` when it has none.
fn declared(model: &Model) -> Result<Option<Vec<Sample>>, String> {
    let Some(path) = &model.manifest.warmup else {
        return Ok(None);
    };
    ferroserve_protocol::samples::read(path)
        .map(Some)
        .map_err(|e| format!("warm-up samples {e}"))
}

/// One row of zeros (empty strings for BYTES) per input, free dims as 1.
/// None for a raw-style entry script: an empty request body is not
/// something its `run()` can be expected to accept.
fn zeros(model: &Model) -> Option<Sample> {
    if model.capabilities().raw_body {
        return None;
    }
    model
        .signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d.max(1)).collect();
            let count: usize = shape.iter().map(|&d| d as usize).product();
            let t = match spec.dtype {
                DataType::Bytes => Tensor::from_strings(shape, &vec![b""; count]).ok()?,
                dt => Tensor::new(
                    dt,
                    shape,
                    Bytes::from(vec![0u8; count * dt.element_size()?]),
                )
                .ok()?,
            };
            Some((spec.name.clone(), t))
        })
        .collect()
}

/// Runs the warm-up. Declared samples must all succeed; without any, one
/// request of zeros is tried and its failure only logged (zeros may be
/// meaningless input for the model). Returns how many samples ran.
pub async fn run(model: &Model) -> Result<usize, String> {
    if let Some(why) = model.not_ready() {
        return Err(format!("the model is not ready: {why}"));
    }
    match declared(model)? {
        Some(samples) => {
            let n = samples.len();
            for (i, sample) in samples.into_iter().enumerate() {
                model.infer_uncounted(sample, None).await.map_err(|e| {
                    format!(
                        "warm-up sample {i} of {} failed: {e}",
                        model.manifest.warmup.as_ref().expect("declared").display()
                    )
                })?;
            }
            Ok(n)
        }
        None => {
            let Some(sample) = zeros(model) else {
                return Ok(0);
            };
            if let Err(e) = model.infer_uncounted(sample, None).await {
                tracing::info!(model = %model.name, version = model.version, error = %e, "warm-up with zeros failed (the bundle declares no warm-up samples); going on");
            }
            Ok(1)
        }
    }
}
