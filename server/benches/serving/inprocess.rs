//! The reference for compute: ONNX Runtime called in-process on the same
//! model file, batch and thread settings as the server, with no HTTP, no
//! queue and no copies. Whatever ferroserve loses against it is serving
//! overhead.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferroserve_backend_core::{Backend, DataType, Tensor};
use ferroserve_backend_ort::{OrtBackend, OrtOptions};

use crate::model::Bundle;

/// Loads ONNX Runtime into this process the way the server finds it.
pub fn init_runtime(workspace: &Path) -> Result<()> {
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let path = ferroserve_backend_ort::find_library(exe_dir, &[workspace.to_path_buf()])
        .context("finding ONNX Runtime for the in-process reference")?;
    ferroserve_backend_ort::init_runtime(&path).context("loading ONNX Runtime")?;
    Ok(())
}

pub struct Throughput {
    pub rows_per_second: f64,
    pub batches: u64,
    pub mean_batch_ms: f64,
}

/// Runs back-to-back batches of `rows` rows for `measure` after `warmup`.
pub fn rows_per_second(
    bundle: &Bundle,
    rows: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Throughput> {
    let options = OrtOptions {
        // As the server's model loader sets them.
        intra_op_threads: bundle.intra_op_threads,
        inter_op_threads: 1,
    };
    let mut backend = OrtBackend::load(&bundle.model_file, &options)?;
    let input = Tensor::new(DataType::Fp32, bundle.shape(rows), bundle.input_data(rows))?;
    let warm_end = Instant::now() + warmup;
    while Instant::now() < warm_end {
        backend.run(vec![input.clone()])?;
    }
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < measure {
        let out = backend.run(vec![input.clone()])?;
        std::hint::black_box(out);
        batches += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Throughput {
        rows_per_second: (batches * rows as u64) as f64 / elapsed,
        batches,
        mean_batch_ms: elapsed * 1e3 / batches as f64,
    })
}
