//! The profile's JSON report (schema: `profiles/report.schema.json`) and a
//! self-contained HTML page with SVG charts drawn by plotters (no scripts,
//! no external files, no fonts read at run time: text stays SVG `<text>`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    /// Files `--emit` wrote beside the report (not part of report.json).
    #[serde(skip)]
    pub emitted: Vec<std::path::PathBuf>,
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

/// One colour per configuration, shared by the charts and the HTML legend
/// list above them so that a configuration reads the same everywhere.
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

fn css_color(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// The chart's size in pixels without its legend; the legend sits below
/// the plot, one row per series, so that long configuration names never
/// cover the lines.
const CHART_W: u32 = 640;
const CHART_H: u32 = 320;
const LEGEND_ROW: u32 = 18;
/// Font sizes as plotters takes them: its SVG backend writes them divided
/// by 1.24, so these come out at about 16, 11, 12 and 12 px.
const FONT_TITLE: u32 = 20;
const FONT_TICK: u32 = 14;
const FONT_AXIS: u32 = 15;
const FONT_LEGEND: u32 = 15;

/// A line series: its legend name and its (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// Tick labels as the shortest decimal that keeps six places, so that
/// `0.30000000000000004` reads `0.3` and `1500` stays `1500` whatever the
/// axis's span.
fn tick(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// `[lo, hi)` for a linear axis that starts at zero (as the reports always
/// have, so that small differences are not magnified) and leaves 10 % of
/// room above the largest value; never empty, so one point or none still
/// gives a drawable axis.
fn linear_range(values: impl Iterator<Item = f64>, headroom: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = if hi > 0.0 { hi * headroom } else { hi };
    if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        lo..hi
    } else {
        lo..lo + 1.0
    }
}

/// A log2 axis from the power of two at or below the smallest value to the
/// one at or above the largest, with a tick at each power of two (every
/// other one when there are many), since concurrency is swept in powers of
/// two and a base-10 log axis would label none of them.
fn log2_axis(values: impl Iterator<Item = f64>) -> (std::ops::Range<f64>, Vec<f64>) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (mut e0, mut e1) = if lo.is_finite() {
        (lo.log2().floor() as i32, hi.log2().ceil() as i32)
    } else {
        (0, 1)
    };
    e0 = e0.clamp(-30, 60);
    e1 = e1.clamp(e0 + 1, 61);
    let step = if e1 - e0 > 8 { 2 } else { 1 };
    let ticks = (e0..=e1).step_by(step).map(|e| 2f64.powi(e)).collect();
    (2f64.powi(e0)..2f64.powi(e1), ticks)
}

/// An SVG line chart drawn by plotters: each series is a line with its
/// points marked (a lone point would otherwise be invisible), the x axis
/// linear from zero or log2 (concurrency), the y axis linear from zero.
/// Points that cannot be placed (not finite, or not positive on a log
/// axis) are left out rather than bending the axes; with nothing left the
/// chart still has its axes and legend and says "no data".
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    let series: Vec<Series> = series
        .iter()
        .map(|(name, pts)| {
            let pts = pts
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0))
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let xs = || series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let ys = linear_range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 1.1);
    let height = CHART_H + LEGEND_ROW * series.len() as u32 + if series.is_empty() { 0 } else { 8 };
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, (CHART_W, height)).into_drawing_area();
        let drawn = if log_x {
            let (range, ticks) = log2_axis(xs());
            draw(
                &root,
                title,
                x_label,
                y_label,
                &series,
                range.log_scale().base(2.0).with_key_points(ticks),
                ys,
            )
        } else {
            draw(
                &root,
                title,
                x_label,
                y_label,
                &series,
                linear_range(xs(), 1.0),
                ys,
            )
        };
        drawn.and_then(|()| root.present().map_err(Into::into))
    };
    match drawn {
        // The <title> names the chart to screen readers, as the hand-made
        // charts did; plotters has no element for it.
        Ok(()) => match svg.find(">\n") {
            Some(at) => {
                svg.insert_str(at + 2, &format!("<title>{}</title>\n", escape(title)));
                svg
            }
            None => svg,
        },
        // Not expected from an in-memory SVG, but a report without one chart
        // is better than no report.
        Err(e) => format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="40" viewBox="0 0 {CHART_W} 40"><title>{t}</title><text x="10" y="25" font-family="sans-serif" font-size="12">{t}: chart could not be drawn ({e})</text></svg>"#,
            t = escape(title),
            e = escape(&e.to_string())
        ),
    }
}

