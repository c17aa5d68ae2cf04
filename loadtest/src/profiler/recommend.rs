//! From measurements to a recommendation: the settings with the most
//! throughput that meet the p99 SLO, the cores and memory they need with
//! headroom (rounded up to Kubernetes-style values), and the smallest
//! catalogue entries that fit.

use serde::{Deserialize, Serialize};

/// Added to the measured peak CPU and memory.
pub const HEADROOM: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub instances: usize,
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub config: Config,
    pub concurrency: usize,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_cores_avg: f64,
    pub cpu_cores_peak: f64,
    pub rss_peak_bytes: u64,
    pub started_s: f64,
    pub duration_s: f64,
    /// Device time the model's kernels took during the run (backends that
    /// measure their device, such as OpenCL); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sizes {
    pub kubernetes: Option<String>,
    pub cloud: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    pub config: Config,
    pub concurrency: usize,
    pub slo_met: bool,
    pub expected_throughput: f64,
    pub expected_p99_ms: f64,
    pub cpu_millicores: u64,
    pub cpu: String,
    pub memory_bytes: u64,
    pub memory: String,
    pub measured_peak_cpu_cores: f64,
    pub measured_peak_rss_bytes: u64,
    pub sizes: Sizes,
    pub bundle_toml: String,
    pub kubernetes_resources: String,
}

/// The best run: the most successful requests per second among runs
/// without errors whose p99 meets the SLO; if none meets it, the lowest p99.
pub fn best(runs: &[Run], slo_p99_ms: f64) -> Option<&Run> {
    let clean = runs.iter().filter(|r| r.errors == 0 && r.ok > 0);
    let meeting = clean.clone().filter(|r| r.p99_ms <= slo_p99_ms);
    meeting
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
        .or_else(|| clean.min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)))
}

/// Rounds cores up to a multiple of 250m.
pub fn round_cpu(cores: f64) -> u64 {
    let m = (cores * 1000.0).ceil().max(1.0) as u64;
    m.div_ceil(250) * 250
}

/// Rounds bytes up to a multiple of 64 MiB.
pub fn round_memory(bytes: f64) -> u64 {
    let step = 64u64 << 20;
    (bytes.ceil().max(1.0) as u64).div_ceil(step) * step
}

pub fn cpu_string(millicores: u64) -> String {
    if millicores.is_multiple_of(1000) {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

#[derive(Deserialize)]
struct Catalog {
    kubernetes: Vec<K8sSize>,
    cloud: Vec<CloudSize>,
}

#[derive(Deserialize)]
struct K8sSize {
    name: String,
    cpu_millicores: u64,
    memory_mib: u64,
}

#[derive(Deserialize)]
struct CloudSize {
    provider: String,
    name: String,
    vcpus: u64,
    memory_gib: f64,
}

/// The smallest catalogue entries with at least `millicores` and `bytes`.
pub fn fit(catalog_json: &str, millicores: u64, bytes: u64) -> Result<Sizes, String> {
    let c: Catalog =
        serde_json::from_str(catalog_json).map_err(|e| format!("sizing catalogue: {e}"))?;
    let mib = bytes.div_ceil(1 << 20);
    let kubernetes = c
        .kubernetes
        .iter()
        .filter(|k| k.cpu_millicores >= millicores && k.memory_mib >= mib)
        .min_by_key(|k| (k.cpu_millicores, k.memory_mib))
        .map(|k| k.name.clone());
    let mut providers: Vec<&str> = c.cloud.iter().map(|s| s.provider.as_str()).collect();
    providers.dedup();
    let mut cloud = Vec::new();
    for p in providers {
        if let Some(s) = c
            .cloud
            .iter()
            .filter(|s| s.provider == p)
            .filter(|s| s.vcpus * 1000 >= millicores && s.memory_gib * 1024.0 >= mib as f64)
            .min_by(|a, b| {
                (a.vcpus, a.memory_gib)
                    .partial_cmp(&(b.vcpus, b.memory_gib))
                    .expect("finite")
            })
        {
            cloud.push(format!("{p} {}", s.name));
        }
    }
    Ok(Sizes { kubernetes, cloud })
}

/// The recommendation for `best`, sized on `peak_rss` (the whole profile's
/// peak, so no configuration tried could have needed more).
pub fn recommend(
    best: &Run,
    slo_p99_ms: f64,
    peak_rss: u64,
    catalog_json: &str,
) -> Result<Recommendation, String> {
    let cpu_millicores = round_cpu(best.cpu_cores_peak.max(best.cpu_cores_avg) * (1.0 + HEADROOM));
    let memory_bytes = round_memory(peak_rss as f64 * (1.0 + HEADROOM));
    let cpu = cpu_string(cpu_millicores);
    let memory = format!("{}Mi", memory_bytes >> 20);
    let c = best.config;
    let bundle_toml = format!(
        "[batching]\nmax_batch_size = {}\nmax_queue_delay_us = {}\n\n[instances]\ncount = {}\n",
        c.max_batch_size, c.max_queue_delay_us, c.instances
    );
    let kubernetes_resources = format!(
        "resources:\n  requests:\n    cpu: \"{cpu}\"\n    memory: \"{memory}\"\n  limits:\n    cpu: \"{cpu}\"\n    memory: \"{memory}\"\n"
    );
    Ok(Recommendation {
        config: c,
        concurrency: best.concurrency,
        slo_met: best.p99_ms <= slo_p99_ms,
        expected_throughput: best.throughput,
        expected_p99_ms: best.p99_ms,
        cpu_millicores,
        cpu,
        memory_bytes,
        memory,
        measured_peak_cpu_cores: best.cpu_cores_peak,
        measured_peak_rss_bytes: peak_rss,
        sizes: fit(catalog_json, cpu_millicores, memory_bytes)?,
        bundle_toml,
        kubernetes_resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_fitting() {
        assert_eq!(round_cpu(0.1), 250);
        assert_eq!(round_cpu(1.01), 1250);
        assert_eq!(cpu_string(1000), "1");
        assert_eq!(cpu_string(1250), "1250m");
        assert_eq!(round_memory(65.0 * 1024.0 * 1024.0), 128 << 20);
        let cat = include_str!("../../../profiles/catalog.json");
        let s = fit(cat, 750, 300 << 20).unwrap();
        assert_eq!(s.kubernetes.as_deref(), Some("m"));
        assert!(s.cloud.iter().any(|c| c.starts_with("aws ")), "{s:?}");
        let none = fit(cat, 64_000, 1 << 40).unwrap();
        assert!(none.kubernetes.is_none() && none.cloud.is_empty());
    }
}
