//! Device kernel time during a profile, read from the server's `/metrics`
//! (`ferroserve_device_kernel_*_total`, exported by backends that measure
//! their device with profiling events: OpenCL).
//!
//! Reading the server's own counters, rather than asking the backend, is
//! what lets `profile --url` work against a server in another process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Totals per (device, kernel) for one endpoint, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(pub BTreeMap<(String, String), (u64, f64)>);

/// One kernel's share of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelTime {
    pub kernel: String,
    pub launches: u64,
    pub seconds: f64,
    /// Mean device time per launch, in microseconds.
    pub mean_us: f64,
    /// Fraction of all device time in this profile.
    pub share: f64,
}

/// The device time of a whole profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub device: String,
    pub seconds: f64,
    pub kernels: Vec<KernelTime>,
}

/// The value of label `name` in a Prometheus label set `{a="x",b="y"}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = labels.find(&key)? + key.len();
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

impl Totals {
    /// Parses the text exposition format, keeping `endpoint`'s series.
    pub fn parse(metrics: &str, endpoint: &str) -> Totals {
        let mut out: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
        for line in metrics.lines() {
            let (is_seconds, rest) = if let Some(r) =
                line.strip_prefix("ferroserve_device_kernel_seconds_total{")
            {
                (true, r)
            } else if let Some(r) = line.strip_prefix("ferroserve_device_kernel_launches_total{") {
                (false, r)
            } else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            if label(labels, "endpoint") != Some(endpoint) {
                continue;
            }
            let (Some(device), Some(kernel), Ok(v)) = (
                label(labels, "device"),
                label(labels, "kernel"),
                value.trim().parse::<f64>(),
            ) else {
                continue;
            };
            let e = out
                .entry((device.to_string(), kernel.to_string()))
                .or_default();
            if is_seconds {
                e.1 += v;
            } else {
                e.0 += v as u64;
            }
        }
        Totals(out)
    }

    /// Device seconds since `before`, over all kernels; `None` when the
    /// model's backend exports none.
    pub fn seconds_since(&self, before: &Totals) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .iter()
                .map(|(k, (_, s))| s - before.0.get(k).map_or(0.0, |b| b.1))
                .sum(),
        )
    }

    /// The profile's kernel table, most expensive first.
    pub fn profile_since(&self, before: &Totals) -> Option<DeviceProfile> {
        let device = self.0.keys().next()?.0.clone();
        let mut kernels: Vec<KernelTime> = self
            .0
            .iter()
            .map(|(k, (launches, secs))| {
                let (bl, bs) = before.0.get(k).copied().unwrap_or_default();
                let launches = launches.saturating_sub(bl);
                let seconds = (secs - bs).max(0.0);
                KernelTime {
                    kernel: k.1.clone(),
                    launches,
                    seconds,
                    mean_us: if launches > 0 {
                        seconds * 1e6 / launches as f64
                    } else {
                        0.0
                    },
                    share: 0.0,
                }
            })
            .filter(|k| k.launches > 0)
            .collect();
        let total: f64 = kernels.iter().map(|k| k.seconds).sum();
        for k in &mut kernels {
            k.share = if total > 0.0 { k.seconds / total } else { 0.0 };
        }
        kernels.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Some(DeviceProfile {
            device,
            seconds: total,
            kernels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP x
ferroserve_device_kernel_launches_total{deployment="default",device="pocl",endpoint="conv",kernel="conv2d",model="conv",version="1"} 30
ferroserve_device_kernel_seconds_total{deployment="default",device="pocl",endpoint="conv",kernel="conv2d",model="conv",version="1"} 0.3
ferroserve_device_kernel_seconds_total{deployment="default",device="pocl",endpoint="conv",kernel="gemm",model="conv",version="1"} 0.1
ferroserve_device_kernel_launches_total{deployment="default",device="pocl",endpoint="conv",kernel="gemm",model="conv",version="1"} 10
ferroserve_device_kernel_seconds_total{deployment="default",device="pocl",endpoint="mlp",kernel="gemm",model="mlp",version="1"} 9
"#;

    #[test]
    fn deltas_per_kernel_for_one_endpoint() {
        let after = Totals::parse(TEXT, "conv");
        let before = Totals::parse(
            &TEXT.replace("} 30", "} 10").replace("} 0.3", "} 0.1"),
            "conv",
        );
        assert!((after.seconds_since(&before).unwrap() - 0.2).abs() < 1e-9);
        let p = after.profile_since(&before).unwrap();
        assert_eq!(p.device, "pocl");
        assert_eq!(p.kernels[0].kernel, "conv2d");
        assert_eq!(p.kernels[0].launches, 20);
        assert!((p.kernels[0].mean_us - 10_000.0).abs() < 1e-6);
        // gemm did not run between the two readings.
        assert_eq!(p.kernels.len(), 1);
        assert!(Totals::parse(TEXT, "iris")
            .seconds_since(&Totals::default())
            .is_none());
    }
}
