//! The ONNX project's own node test cases, run on the OpenCL backend.
//!
//! `tests/opencl/write_node_cases.py` writes every node test case of the
//! installed `onnx` package that touches one of the backend's operators as a
//! model plus raw input/output files. Each case is then held to one rule:
//!
//! - every operator of the graph is in [`SUPPORTED_OPS`]: the model loads and
//!   each data set's outputs match ONNX's expected values within
//!   `|a - e| <= atol + rtol * |e|` (same dtype and shape, NaN equals NaN),
//!   unless the case is listed in [`EXPECTED_REFUSALS`], in which case loading
//!   fails with the listed text;
//! - some operator is not supported: loading fails with
//!   `unsupported operator "<the first such operator>"`.
//!
//! Every failing case is collected and reported in one panic at the end.
//!
//! Environment:
//! - `FERROSERVE_ONNX_NODE_CASES=DIR`: use cases already written to DIR instead
//!   of running the writer (into `target/onnx-node-cases`).
//! - `FERROSERVE_ONNX_NODE_FILTER=TEXT`: only cases whose name contains TEXT.
//! - `FERROSERVE_REQUIRE_OPENCL=1`: fail, rather than skip, without an OpenCL device.
//! - `FERROSERVE_OPENCL_DEVICE=opencl:N`: the device (default opencl:0).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use ferroserve_backend_core::{Backend, BackendError, DataType, Tensor};
use ferroserve_backend_opencl::{
    opencl_available, DeviceSelector, LoadSpec, OpenClModel, SUPPORTED_OPS,
};

/// `FERROSERVE_OPENCL_DEVICE=opencl:N` runs the cases on another device
/// than opencl:0 (scripts/gpu-check.sh picks a GPU that way).
fn device() -> DeviceSelector {
    match std::env::var("FERROSERVE_OPENCL_DEVICE") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("FERROSERVE_OPENCL_DEVICE: {e}")),
        Err(_) => DeviceSelector::Index(0),
    }
}
use serde::Deserialize;

/// Cases whose operators are all supported but which the backend refuses on
/// purpose: `(case name, text the load error must contain)`.
#[rustfmt::skip]
const EXPECTED_REFUSALS: &[(&str, &str)] = &[
    // Integer tensors: the backend computes in FP32 only.
    ("test_add_int16",                                  "input \"x\" is INT16; the OpenCL backend computes in FP32"),
    ("test_add_int8",                                   "input \"x\" is INT8; the OpenCL backend computes in FP32"),
    ("test_add_uint16",                                 "input \"x\" is UINT16; the OpenCL backend computes in FP32"),
    ("test_add_uint32",                                 "input \"x\" is UINT32; the OpenCL backend computes in FP32"),
    ("test_add_uint64",                                 "input \"x\" is UINT64; the OpenCL backend computes in FP32"),
    ("test_add_uint8",                                  "input \"x\" is UINT8; the OpenCL backend computes in FP32"),
    ("test_clip_default_int8_inbounds_expanded",        "input \"x\" is INT8; the OpenCL backend computes in FP32"),
    ("test_div_int16",                                  "input \"x\" is INT16; the OpenCL backend computes in FP32"),
    ("test_div_int8",                                   "input \"x\" is INT8; the OpenCL backend computes in FP32"),
    ("test_div_uint16",                                 "input \"x\" is UINT16; the OpenCL backend computes in FP32"),
    ("test_div_uint32",                                 "input \"x\" is UINT32; the OpenCL backend computes in FP32"),
    ("test_div_uint64",                                 "input \"x\" is UINT64; the OpenCL backend computes in FP32"),
    ("test_div_uint8",                                  "input \"x\" is UINT8; the OpenCL backend computes in FP32"),
    ("test_maxpool_2d_uint8",                           "input \"x\" is UINT8; the OpenCL backend computes in FP32"),
    ("test_mul_int16",                                  "input \"x\" is INT16; the OpenCL backend computes in FP32"),
    ("test_mul_int8",                                   "input \"x\" is INT8; the OpenCL backend computes in FP32"),
    ("test_mul_uint16",                                 "input \"x\" is UINT16; the OpenCL backend computes in FP32"),
    ("test_mul_uint32",                                 "input \"x\" is UINT32; the OpenCL backend computes in FP32"),
    ("test_mul_uint64",                                 "input \"x\" is UINT64; the OpenCL backend computes in FP32"),
    ("test_mul_uint8",                                  "input \"x\" is UINT8; the OpenCL backend computes in FP32"),
    ("test_sub_int16",                                  "input \"x\" is INT16; the OpenCL backend computes in FP32"),
    ("test_sub_int8",                                   "input \"x\" is INT8; the OpenCL backend computes in FP32"),
    ("test_sub_uint16",                                 "input \"x\" is UINT16; the OpenCL backend computes in FP32"),
    ("test_sub_uint32",                                 "input \"x\" is UINT32; the OpenCL backend computes in FP32"),
    ("test_sub_uint64",                                 "input \"x\" is UINT64; the OpenCL backend computes in FP32"),
    ("test_sub_uint8",                                  "input \"x\" is UINT8; the OpenCL backend computes in FP32"),
    // Training-mode BatchNormalization (running statistics as extra outputs).
    ("test_batchnorm_epsilon_training_mode",            "attribute \"training_mode\" = 1 is not supported"),
    ("test_batchnorm_example_training_mode",            "attribute \"training_mode\" = 1 is not supported"),
    // MaxPool's optional Indices output.
    ("test_maxpool_with_argmax_2d_precomputed_pads",    "expected exactly one output, got 2"),
    ("test_maxpool_with_argmax_2d_precomputed_strides", "expected exactly one output, got 2"),
];

