//! Where an OpenCL model's device time went during a measurement, from the
//! server's `ferroserve_device_kernel_seconds_total` and
//! `ferroserve_device_kernel_launches_total` counters (labels model,
//! version, endpoint, deployment, device, kernel): the per-kernel deltas
//! between two scrapes of `/metrics`.

use std::collections::BTreeMap;
use std::time::Instant;

const SECONDS: &str = "ferroserve_device_kernel_seconds_total";
const LAUNCHES: &str = "ferroserve_device_kernel_launches_total";

/// One endpoint's per-kernel (seconds, launches) totals at one moment,
/// summed over versions and deployments.
#[derive(Debug, Clone)]
pub struct KernelTotals {
    at: Instant,
    kernels: BTreeMap<String, (f64, f64)>,
    device: Option<String>,
}

/// One kernel's share of a window.
#[derive(Debug, Clone)]
pub struct KernelShare {
    pub kernel: String,
    pub seconds: f64,
    pub launches: u64,
    /// Of all device time (kernels and transfers) in the window.
    pub share: f64,
}

/// Per-kernel device time between two scrapes, largest first.
#[derive(Debug, Clone, Default)]
pub struct KernelWindow {
    pub device: Option<String>,
    pub kernels: Vec<KernelShare>,
    pub device_seconds: f64,
    pub elapsed_s: f64,
}

impl KernelTotals {
    pub fn parse(exposition: &str, endpoint: &str) -> KernelTotals {
        let mut kernels: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut device = None;
        for line in exposition.lines() {
            let (is_seconds, rest) = if let Some(r) = line.strip_prefix(SECONDS) {
                (true, r)
            } else if let Some(r) = line.strip_prefix(LAUNCHES) {
                (false, r)
            } else {
                continue;
            };
            let Some((labels, value)) = parse_sample(rest) else {
                continue;
            };
            if label(&labels, "endpoint") != Some(endpoint) {
                continue;
            }
            let Some(kernel) = label(&labels, "kernel") else {
                continue;
            };
            if device.is_none() {
                device = label(&labels, "device").map(str::to_string);
            }
            let entry = kernels.entry(kernel.to_string()).or_default();
            if is_seconds {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
        KernelTotals {
            at: Instant::now(),
            kernels,
            device,
        }
    }

    pub fn since(&self, before: &KernelTotals) -> KernelWindow {
        let mut kernels: Vec<KernelShare> = self
            .kernels
            .iter()
            .map(|(k, &(s, n))| {
                let (s0, n0) = before.kernels.get(k).copied().unwrap_or_default();
                KernelShare {
                    kernel: k.clone(),
                    seconds: (s - s0).max(0.0),
                    launches: (n - n0).max(0.0).round() as u64,
                    share: 0.0,
                }
            })
            .filter(|k| k.seconds > 0.0 || k.launches > 0)
            .collect();
        let device_seconds: f64 = kernels.iter().map(|k| k.seconds).sum();
        for k in &mut kernels {
            k.share = if device_seconds > 0.0 {
                k.seconds / device_seconds
            } else {
                0.0
            };
        }
        kernels.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        KernelWindow {
            device: self.device.clone().or_else(|| before.device.clone()),
            kernels,
            device_seconds,
            elapsed_s: self.at.saturating_duration_since(before.at).as_secs_f64(),
        }
    }
}

impl KernelWindow {
    /// Device time over the window's wall time: how busy the instance's
    /// command queue kept the device (kernels of one queue run in turn).
    pub fn device_busy(&self) -> Option<f64> {
        (self.elapsed_s > 0.0).then(|| self.device_seconds / self.elapsed_s)
    }

    /// `gemm 61.2%, conv2d 30.1%, …`
    pub fn shares(&self) -> String {
        if self.kernels.is_empty() {
            return "no device time exported".to_string();
        }
        self.kernels
            .iter()
            .map(|k| format!("{} {:.1}%", k.kernel, k.share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn print(&self) {
        println!(
            "  device time per kernel ({}): {:.3} s over {:.1} s, device busy {}",
            self.device.as_deref().unwrap_or("?"),
            self.device_seconds,
            self.elapsed_s,
            self.device_busy()
                .map_or("?".to_string(), |b| format!("{:.0}%", b * 100.0))
        );
        for k in &self.kernels {
            let per_launch_us = if k.launches > 0 {
                k.seconds / k.launches as f64 * 1e6
            } else {
                0.0
            };
            println!(
                "    {:<22} {:>6.1}%  {:>9.3} s  {:>9} launches  {:>10.1} us/launch",
                k.kernel,
                k.share * 100.0,
                k.seconds,
                k.launches,
                per_launch_us
            );
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "device": self.device,
            "device_seconds": self.device_seconds,
            "elapsed_s": self.elapsed_s,
            "device_busy": self.device_busy(),
            "kernels": self
                .kernels
                .iter()
                .map(|k| (k.kernel.clone(), serde_json::json!({
                    "seconds": k.seconds,
                    "launches": k.launches,
                    "share": k.share,
                })))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// `{name="value",…} 1.5` → the labels and the value; values may hold
/// escaped quotes and backslashes (a device name is free text).
fn parse_sample(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let body = rest.strip_prefix('{')?;
    let mut labels = Vec::new();
    let mut chars = body.char_indices().peekable();
    loop {
        // Separators, or the end of the label set.
        while let Some(&(_, c)) = chars.peek() {
            if c == ',' || c == ' ' {
                chars.next();
            } else {
                break;
            }
        }
        let (start, c) = chars.next()?;
        if c == '}' {
            let value = body[start + 1..].split_whitespace().next()?.parse().ok()?;
            return Some((labels, value));
        }
        let eq = start + body[start..].find('=')?;
        let name = body[start..eq].to_string();
        while chars.peek()?.0 <= eq {
            chars.next();
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((name, value));
    }
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
