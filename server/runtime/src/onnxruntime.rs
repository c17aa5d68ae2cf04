//! Finding and loading ONNX Runtime's shared library at start-up, before any
//! model is loaded.

use std::path::{Path, PathBuf};

/// Where to look for the project's own Python environment: the current
/// directory and every folder above the binary (so `target/release/ferroserve`
/// finds `.venv` at the project root).
pub fn search_roots(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Some(exe) = exe {
        for dir in exe.ancestors().skip(1) {
            if !roots.iter().any(|r| r == dir) {
                roots.push(dir.to_path_buf());
            }
        }
    }
    roots
}

/// Loads ONNX Runtime. The error says where it looked and how to install it.
pub fn init() -> Result<PathBuf, ferroserve_backend_ort::OrtError> {
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let path = ferroserve_backend_ort::find_library(exe_dir, &search_roots(exe.as_deref()))?;
    ferroserve_backend_ort::init_runtime(&path)?;
    Ok(path)
}
