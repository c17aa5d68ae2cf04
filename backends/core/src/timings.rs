use std::collections::BTreeMap;
use std::sync::Mutex;

/// Launches and device time of one kernel, summed since the model loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelStat {
    pub launches: u64,
    pub nanos: u64,
}

/// Time a device spent per kernel, as its profiling events measured it.
///
/// A backend that can measure its device (OpenCL profiling events, CUDA
/// events) adds to one of these after each batch; the server reads it when
/// `/metrics` is scraped. Shared by all sessions of one loaded model, so the
/// figures are per model version, not per instance.
#[derive(Debug, Default)]
pub struct DeviceTimings {
    device: String,
    kernels: Mutex<BTreeMap<&'static str, KernelStat>>,
}

impl DeviceTimings {
    pub fn new(device: impl Into<String>) -> DeviceTimings {
        DeviceTimings {
            device: device.into(),
            kernels: Mutex::new(BTreeMap::new()),
        }
    }

    /// The device the timings come from, as its driver names it.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Adds one batch's measurements: (kernel, nanoseconds) per launch.
    pub fn add(&self, launches: &[(&'static str, u64)]) {
        let mut k = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        for &(name, nanos) in launches {
            let s = k.entry(name).or_default();
            s.launches += 1;
            s.nanos += nanos;
        }
    }

    /// Every kernel's totals, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, KernelStat)> {
        let k = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        k.iter().map(|(n, s)| (*n, *s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_kernel() {
        let t = DeviceTimings::new("dev");
        t.add(&[("gemm", 10), ("unary", 3), ("gemm", 5)]);
        t.add(&[("gemm", 1)]);
        assert_eq!(
            t.snapshot(),
            vec![
                (
                    "gemm",
                    KernelStat {
                        launches: 3,
                        nanos: 16
                    }
                ),
                (
                    "unary",
                    KernelStat {
                        launches: 1,
                        nanos: 3
                    }
                )
            ]
        );
    }
}
