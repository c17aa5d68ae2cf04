//! The drift gauges, labelled by endpoint, deployment, side (`input` or
//! `output`) and feature; each closed window sets them, so a dashboard
//! shows the latest window's scores.

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::report::Report;

#[derive(Clone)]
pub struct DriftSeries {
    score: GaugeVec,
    threshold: GaugeVec,
    detected: IntGaugeVec,
    quality: GaugeVec,
    window_rows: IntGaugeVec,
    windows: IntCounterVec,
}

impl Default for DriftSeries {
    fn default() -> Self {
        DriftSeries::new()
    }
}

impl DriftSeries {
    pub fn new() -> DriftSeries {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let feature = ["endpoint", "deployment", "side", "feature"];
        DriftSeries {
            score: gauge(
                "ferroserve_drift_score",
                "Drift score of the last window, by feature and method (a distance, or a p-value for ks and chisquare)",
                &["endpoint", "deployment", "side", "feature", "method"],
            ),
            threshold: gauge(
                "ferroserve_drift_threshold",
                "Threshold of the method that decides a feature's drift",
                &["endpoint", "deployment", "side", "feature", "method"],
            ),
            detected: IntGaugeVec::new(
                Opts::new(
                    "ferroserve_drift_detected",
                    "1 if the feature drifted in the last window, else 0",
                ),
                &feature,
            )
            .expect("valid metric"),
            quality: gauge(
                "ferroserve_drift_data_quality",
                "Share of the last window's rows that were null, NaN, outside the reference range or unseen categories",
                &["endpoint", "deployment", "side", "feature", "rate"],
            ),
            window_rows: IntGaugeVec::new(
                Opts::new("ferroserve_drift_window_rows", "Rows in the last closed drift window"),
                &["endpoint", "deployment"],
            )
            .expect("valid metric"),
            windows: IntCounterVec::new(
                Opts::new("ferroserve_drift_windows_total", "Drift windows closed and scored"),
                &["endpoint", "deployment"],
            )
            .expect("valid metric"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.score.clone()),
            Box::new(self.threshold.clone()),
            Box::new(self.detected.clone()),
            Box::new(self.quality.clone()),
            Box::new(self.window_rows.clone()),
            Box::new(self.windows.clone()),
        ]
    }

    /// Sets every gauge of `endpoint/deployment` from a closed window.
    pub fn record(&self, endpoint: &str, deployment: &str, report: &Report) {
        self.windows
            .with_label_values(&[endpoint, deployment])
            .inc();
        self.window_rows
            .with_label_values(&[endpoint, deployment])
            .set(report.window.rows as i64);
        for (side, list) in [("input", &report.features), ("output", &report.outputs)] {
            for f in list {
                let l = [endpoint, deployment, side, f.name.as_str()];
                self.detected
                    .with_label_values(&l)
                    .set(i64::from(f.drifted));
                for s in &f.scores {
                    let m = s.method.as_str();
                    self.score
                        .with_label_values(&[endpoint, deployment, side, &f.name, m])
                        .set(s.value);
                }
                self.threshold
                    .with_label_values(&[endpoint, deployment, side, &f.name, f.method.as_str()])
                    .set(f.threshold);
                let q = &f.quality;
                for (rate, v) in [
                    ("null", q.null_rate),
                    ("nan", q.nan_rate),
                    ("out_of_range", q.out_of_range_rate),
                    ("unseen", q.unseen_rate),
                ] {
                    self.quality
                        .with_label_values(&[endpoint, deployment, side, &f.name, rate])
                        .set(v);
                }
            }
        }
    }
}
