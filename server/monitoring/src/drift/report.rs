//! A window's counts against the baseline: every statistic per feature,
//! the one that decides, and the data-quality rates. The same report is
//! served at `GET /v2/models/{m}/drift` and printed by `ferroserve drift`.

use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, Feature, FeatureStats, NumericStats};
use super::histogram::NumericCounts;
use super::rules::{Method, Rules};
use super::stats;
use super::window::{Counts, Window};

/// Below this, the Wasserstein distance is divided by this instead of the
/// reference's standard deviation (Evidently's floor).
const MIN_NORM: f64 = 0.001;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub baseline: BaselineInfo,
    pub window: WindowInfo,
    /// Whether any input or output feature drifted.
    pub drifted: bool,
    pub features: Vec<FeatureReport>,
    pub outputs: Vec<FeatureReport>,
}

/// Which baseline the window was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineInfo {
    pub data: String,
    pub rows: u64,
    pub sha256: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// Rows compared (request rows, not requests).
    pub rows: u64,
    /// RFC 3339, UTC; absent for an empty window.
    pub from: Option<String>,
    pub to: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReport {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// The method that decides `drifted`, and its threshold.
    pub method: Method,
    pub threshold: f64,
    /// That method's score; absent when the window had no values.
    pub score: Option<f64>,
    pub drifted: bool,
    /// Every method's score.
    pub scores: Vec<Score>,
    pub quality: Quality,
    /// The reference and window shares per coarse bin (for charts).
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub method: Method,
    /// A distance, or a p-value for `ks` and `chisquare`.
    pub value: f64,
    pub threshold: f64,
    pub drifted: bool,
    /// The test statistic behind a p-value (KS's D, chi-square's χ²).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// How far the value on raw samples can be from this binned one
    /// (KS's statistic, the normalised Wasserstein distance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_bound: Option<f64>,
}

/// Shares of the window's rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub rows: u64,
    pub null_rate: f64,
    pub nan_rate: f64,
    /// Numeric values outside the reference's [min, max].
    pub out_of_range_rate: f64,
    /// Categories the reference never saw.
    pub unseen_rate: f64,
    pub reference_null_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Compares `window` with `baseline` by `rules`.
pub fn evaluate(baseline: &Baseline, window: &Window, rules: &Rules) -> Report {
    let side = |refs: &[Feature], counts: &[Counts]| -> Vec<FeatureReport> {
        refs.iter()
            .zip(counts)
            .map(|(f, c)| feature_report(f, c, rules))
            .collect()
    };
    let features = side(&baseline.features, &window.features);
    let outputs = side(&baseline.outputs, &window.outputs);
    let drifted = features.iter().chain(&outputs).any(|f| f.drifted);
    Report {
        baseline: BaselineInfo {
            data: baseline.data.name.clone(),
            rows: baseline.data.rows,
            sha256: baseline.data.sha256.clone(),
            created_at: baseline.created_at.clone(),
        },
        window: window.info(),
        drifted,
        features,
        outputs,
    }
}

fn feature_report(f: &Feature, counts: &Counts, rules: &Rules) -> FeatureReport {
    let (method, threshold) = rules.decide(&f.name, f.is_numeric(), f.rows - f.nulls);
    let score = |m: Method, value: f64, statistic: Option<f64>, error_bound: Option<f64>| {
        let threshold = if m == method {
            threshold
        } else {
            rules.threshold(m)
        };
        Score {
            method: m,
            value,
            threshold,
            drifted: m.crosses(value, threshold),
            statistic,
            error_bound,
        }
    };
    let reference_null_rate = ratio(f.nulls, f.rows);
    let (kind, scores, quality, histogram) = match (&f.stats, counts) {
        (FeatureStats::Numeric(r), Counts::Numeric(c)) => {
            let (scores, histogram) = numeric_scores(r, c, &score);
            let rows = c.n + c.nulls + c.nan;
            let quality = Quality {
                rows,
                null_rate: ratio(c.nulls, rows),
                nan_rate: ratio(c.nan, rows),
                out_of_range_rate: ratio(c.out_of_range(), rows),
                unseen_rate: 0.0,
                reference_null_rate,
            };
            ("numeric", scores, quality, histogram)
        }
        (FeatureStats::Categorical(r), Counts::Categorical(c)) => {
            let reference: Vec<u64> = r
                .values
                .iter()
                .map(|v| v.count)
                .chain(std::iter::once(0))
                .collect();
            let (pr, pc) = (stats::shares(&reference), stats::shares(&c.counts));
            let scores = if c.n() > 0 {
                binned_scores(&c.counts, &pr, &pc, &score)
            } else {
                Vec::new()
            };
            let rows = c.n() + c.nulls;
            let quality = Quality {
                rows,
                null_rate: ratio(c.nulls, rows),
                unseen_rate: ratio(c.unseen(), rows),
                reference_null_rate,
                ..Quality::default()
            };
            let labels = r
                .values
                .iter()
                .map(|v| v.value.to_string())
                .chain(std::iter::once("(unseen)".to_string()))
                .collect();
            let histogram = Histogram {
                labels,
                reference: pr,
                current: pc,
            };
            ("categorical", scores, quality, histogram)
        }
        // A window is always made from its baseline's kinds.
        _ => unreachable!("window counts of another kind than the baseline feature"),
    };
    let decided = scores.iter().find(|s| s.method == method);
    FeatureReport {
        name: f.name.clone(),
        kind: kind.into(),
        method,
        threshold,
        score: decided.map(|s| s.value),
        drifted: decided.is_some_and(|s| s.drifted),
        scores,
        quality,
        histogram,
    }
}

