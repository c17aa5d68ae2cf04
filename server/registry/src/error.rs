//! What can go wrong in the registry, one variant per kind of failure, each
//! naming the file or the object and what was being done (the management
//! API maps the variants to HTTP statuses).

use std::path::PathBuf;

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
    Manifest(#[from] ferroserve_runtime::manifest::ManifestError),
    #[error("the bundle in {} does not load: {source}", dir.display())]
    Load {
        dir: PathBuf,
        source: ferroserve_runtime::LoadError,
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
