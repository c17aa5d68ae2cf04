//! Model bundles loaded and run in-process: the layer that turns a bundle
//! folder into something that answers inference requests, with no server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferroserve_runtime::{LoadSettings, Model};
//! ferroserve_runtime::onnxruntime::init()?;
//! let model = Model::load("examples/models/mlp/1".as_ref(), &LoadSettings::default())?;
//! # let inputs = vec![];
//! let answer = model.infer(inputs, None).await?;
//! # Ok(()) }
//! ```
//!
//! - [`manifest`]: what a bundle declares (`bundle.toml`, or a Triton
//!   `config.pbtxt`), checked strictly.
//! - [`model`]: [`Model::load`] picks the backend the manifest names, checks
//!   the model's own signature against the manifest and starts the
//!   [`scheduler`] (the batcher and one instance worker thread per
//!   session); [`Model::infer`] validates ([`validate`]), queues and waits.
//! - [`infer_stats`] and [`metrics`]: what each loaded version has done, as
//!   Triton's statistics extension and Prometheus count it.
//! - [`onnxruntime`]: finding and loading ONNX Runtime's shared library.
//!
//! This crate must not know HTTP, gRPC, sockets or the registry's storage:
//! the server, the registry's load check and batch scoring all use it the
//! same way.

pub mod infer;
pub mod infer_stats;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod onnxruntime;
pub mod scheduler;
pub mod validate;

pub use ferroserve_protocol::InferError;
pub use infer::InferOutput;
pub use model::{LoadError, LoadSettings, Model};
