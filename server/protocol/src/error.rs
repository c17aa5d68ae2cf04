//! The error vocabulary of the protocol: every way an inference request can
//! fail, protocol-neutral. Each front end maps a variant to its own status
//! (HTTP code, gRPC code); the message is what the client sees. The runtime
//! answers with these too, so a model's refusal and a decoder's refusal read
//! the same over every protocol.

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
    /// The HTTP status that answers it (the Open Inference Protocol's REST
    /// mapping; also the status a capture records for a gRPC request).
    pub fn http_status(&self) -> u16 {
        match self {
            InferError::NotFound(_) => 404,
            InferError::InvalidInput(_) => 400,
            InferError::PayloadTooLarge(_) => 413,
            InferError::QueueFull(_) | InferError::Unavailable(_) => 503,
            InferError::Timeout(_) => 504,
            InferError::ClientTimeout(_) => 408,
            InferError::Backend(_) => 500,
        }
    }

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
