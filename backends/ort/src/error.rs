use std::path::PathBuf;

/// Why ONNX Runtime itself could not be made available to the process.
///
/// These happen once, at start-up, before any model is loaded; each message
/// says what to do about it because the person reading it is setting the
/// server up, not debugging it.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    #[error(
        "ONNX Runtime's shared library was not found. Looked in: {}. Run `scripts/setup-env.sh` \
         (creates .venv with onnxruntime=={version}) or `pip install onnxruntime=={version}` and set \
         ORT_DYLIB_PATH=<site-packages>/onnxruntime/capi/libonnxruntime.so.{version}",
        looked_in_list(.looked_in),
        version = crate::EXPECTED_ORT_VERSION
    )]
    NotFound { looked_in: Vec<PathBuf> },

    #[error(
        "ORT_DYLIB_PATH is set to {}, but there is no file there; point it at libonnxruntime.so.{} \
         (in <site-packages>/onnxruntime/capi/) or unset it to search the usual places",
        .path.display(),
        crate::EXPECTED_ORT_VERSION
    )]
    EnvPathMissing { path: PathBuf },

    #[error("ONNX Runtime's shared library {} does not exist", .path.display())]
    LibraryMissing { path: PathBuf },

    #[error("could not load ONNX Runtime from {}: {message}", .path.display())]
    Load { path: PathBuf, message: String },

    #[error(
        "ONNX Runtime is already loaded from {}; a process can load only one copy, so {} cannot be used",
        .loaded.display(),
        .requested.display()
    )]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },

    #[error("could not create the ONNX Runtime environment: {0}")]
    Environment(String),
}

fn looked_in_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nowhere: no directories to search)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