fn numeric_scores(
    r: &NumericStats,
    c: &NumericCounts,
    score: &dyn Fn(Method, f64, Option<f64>, Option<f64>) -> Score,
) -> (Vec<Score>, Histogram) {
    // PSI and Jensen–Shannon on the coarse bins, the values below and
    // above the reference's range counted in the first and last bin.
    let bins = r.counts.len();
    let mut coarse: Vec<u64> = c.coarse[1..=bins].to_vec();
    coarse[0] += c.coarse[0];
    coarse[bins - 1] += c.coarse[bins + 1];
    let (pr, pc) = (stats::shares(&r.counts), stats::shares(&coarse));
    let labels = r
        .edges
        .windows(2)
        .enumerate()
        .map(|(i, e)| {
            let close = if i + 1 == bins { ']' } else { ')' };
            format!("[{}, {}{close}", short(e[0]), short(e[1]))
        })
        .collect();
    let histogram = Histogram {
        labels,
        reference: pr.clone(),
        current: pc.clone(),
    };
    let mut scores = Vec::new();
    if c.n == 0 {
        return (scores, histogram);
    }
    // KS and Wasserstein on the fine bins, with the slots below and above.
    let mut reference = Vec::with_capacity(c.fine.len());
    reference.push(0);
    reference.extend_from_slice(&r.fine_counts);
    reference.push(0);
    let norm = r.std.max(MIN_NORM);
    let e = &r.fine_edges;
    let mut bounds = Vec::with_capacity(e.len() + 2);
    bounds.push(c.min.min(e[0]));
    bounds.extend_from_slice(e);
    bounds.push(c.max.max(e[e.len() - 1]));
    if let Some(w) = stats::wasserstein(&bounds, &reference, &c.fine) {
        scores.push(score(
            Method::Wasserstein,
            w.distance / norm,
            None,
            Some(w.error_bound / norm),
        ));
    }
    if let Some(k) = stats::ks(&reference, &c.fine) {
        scores.push(score(
            Method::Ks,
            k.p_value,
            Some(k.statistic),
            Some(k.error_bound),
        ));
    }
    scores.extend(binned_scores(&coarse, &pr, &pc, score));
    (scores, histogram)
}

/// PSI, Jensen–Shannon and chi-square of a window's `counts` (shares `pc`)
/// against the reference shares `pr` on the same bins.
fn binned_scores(
    counts: &[u64],
    pr: &[f64],
    pc: &[f64],
    score: &dyn Fn(Method, f64, Option<f64>, Option<f64>) -> Score,
) -> Vec<Score> {
    let mut scores = vec![
        score(Method::Psi, stats::psi(pr, pc), None, None),
        score(
            Method::Jensenshannon,
            stats::jensen_shannon(pr, pc),
            None,
            None,
        ),
    ];
    if let Some((chi, p)) = stats::chi_square(counts, pr) {
        scores.push(score(Method::Chisquare, p, Some(chi), None));
    }
    scores
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn short(x: f64) -> String {
    format!("{:.4}", x)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}
