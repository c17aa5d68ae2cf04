//! Offering a deployment's finished requests to its capture: the sampling
//! decision before the request runs (so only sampled requests keep a copy
//! of their inputs), the sample after.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use ferroserve_backend_core::Tensor;
use ferroserve_monitoring::capture::{Capture, Sample};
use ferroserve_runtime::infer::{InferError, InferOutput};

/// A request being captured, between its start and its answer.
pub(super) struct Pending {
    id: String,
    sampled: bool,
    inputs: Vec<(String, Tensor)>,
    started: Instant,
    at: SystemTime,
}

/// `None` when the request cannot end up captured (not sampled, and its
/// failures are not kept either). Tensors share their bytes: the copy is
/// of names and shapes.
pub(super) fn begin(
    capture: &Capture,
    id: Option<&str>,
    inputs: &[(String, Tensor)],
) -> Option<Pending> {
    let id = request_id(id);
    let sampled = capture.sampled(&id);
    if !sampled && !capture.settings().always_errors {
        return None;
    }
    Some(Pending {
        id: id.into_owned(),
        sampled,
        inputs: inputs.to_vec(),
        started: Instant::now(),
        at: SystemTime::now(),
    })
}

/// Offers the finished request, if it is to be kept.
pub(super) fn finish(
    capture: &Capture,
    p: Pending,
    result: &Result<InferOutput, InferError>,
    output_names: impl Iterator<Item = String>,
) {
    if result.is_ok() && !p.sampled {
        return;
    }
    let (status, error, outputs) = match result {
        Ok(out) => (
            200,
            None,
            output_names.zip(out.outputs.iter().cloned()).collect(),
        ),
        Err(e) => (e.http_status(), Some(e.to_string()), Vec::new()),
    };
    capture.offer(Sample {
        request_id: p.id,
        timestamp: p.at,
        latency: p.started.elapsed(),
        status,
        error,
        inputs: p.inputs,
        outputs,
    });
}

/// The request's own id, or one made up for it: unique in this process
/// and unlike any other process's, so sampling by id still spreads over
/// requests that bring none.
fn request_id(id: Option<&str>) -> Cow<'_, str> {
    match id {
        Some(id) if !id.is_empty() => Cow::Borrowed(id),
        _ => {
            static PREFIX: OnceLock<u64> = OnceLock::new();
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let prefix = *PREFIX.get_or_init(|| {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ (u64::from(std::process::id()) << 40)
            });
            Cow::Owned(format!(
                "ferroserve-{prefix:016x}-{}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ))
        }
    }
}
