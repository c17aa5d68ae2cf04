//! The cost of one worker round trip: `PythonBackend::run` on a prepared
//! batch, back to back, against the same script's `run()` called in a
//! plain Python loop on the same batch by the same interpreter. The
//! difference is what the backend adds per batch (framing, the pipes, the
//! wake-ups, the harness's conversions), with no HTTP and no batcher.
//!
//! `cargo bench -p ferroserve-backend-python --bench round_trip -- --bench
//! [BUNDLE_DIR INPUT ROWS WIDTH]` (default: examples/models/text_stats/1,
//! `values`, 20 rows of 16); FERROSERVE_PYTHON picks the interpreter
//! (default the workspace's .venv). Prints figures; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferroserve_backend_core::{Backend, DataType, Signature, Tensor, TensorSpec};
use ferroserve_backend_python::{configure, load, LoadSpec, PythonConfig, Style};

const CALLS: usize = 5000;

/// Times `run()` in a plain loop on the same rows as the backend gets.
const REFERENCE: &str = r#"
import importlib.util, os, sys, time
import numpy as np
script, name, rows, width, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
spec = importlib.util.spec_from_file_location("score", script)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
if hasattr(m, "init"): m.init()
x = {name: (np.arange(rows * width) % 7).astype(np.float32).reshape(rows, width) * np.float32(0.1)}
for _ in range(100): m.run(x)
t = time.perf_counter()
for _ in range(calls): m.run(x)
print((time.perf_counter() - t) / calls * 1e6)
"#;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !std::env::args().any(|a| a == "--bench") {
        println!("round-trip benchmark skipped: run it with `cargo bench -p ferroserve-backend-python --bench round_trip`");
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("FERROSERVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".venv/bin/python"));
    let (dir, input, rows, width) = match args.as_slice() {
        [d, i, r, w] => (
            PathBuf::from(d),
            i.clone(),
            r.parse().expect("ROWS"),
            w.parse().expect("WIDTH"),
        ),
        [] => (
            workspace.join("examples/models/text_stats/1"),
            "values".to_string(),
            20i64,
            16i64,
        ),
        _ => panic!("arguments: BUNDLE_DIR INPUT ROWS WIDTH"),
    };
    let dir = dir.canonicalize().expect("bundle folder");
    let script = dir.join("score.py");
    configure(PythonConfig {
        python: python.clone(),
        envs_root: std::env::temp_dir().join("ferroserve-round-trip"),
        ..PythonConfig::default()
    })
    .expect("harness");
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: input.clone(),
            dtype: DataType::Fp32,
            shape: vec![-1, width],
        }],
        outputs: vec![],
    };
    let (mut backends, _) = load(&LoadSpec {
        script: script.clone(),
        bundle_dir: dir.clone(),
        style: Style::Tensor,
        requirements: None,
        label: "round-trip:1".into(),
        instances: 1,
        signature,
        run_timeout: Duration::from_secs(30),
    })
    .expect("load");
    let backend = &mut backends[0];
    let data: Vec<u8> = (0..rows * width)
        .flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes())
        .collect();
    let batch = Tensor::new(DataType::Fp32, vec![rows, width], data.into()).expect("tensor");
    for _ in 0..100 {
        backend.run(vec![batch.clone()]).expect("run");
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        backend.run(vec![batch.clone()]).expect("run");
    }
    let ours = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
    let out = Command::new(&python)
        .current_dir(&dir)
        .env("AZUREML_MODEL_DIR", &dir)
        .args(["-c", REFERENCE])
        .arg(&script)
        .args([
            input.as_str(),
            &rows.to_string(),
            &width.to_string(),
            &CALLS.to_string(),
        ])
        .output()
        .expect("reference interpreter");
    assert!(
        out.status.success(),
        "reference: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("reference figure");
    println!(
        "{}: {rows}x{width} {input}, {CALLS} batches back to back",
        dir.display()
    );
    println!("  through the worker: {ours:8.1} us per batch");
    println!("  run() in a loop:    {reference:8.1} us per call");
    println!(
        "  round trip adds:    {:8.1} us per batch (ratio {:.3})",
        ours - reference,
        reference / ours
    );
}
