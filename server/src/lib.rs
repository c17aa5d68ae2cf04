//! ferroserve: a model-serving runtime.
//!
//! The request path: [`http`] decodes a request, [`models`] finds the model,
//! [`validate`] checks it against the signature, [`scheduler`] batches it onto
//! a backend instance thread, and the answer goes back the same way.

pub mod auth;
pub mod classification;
pub mod endpoints;
pub mod events;
pub mod extensions;
pub mod grpc;
pub mod http;
pub mod infer;
pub mod infer_stats;
pub mod listener;
pub mod loadgen;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod opencl_cli;
pub mod profiler;
pub mod registry;
pub mod repository;
pub mod runtime;
pub mod samples;
pub mod scheduler;
pub mod tls;
pub mod triton;
pub mod validate;
