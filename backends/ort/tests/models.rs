//! The backend against the example models in `examples/models` (made by
//! `examples/generate.py`), run in a real ONNX Runtime.

mod common;

use bytes::Bytes;
use common::*;
use ferroserve_backend_core::{Backend, BackendError, DataType, Tensor, TensorSpec};
use ferroserve_backend_ort::{OrtBackend, OrtOptions};
use half::f16;

fn spec(name: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    }
}

fn run_err(backend: &mut OrtBackend, inputs: Vec<Tensor>) -> String {
    match backend.run(inputs) {
        Err(BackendError::Run(msg)) => msg,
        other => panic!("expected BackendError::Run, got {other:?}"),
    }
}

#[test]
fn mlp_signature_is_what_the_model_declares() {
    let backend = load("mlp");
    let sig = backend.signature();
    assert_eq!(sig.inputs, vec![spec("input", DataType::Fp32, &[-1, 64])]);
    assert_eq!(
        sig.outputs,
        vec![spec("probabilities", DataType::Fp32, &[-1, 10])]
    );
}

#[test]
fn mlp_rows_are_probabilities_and_runs_are_repeatable() {
    let mut backend = load("mlp");
    let input = f32_tensor(vec![3, 64], &ramp(3 * 64, 2.0));
    let first = backend.run(vec![input.clone()]).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].shape, vec![3, 10]);
    let probs = f32_values(&first[0]);
    for row in probs.chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}: {row:?}");
        assert!(row.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    assert_ne!(probs[..10], probs[10..20], "different rows should differ");
    let second = backend.run(vec![input]).unwrap();
    assert_eq!(first, second);
}

#[test]
fn unaligned_input_gives_the_same_answer_as_aligned() {
    // A binary request's tensor is a slice of the body at any offset; the
    // backend must copy it instead of reading it in place.
    let mut backend = load("mlp");
    let aligned = f32_tensor(vec![2, 64], &ramp(128, 1.0));
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&aligned.data);
    let unaligned =
        Tensor::new(DataType::Fp32, vec![2, 64], Bytes::from(shifted).slice(1..)).unwrap();
    assert_ne!(
        unaligned.data.as_ptr() as usize % 4,
        0,
        "test needs an unaligned slice"
    );
    assert_eq!(
        backend.run(vec![aligned]).unwrap(),
        backend.run(vec![unaligned]).unwrap()
    );
}

#[test]
fn empty_batch_is_answered_not_panicked() {
    let mut backend = load("mlp");
    let out = backend.run(vec![f32_tensor(vec![0, 64], &[])]).unwrap();
    assert_eq!(out[0].shape, vec![0, 10]);
    assert!(out[0].data.is_empty());
}

#[test]
fn conv_runs_a_batch_on_two_threads() {
    let mut backend = load_with(
        "conv",
        &OrtOptions {
            intra_op_threads: 2,
            inter_op_threads: 0,
        },
    );
    assert_eq!(
        backend.signature().inputs,
        vec![spec("image", DataType::Fp32, &[-1, 3, 32, 32])]
    );
    let out = backend
        .run(vec![f32_tensor(
            vec![4, 3, 32, 32],
            &ramp(4 * 3 * 32 * 32, 1.0),
        )])
        .unwrap();
    assert_eq!(out[0].shape, vec![4, 10]);
    assert!(f32_values(&out[0]).iter().all(|v| v.is_finite()));
}

/// Little-endian bytes of each value, for building inputs of any dtype.
fn le<T, const N: usize>(values: &[T], to_le: fn(&T) -> [u8; N]) -> Bytes {
    Bytes::from(values.iter().flat_map(to_le).collect::<Vec<u8>>())
}

