//! The Open Inference Protocol (KServe v2) as data: bytes in, typed requests
//! out, typed answers back to bytes.
//!
//! - [`json`]: the HTTP body format, JSON tensors and the binary tensor
//!   data extension (`Inference-Header-Content-Length`).
//! - [`grpc`]: the generated protobuf messages (and Triton's `ModelConfig`)
//!   and their conversion to the same request type.
//! - [`request`]: the decoded request both produce; [`declared`]: what a
//!   request says of one input, parsed once for both.
//! - [`classification`]: the classification extension (top-K classes).
//! - [`samples`]: files of v2 requests (warm-up samples, load-test inputs).
//! - [`InferError`]: every way a request can fail, for every front end.
//!
//! This crate must not know sockets, tokio, the scheduler or any model: it
//! is what a client, a batch scorer or a test can use to speak the protocol
//! without a server. Backends' [`Tensor`](ferroserve_backend_core::Tensor)
//! is the one type it shares with the layers below.

pub mod classification;
pub mod declared;
mod error;
pub mod grpc;
pub mod json;
pub mod request;
pub mod samples;

pub use error::InferError;
pub use request::{InferRequest, RequestedOutput};
