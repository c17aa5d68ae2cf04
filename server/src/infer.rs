//! Protocol-neutral request and error types shared by the HTTP (and later
//! gRPC) front ends and the scheduler.

use std::time::Duration;

use ferroserve_backend_core::Tensor;

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

/// Every way an inference can fail. Each front end maps a variant to its own
/// status code; the message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The model's queue is full: the client should retry later.
    #[error("{0}")]
    QueueFull(String),
    #[error("{0}")]
    Timeout(String),
    /// The client was too slow sending its request.
    #[error("{0}")]
    ClientTimeout(String),
    #[error("{0}")]
    Backend(String),
    /// The server or model is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
}

impl InferError {
    /// The `outcome` label of the request counter.
    pub fn outcome(&self) -> &'static str {
        match self {
            InferError::NotFound(_) => "not_found",
            InferError::InvalidInput(_) => "invalid_input",
            InferError::PayloadTooLarge(_) => "payload_too_large",
            InferError::QueueFull(_) => "queue_full",
            InferError::Timeout(_) => "timeout",
            InferError::ClientTimeout(_) => "client_timeout",
            InferError::Backend(_) => "backend_error",
            InferError::Unavailable(_) => "unavailable",
        }
    }
}
