//! The contract between ferroserve's scheduler and its backends.
//!
//! The scheduler knows nothing about ONNX Runtime, OpenCL or Python: it batches
//! [`Tensor`]s and hands them to a [`Backend`]. Keeping this crate tiny is what
//! lets a backend be added without touching the request path.

mod backend;
mod dtype;
mod tensor;
mod timings;

pub use backend::{Backend, BackendError, Capabilities, Health, Signature, TensorSpec};
pub use dtype::DataType;
pub use tensor::{Tensor, TensorError};
pub use timings::{DeviceTimings, KernelStat};
