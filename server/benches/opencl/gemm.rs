//! The OpenCL GEMM kernel on its own: a one-node ONNX model
//! `Y = Gemm(A[M,K], B[K,N])` (B an initializer, FP32), loaded in-process
//! with the OpenCL backend and run back to back. Device time comes from the
//! backend's profiling events (`OpenClModel::timings`), wall time from the
//! loop around `session.run`, uploads and downloads included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ferroserve_backend_core::{Backend, DataType, KernelStat, Tensor};
use ferroserve_backend_opencl::{LoadSpec, OpenClModel};

/// Writes the model from B's raw little-endian FP32 values.
const WRITE_MODEL: &str = r#"
import sys
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
m, k, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
b = np.fromfile(sys.argv[4], dtype="<f4").reshape(k, n)
graph = helper.make_graph(
    [helper.make_node("Gemm", ["A", "B"], ["Y"])],
    f"gemm_{m}x{k}x{n}",
    [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
    [numpy_helper.from_array(b, "B")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="ferroserve-bench-opencl")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[5])
"#;

/// A GEMM model on disk, with its operands kept for checking answers.
pub struct GemmModel {
    pub size: usize,
    pub path: PathBuf,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl GemmModel {
    /// M = N = K = `size`, written into `dir` with `python` and onnx.helper.
    pub fn write(python: &Path, dir: &Path, size: usize) -> Result<GemmModel> {
        let a = pseudo_random(size * size, 0x9e37_79b9_7f4a_7c15);
        let b = pseudo_random(size * size, 0x2545_f491_4f6c_dd1d);
        let b_file = dir.join(format!("gemm_{size}_b.f32"));
        std::fs::write(&b_file, le_bytes(&b))?;
        let path = dir.join(format!("gemm_{size}.onnx"));
        let s = size.to_string();
        let output = Command::new(python)
            .arg("-c")
            .arg(WRITE_MODEL)
            .args([&s, &s, &s])
            .arg(&b_file)
            .arg(&path)
            .output()
            .with_context(|| format!("starting {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "writing the {size}x{size} Gemm model failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(GemmModel { size, path, a, b })
    }

    pub fn flop_per_run(&self) -> f64 {
        2.0 * (self.size as f64).powi(3)
    }
}

/// What one size measured.
#[derive(Debug, Clone)]
pub struct GemmRun {
    pub size: usize,
    pub device: String,
    pub runs: u64,
    pub wall_s: f64,
    /// Device time of the measured runs, per kernel (gemm, upload, download).
    pub kernels: Vec<(&'static str, KernelStat)>,
    /// Largest relative error of the checked entries against f64 sums.
    pub max_rel_err: f64,
    pub flop_per_run: f64,
}

impl GemmRun {
    fn stat(&self, kernel: &str) -> KernelStat {
        self.kernels
            .iter()
            .find(|(k, _)| *k == kernel)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// FLOP over the gemm kernel's device time.
    pub fn kernel_gflops(&self) -> f64 {
        let s = self.stat("gemm");
        if s.nanos == 0 {
            return 0.0;
        }
        self.flop_per_run * s.launches as f64 / s.nanos as f64
    }

    /// FLOP over the wall time of `session.run`, transfers included.
    pub fn wall_gflops(&self) -> f64 {
        if self.wall_s <= 0.0 {
            return 0.0;
        }
        self.flop_per_run * self.runs as f64 / self.wall_s / 1e9
    }

    pub fn ms_per(&self, kernel: &str) -> f64 {
        let s = self.stat(kernel);
        if s.launches == 0 {
            0.0
        } else {
            s.nanos as f64 / s.launches as f64 / 1e6
        }
    }

    pub fn print(&self) {
        println!(
            "  {} runs in {:.2} s: {:.3} ms per run (wall), gemm kernel {:.3} ms, upload {:.3} ms, \
             download {:.3} ms (device time per launch); 16 entries checked against f64 sums, \
             largest error {:.1e} of the sum of |terms|",
            self.runs,
            self.wall_s,
            self.wall_s / self.runs.max(1) as f64 * 1e3,
            self.ms_per("gemm"),
            self.ms_per("upload"),
            self.ms_per("download"),
            self.max_rel_err
        );
        println!(
            "  gemm kernel {:.2} GFLOP/s, wall clock (transfers included) {:.2} GFLOP/s",
            self.kernel_gflops(),
            self.wall_gflops()
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "m": self.size, "n": self.size, "k": self.size,
            "device": self.device,
            "runs": self.runs,
            "wall_s": self.wall_s,
            "kernel_gflops": self.kernel_gflops(),
            "wall_gflops": self.wall_gflops(),
            "kernel_ms_per_run": self.ms_per("gemm"),
            "upload_ms_per_run": self.ms_per("upload"),
            "download_ms_per_run": self.ms_per("download"),
            "max_rel_err": self.max_rel_err,
            "kernels": self.kernels.iter().map(|(k, s)| (k.to_string(), serde_json::json!({
                "launches": s.launches,
                "seconds": s.nanos as f64 / 1e9,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Loads `model` on opencl:0 and runs it back to back: `warmup`, then at
/// least `measure` (and three runs).
pub fn measure(gemm: &GemmModel, warmup: Duration, measure: Duration) -> Result<GemmRun> {
    // `FERROSERVE_OPENCL_DEVICE=opencl:N` measures another device (a GPU:
    // scripts/gpu-check.sh).
    let device = std::env::var("FERROSERVE_OPENCL_DEVICE").unwrap_or_else(|_| "opencl:0".into());
    let spec = LoadSpec {
        device: device
            .parse()
            .map_err(|e| anyhow::anyhow!("FERROSERVE_OPENCL_DEVICE: {e}"))?,
        ..LoadSpec::new(&gemm.path)
    };
    let model = OpenClModel::load(&spec)
        .with_context(|| format!("loading {} on {device}", gemm.path.display()))?;
    let mut session = model.session()?;
    let n = gemm.size;
    let input = Tensor::new(
        DataType::Fp32,
        vec![n as i64, n as i64],
        Bytes::from(le_bytes(&gemm.a)),
    )?;
    // The first run plans, allocates and checks the answer.
    let first = session.run(vec![input.clone()])?;
    let y = first.first().context("the Gemm model has no output")?;
    if y.shape != [n as i64, n as i64] {
        bail!("the Gemm model answered shape {:?}", y.shape);
    }
    let max_rel_err = check(gemm, &y.data);
    if max_rel_err > 1e-3 {
        bail!("the OpenCL Gemm answers wrong values: relative error {max_rel_err:.2e}");
    }
    let end = Instant::now() + warmup;
    while Instant::now() < end {
        session.run(vec![input.clone()])?;
    }
    let timings = model.timings();
    let before = timings.snapshot();
    let start = Instant::now();
    let mut runs = 0u64;
    while runs < 3 || start.elapsed() < measure {
        session.run(vec![input.clone()])?;
        runs += 1;
    }
    let wall_s = start.elapsed().as_secs_f64();
    let kernels = timings
        .snapshot()
        .into_iter()
        .map(|(k, s)| {
            let b = before
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            (
                k,
                KernelStat {
                    launches: s.launches - b.launches,
                    nanos: s.nanos - b.nanos,
                },
            )
        })
        .collect();
    Ok(GemmRun {
        size: n,
        device: model.device_name().to_string(),
        runs,
        wall_s,
        kernels,
        max_rel_err,
        flop_per_run: gemm.flop_per_run(),
    })
}

/// The largest relative error of 16 spread-out entries of Y = A·B.
fn check(gemm: &GemmModel, y: &[u8]) -> f64 {
    let n = gemm.size;
    let mut worst: f64 = 0.0;
    for t in 0..16 {
        let (i, j) = ((t * 7919) % n, (t * 104_729 + 13) % n);
        let want: f64 = (0..n)
            .map(|k| f64::from(gemm.a[i * n + k]) * f64::from(gemm.b[k * n + j]))
            .sum();
        let at = 4 * (i * n + j);
        let got = f64::from(f32::from_le_bytes(
            y[at..at + 4].try_into().expect("4 bytes"),
        ));
        // Scaled by the sum of magnitudes: the entries are sums of ±terms.
        let scale: f64 = (0..n)
            .map(|k| (f64::from(gemm.a[i * n + k]) * f64::from(gemm.b[k * n + j])).abs())
            .sum::<f64>()
            .max(1e-30);
        worst = worst.max((got - want).abs() / scale);
    }
    worst
}

/// Deterministic values in [-1, 1).
fn pseudo_random(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