#[test]
fn dtypes_round_trip_every_datatype_exactly() {
    let mut backend = load("dtypes");
    let sig = backend.signature().clone();
    assert_eq!(sig.inputs.len(), DataType::ALL.len());
    for (spec, dtype) in sig.inputs.iter().zip(DataType::ALL) {
        assert_eq!(spec.dtype, dtype, "{}", spec.name);
        assert_eq!(spec.shape, vec![-1, 2]);
        assert_eq!(
            sig.outputs[sig.inputs.iter().position(|s| s == spec).unwrap()].dtype,
            dtype
        );
    }

    let shape = vec![3, 2];
    let inputs: Vec<Tensor> = DataType::ALL
        .into_iter()
        .map(|dtype| {
            let data = match dtype {
                DataType::Bool => Bytes::from_static(&[1, 0, 0, 1, 1, 1]),
                DataType::Uint8 => Bytes::from_static(&[0, 255, 1, 128, 7, 9]),
                DataType::Uint16 => le(&[0u16, u16::MAX, 1, 258, 7, 9], |v| v.to_le_bytes()),
                DataType::Uint32 => le(&[0u32, u32::MAX, 1, 16909060, 7, 9], |v| v.to_le_bytes()),
                DataType::Uint64 => le(&[0u64, u64::MAX, 1, 1 << 40, 7, 9], |v| v.to_le_bytes()),
                DataType::Int8 => le(&[i8::MIN, i8::MAX, -1, 5, 0, 3], |v| v.to_le_bytes()),
                DataType::Int16 => le(&[i16::MIN, i16::MAX, -1, 258, 0, 3], |v| v.to_le_bytes()),
                DataType::Int32 => le(&[i32::MIN, i32::MAX, -1, 16909060, 0, 3], |v| {
                    v.to_le_bytes()
                }),
                DataType::Int64 => le(&[i64::MIN, i64::MAX, -1, 1 << 40, 0, 3], |v| {
                    v.to_le_bytes()
                }),
                DataType::Fp16 => le(
                    &[0.5, -2.0, 65504.0, 6.1035156e-5, 0.0, -0.0].map(f16::from_f32),
                    |v| v.to_le_bytes(),
                ),
                DataType::Fp32 => le(
                    &[1.5f32, -0.25, f32::MAX, f32::MIN_POSITIVE, 1e-45, -0.0],
                    |v| v.to_le_bytes(),
                ),
                DataType::Fp64 => le(
                    &[1.5f64, -0.25, f64::MAX, 5e-324, f64::INFINITY, -0.0],
                    |v| v.to_le_bytes(),
                ),
                DataType::Bytes => {
                    // NUL inside an element and bytes that are not UTF-8 must survive.
                    let items: [&[u8]; 6] = [
                        b"hello",
                        b"",
                        "\u{fc}n\u{ef}c\u{f8}d\u{e9}".as_bytes(),
                        b"a\0b",
                        &[0xff, 0xfe],
                        b" ",
                    ];
                    return Tensor::from_strings(shape.clone(), &items).unwrap();
                }
            };
            Tensor::new(dtype, shape.clone(), data).unwrap()
        })
        .collect();

    let outputs = backend.run(inputs.clone()).unwrap();
    assert_eq!(outputs.len(), inputs.len());
    for ((input, output), spec) in inputs.iter().zip(&outputs).zip(&sig.outputs) {
        assert_eq!(output, input, "{} did not round-trip", spec.name);
    }
}

#[test]
fn any_nonzero_byte_is_a_true_bool() {
    let mut backend = load("dtypes");
    let mut inputs = Vec::new();
    for spec in backend.signature().inputs.clone() {
        let t = match spec.dtype {
            DataType::Bool => {
                Tensor::new(DataType::Bool, vec![1, 2], Bytes::from_static(&[2, 0])).unwrap()
            }
            DataType::Bytes => Tensor::from_strings(vec![1, 2], &["", ""]).unwrap(),
            d => Tensor::new(
                d,
                vec![1, 2],
                Bytes::from(vec![0u8; 2 * d.element_size().unwrap()]),
            )
            .unwrap(),
        };
        inputs.push(t);
    }
    let outputs = backend.run(inputs).unwrap();
    assert_eq!(&outputs[0].data[..], &[1, 0]);
}

#[test]
fn strings_map_known_words_and_echo_everything() {
    let mut backend = load("strings");
    assert_eq!(
        backend.signature().outputs,
        vec![
            spec("label_id", DataType::Int64, &[-1, 1]),
            spec("echo", DataType::Bytes, &[-1, 1]),
        ]
    );
    let words: [&[u8]; 6] = [b"cat", b"dog", b"bird", b"fish", b"", &[0xc3, 0x28]];
    let text = Tensor::from_strings(vec![6, 1], &words).unwrap();
    let out = backend.run(vec![text.clone()]).unwrap();
    assert_eq!(out[0].shape, vec![6, 1]);
    assert_eq!(i64_values(&out[0]), vec![0, 1, 2, -1, -1, -1]);
    assert_eq!(out[1], text);
}

#[test]
fn multi_io_computes_both_outputs() {
    let mut backend = load("multi_io");
    assert_eq!(
        backend.signature().inputs,
        vec![
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("index", DataType::Int64, &[-1, 1])
        ]
    );
    let index = i64_tensor(vec![2, 1], &[3, 7]);
    let table_rows = backend
        .run(vec![f32_tensor(vec![2, 4], &[0.0; 8]), index.clone()])
        .unwrap();
    let out = backend
        .run(vec![f32_tensor(vec![2, 4], &[1.0; 8]), index])
        .unwrap();
    // y = 2x + table[index]: x = 1 adds exactly 2 to the looked-up rows.
    for (with_x, rows) in f32_values(&out[0]).iter().zip(f32_values(&table_rows[0])) {
        assert_eq!(*with_x, rows + 2.0);
    }
    assert_eq!(out[1].dtype, DataType::Int64);
    assert_eq!(i64_values(&out[1]), vec![4, 8]);
}