/// Draws one chart on `root`, generic over the x axis so that linear and
/// log2 share the layout.
fn draw<X>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x: X,
    y: std::ops::Range<f64>,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_vertically(CHART_H);
    let mut c = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", FONT_TITLE))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(10)
        .y_labels(6)
        .label_style(("sans-serif", FONT_TICK))
        .axis_desc_style(("sans-serif", FONT_AXIS))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(TRANSPARENT)
        .draw()?;
    let mut any = false;
    for (i, (_, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        any |= !pts.is_empty();
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        c.draw_series(PointSeries::of_element(
            pts.iter().copied(),
            3,
            color.filled(),
            &|p, s, st| Circle::new(p, s, st),
        ))?;
    }
    if !any {
        let area = c.plotting_area();
        let (w, h) = area.dim_in_pixel();
        area.strip_coord_spec().draw(&Text::new(
            "no data",
            (w as i32 / 2, h as i32 / 2),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK.mix(0.6))
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }
    // The legend is drawn here rather than by `configure_series_labels`,
    // which clips to the plotting area and so could only cover the lines.
    let left = c.plotting_area().get_pixel_range().0.start - root.get_pixel_range().0.start;
    for (i, (name, _)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = (LEGEND_ROW * i as u32 + LEGEND_ROW / 2) as i32;
        legend.draw(&PathElement::new(
            [(left, y), (left + 24, y)],
            color.stroke_width(2),
        ))?;
        legend.draw(&Circle::new((left + 12, y), 3, color.filled()))?;
        legend.draw(&Text::new(
            name.as_str(),
            (left + 32, y),
            ("sans-serif", FONT_LEGEND)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
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
        "concurrency (connections, log2 scale)",
        "throughput (requests/s)",
        &by_config(&|x| x.throughput),
        true,
    );
    let p99 = chart(
        "p99 latency against concurrency",
        "concurrency (connections, log2 scale)",
        "p99 latency (ms)",
        &by_config(&|x| x.p99_ms),
        true,
    );
    let cpu = chart(
        "CPU over time (server and its workers)",
        "time (s)",
        "CPU (cores)",
        &[(
            "CPU (server and its workers)".into(),
            r.timeline.iter().map(|p| (p.t_s, p.cpu_cores)).collect(),
        )],
        false,
    );
    let mem = chart(
        "Resident memory over time",
        "time (s)",
        "resident memory (MiB)",
        &[(
            "resident set size".into(),
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
            css_color(COLORS[i % COLORS.len()]),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: Config, concurrency: usize, throughput: f64, p99_ms: f64) -> Run {
        Run {
            config,
            concurrency,
            requests: 100,
            ok: 100,
            errors: 0,
            throughput,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            cpu_cores_avg: 1.0,
            cpu_cores_peak: 1.5,
            rss_peak_bytes: 64 << 20,
            started_s: 0.0,
            duration_s: 1.0,
            device_seconds: None,
        }
    }

    const A: Config = Config {
        instances: 1,
        max_batch_size: 8,
        max_queue_delay_us: 0,
    };
    const B: Config = Config {
        instances: 2,
        max_batch_size: 32,
        max_queue_delay_us: 500,
    };

    /// Two configurations over concurrency 1..64 (plus a refinement at 40)
    /// and a ten-second timeline.
    fn sample() -> Report {
        let mut runs = Vec::new();
        for (i, &n) in [1usize, 4, 16, 64].iter().enumerate() {
            runs.push(run(A, n, 100.0 * (i + 1) as f64, 2.0 + i as f64));
            runs.push(run(B, n, 150.0 * (i + 1) as f64, 3.0 + 2.0 * i as f64));
        }
        runs.push(run(B, 40, 520.0, 8.5));
        Report {
            schema_version: SCHEMA_VERSION,
            model: "mlp".into(),
            version: 1,
            slo_p99_ms: 50.0,
            budget_s: 10.0,
            cores: 4,
            runs,
            timeline: (0..=20)
                .map(|i| TimelinePoint {
                    t_s: i as f64 * 0.5,
                    cpu_cores: 0.5 + (i % 5) as f64 * 0.4,
                    rss_bytes: (100 + 3 * i) << 20,
                })
                .collect(),
            recommendation: None,
            device: None,
            emitted: Vec::new(),
        }
    }

    /// The inline SVG documents of a page, in order.
    fn svgs(html: &str) -> Vec<&str> {
        html.match_indices("<svg")
            .map(|(at, _)| {
                let end = html[at..].find("</svg>").expect("every <svg> is closed") + at;
                &html[at..end + "</svg>".len()]
            })
            .collect()
    }

    /// A chart as a reader sees it, from a real XML parse (which is also
    /// the well-formedness check).
    struct Seen {
        title: String,
        texts: Vec<String>,
        /// Numeric labels left of the plot (right-aligned): the y ticks.
        y_ticks: Vec<f64>,
        /// Numeric labels under the plot (centred): the x ticks.
        x_ticks: Vec<f64>,
        /// (stroke colour, number of points) of each polyline.
        lines: Vec<(String, usize)>,
    }

    fn seen(svg: &str) -> Seen {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let title = root
            .children()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text())
            .expect("a <title>")
            .to_string();
        let (mut texts, mut y_ticks, mut x_ticks, mut lines) = (vec![], vec![], vec![], vec![]);
        for n in root.descendants() {
            if n.has_tag_name("text") {
                let t = n.text().unwrap_or("").trim().to_string();
                if let Ok(v) = t.parse::<f64>() {
                    match n.attribute("text-anchor") {
                        Some("end") => y_ticks.push(v),
                        Some("middle") => x_ticks.push(v),
                        other => panic!("a number anchored {other:?}: {t}"),
                    }
                }
                texts.push(t);
            } else if n.has_tag_name("polyline") {
                let points = n
                    .attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count();
                lines.push((n.attribute("stroke").unwrap_or("").to_string(), points));
            }
        }
        Seen {
            title,
            texts,
            y_ticks,
            x_ticks,
            lines,
        }
    }

    fn color(i: usize) -> String {
        css_color(COLORS[i]).to_uppercase()
    }

    #[test]
    fn each_chart_has_its_title_axes_with_units_legend_ticks_and_lines() {
        let r = sample();
        let page = html(&r);
        assert!(!page.contains("<script") && !page.contains("<image") && !page.contains("href="));
        let charts = svgs(&page);
        assert_eq!(charts.len(), 4, "one <svg> per chart");
        let configs = [label(&A), label(&B)];
        let cpu_max = r.timeline.iter().map(|p| p.cpu_cores).fold(0.0, f64::max);
        let mib_max = r.timeline.iter().map(|p| p.rss_bytes).max().unwrap() as f64 / 1048576.0;
        // (title, x label, y label, series names, points per series, x ticks
        // allowed within, largest y value)
        type Want<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Vec<String>,
            Vec<usize>,
            (f64, f64),
            f64,
        );
        let want: [Want; 4] = [
            (
                "Throughput against concurrency",
                "concurrency (connections, log2 scale)",
                "throughput (requests/s)",
                configs.to_vec(),
                vec![4, 5],
                (1.0, 64.0),
                600.0,
            ),
            (
                "p99 latency against concurrency",
                "concurrency (connections, log2 scale)",
                "p99 latency (ms)",
                configs.to_vec(),
                vec![4, 5],
                (1.0, 64.0),
                9.0,
            ),
            (
                "CPU over time (server and its workers)",
                "time (s)",
                "CPU (cores)",
                vec!["CPU (server and its workers)".into()],
                vec![21],
                (0.0, 10.0),
                cpu_max,
            ),
            (
                "Resident memory over time",
                "time (s)",
                "resident memory (MiB)",
                vec!["resident set size".into()],
                vec![21],
                (0.0, 10.0),
                mib_max,
            ),
        ];
        for (svg, (title, x_label, y_label, names, points, (x_lo, x_hi), y_max)) in
            charts.iter().zip(want)
        {
            let s = seen(svg);
            assert_eq!(s.title, title);
            for t in [title, x_label, y_label] {
                assert!(
                    s.texts.iter().any(|x| x == t),
                    "{title}: no {t:?} in {:?}",
                    s.texts
                );
            }
            for n in &names {
                assert!(s.texts.contains(n), "{title}: no legend entry {n:?}");
            }
            assert!(!s.texts.iter().any(|t| t == "no data"), "{title}");
            // Ticks: numbers spanning the data, not a default 0..1.
            assert!(s.y_ticks.len() >= 3, "{title}: {:?}", s.y_ticks);
            assert!(
                s.y_ticks.iter().all(|&v| (0.0..=y_max * 1.1).contains(&v)),
                "{title}: {:?}",
                s.y_ticks
            );
            assert!(s.y_ticks.contains(&0.0), "{title}: {:?}", s.y_ticks);
            assert!(
                s.y_ticks.iter().any(|&v| v >= y_max / 2.0),
                "{title}: {:?}",
                s.y_ticks
            );
            assert!(s.x_ticks.len() >= 3, "{title}: {:?}", s.x_ticks);
            assert!(
                s.x_ticks.iter().all(|&v| (x_lo..=x_hi).contains(&v)),
                "{title}: {:?}",
                s.x_ticks
            );
            assert!(
                s.x_ticks.contains(&x_lo) && s.x_ticks.contains(&x_hi),
                "{title}: {:?}",
                s.x_ticks
            );
            if x_label.contains("log2") {
                let powers: Vec<f64> = (0..=6).map(|e| 2f64.powi(e)).collect();
                assert_eq!(s.x_ticks, powers, "{title}: a tick at each power of two");
            }
            // One line per series in its colour, through each of its points
            // (the legend's sample lines have two).
            for (i, n) in points.iter().enumerate() {
                assert!(
                    s.lines.contains(&(color(i), *n)),
                    "{title}: no line of {n} points in {}: {:?}",
                    color(i),
                    s.lines
                );
            }
        }
    }

    #[test]
    fn empty_or_single_point_charts_are_still_charts() {
        let one = |x: f64, y: f64| vec![("only".to_string(), vec![(x, y)])];
        let cases: Vec<(bool, Vec<Series>, bool)> = vec![
            (false, vec![], true),
            (true, vec![], true),
            (false, vec![("idle".into(), vec![])], true),
            (true, vec![("idle".into(), vec![])], true),
            // Points a log axis cannot place, or not numbers at all.
            (
                true,
                vec![("zero".into(), vec![(0.0, 1.0), (-4.0, 2.0)])],
                true,
            ),
            (
                false,
                vec![(
                    "not numbers".into(),
                    vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)],
                )],
                true,
            ),
            (false, one(0.0, 0.0), false),
            (false, one(3.0, 2.0), false),
            (true, one(1.0, 5.0), false),
            (true, one(48.0, 1e6), false),
        ];
        for (log_x, series, empty) in cases {
            let svg = chart("A <chart> & more", "x (s)", "y (ms)", &series, log_x);
            let s = seen(&svg);
            assert_eq!(s.title, "A <chart> & more");
            for t in ["A <chart> & more", "x (s)", "y (ms)"] {
                assert!(s.texts.iter().any(|x| x == t), "{series:?}: no {t:?}");
            }
            for (name, _) in &series {
                assert!(s.texts.contains(name), "{series:?}: no legend entry");
            }
            assert_eq!(s.texts.iter().any(|t| t == "no data"), empty, "{series:?}");
            assert!(
                s.y_ticks.len() >= 2 && s.x_ticks.len() >= 2,
                "{series:?}: {:?} {:?}",
                s.x_ticks,
                s.y_ticks
            );
            assert!(s.x_ticks.windows(2).all(|w| w[0] < w[1]), "{:?}", s.x_ticks);
            if let [(_, pts)] = series.as_slice() {
                if let [(x, y)] = pts.as_slice() {
                    let (x_lo, x_hi) = (s.x_ticks[0], *s.x_ticks.last().unwrap());
                    assert!(x_lo <= *x && *x <= x_hi, "{x} outside {:?}", s.x_ticks);
                    assert!(
                        *s.y_ticks
                            .iter()
                            .fold(&0.0, |a, b| if b > a { b } else { a })
                            >= *y / 2.0
                    );
                    // A lone point is a marker, as a line of one point shows nothing.
                    assert!(svg.contains(&format!(r#"fill="{}""#, color(0))), "{svg}");
                }
            }
        }
    }

    #[test]
    fn a_report_with_no_runs_and_no_timeline_has_four_empty_charts() {
        let mut r = sample();
        r.runs.clear();
        r.timeline.clear();
        let page = html(&r);
        let charts = svgs(&page);
        assert_eq!(charts.len(), 4);
        for svg in charts {
            assert!(seen(svg).texts.iter().any(|t| t == "no data"));
        }
    }

    #[test]
    fn model_names_are_escaped() {
        let mut r = sample();
        r.model = "<img src=x onerror=alert(1)>&".into();
        let page = html(&r);
        assert!(!page.contains("<img"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&amp;"));
        for svg in svgs(&page) {
            seen(svg);
        }
    }

    #[test]
    fn ticks_and_log2_axes() {
        assert_eq!(tick(&(0.1 + 0.2)), "0.3");
        assert_eq!(tick(&1500.0), "1500");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&-0.0), "0");
        assert_eq!(tick(&0.000125), "0.000125");
        let (range, ticks) = log2_axis([1.0, 4.0, 40.0, 64.0].into_iter());
        assert_eq!(range, 1.0..64.0);
        assert_eq!(ticks, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        assert_eq!(log2_axis([3.0].into_iter()), (2.0..4.0, vec![2.0, 4.0]));
        assert_eq!(log2_axis([4.0].into_iter()), (4.0..8.0, vec![4.0, 8.0]));
        assert_eq!(log2_axis(std::iter::empty()), (1.0..2.0, vec![1.0, 2.0]));
        let (range, ticks) = log2_axis([1.0, 1024.0].into_iter());
        assert_eq!(range, 1.0..1024.0);
        assert_eq!(ticks, [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]);
        assert_eq!(linear_range(std::iter::empty(), 1.1), 0.0..1.0);
        assert_eq!(linear_range([0.0].into_iter(), 1.1), 0.0..1.0);
        assert_eq!(linear_range([2.0, 10.0].into_iter(), 1.0), 0.0..10.0);
    }
}
