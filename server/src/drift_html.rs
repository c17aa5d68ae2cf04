//! The HTML page of `ferroserve drift --html`: per feature, the baseline's
//! and the capture's shares per bin drawn over each other (plotters, SVG
//! inline), with the scores against their thresholds.

use anyhow::Result;
use plotters::prelude::*;

use ferroserve_monitoring::drift::report::{FeatureReport, Report};

const W: u32 = 560;
const H: u32 = 260;

pub fn page(title: &str, r: &Report) -> Result<String> {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.drift{{color:#b00;font-weight:bold}}\
         section{{display:inline-block;vertical-align:top;margin:0 1em 1.5em 0}}</style></head><body>\
         <h1>{t}</h1><p>{rows} rows, {from} to {to}, against baseline {data} ({brows} rows, sha256 {sha}).</p>",
        t = esc(title),
        rows = r.window.rows,
        from = esc(r.window.from.as_deref().unwrap_or("?")),
        to = esc(r.window.to.as_deref().unwrap_or("?")),
        data = esc(&r.baseline.data),
        brows = r.baseline.rows,
        sha = esc(&r.baseline.sha256),
    );
    for (side, list) in [("Inputs", &r.features), ("Outputs", &r.outputs)] {
        if list.is_empty() {
            continue;
        }
        html.push_str(&format!("<h2>{side}</h2>"));
        for f in list.iter() {
            html.push_str(&feature(f)?);
        }
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn feature(f: &FeatureReport) -> Result<String> {
    let verdict = if f.drifted {
        "<span class=\"drift\">drift</span>"
    } else {
        "no drift"
    };
    let mut s = format!(
        "<section><h3>{} ({}): {verdict}</h3>{}<table><tr><th>method</th><th>score</th><th>threshold</th><th></th></tr>",
        esc(&f.name),
        esc(&f.kind),
        chart(f)?
    );
    for sc in &f.scores {
        let decides = if sc.method == f.method {
            " (decides)"
        } else {
            ""
        };
        s.push_str(&format!(
            "<tr><td>{}{decides}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>",
            sc.method,
            sc.value,
            sc.threshold,
            if sc.drifted {
                "<span class=\"drift\">crossed</span>"
            } else {
                ""
            }
        ));
    }
    let q = &f.quality;
    s.push_str(&format!(
        "</table><p>nulls {:.2}%, NaN {:.2}%, out of range {:.2}%, unseen {:.2}%</p></section>",
        q.null_rate * 100.0,
        q.nan_rate * 100.0,
        q.out_of_range_rate * 100.0,
        q.unseen_rate * 100.0
    ));
    Ok(s)
}

/// Reference bars (blue) and production bars (red), half transparent, on
/// the same bins.
fn chart(f: &FeatureReport) -> Result<String> {
    let h = &f.histogram;
    let bins = h.labels.len().max(1);
    let top = h
        .reference
        .iter()
        .chain(&h.current)
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..bins as f64, 0f64..top)?;
        let labels = h.labels.clone();
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(bins.min(8))
            .x_label_formatter(&|x| {
                labels
                    .get(*x as usize)
                    .map(|l| {
                        l.split(',')
                            .next()
                            .unwrap_or(l)
                            .trim_start_matches('[')
                            .to_string()
                    })
                    .unwrap_or_default()
            })
            .y_desc("share of rows")
            .draw()?;
        for (shares, color, label) in [
            (&h.reference, BLUE.mix(0.4), "baseline"),
            (&h.current, RED.mix(0.4), "production"),
        ] {
            c.draw_series(shares.iter().enumerate().map(|(i, &v)| {
                Rectangle::new(
                    [(i as f64 + 0.05, 0.0), (i as f64 + 0.95, v)],
                    color.filled(),
                )
            }))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        c.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
