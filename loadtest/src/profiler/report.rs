//! The profile's JSON report (schema: `profiles/report.schema.json`) and a
//! self-contained HTML page with SVG charts (no scripts, no external files).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::recommend::{Config, Recommendation, Run};
use super::sampler::Sample;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub model: String,
    pub version: u64,
    pub slo_p99_ms: f64,
    pub budget_s: f64,
    pub cores: usize,
    pub runs: Vec<Run>,
    pub timeline: Vec<TimelinePoint>,
    pub recommendation: Option<Recommendation>,
    /// Per-kernel device time over the whole profile, for backends that
    /// measure their device (OpenCL); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<super::device::DeviceProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub cpu_cores: f64,
    pub rss_bytes: u64,
}

impl From<Sample> for TimelinePoint {
    fn from(s: Sample) -> Self {
        TimelinePoint {
            t_s: s.t_s,
            cpu_cores: s.cpu_cores,
            rss_bytes: s.rss_bytes,
        }
    }
}

fn label(c: &Config) -> String {
    format!(
        "instances {} / batch {} / delay {} µs",
        c.instances, c.max_batch_size, c.max_queue_delay_us
    )
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A line chart: each series is (name, points); x and y scales are linear
/// from 0 (x optionally log2 for concurrency).
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 300.0, 60.0, 40.0, 30.0, 20.0);
    let fx = |x: f64| if log_x { x.max(1.0).log2() } else { x };
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = pts
        .clone()
        .map(|p| fx(p.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let y_max = pts.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| left + fx(x) / x_max * (w - left - right);
    let sy = |y: f64| h - bottom - y / y_max * (h - bottom - top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{title}</title>"#
    );
    let _ = write!(
        svg,
        r##"<text x="{}" y="18" font-size="14" font-family="sans-serif">{title}</text>"##,
        left
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end" font-family="sans-serif">{}</text>"##,
            left - 4.0,
            sy(y) + 3.0,
            if y_max >= 100.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="middle" font-family="sans-serif">{x_label}</text><text x="12" y="{}" font-size="11" font-family="sans-serif" transform="rotate(-90 12 {})">{y_label}</text>"##,
        (w + left) / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{name}</title></polyline>"##,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"##,
                sx(x),
                sy(y)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The kernel table, for models whose backend measures its device.
fn device_table(r: &Report) -> String {
    let Some(d) = &r.device else {
        return String::new();
    };
    let mut rows = String::new();
    for k in &d.kernels {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.1}</td><td>{:.1}%</td></tr>",
            escape(&k.kernel),
            k.launches,
            k.seconds,
            k.mean_us,
            100.0 * k.share
        );
    }
    format!(
        "<h2>Device kernels</h2><p>{} s of device time on {} (OpenCL profiling events; upload and download are the transfers).</p>\
         <table><tr><th>kernel</th><th>launches</th><th>seconds</th><th>mean µs</th><th>share</th></tr>{rows}</table>",
        format_args!("{:.3}", d.seconds),
        escape(&d.device)
    )
}

/// The HTML report.
pub fn html(r: &Report) -> String {
    let mut configs: Vec<Config> = Vec::new();
    for run in &r.runs {
        if !configs.contains(&run.config) {
            configs.push(run.config);
        }
    }
    let by_config = |f: &dyn Fn(&Run) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        configs
            .iter()
            .map(|c| {
                let mut pts: Vec<(f64, f64)> = r
                    .runs
                    .iter()
                    .filter(|x| x.config == *c)
                    .map(|x| (x.concurrency as f64, f(x)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (label(c), pts)
            })
            .collect()
    };
    let throughput = chart(
        "Throughput against concurrency",
        "concurrency (log2)",
        "requests/s",
        &by_config(&|x| x.throughput),
        true,
    );
    let p99 = chart(
        "p99 latency against concurrency",
        "concurrency (log2)",
        "p99 ms",
        &by_config(&|x| x.p99_ms),
        true,
    );
    let cpu = chart(
        "CPU over time (server and its workers)",
        "seconds",
        "cores",
        &[(
            "cpu".into(),
            r.timeline.iter().map(|p| (p.t_s, p.cpu_cores)).collect(),
        )],
        false,
    );
    let mem = chart(
        "Resident memory over time",
        "seconds",
        "MiB",
        &[(
            "rss".into(),
            r.timeline
                .iter()
                .map(|p| (p.t_s, p.rss_bytes as f64 / 1048576.0))
                .collect(),
        )],
        false,
    );
    let mut legend = String::new();
    for (i, c) in configs.iter().enumerate() {
        let _ = write!(
            legend,
            r#"<li><span style="color:{}">&#9632;</span> {}</li>"#,
            COLORS[i % COLORS.len()],
            escape(&label(c))
        );
    }
    let mut rows = String::new();
    for x in &r.runs {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            escape(&label(&x.config)), x.concurrency, x.throughput, x.p50_ms, x.p99_ms, x.cpu_cores_peak,
            x.rss_peak_bytes as f64 / 1048576.0, x.errors,
            x.device_seconds.map_or_else(|| "-".to_string(), |d| format!("{:.0}%", 100.0 * d / x.duration_s.max(1e-9)))
        );
    }
    let rec = match &r.recommendation {
        Some(rec) => format!(
            "<h2>Recommendation</h2><p>{} at concurrency {}: {:.1} requests/s, p99 {:.2} ms (SLO {} ms: {}).</p>\
             <p>CPU {} (measured peak {:.2} cores + {:.0}% headroom), memory {} (measured peak {:.1} MiB + {:.0}% headroom). \
             Kubernetes size: {}; cloud: {}.</p><pre>{}</pre><pre>{}</pre>",
            escape(&label(&rec.config)), rec.concurrency, rec.expected_throughput, rec.expected_p99_ms, r.slo_p99_ms,
            if rec.slo_met { "met" } else { "NOT met" }, rec.cpu, rec.measured_peak_cpu_cores,
            super::recommend::HEADROOM * 100.0, rec.memory, rec.measured_peak_rss_bytes as f64 / 1048576.0,
            super::recommend::HEADROOM * 100.0, rec.sizes.kubernetes.as_deref().unwrap_or("none fits"),
            escape(&rec.sizes.cloud.join(", ")), escape(&rec.bundle_toml), escape(&rec.kubernetes_resources)
        ),
        None => "<h2>Recommendation</h2><p>No run succeeded without errors.</p>".into(),
    };
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>ferroserve profile: {m}</title>\
         <style>body{{font-family:sans-serif;max-width:980px;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}</style></head>\
         <body><h1>Profile of {m} version {v}</h1><p>{cores} cores, budget {b:.0} s, p99 SLO {slo} ms, {n} runs.</p>{rec}\
         <h2>Charts</h2><ul>{legend}</ul>{throughput}{p99}{cpu}{mem}\
         <h2>Runs</h2><table><tr><th>configuration</th><th>concurrency</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>peak cores</th><th>peak MiB</th><th>errors</th><th>device busy</th></tr>{rows}</table>\
         {device}</body></html>",
        m = escape(&r.model), v = r.version, cores = r.cores, b = r.budget_s, slo = r.slo_p99_ms, n = r.runs.len(),
        device = device_table(r)
    )
}
