//! The registry: `REPO/registry.db` (SQLite, WAL) beside the version
//! folders, recording who registered which version, when, why, from where,
//! and the SHA-256 of every file, the endpoints and deployments `serve`
//! reconciles with, plus an append-only audit log; and the lifecycle events
//! the server emits about all of them.
//!
//! - [`store`]: the schema and its queries; [`open`]: opening a registry
//!   (migration, first-use [`import`], crash recovery from the [`journal`]).
//! - [`register`](mod@register): `ferroserve register`, the atomic copy and the one
//!   transaction that makes a version visible in the database.
//! - [`journal`]: the pending rows that make a registration survive a
//!   crash between its rename and its commit, and the recovery on open.
//! - [`import`]: first use of a repository folder that has no database yet.
//! - [`models`]: aliases, list/show/search, delete.
//! - [`deployments`]: endpoints and deployments, the desired state that
//!   `serve` reconciles its routing table with (Triton version policies
//!   included).
//! - [`baselines`]: the training baseline kept with a version.
//! - [`repository`]: the newest version folder of each model, as served.
//! - [`triton_import`]: `ferroserve import-triton`.
//! - [`check`]: `ferroserve repo check`, the folders against the database.
//! - [`events`] and [`lifecycle`]: CloudEvents and the bus that fans them
//!   out to subscribers, webhooks and the audit log.
//! - [`folders`], [`names`], [`hashing`], [`git`], [`fsutil`], [`clock`]:
//!   the pieces they share.
//!
//! This crate knows the runtime's manifests (to check and describe bundles)
//! and must not know the front ends: HTTP, gRPC and the CLI call it.

pub mod baselines;
pub mod check;
pub mod clock;
pub mod deployments;
mod error;
pub mod events;
pub mod folders;
pub mod fsutil;
pub mod git;
pub mod hashing;
pub mod import;
pub mod journal;
pub mod lifecycle;
pub mod models;
pub mod names;
pub mod open;
pub mod pause;
pub mod register;
pub mod repository;
pub mod store;
pub mod triton_import;

pub use clock::now_rfc3339;
pub use error::RegistryError;
pub use names::check_model_name;
pub use open::open_existing;
pub use register::{register, register_with, RegisterOptions, RegisterRequest, Registered};
pub use store::{Store, DB_FILE, SCHEMA_VERSION};
