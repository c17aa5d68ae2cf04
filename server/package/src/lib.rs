//! `ferroserve package`: an OCI image of the binary, its runtime libraries
//! and chosen model bundles, written as an `oci-archive` without a
//! container engine, as ko and jib do. Every layer is a deterministic
//! gzip'd tar, so the same inputs give the same image digest.

mod archive;
mod base;
mod elf;
mod error;
mod image;
mod layer;
pub mod libs;
mod oci;

pub use error::PackageError;
pub use image::{
    write, Bundle, LayerSummary, Packaged, Spec, BINARY, GRPC_PORT, HTTP_PORT, LIB_DIR,
    METRICS_PORT, MODELS, USER,
};
