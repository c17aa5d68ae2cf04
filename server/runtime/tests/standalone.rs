//! The runtime without a server: a bundle loaded by `Model::load` answers
//! a batch the same as ONNX Runtime run directly on the same model file, and
//! refuses a bad request with a message naming the input.

use std::path::PathBuf;

use bytes::Bytes;
use ferroserve_backend_core::{Backend, DataType, Tensor};
use ferroserve_backend_ort::{OrtBackend, OrtOptions};
use ferroserve_runtime::{InferError, LoadSettings, Model};

fn mlp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/mlp/1")
}

fn batch(rows: usize, features: usize) -> Tensor {
    let values: Vec<u8> = (0..rows * features)
        .flat_map(|i| (((i * 37) % 101) as f32 / 101.0 - 0.5).to_le_bytes())
        .collect();
    Tensor::new(
        DataType::Fp32,
        vec![rows as i64, features as i64],
        Bytes::from(values),
    )
    .unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn a_bundle_loads_and_answers_a_batch_as_onnx_runtime_does() {
    ferroserve_runtime::onnxruntime::init().expect("ONNX Runtime from the project's .venv");
    let model = Model::load(&mlp_dir(), &LoadSettings::default()).unwrap();
    assert_eq!(model.name, "mlp");
    assert_eq!(model.version, 1, "the version is the bundle folder's name");
    let input = batch(3, 64);
    let answer = runtime()
        .block_on(model.infer(vec![("input".into(), input.clone())], None))
        .unwrap();
    assert_eq!(answer.outputs.len(), model.signature.outputs.len());
    let probabilities = &answer.outputs[0];
    assert_eq!(probabilities.shape, vec![3, 10]);

    let mut direct = OrtBackend::load(
        &mlp_dir().join("model.onnx"),
        &OrtOptions {
            intra_op_threads: 1,
            inter_op_threads: 0,
        },
    )
    .unwrap();
    let want = direct.run(vec![input]).unwrap();
    let (got, want) = (floats(probabilities), floats(&want[0]));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "{got:?} != {want:?}");
    }
    // A softmax: each row sums to one.
    for row in got.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{row:?}");
    }
    assert_eq!(model.stats.snapshot().success.count, 1);
}

#[test]
fn a_bad_request_is_refused_naming_the_input_and_the_next_is_served() {
    ferroserve_runtime::onnxruntime::init().unwrap();
    let model = Model::load(
        &mlp_dir(),
        &LoadSettings {
            version: Some(7),
            ..LoadSettings::default()
        },
    )
    .unwrap();
    assert_eq!(model.version, 7);
    let rt = runtime();
    let e = rt
        .block_on(model.infer(vec![("input".into(), batch(2, 63))], None))
        .unwrap_err();
    match &e {
        InferError::InvalidInput(m) => {
            assert!(m.contains("\"input\"") && m.contains("63"), "{m}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    let e = rt
        .block_on(model.infer(vec![("features".into(), batch(2, 64))], None))
        .unwrap_err();
    assert!(e.to_string().contains("unknown input \"features\""), "{e}");
    let ok = rt
        .block_on(model.infer(vec![("input".into(), batch(2, 64))], None))
        .unwrap();
    assert_eq!(ok.outputs[0].shape, vec![2, 10]);
}

#[test]
fn a_folder_without_a_bundle_is_a_manifest_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Model::load(dir.path(), &LoadSettings::default())
        .err()
        .expect("no bundle.toml");
    assert!(e.to_string().contains("bundle.toml"), "{e}");
}