#[test]
fn out_of_range_index_is_a_run_error_and_the_backend_recovers() {
    let mut backend = load("multi_io");
    let msg = run_err(
        &mut backend,
        vec![
            f32_tensor(vec![1, 4], &[0.0; 4]),
            i64_tensor(vec![1, 1], &[100]),
        ],
    );
    assert!(
        msg.contains("out of data bounds") && msg.contains("idx=100"),
        "{msg}"
    );
    let out = backend
        .run(vec![
            f32_tensor(vec![1, 4], &[0.0; 4]),
            i64_tensor(vec![1, 1], &[0]),
        ])
        .unwrap();
    assert_eq!(i64_values(&out[1]), vec![1]);
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let mut backend = load("multi_io");
    let x = f32_tensor(vec![1, 4], &[0.0; 4]);
    let index = i64_tensor(vec![1, 1], &[0]);

    let msg = run_err(&mut backend, vec![x.clone()]);
    assert!(msg.contains("takes 2 input(s) (x, index), got 1"), "{msg}");

    let msg = run_err(&mut backend, vec![index.clone(), x.clone()]);
    assert!(
        msg.contains("input 'x' is INT64 but the model expects FP32"),
        "{msg}"
    );

    // Tensor's fields are public, so nothing stops a caller building one whose
    // data does not match its shape.
    let short = Tensor {
        dtype: DataType::Fp32,
        shape: vec![2, 4],
        data: x.data.clone(),
    };
    let msg = run_err(&mut backend, vec![short, index.clone()]);
    assert!(
        msg.contains("input 'x'") && msg.contains("needs 32 bytes"),
        "{msg}"
    );

    let negative = Tensor {
        dtype: DataType::Fp32,
        shape: vec![-1, 4],
        data: x.data.clone(),
    };
    let msg = run_err(&mut backend, vec![negative, index.clone()]);
    assert!(msg.contains("negative dimension"), "{msg}");

    // Right bytes, wrong rank: ONNX Runtime's own check, passed through.
    let flat = f32_tensor(vec![4], &[0.0; 4]);
    let msg = run_err(&mut backend, vec![flat, index.clone()]);
    assert!(msg.contains("Invalid rank for input: x"), "{msg}");

    // The backend still works afterwards.
    backend.run(vec![x, index]).unwrap();

    let mut strings = load("strings");
    let truncated = Tensor {
        dtype: DataType::Bytes,
        shape: vec![1, 1],
        data: Bytes::from_static(&[9, 0, 0, 0, b'a']),
    };
    let msg = run_err(&mut strings, vec![truncated]);
    assert!(msg.contains("declares 9 bytes"), "{msg}");
}

#[test]
fn missing_model_is_a_load_error_naming_the_path() {
    init();
    let path = workspace_root().join("examples/models/nope/1/model.onnx");
    match OrtBackend::load(&path, &OrtOptions::default()) {
        Err(BackendError::Load(msg)) => {
            assert!(msg.contains(&path.display().to_string()), "{msg}")
        }
        other => panic!("expected BackendError::Load, got {other:?}"),
    }
}

#[test]
fn corrupt_model_is_a_load_error() {
    init();
    // Any file that is not an ONNX model: this test's own source.
    let path = std::path::Path::new(file!());
    let path = workspace_root()
        .join("backends/ort")
        .join(path.strip_prefix("backends/ort").unwrap_or(path));
    match OrtBackend::load(&path, &OrtOptions::default()) {
        Err(BackendError::Load(msg)) => assert!(msg.contains("models.rs"), "{msg}"),
        other => panic!("expected BackendError::Load, got {other:?}"),
    }
}

#[test]
fn unservable_types_are_signature_errors_naming_the_tensor() {
    init();
    match OrtBackend::load(&fixture("bf16_input.onnx"), &OrtOptions::default()) {
        Err(BackendError::Signature(msg)) => {
            assert!(msg.contains("input 'x'") && msg.contains("bf16"), "{msg}")
        }
        other => panic!("expected BackendError::Signature, got {other:?}"),
    }
    match OrtBackend::load(&fixture("sequence_output.onnx"), &OrtOptions::default()) {
        Err(BackendError::Signature(msg)) => {
            assert!(
                msg.contains("output 'seq'") && msg.contains("Sequence"),
                "{msg}"
            )
        }
        other => panic!("expected BackendError::Signature, got {other:?}"),
    }
}
