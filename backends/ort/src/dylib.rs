//! Finding ONNX Runtime's shared library.
//!
//! ferroserve loads ONNX Runtime at run time instead of linking it, so one
//! binary works with whatever ONNX Runtime the machine has and the build needs
//! no C++ toolchain or download. The price is that the library has to be found;
//! the search order below is what lets `cargo run` work straight after
//! `scripts/setup-env.sh` and a packaged binary work with the library beside it.

use std::cmp::Ordering;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::OrtError;

/// The environment variable that overrides the search, as `ort` and ONNX
/// Runtime's own tooling name it.
pub const DYLIB_ENV_VAR: &str = "ORT_DYLIB_PATH";

/// Finds ONNX Runtime's shared library.
///
/// Order: `ORT_DYLIB_PATH` if set (an explicit choice wins, and a wrong one is
/// an error rather than a silent fallback to some other copy); then a
/// `libonnxruntime.so*` beside the binary (how a release is packaged); then
/// `ROOT/.venv/lib/python3*/site-packages/onnxruntime/capi/` under each search
/// root (what `scripts/setup-env.sh` creates, so a checkout works without
/// configuration). Within a folder the versioned file (`libonnxruntime.so.1.31.1`)
/// is preferred, the highest version first.
pub fn find_library(exe_dir: Option<&Path>, search_roots: &[PathBuf]) -> Result<PathBuf, OrtError> {
    if let Some(path) = std::env::var_os(DYLIB_ENV_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(OrtError::EnvPathMissing { path })
        };
    }

    let mut looked_in = Vec::new();
    if let Some(dir) = exe_dir {
        if let Some(found) = best_in_dir(dir) {
            return Ok(found);
        }
        looked_in.push(dir.to_path_buf());
    }
    for root in search_roots {
        let lib = root.join(".venv").join("lib");
        let pythons = python_dirs(&lib);
        if pythons.is_empty() {
            looked_in.push(lib.join("python3*").join(CAPI_SUFFIX));
        }
        for python in pythons {
            let capi = python.join(CAPI_SUFFIX);
            if let Some(found) = best_in_dir(&capi) {
                return Ok(found);
            }
            looked_in.push(capi);
        }
    }
    Err(OrtError::NotFound { looked_in })
}

/// Where pip puts the library inside a `pythonX.Y` folder.
const CAPI_SUFFIX: &str = "site-packages/onnxruntime/capi";

/// `python3*` folders of a venv's `lib`, sorted so the result does not depend
/// on directory order.
fn python_dirs(lib: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(lib) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The preferred ONNX Runtime library in `dir`, if any.
fn best_in_dir(dir: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| library_version(&e.file_name()).map(|v| (v, e.path())))
        .filter(|(_, path)| path.is_file())
        .max_by(|(a, pa), (b, pb)| compare_versions(a, b).then_with(|| pa.cmp(pb)))
        .map(|(_, path)| path)
}

/// `Some(version numbers)` if `name` is ONNX Runtime's main library (empty for
/// the unversioned name), `None` for anything else, including
/// `libonnxruntime_providers_shared.so` which has the same prefix but cannot be
/// loaded on its own.
fn library_version(name: &OsString) -> Option<Vec<u64>> {
    let name = name.to_str()?;
    let plain = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    if name == plain {
        return Some(Vec::new());
    }
    // Linux: libonnxruntime.so.1.31.1; macOS: libonnxruntime.1.31.1.dylib
    let version = name.strip_prefix(&format!("{plain}.")).or_else(|| {
        name.strip_prefix(&format!("{}onnxruntime.", std::env::consts::DLL_PREFIX))
            .and_then(|rest| rest.strip_suffix(std::env::consts::DLL_SUFFIX))
    })?;
    version
        .split('.')
        .map(|part| part.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()
        .filter(|v| !v.is_empty())
}

/// Versioned names beat the unversioned one; among versions, higher wins.
fn compare_versions(a: &[u64], b: &[u64]) -> Ordering {
    (!a.is_empty()).cmp(&!b.is_empty()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_the_main_library() {
        let v = |s: &str| library_version(&OsString::from(s));
        if cfg!(target_os = "linux") {
            assert_eq!(v("libonnxruntime.so"), Some(vec![]));
            assert_eq!(v("libonnxruntime.so.1.31.1"), Some(vec![1, 31, 1]));
            assert_eq!(v("libonnxruntime_providers_shared.so"), None);
            assert_eq!(v("libonnxruntime.so.1.x"), None);
            assert_eq!(v("libonnxruntime.so."), None);
            assert_eq!(v("onnxruntime_pybind11_state.so"), None);
        }
    }

    #[test]
    fn prefers_versioned_then_highest() {
        assert_eq!(compare_versions(&[1, 31, 1], &[]), Ordering::Greater);
        assert_eq!(compare_versions(&[1, 9, 0], &[1, 31, 1]), Ordering::Less);
        assert_eq!(compare_versions(&[], &[]), Ordering::Equal);
    }
}
