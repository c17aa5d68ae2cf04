//! `init_runtime`'s once-per-process rules. The runtime is global state, so
//! this binary has a single test that walks through the steps in order.

mod common;

use std::path::Path;

use common::{example_model, workspace_root};
use ferroserve_backend_core::BackendError;
use ferroserve_backend_ort::{
    find_library, init_runtime, loaded_library, OrtBackend, OrtError, OrtOptions,
};

#[test]
fn runtime_loads_once_and_only_one_library() {
    // Before anything is loaded, a backend cannot be created, and says why.
    assert_eq!(loaded_library(), None);
    match OrtBackend::load(&example_model("mlp"), &OrtOptions::default()) {
        Err(BackendError::Load(msg)) => assert!(msg.contains("init_runtime"), "{msg}"),
        other => panic!("expected BackendError::Load, got {other:?}"),
    }

    // A missing file is reported before ONNX Runtime is touched.
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    let err = init_runtime(missing).unwrap_err();
    assert!(
        matches!(&err, OrtError::LibraryMissing { path } if path == missing),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{err}"
    );

    // A file that is not ONNX Runtime fails to load, naming it, and leaves
    // the process free to load the real one.
    let not_ort = example_model("mlp");
    let err = init_runtime(&not_ort).unwrap_err();
    assert!(
        matches!(&err, OrtError::Load { path, .. } if path == &not_ort),
        "{err:?}"
    );
    assert_eq!(loaded_library(), None);

    let lib = find_library(None, &[workspace_root()]).unwrap();
    init_runtime(&lib).unwrap();
    assert_eq!(loaded_library(), Some(lib.clone()));
    // Again with the same library: fine.
    init_runtime(&lib).unwrap();

    // A different library cannot be loaded any more.
    let other = lib.with_file_name("libonnxruntime_providers_shared.so");
    if other.is_file() {
        let err = init_runtime(&other).unwrap_err();
        assert!(matches!(err, OrtError::AlreadyLoaded { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&lib.display().to_string()) && msg.contains(&other.display().to_string()),
            "{msg}"
        );
    }

    OrtBackend::load(&example_model("mlp"), &OrtOptions::default()).unwrap();
}
