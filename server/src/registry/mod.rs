//! The registry: `REPO/registry.db` (SQLite, WAL) beside the version
//! folders, recording who registered which version, when, why, from where,
//! and the SHA-256 of every file, plus an append-only audit log.
//!
//! - [`store`]: the schema and its queries.
//! - [`register`]: `ferroserve register`, the atomic copy and the one
//!   transaction that makes a version visible in the database.
//! - [`journal`]: the pending rows that make a registration survive a
//!   crash between its rename and its commit, and the recovery on open.
//! - [`import`]: first use of a repository folder that has no database yet.
//! - [`models`]: aliases, list/show/search, delete.
//! - [`deployments`]: endpoints and deployments, the desired state that
//!   `serve` reconciles its routing table with.
//! - [`check`]: `ferroserve repo check`, the folders against the database.
//! - [`cli`]: the `models` and `repo` subcommands' arguments and output.
//! - [`hashing`], [`git`], [`fsutil`]: the pieces they share.

pub mod check;
pub mod cli;
pub mod deployments;
pub mod fsutil;
pub mod git;
pub mod hashing;
pub mod import;
pub mod journal;
pub mod models;
pub mod register;
pub mod store;

use std::path::PathBuf;

pub use register::{register, register_with, RegisterOptions, RegisterRequest, Registered};
pub use store::{Store, DB_FILE, SCHEMA_VERSION};

/// Everything that can go wrong in the registry; each variant names the
/// file or the object and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database {}: {what}: {source}", path.display())]
    Db {
        path: PathBuf,
        what: String,
        source: rusqlite::Error,
    },
    #[error(
        "registry database {} has schema version {found}, newer than this binary understands ({supported})",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Bundle { path: PathBuf, problem: String },
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("the bundle in {} does not load: {source}", dir.display())]
    Load {
        dir: PathBuf,
        source: crate::model::LoadError,
    },
    #[error("cannot load ONNX Runtime to check the bundle: {0}")]
    Runtime(#[from] ferroserve_backend_ort::OrtError),
    #[error("invalid {what}: {problem}")]
    Invalid { what: String, problem: String },
    #[error("{what} not found: {problem}")]
    NotFound { what: String, problem: String },
    /// Refused because something else depends on it (HTTP 409 over the API).
    #[error("cannot delete {what}: {problem}")]
    Conflict { what: String, problem: String },
}

impl RegistryError {
    pub(crate) fn io(
        path: &std::path::Path,
        what: impl Into<String>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        let what = what.into();
        move |source| RegistryError::Io { path, what, source }
    }
}

/// The environment variable that stops a registry operation at a named
/// point (see [`pause_point`]).
pub const PAUSE_AT_ENV: &str = "FERROSERVE_PAUSE_AT";

/// Lets tests `kill -9` a real process exactly between two steps of a
/// registration or deletion, where timing alone almost never lands: when
/// `FERROSERVE_PAUSE_AT` names this point, the process says so on stderr
/// and waits forever. The points are `copied`, `reserved` and `renamed` in
/// [`register()`], and `trashed` and `deleted` in [`models::delete`].
pub(crate) fn pause_point(name: &str) {
    if std::env::var_os(PAUSE_AT_ENV).is_some_and(|v| v == name) {
        eprintln!("ferroserve: paused at {name}");
        loop {
            std::thread::park();
        }
    }
}

/// Now, as RFC 3339 UTC with seconds (`2026-11-29T06:08:00Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Checks a model name given on the command line: it becomes a folder name
/// and part of URLs, so it is one plain path component.
pub fn check_model_name(name: &str) -> Result<(), RegistryError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.starts_with('.') {
        Some("starts with '.' (such folders are skipped by the server)")
    } else if name.contains(['/', '\\', ' ', '\0']) {
        Some("contains '/', '\\', a space or NUL")
    } else {
        None
    };
    match problem {
        Some(p) => Err(RegistryError::Invalid {
            what: format!("model name {name:?}"),
            problem: p.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_one_plain_path_component() {
        for ok in ["mlp", "resnet-50", "a.b_c", "7"] {
            check_model_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "a\\b"] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    }
}