#[derive(Deserialize)]
struct CaseFile {
    name: String,
    ops: Vec<String>,
    rtol: f64,
    atol: f64,
    data_sets: Vec<DataSet>,
}

#[derive(Deserialize)]
struct DataSet {
    inputs: Vec<TensorFile>,
    outputs: Vec<TensorFile>,
}

#[derive(Deserialize)]
struct TensorFile {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    file: String,
}

/// How one case ended.
enum Outcome {
    Passed,
    RefusedAsExpected,
    Failed(String),
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn cases_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROSERVE_ONNX_NODE_CASES") {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        panic!(
            "{} is missing: run scripts/setup-env.sh to create the project's Python \
             environment (onnx writes the node test cases), or point \
             FERROSERVE_ONNX_NODE_CASES at cases already written",
            python.display()
        );
    }
    let out = root.join("target/onnx-node-cases");
    let result = Command::new(&python)
        .arg(root.join("tests/opencl/write_node_cases.py"))
        .arg(&out)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    eprint!("{}", String::from_utf8_lossy(&result.stdout));
    if !result.status.success() {
        panic!(
            "tests/opencl/write_node_cases.py failed ({}):\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    out
}

fn read_tensor(dir: &Path, spec: &TensorFile) -> Result<Tensor, String> {
    let dtype: DataType = spec
        .datatype
        .parse()
        .map_err(|e| format!("{}: {e}", spec.name))?;
    let data = std::fs::read(dir.join(&spec.file))
        .map_err(|e| format!("{}: reading {}: {e}", spec.name, spec.file))?;
    Tensor::new(dtype, spec.shape.clone(), Bytes::from(data))
        .map_err(|e| format!("{}: {e}", spec.name))
}

/// Elements as f64 for the float types, `None` for the exactly compared rest.
fn floats(t: &Tensor) -> Option<Vec<f64>> {
    let d = &t.data[..];
    Some(match t.dtype {
        DataType::Fp32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DataType::Fp64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DataType::Fp16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        _ => return None,
    })
}

/// Row-major multi-index of flat element `i`.
fn unravel(shape: &[i64], mut i: usize) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        let d = d.max(1) as usize;
        idx[k] = i % d;
        i /= d;
    }
    idx
}

/// `None` when `actual` matches `expected`, else what differs.
fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Option<String> {
    if actual.dtype != expected.dtype {
        return Some(format!(
            "dtype {} (expected {})",
            actual.dtype, expected.dtype
        ));
    }
    if actual.shape != expected.shape {
        return Some(format!(
            "shape {:?} (expected {:?})",
            actual.shape, expected.shape
        ));
    }
    if actual.data.len() != expected.data.len() {
        return Some(format!(
            "{} data bytes (expected {})",
            actual.data.len(),
            expected.data.len()
        ));
    }
    let (Some(a), Some(e)) = (floats(actual), floats(expected)) else {
        // Integers, BOOL and BYTES compare exactly.
        if actual.data == expected.data {
            return None;
        }
        let size = actual.dtype.element_size().unwrap_or(1);
        let first = actual
            .data
            .iter()
            .zip(expected.data.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(0)
            / size;
        let bad = actual
            .data
            .chunks(size)
            .zip(expected.data.chunks(size))
            .filter(|(x, y)| x != y)
            .count();
        return Some(format!(
            "{bad} of {} elements differ, first at {:?}: bytes {:?} (expected {:?})",
            expected.element_count(),
            unravel(&expected.shape, first),
            &actual.data[first * size..(first + 1) * size],
            &expected.data[first * size..(first + 1) * size],
        ));
    };
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= atol + rtol * y.abs();
        if !ok {
            bad += 1;
            // An inf or NaN where a number was expected ranks as the worst.
            let err = if (x - y).abs().is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            };
            if worst.is_none_or(|(_, w)| err > w) {
                worst = Some((i, err));
            }
        }
    }
    let (i, err) = worst?;
    let single = actual.dtype != DataType::Fp64;
    Some(format!(
        "{bad} of {} elements off, max abs error {} at {:?}: {} (expected {}; rtol {rtol}, atol {atol})",
        e.len(),
        number(err, false),
        unravel(&expected.shape, i),
        number(a[i], single),
        number(e[i], single),
    ))
}

