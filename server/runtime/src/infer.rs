//! What a model answers for one request, whichever front end asked.

use std::time::Duration;

use ferroserve_backend_core::Tensor;

pub use ferroserve_protocol::InferError;

/// What a model answered for one request, with the timings the front end
/// reports in metrics.
#[derive(Debug)]
pub struct InferOutput {
    /// In the order of the served signature's outputs.
    pub outputs: Vec<Tensor>,
    pub queue_time: Duration,
    /// Stacking inputs and running the backend (the `compute_duration`
    /// metric).
    pub compute_time: Duration,
    /// The stage times of the batch the request ran in (the statistics
    /// extension's `compute_input`, `compute_infer`, `compute_output`).
    pub batch: crate::infer_stats::BatchTimes,
}
