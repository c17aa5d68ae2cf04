//! The machine's FP32 peak, two ways: the theoretical one from
//! `/proc/cpuinfo` (cores × clock × FLOP per cycle), and the practical one,
//! numpy's `np.matmul` (OpenBLAS) at the sizes the GEMM kernel is measured at.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// cores × MHz × FP32 FLOP/cycle/core, with what it assumed.
#[derive(Debug, Clone)]
pub struct TheoreticalPeak {
    pub model_name: String,
    pub vendor: String,
    /// Processors /proc/cpuinfo lists.
    pub listed_cpus: usize,
    /// Logical CPUs this process may run on: the figure counted.
    pub cores: usize,
    /// Mean of the listed `cpu MHz` (the clock the kernel reports, not a
    /// boost clock).
    pub mhz: f64,
    pub flop_per_cycle: u32,
    /// The flags the FLOP/cycle figure was chosen by.
    pub isa: &'static str,
    pub gflops: f64,
}

impl TheoreticalPeak {
    pub fn read(cores: usize) -> Result<TheoreticalPeak> {
        let text = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
        let field = |line: &str, key: &str| -> Option<String> {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        };
        let mut listed = 0;
        let mut mhz = Vec::new();
        let mut flags = String::new();
        let mut model_name = String::new();
        let mut vendor = String::new();
        for line in text.lines() {
            if field(line, "processor").is_some() {
                listed += 1;
            } else if let Some(v) = field(line, "cpu MHz") {
                if let Ok(v) = v.parse::<f64>() {
                    mhz.push(v);
                }
            } else if let Some(v) = field(line, "flags") {
                if flags.is_empty() {
                    flags = v;
                }
            } else if let Some(v) = field(line, "model name") {
                if model_name.is_empty() {
                    model_name = v;
                }
            } else if let Some(v) = field(line, "vendor_id") {
                if vendor.is_empty() {
                    vendor = v;
                }
            }
        }
        if mhz.is_empty() {
            bail!("/proc/cpuinfo has no `cpu MHz` line: no theoretical peak on this machine");
        }
        let mhz = mhz.iter().sum::<f64>() / mhz.len() as f64;
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let (flop_per_cycle, isa) = if has("avx512f") {
            (64, "avx512f: 2 FMA units x 16 FP32 lanes x 2 FLOP")
        } else if has("avx2") && has("fma") {
            (32, "avx2+fma: 2 FMA units x 8 FP32 lanes x 2 FLOP")
        } else {
            (8, "neither avx512f nor avx2+fma: 8 FP32 FLOP/cycle assumed")
        };
        Ok(TheoreticalPeak {
            model_name,
            vendor,
            listed_cpus: listed,
            cores,
            mhz,
            flop_per_cycle,
            isa,
            gflops: cores as f64 * mhz * f64::from(flop_per_cycle) / 1e3,
        })
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "theoretical FP32 peak: {} cores x {:.0} MHz x {} FLOP/cycle/core = {:.1} GFLOP/s \
             ({}; {:?}, {} processors listed in /proc/cpuinfo; assumes every core sustains its \
             FMA units at the reported clock, and counts logical CPUs as cores)",
            self.cores,
            self.mhz,
            self.flop_per_cycle,
            self.gflops,
            self.isa,
            self.model_name,
            self.listed_cpus
        );
        if self.flop_per_cycle == 64 && self.vendor == "AuthenticAMD" {
            s.push_str(
                "; note: AMD Zen 4 runs 512-bit FMAs as two 256-bit halves, so there the \
                 hardware peak is half this figure",
            );
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_name": self.model_name,
            "vendor": self.vendor,
            "listed_cpus": self.listed_cpus,
            "cores": self.cores,
            "mhz": self.mhz,
            "flop_per_cycle": self.flop_per_cycle,
            "assumption": self.isa,
            "gflops": self.gflops,
        })
    }
}

/// numpy's matmul at one size.
#[derive(Debug, Clone, Deserialize)]
pub struct NumpyGemm {
    pub size: usize,
    pub calls: u64,
    pub seconds: f64,
    pub gflops: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NumpyReference {
    pub numpy: String,
    pub blas: Option<String>,
    /// (library, threads) per BLAS thread pool, where threadpoolctl is there.
    pub threadpools: Option<Vec<(String, u64)>>,
    pub threads: usize,
    pub results: Vec<NumpyGemm>,
}

impl NumpyReference {
    pub fn at(&self, size: usize) -> Option<&NumpyGemm> {
        self.results.iter().find(|r| r.size == size)
    }
}

/// Times `np.matmul(a, b, out=c)` on float32 square matrices in a Python
/// subprocess, BLAS on `threads` threads, warm-up then `measure` per size.
const NUMPY_SCRIPT: &str = r#"
import json, sys, time
import numpy as np
warmup, measure, threads = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
sizes = [int(s) for s in sys.argv[4:]]
out = {"numpy": np.__version__, "blas": None, "threadpools": None, "threads": threads, "results": []}
try:
    out["blas"] = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
except Exception:
    pass
try:
    from threadpoolctl import threadpool_info
    out["threadpools"] = [[i.get("internal_api", "?"), i.get("num_threads", 0)] for i in threadpool_info()]
except Exception:
    pass
rng = np.random.default_rng(0)
for s in sizes:
    a = rng.standard_normal((s, s), dtype=np.float32)
    b = rng.standard_normal((s, s), dtype=np.float32)
    c = np.empty((s, s), dtype=np.float32)
    end = time.perf_counter() + warmup
    np.matmul(a, b, out=c)
    while time.perf_counter() < end:
        np.matmul(a, b, out=c)
    calls = 0
    start = time.perf_counter()
    while True:
        np.matmul(a, b, out=c)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= measure and calls >= 3:
            break
    out["results"].append({"size": s, "calls": calls, "seconds": elapsed,
                           "gflops": 2.0 * s * s * s * calls / elapsed / 1e9})
print(json.dumps(out))
"#;

pub fn numpy_gemm(
    python: &Path,
    sizes: &[usize],
    threads: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<NumpyReference> {
    let threads_s = threads.to_string();
    let output = Command::new(python)
        .arg("-c")
        .arg(NUMPY_SCRIPT)
        .arg(warmup.as_secs_f64().to_string())
        .arg(measure.as_secs_f64().to_string())
        .arg(&threads_s)
        .args(sizes.iter().map(|s| s.to_string()))
        // As many BLAS threads as cores, whatever the caller's environment says.
        .env("OPENBLAS_NUM_THREADS", &threads_s)
        .env("OMP_NUM_THREADS", &threads_s)
        .env("MKL_NUM_THREADS", &threads_s)
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the numpy reference failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the numpy reference printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("reading the numpy reference's {line:?}"))
}