/// A value for a message: plain when of moderate size, else in e-notation;
/// `single` prints the shortest text that round-trips through f32.
fn number(x: f64, single: bool) -> String {
    let plain = x == 0.0 || !x.is_finite() || (1e-4..1e7).contains(&x.abs());
    match (single, plain) {
        (true, true) => format!("{}", x as f32),
        (true, false) => format!("{:e}", x as f32),
        (false, true) => format!("{x}"),
        (false, false) => format!("{x:e}"),
    }
}

fn check_loaded(model: &OpenClModel, case: &CaseFile, dir: &Path) -> Result<(), String> {
    if let Some(ds) = case.data_sets.first() {
        let sig = model.signature();
        let want_in: Vec<(&str, &str)> = ds
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype.as_str()))
            .collect();
        let got_in: Vec<(&str, &str)> = sig
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), t.dtype.as_str()))
            .collect();
        let want_out: Vec<(&str, &str)> = ds
            .outputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype.as_str()))
            .collect();
        let got_out: Vec<(&str, &str)> = sig
            .outputs
            .iter()
            .map(|t| (t.name.as_str(), t.dtype.as_str()))
            .collect();
        if want_in != got_in || want_out != got_out {
            return Err(format!(
                "signature: inputs {got_in:?} outputs {got_out:?} (expected inputs {want_in:?} outputs {want_out:?})"
            ));
        }
    }
    let mut session = model.session().map_err(|e| format!("session: {e}"))?;
    for (n, ds) in case.data_sets.iter().enumerate() {
        let inputs = ds
            .inputs
            .iter()
            .map(|t| read_tensor(dir, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("data set {n}: bad case file: {e}"))?;
        let expected = ds
            .outputs
            .iter()
            .map(|t| read_tensor(dir, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("data set {n}: bad case file: {e}"))?;
        let actual = session
            .run(inputs)
            .map_err(|e| format!("data set {n}: run failed: {e}"))?;
        if actual.len() != expected.len() {
            return Err(format!(
                "data set {n}: {} outputs (expected {})",
                actual.len(),
                expected.len()
            ));
        }
        let mut errors = Vec::new();
        for ((a, e), spec) in actual.iter().zip(&expected).zip(&ds.outputs) {
            if let Some(why) = compare(a, e, case.rtol, case.atol) {
                errors.push(format!("data set {n}, output {:?}: {why}", spec.name));
            }
        }
        if !errors.is_empty() {
            return Err(format!("mismatch: {}", errors.join("; ")));
        }
    }
    Ok(())
}

fn run_case(case: &CaseFile, dir: &Path) -> Outcome {
    let unsupported = case
        .ops
        .iter()
        .find(|op| !SUPPORTED_OPS.contains(&op.as_str()));
    let refusal = EXPECTED_REFUSALS
        .iter()
        .find(|(name, _)| *name == case.name)
        .map(|&(_, text)| text);
    let loaded = OpenClModel::load(&LoadSpec {
        device: device(),
        ..LoadSpec::new(dir.join("model.onnx"))
    });
    match (unsupported, refusal, loaded) {
        (Some(op), _, Err(BackendError::Load(msg))) => {
            let want = format!("unsupported operator \"{op}\"");
            if msg.contains(&want) {
                Outcome::RefusedAsExpected
            } else {
                Outcome::Failed(format!("wrong refusal (wanted `{want}`): {msg}"))
            }
        }
        (Some(op), _, Err(e)) => Outcome::Failed(format!(
            "wrong refusal (wanted BackendError::Load with `unsupported operator \"{op}\"`): {e:?}"
        )),
        (Some(op), _, Ok(_)) => Outcome::Failed(format!(
            "loaded although operator \"{op}\" is not in SUPPORTED_OPS"
        )),
        (None, Some(text), Err(BackendError::Load(msg))) if msg.contains(text) => {
            Outcome::RefusedAsExpected
        }
        (None, Some(text), Err(e)) => Outcome::Failed(format!(
            "wrong refusal (EXPECTED_REFUSALS wants a load error with `{text}`): {e}"
        )),
        (None, Some(text), Ok(_)) => Outcome::Failed(format!(
            "loaded although EXPECTED_REFUSALS wants a load error with `{text}`"
        )),
        (None, None, Err(e)) => Outcome::Failed(format!("unexpected refusal: {e}")),
        (None, None, Ok(model)) => match check_loaded(&model, case, dir) {
            Ok(()) => Outcome::Passed,
            Err(why) => Outcome::Failed(why),
        },
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[derive(Default)]
struct OpCounts {
    cases: usize,
    passed: usize,
    refused: usize,
    failed: usize,
}

#[test]
fn onnx_node_cases() {
    match opencl_available() {
        Ok(device) => eprintln!("OpenCL device: {device}"),
        Err(why) => {
            if std::env::var("FERROSERVE_REQUIRE_OPENCL").as_deref() == Ok("1") {
                panic!("FERROSERVE_REQUIRE_OPENCL=1 but no OpenCL device: {why}");
            }
            eprintln!("skipping: {why}");
            return;
        }
    }
    let root = cases_dir();
    let filter = std::env::var("FERROSERVE_ONNX_NODE_FILTER").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read cases directory {}: {e}", root.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.join("case.json").is_file())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&filter))
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no cases (case.json) under {} matching {filter:?}",
        root.display()
    );

    let started = Instant::now();
    let mut failures: Vec<(String, String)> = Vec::new();
    let (mut passed, mut refused) = (0usize, 0usize);
    let mut per_op: BTreeMap<&str, OpCounts> = BTreeMap::new();
    // Cases refused as expected, by the first unsupported operator.
    let mut refused_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut names = Vec::new();
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("case.json")).expect("case.json");
        let case: CaseFile = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: bad case.json: {e}", dir.display()));
        names.push(case.name.clone());
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(&case, dir)))
            .unwrap_or_else(|p| Outcome::Failed(format!("panicked: {}", panic_text(&*p))));
        for &op in SUPPORTED_OPS {
            if !case.ops.iter().any(|o| o == op) {
                continue;
            }
            let c = per_op.entry(op).or_default();
            c.cases += 1;
            match outcome {
                Outcome::Passed => c.passed += 1,
                Outcome::RefusedAsExpected => c.refused += 1,
                Outcome::Failed(_) => c.failed += 1,
            }
        }
        if let Outcome::RefusedAsExpected = outcome {
            let first = case
                .ops
                .iter()
                .find(|op| !SUPPORTED_OPS.contains(&op.as_str()));
            *refused_by
                .entry(
                    first
                        .map_or("(EXPECTED_REFUSALS)", |s| s.as_str())
                        .to_string(),
                )
                .or_default() += 1;
        }
        match outcome {
            Outcome::Passed => passed += 1,
            Outcome::RefusedAsExpected => refused += 1,
            Outcome::Failed(why) => failures.push((case.name, why)),
        }
    }
    if filter.is_empty() {
        for (name, _) in EXPECTED_REFUSALS {
            if !names.iter().any(|n| n == name) {
                failures.push((
                    name.to_string(),
                    "listed in EXPECTED_REFUSALS but no such case was written".into(),
                ));
            }
        }
    }

    eprintln!(
        "onnx node cases: {} run, {passed} passed, {refused} refused as expected, {} failed ({:.1?})",
        dirs.len(),
        failures.len(),
        started.elapsed()
    );
    eprintln!(
        "  {:20} {:>6} {:>7} {:>8} {:>7}",
        "op", "cases", "passed", "refused", "failed"
    );
    for (op, c) in &per_op {
        eprintln!(
            "  {op:20} {:>6} {:>7} {:>8} {:>7}",
            c.cases, c.passed, c.refused, c.failed
        );
    }
    let mut refused_by: Vec<(String, usize)> = refused_by.into_iter().collect();
    refused_by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!(
        "  refused as expected, by first unsupported operator: {}",
        refused_by
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !failures.is_empty() {
        let mut report = format!(
            "{} of {} ONNX node cases failed:\n",
            failures.len(),
            dirs.len()
        );
        for (name, why) in &failures {
            let _ = writeln!(report, "  {name}: {why}");
        }
        panic!("{report}");
    }
}
