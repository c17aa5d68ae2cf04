//! ONNX Runtime backend: serves `.onnx` models on the CPU.
//!
//! ONNX Runtime is loaded at run time from its shared library (see
//! [`find_library`] and [`init_runtime`]) rather than linked, so the binary
//! builds without a C++ toolchain and runs against the ONNX Runtime the
//! deployment provides. Start-up is: `find_library` → `init_runtime` → one
//! [`OrtBackend::load`] per instance; after that a backend only runs batches.
//!
//! This crate knows ONNX Runtime and `backends/core` only: not the protocol,
//! the scheduler, the registry or the server.

mod backend;
mod convert;
mod dylib;
mod element;
mod error;
mod runtime;
mod strings;

pub use backend::{OrtBackend, OrtOptions};
pub use dylib::{find_library, DYLIB_ENV_VAR};
pub use error::OrtError;
pub use runtime::{init_runtime, loaded_library};

/// The ONNX Runtime release ferroserve is built and tested against (the `ort`
/// crate's `api-31` feature needs 1.31 or newer); named in set-up messages.
pub const EXPECTED_ORT_VERSION: &str = "1.31.1";
