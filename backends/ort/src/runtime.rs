//! Loading ONNX Runtime into the process, once.
//!
//! ONNX Runtime is a process-wide singleton twice over: the shared library can
//! be `dlopen`ed only once (a second copy would have its own allocator and
//! thread pools), and `ort` allows only one environment per process. So the
//! loaded library and the environment live in a static, and every session is
//! created in that one environment.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::OrtError;

struct Runtime {
    /// The path as given, for messages.
    library: PathBuf,
    /// The path with links resolved, to tell "the same library again" (fine)
    /// from "a different library" (impossible once one is loaded).
    canonical: PathBuf,
    /// `None` only if the library loaded but the environment could not be built.
    environment: Option<Environment>,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Runtime>> {
    // A panic while holding the lock leaves the state consistent (every field
    // is written only after the step it records succeeded).
    RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads ONNX Runtime from `path` and creates the process's environment.
///
/// Call it once at start-up, before [`OrtBackend::load`](crate::OrtBackend::load).
/// Calling it again with the same library is a no-op, so tests and embedders
/// need not coordinate; a different library is an error because the first one
/// cannot be unloaded.
pub fn init_runtime(path: &Path) -> Result<(), OrtError> {
    // Checked here because the loader's own error for a missing file is a bare
    // "cannot open shared object file" with no hint of which lookup produced it.
    if !path.is_file() {
        return Err(OrtError::LibraryMissing {
            path: path.to_path_buf(),
        });
    }
    let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());

    let mut state = lock();
    match state.as_ref() {
        Some(rt) if rt.canonical != canonical => {
            return Err(OrtError::AlreadyLoaded {
                loaded: rt.library.clone(),
                requested: path.to_path_buf(),
            });
        }
        Some(rt) if rt.environment.is_some() => return Ok(()),
        _ => {}
    }

    let builder = ort::init_from(path).map_err(|e| OrtError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let runtime = state.get_or_insert(Runtime {
        library: path.to_path_buf(),
        canonical,
        environment: None,
    });

    let environment = builder
        .with_name("ferroserve")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| OrtError::Environment(e.to_string()))?;
    environment.set_log_level(log_level());
    tracing::info!(library = %path.display(), "loaded ONNX Runtime");
    runtime.environment = Some(environment);
    Ok(())
}

/// The library [`init_runtime`] loaded, if it has run successfully.
pub fn loaded_library() -> Option<PathBuf> {
    lock()
        .as_ref()
        .filter(|rt| rt.environment.is_some())
        .map(|rt| rt.library.clone())
}

/// The process's environment, or `None` before [`init_runtime`] has succeeded.
pub(crate) fn environment() -> Option<Environment> {
    lock().as_ref().and_then(|rt| rt.environment.clone())
}

/// ONNX Runtime's log threshold: `ORT_LOG` (the variable `ort` documents)
/// if set, else warnings, so session creation does not flood the log with
/// its verbose graph-optimisation notes.
fn log_level() -> LogLevel {
    match std::env::var("ORT_LOG").as_deref() {
        Ok("verbose") => LogLevel::Verbose,
        Ok("info") => LogLevel::Info,
        Ok("error") => LogLevel::Error,
        Ok("fatal") => LogLevel::Fatal,
        _ => LogLevel::Warning,
    }
}

/// Sends ONNX Runtime's log lines to `tracing` instead of its own stderr
/// format, so they share the server's format and filters.
///
/// ORT's ERROR lines are logged at WARN: nearly all of them repeat a failed
/// run ("Non-zero status code returned while running Gather node…") whose
/// message is also returned to the caller, who knows whether the client or the
/// model was at fault. At ERROR, one client sending a bad index could fill the
/// server's error log.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Info => {
            tracing::debug!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Warning | LogLevel::Error => {
            tracing::warn!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}")
        }
    }
}
