//! What drift costs per request: `Monitor::observe` on a 1-row and a
//! 32-row MLP request (64 numeric inputs, 10 outputs) against a baseline of
//! 20,000 rows, windows of 1,000 rows scored as they fill (the scoring is
//! in the figure). Prints ns per request and per row; asserts nothing.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Signature, Tensor, TensorSpec};
use ferroserve_monitoring::drift::baseline::{Baseline, DataFile, Feature, Source, Values};
use ferroserve_monitoring::drift::{DriftSeries, DriftSettings, Monitor, Watched};

/// A fixed-seed stream of roughly normal numbers (sum of uniforms).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..4 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            s += (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        }
        (s - 2.0) * 1.7
    }
}

fn feature(name: String, tensor: &str, column: usize, noise: &mut Noise) -> Feature {
    let v: Vec<Option<f64>> = (0..20_000).map(|_| Some(noise.next())).collect();
    Feature::compute(
        name,
        Source {
            tensor: tensor.into(),
            column,
        },
        &Values::Numeric(v),
    )
}

fn tensor(rows: usize, width: usize, noise: &mut Noise) -> Tensor {
    let data: Vec<u8> = (0..rows * width)
        .flat_map(|_| (noise.next() as f32).to_le_bytes())
        .collect();
    Tensor::new(
        DataType::Fp32,
        vec![rows as i64, width as i64],
        Bytes::from(data),
    )
    .unwrap()
}

/// Named inputs and outputs of one request.
type Request = (Vec<(String, Tensor)>, Vec<Tensor>);

fn main() {
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);
    let baseline = Baseline {
        data: DataFile {
            name: "bench".into(),
            rows: 20_000,
            sha256: "0".repeat(64),
        },
        created_at: "2026-12-07T00:00:00Z".into(),
        features: (0..64)
            .map(|j| feature(format!("f{j}"), "input", j, &mut noise))
            .collect(),
        outputs: (0..10)
            .map(|j| feature(format!("p{j}"), "probabilities", j, &mut noise))
            .collect(),
    };
    let spec = |name: &str, k: i64| TensorSpec {
        name: name.into(),
        dtype: DataType::Fp32,
        shape: vec![-1, k],
    };
    let signature = Signature {
        inputs: vec![spec("input", 64)],
        outputs: vec![spec("probabilities", 10)],
    };
    let monitor = Monitor::new(
        Arc::new(baseline),
        &signature,
        true,
        DriftSettings::default(),
        Watched {
            endpoint: "mlp".into(),
            deployment: "default".into(),
            model: "mlp".into(),
            version: "1".into(),
        },
        DriftSeries::new(),
        Box::new(|_| {}),
    )
    .unwrap();
    println!("drift per request (Monitor::observe, 64 inputs + 10 outputs, windows of 1000 rows scored as they fill)");
    for rows in [1usize, 32] {
        let requests: Vec<Request> = (0..64)
            .map(|_| {
                (
                    vec![("input".into(), tensor(rows, 64, &mut noise))],
                    vec![tensor(rows, 10, &mut noise)],
                )
            })
            .collect();
        let n = 200_000 / rows;
        let now = SystemTime::now();
        for (i, o) in requests.iter().cycle().take(n / 10) {
            monitor.observe(i, o, now);
        }
        let start = Instant::now();
        for (i, o) in requests.iter().cycle().take(n) {
            monitor.observe(i, o, now);
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "  {rows:>2}-row request: {ns:>9.0} ns per request, {:>6.0} ns per row",
            ns / rows as f64
        );
    }
    println!("  windows scored: {}", monitor.snapshot().windows);
}
