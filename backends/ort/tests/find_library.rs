//! `find_library`'s search order. These tests set and clear `ORT_DYLIB_PATH`,
//! which is process-global, so they live in their own test binary and take
//! `ENV_LOCK` to run one at a time; none of them loads ONNX Runtime.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::workspace_root;
use ferroserve_backend_ort::{find_library, OrtError, DYLIB_ENV_VAR};

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Holds the lock and restores `ORT_DYLIB_PATH` when dropped.
struct EnvGuard {
    saved: Option<std::ffi::OsString>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn set(value: Option<&Path>) -> EnvGuard {
        let lock = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let saved = std::env::var_os(DYLIB_ENV_VAR);
        match value {
            Some(v) => std::env::set_var(DYLIB_ENV_VAR, v),
            None => std::env::remove_var(DYLIB_ENV_VAR),
        }
        EnvGuard { saved, _lock: lock }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        match &self.saved {
            Some(v) => std::env::set_var(DYLIB_ENV_VAR, v),
            None => std::env::remove_var(DYLIB_ENV_VAR),
        }
    }
}

/// A fresh empty directory under the target dir, unique per test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("find_library")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"not really a library").unwrap();
}

#[test]
fn env_var_pointing_nowhere_is_an_error_naming_the_path() {
    let missing = Path::new("/nonexistent/ferroserve/libonnxruntime.so.1.31.1");
    let _env = EnvGuard::set(Some(missing));
    // Even though the venv has a perfectly good library: an explicit choice
    // that is wrong must not silently fall back to some other copy.
    let err = find_library(None, &[workspace_root()]).unwrap_err();
    assert!(
        matches!(&err, OrtError::EnvPathMissing { path } if path == missing),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ORT_DYLIB_PATH") && msg.contains(&missing.display().to_string()),
        "{msg}"
    );
}

#[test]
fn env_var_wins_over_everything_else() {
    let dir = scratch_dir("env_wins");
    let chosen = dir.join("chosen").join("libonnxruntime.so.9.9.9");
    touch(&chosen);
    let exe_dir = dir.join("exe");
    touch(&exe_dir.join("libonnxruntime.so.1.31.1"));
    let _env = EnvGuard::set(Some(&chosen));
    assert_eq!(
        find_library(Some(&exe_dir), &[workspace_root()]).unwrap(),
        chosen
    );
}

#[test]
fn empty_env_var_counts_as_unset() {
    let _env = EnvGuard::set(Some(Path::new("")));
    let found = find_library(None, &[workspace_root()]).unwrap();
    assert!(
        found.to_string_lossy().contains(".venv"),
        "{}",
        found.display()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn beside_the_binary_comes_before_the_venv() {
    let dir = scratch_dir("beside_binary");
    touch(&dir.join("libonnxruntime_providers_shared.so"));
    touch(&dir.join("libonnxruntime.so"));
    touch(&dir.join("libonnxruntime.so.1.9.0"));
    touch(&dir.join("libonnxruntime.so.1.31.1"));
    let _env = EnvGuard::set(None);
    assert_eq!(
        find_library(Some(&dir), &[workspace_root()]).unwrap(),
        dir.join("libonnxruntime.so.1.31.1")
    );
}

#[cfg(target_os = "linux")]
#[test]
fn finds_the_versioned_library_in_the_project_venv() {
    let _env = EnvGuard::set(None);
    let empty_exe_dir = scratch_dir("empty_exe_dir");
    let found = find_library(Some(&empty_exe_dir), &[workspace_root()]).unwrap();
    let name = found.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("libonnxruntime.so.1."),
        "{}",
        found.display()
    );
    assert!(
        found.ends_with(Path::new("onnxruntime/capi").join(&name)),
        "{}",
        found.display()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn search_roots_are_tried_in_order() {
    let dir = scratch_dir("roots_in_order");
    let first = dir.join("first");
    let lib =
        first.join(".venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
    touch(&lib);
    let _env = EnvGuard::set(None);
    assert_eq!(find_library(None, &[first, workspace_root()]).unwrap(), lib);
}

#[test]
fn not_found_says_where_it_looked_and_how_to_fix_it() {
    let dir = scratch_dir("not_found");
    let exe_dir = dir.join("bin");
    fs::create_dir_all(&exe_dir).unwrap();
    let root = dir.join("project");
    // A venv without onnxruntime in it.
    fs::create_dir_all(root.join(".venv/lib/python3.11/site-packages")).unwrap();
    let other_root = dir.join("elsewhere");

    let _env = EnvGuard::set(None);
    let err = find_library(Some(&exe_dir), &[root.clone(), other_root.clone()]).unwrap_err();
    let OrtError::NotFound { looked_in } = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(
        looked_in,
        &vec![
            exe_dir.clone(),
            root.join(".venv/lib/python3.11/site-packages/onnxruntime/capi"),
            other_root.join(".venv/lib/python3*/site-packages/onnxruntime/capi"),
        ]
    );
    let msg = err.to_string();
    for needle in [
        "ONNX Runtime's shared library was not found",
        &exe_dir.display().to_string(),
        "scripts/setup-env.sh",
        "pip install onnxruntime==1.31.1",
        "ORT_DYLIB_PATH=<site-packages>/onnxruntime/capi/libonnxruntime.so.1.31.1",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
}
