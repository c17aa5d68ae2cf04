//! Start-up failures: a broken bundle or a missing ONNX Runtime stops the
//! server with a message naming the file, the key and the problem.

mod support;

use std::path::Path;

use support::{copy_example, start_failure};

fn edit_manifest(bundle: &Path, from: &str, to: &str) {
    let path = bundle.join("bundle.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "bundle.toml has no {from:?}:\n{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn fails_with(repo: &Path, needles: &[&str]) {
    let (status, stderr) = start_failure(repo, &[]);
    assert!(
        !status.success(),
        "server started on a broken repository:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
}

#[test]
fn unknown_key_is_named_with_its_file() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "[batching]\n", "[batching]\nmax_batch_sise = 8\n");
    fails_with(
        repo.path(),
        &["mlp/1/bundle.toml", "max_batch_sise", "unknown field"],
    );
}

#[test]
fn missing_model_file_is_named() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    std::fs::remove_file(b.join("model.onnx")).unwrap();
    fails_with(
        repo.path(),
        &["bundle.toml", "model:", "model.onnx", "not found"],
    );
}

#[test]
fn bad_datatype_names_key_and_value() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "datatype = \"FP32\"", "datatype = \"FLOAT32\"");
    fails_with(repo.path(), &["inputs[0].datatype", "\"FLOAT32\"", "FP32"]);
}

#[test]
fn shape_that_contradicts_the_model_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "shape = [-1, 64]", "shape = [-1, 65]");
    fails_with(repo.path(), &["inputs[0].shape", "[-1, 64]", "[-1, 65]"]);
}

#[test]
fn dtype_that_contradicts_the_model_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "datatype = \"FP32\"", "datatype = \"FP64\"");
    fails_with(repo.path(), &["inputs[0].datatype", "FP32", "FP64"]);
}

#[test]
fn manifest_name_must_match_its_folder() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "name = \"mlp\"", "name = \"other\"");
    fails_with(repo.path(), &["name", "\"other\"", "\"mlp\""]);
}

#[test]
fn empty_repository_is_an_error() {
    let repo = tempfile::tempdir().unwrap();
    fails_with(repo.path(), &["holds no bundle"]);
}

#[test]
fn missing_onnxruntime_says_how_to_get_it() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let (status, stderr) = start_failure(
        repo.path(),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(stderr.contains("onnxruntime"), "{stderr}");
}

#[test]
fn missing_labels_file_is_named() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    std::fs::remove_file(b.join("labels.txt")).unwrap();
    fails_with(
        repo.path(),
        &[
            "mlp/1/bundle.toml",
            "outputs[0].labels",
            "\"labels.txt\"",
            "not found",
        ],
    );
}

#[test]
fn empty_or_non_utf8_labels_file_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    std::fs::write(b.join("labels.txt"), b"").unwrap();
    fails_with(
        repo.path(),
        &["outputs[0].labels", "labels.txt", "is empty"],
    );
    std::fs::write(b.join("labels.txt"), b"zero\n\xffone\n").unwrap();
    fails_with(
        repo.path(),
        &["outputs[0].labels", "labels.txt", "not valid UTF-8"],
    );
}

#[test]
fn labels_on_an_input_are_refused() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(
        &b,
        "shape = [-1, 64]\n",
        "shape = [-1, 64]\nlabels = \"labels.txt\"\n",
    );
    fails_with(repo.path(), &["inputs[0].labels", "[[outputs]]"]);
}

#[test]
fn misspelt_labels_key_is_unknown() {
    let repo = tempfile::tempdir().unwrap();
    let b = copy_example("mlp", repo.path());
    edit_manifest(&b, "labels = ", "label = ");
    fails_with(
        repo.path(),
        &["mlp/1/bundle.toml", "label", "unknown field"],
    );
}
