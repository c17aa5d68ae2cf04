//! Virtual environments for bundles with a `requirements.txt`: one per
//! (requirements content, interpreter), built once, shared by every bundle
//! with the same pair, and rebuilt when broken.
//!
//! An environment is built in `ROOT/.building-KEY-PID` and renamed to
//! `ROOT/KEY` once pip has succeeded and the interpreter runs, with a
//! `.ferroserve-ready` marker inside; two processes building the same key
//! at once both succeed and one copy is kept. The interpreter is always
//! called as `KEY/bin/python -m pip` and never through the scripts' shebang
//! lines, so the rename does not matter.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::PythonError;

const READY_MARKER: &str = ".ferroserve-ready";

/// pip's own options, passed through from the server's configuration.
#[derive(Debug, Clone, Default)]
pub struct PipOptions {
    pub index_url: Option<String>,
    pub find_links: Vec<String>,
    /// `--no-index`: install only from `find_links` (and pip's cache).
    pub offline: bool,
}

/// The environment's key: the requirements' bytes and the interpreter's
/// resolved path and version.
pub fn key(requirements: &[u8], python: &Path) -> Result<String, PythonError> {
    let version = Command::new(python)
        .args(["-c", "import sys; print(sys.version)"])
        .output()
        .map_err(|e| PythonError::Env(format!("cannot run {}: {e}", python.display())))?;
    if !version.status.success() {
        return Err(PythonError::Env(format!(
            "{} does not run: {}",
            python.display(),
            String::from_utf8_lossy(&version.stderr).trim()
        )));
    }
    let resolved = std::fs::canonicalize(python).unwrap_or_else(|_| python.to_path_buf());
    let mut h = Sha256::new();
    h.update(requirements);
    h.update([0]);
    h.update(resolved.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(&version.stdout);
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn healthy(dir: &Path) -> bool {
    dir.join(READY_MARKER).is_file()
        && Command::new(dir.join("bin/python"))
            .args(["-c", "pass"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Returns the interpreter of the environment for `requirements`, building
/// it first if it does not exist or is broken.
pub fn ensure(
    requirements: &Path,
    python: &Path,
    root: &Path,
    pip: &PipOptions,
) -> Result<PathBuf, PythonError> {
    let content = std::fs::read(requirements)
        .map_err(|e| PythonError::Env(format!("cannot read {}: {e}", requirements.display())))?;
    let key = key(&content, python)?;
    let dir = root.join(&key);
    if healthy(&dir) {
        tracing::debug!(env = %dir.display(), "reusing the Python environment");
        return Ok(dir.join("bin/python"));
    }
    if dir.exists() {
        tracing::warn!(env = %dir.display(), "Python environment is broken or incomplete; rebuilding it");
        std::fs::remove_dir_all(&dir)
            .map_err(|e| PythonError::Env(format!("cannot remove {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(root)
        .map_err(|e| PythonError::Env(format!("cannot create {}: {e}", root.display())))?;
    let building = root.join(format!(".building-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    tracing::info!(requirements = %requirements.display(), env = %dir.display(), "building a Python environment");
    let started = std::time::Instant::now();
    let result = build(requirements, python, &building, pip);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&building);
        return Err(e);
    }
    match std::fs::rename(&building, &dir) {
        Ok(()) => {}
        // Someone else finished the same environment first: use theirs.
        Err(_) if healthy(&dir) => {
            let _ = std::fs::remove_dir_all(&building);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(PythonError::Env(format!(
                "cannot move the new environment to {}: {e}",
                dir.display()
            )));
        }
    }
    tracing::info!(env = %dir.display(), seconds = started.elapsed().as_secs_f64(), "Python environment ready");
    Ok(dir.join("bin/python"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), PythonError> {
    let out = cmd
        .output()
        .map_err(|e| PythonError::Env(format!("{what}: cannot start: {e}")))?;
    if !out.status.success() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        return Err(PythonError::Env(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        )));
    }
    Ok(())
}

fn build(
    requirements: &Path,
    python: &Path,
    dir: &Path,
    pip: &PipOptions,
) -> Result<(), PythonError> {
    run(
        Command::new(python).arg("-m").arg("venv").arg(dir),
        &format!("{} -m venv {}", python.display(), dir.display()),
    )?;
    let venv_python = dir.join("bin/python");
    let mut install = Command::new(&venv_python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("-r")
        .arg(requirements);
    if let Some(url) = &pip.index_url {
        install.args(["--index-url", url]);
    }
    for l in &pip.find_links {
        install.args(["--find-links", l]);
    }
    if pip.offline {
        install.arg("--no-index");
    }
    run(
        &mut install,
        &format!("pip install -r {}", requirements.display()),
    )?;
    run(
        Command::new(&venv_python).args(["-c", "pass"]),
        "the new environment's interpreter",
    )?;
    std::fs::write(dir.join(READY_MARKER), requirements.display().to_string())
        .map_err(|e| PythonError::Env(format!("cannot mark {} ready: {e}", dir.display())))
}
