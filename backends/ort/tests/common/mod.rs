//! Shared by the test binaries; each uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor};
use ferroserve_backend_ort::{find_library, init_runtime, OrtBackend, OrtOptions};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn example_model(name: &str) -> PathBuf {
    workspace_root()
        .join("examples/models")
        .join(name)
        .join("1/model.onnx")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Loads ONNX Runtime the way the server does. Fails (never skips) when the
/// library is missing: the project's test script creates `.venv` first.
pub fn init() {
    let lib = find_library(None, &[workspace_root()]).unwrap_or_else(|e| panic!("{e}"));
    init_runtime(&lib).unwrap_or_else(|e| panic!("{e}"));
}

pub fn load(name: &str) -> OrtBackend {
    load_with(
        name,
        &OrtOptions {
            intra_op_threads: 1,
            inter_op_threads: 0,
        },
    )
}

pub fn load_with(name: &str, opts: &OrtOptions) -> OrtBackend {
    init();
    OrtBackend::load(&example_model(name), opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn f32_tensor(shape: Vec<i64>, values: &[f32]) -> Tensor {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DataType::Fp32, shape, Bytes::from(data)).unwrap()
}

pub fn i64_tensor(shape: Vec<i64>, values: &[i64]) -> Tensor {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DataType::Int64, shape, Bytes::from(data)).unwrap()
}

pub fn f32_values(t: &Tensor) -> Vec<f32> {
    assert_eq!(t.dtype, DataType::Fp32);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn i64_values(t: &Tensor) -> Vec<i64> {
    assert_eq!(t.dtype, DataType::Int64);
    t.data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Deterministic, varied inputs without a random number generator.
pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * scale)
        .collect()
}
