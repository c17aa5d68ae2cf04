use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an ELF file the packager can read: {problem}", path.display())]
    Elf { path: PathBuf, problem: String },
    #[error("base image {}: {problem}", dir.display())]
    Base { dir: PathBuf, problem: String },
    #[error("{0}")]
    Invalid(String),
}

impl PackageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PackageError {
        let path = path.into();
        move |source| PackageError::Io { path, source }
    }
}
