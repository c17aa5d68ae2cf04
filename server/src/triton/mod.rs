//! Triton model repositories: `DIR/NAME/config.pbtxt` with version folders
//! `DIR/NAME/N/model.onnx`, served as they are or imported as bundles.
//!
//! - [`textproto`]: the protocol buffers text format `config.pbtxt` is in.
//! - [`config`]: a config's settings onto a ferroserve manifest; the table
//!   of what is supported, ignored with a warning, or refused.
//! - [`versions`]: which versions a `version_policy` serves, as the
//!   deployments of the model's endpoint.
//! - [`import`]: `ferroserve import-triton`, registering a Triton
//!   repository's models as ferroserve bundles, version numbers kept.

pub mod config;
pub mod import;
pub mod textproto;
pub mod versions;
