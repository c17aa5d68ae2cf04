//! A model version's training baseline: per-feature reference statistics,
//! computed once from the training data (`ferroserve baseline`) and kept
//! with the version in the registry, so that every window of production
//! traffic is compared against the same numbers without the data.
//!
//! A numeric feature keeps two sets of quantile bins. The coarse ones
//! (Sturges' rule, as Evidently bins) feed PSI and Jensen–Shannon; the fine
//! ones (up to [`FINE_BINS`]) feed Kolmogorov–Smirnov and Wasserstein,
//! whose error on binned data shrinks with the bin width. A feature with
//! at most [`CATEGORICAL_MAX_DISTINCT`] distinct values, or any text
//! feature, is categorical: its values and their frequencies.

use serde::{Deserialize, Serialize};

use super::edges::bin_of;

/// Numeric features with at most this many distinct values are treated as
/// categories, as Evidently does.
pub const CATEGORICAL_MAX_DISTINCT: usize = 20;
/// Quantile bins for the KS and Wasserstein histograms.
pub const FINE_BINS: usize = 1000;
/// Values kept in a numeric feature's reservoir sample.
pub const RESERVOIR: usize = 1000;

/// The reference statistics of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub data: DataFile,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The model's inputs, feature by feature.
    pub features: Vec<Feature>,
    /// The model's outputs on the same data (prediction drift).
    #[serde(default)]
    pub outputs: Vec<Feature>,
}

/// The training data a baseline was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// The file's name as given.
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

/// Where a feature's values come from in a request: element `column` of
/// each row of tensor `tensor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub tensor: String,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub source: Source,
    /// Rows of the data, nulls included.
    pub rows: u64,
    /// Null (and NaN) values among them.
    pub nulls: u64,
    pub stats: FeatureStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureStats {
    Numeric(NumericStats),
    Categorical(CategoricalStats),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    pub mean: f64,
    /// Population standard deviation (numpy's default, which Evidently
    /// normalises the Wasserstein distance by).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Quantile edges by Sturges' rule, `counts.len() + 1` of them.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub fine_edges: Vec<f64>,
    pub fine_counts: Vec<u64>,
    /// A uniform sample of the values (reservoir sampling, fixed seed).
    pub sample: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalStats {
    /// The distinct values, most frequent first.
    pub values: Vec<Category>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub value: CategoryValue,
    pub count: u64,
}

/// A category is a number (of a numeric feature with few distinct values)
/// or a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategoryValue {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for CategoryValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CategoryValue::Number(x) => write!(f, "{x}"),
            CategoryValue::Text(s) => f.write_str(s),
        }
    }
}

/// One feature's values, as read from a data file or a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Numeric(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(v) => v.len(),
            Values::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Feature {
    /// The reference statistics of `values`.
    pub fn compute(name: String, source: Source, values: &Values) -> Feature {
        let rows = values.len() as u64;
        match values {
            Values::Text(v) => {
                let present: Vec<&str> = v.iter().flatten().map(String::as_str).collect();
                let nulls = rows - present.len() as u64;
                let mut freq: std::collections::HashMap<&str, u64> = Default::default();
                for s in present {
                    *freq.entry(s).or_default() += 1;
                }
                let mut values: Vec<Category> = freq
                    .into_iter()
                    .map(|(s, count)| Category {
                        value: CategoryValue::Text(s.to_string()),
                        count,
                    })
                    .collect();
                sort_categories(&mut values);
                Feature {
                    name,
                    source,
                    rows,
                    nulls,
                    stats: FeatureStats::Categorical(CategoricalStats { values }),
                }
            }
            Values::Numeric(v) => {
                let mut present: Vec<f64> = v
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .collect();
                let nulls = rows - present.len() as u64;
                present.sort_by(f64::total_cmp);
                let stats = numeric_or_categorical(&present);
                Feature {
                    name,
                    source,
                    rows,
                    nulls,
                    stats,
                }
            }
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self.stats, FeatureStats::Numeric(_))
    }
}

fn sort_categories(values: &mut [Category]) {
    values.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| match (&a.value, &b.value) {
                (CategoryValue::Number(x), CategoryValue::Number(y)) => x.total_cmp(y),
                (x, y) => x.to_string().cmp(&y.to_string()),
            })
    });
}

/// `sorted`: the non-null values in ascending order.
fn numeric_or_categorical(sorted: &[f64]) -> FeatureStats {
    let mut distinct: Vec<(f64, u64)> = Vec::new();
    for &x in sorted {
        match distinct.last_mut() {
            Some((v, n)) if *v == x => *n += 1,
            _ => {
                distinct.push((x, 1));
                if distinct.len() > CATEGORICAL_MAX_DISTINCT {
                    break;
                }
            }
        }
    }
    if distinct.len() <= CATEGORICAL_MAX_DISTINCT {
        let mut values: Vec<Category> = distinct
            .into_iter()
            .map(|(x, count)| Category {
                value: CategoryValue::Number(x),
                count,
            })
            .collect();
        sort_categories(&mut values);
        return FeatureStats::Categorical(CategoricalStats { values });
    }
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let var = sorted.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    let edges = quantile_edges(sorted, sturges_bins(n));
    let fine_edges = quantile_edges(sorted, FINE_BINS.min(n));
    FeatureStats::Numeric(NumericStats {
        mean,
        std: var.sqrt(),
        min: sorted[0],
        max: sorted[n - 1],
        counts: counts_on(&edges, sorted),
        fine_counts: counts_on(&fine_edges, sorted),
        edges,
        fine_edges,
        sample: reservoir(sorted.len(), RESERVOIR, |i| sorted[i]),
    })
}

/// Sturges' rule: ⌈log₂ n⌉ + 1 bins.
pub fn sturges_bins(n: usize) -> usize {
    ((n.max(1) as f64).log2().ceil() as usize + 1).max(1)
}

/// The `bins + 1` quantiles of `sorted` at k/bins (numpy's linear
/// interpolation), ties merged, so that every bin is non-empty in width.
pub fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let n = sorted.len();
    let mut edges: Vec<f64> = (0..=bins)
        .map(|k| {
            let pos = k as f64 / bins as f64 * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        })
        .collect();
    edges.dedup();
    edges
}

/// Counts of `values` in the bins between `edges` (values outside are
/// not counted; the reference has none).
fn counts_on(edges: &[f64], values: &[f64]) -> Vec<u64> {
    let bins = edges.len() - 1;
    let mut counts = vec![0u64; bins];
    for &x in values {
        let b = bin_of(edges, x);
        if (1..=bins).contains(&b) {
            counts[b - 1] += 1;
        }
    }
    counts
}

/// `keep` of `n` items chosen uniformly (Algorithm R), by a fixed-seed
/// generator so that the same data gives the same baseline.
fn reservoir(n: usize, keep: usize, item: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut out: Vec<f64> = (0..n.min(keep)).map(&item).collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in keep..n {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        if j < keep {
            out[j] = item(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(values: Vec<f64>) -> Feature {
        Feature::compute(
            "x".into(),
            Source {
                tensor: "input".into(),
                column: 0,
            },
            &Values::Numeric(values.into_iter().map(Some).collect()),
        )
    }

    #[test]
    fn many_distinct_values_are_numeric_with_sturges_quantile_bins() {
        let f = numeric((0..1000).map(f64::from).collect());
        let FeatureStats::Numeric(s) = f.stats else {
            panic!("numeric expected")
        };
        // ⌈log₂ 1000⌉ + 1 = 11 bins of 1000/11 values each, give or take one.
        assert_eq!(s.counts.len(), 11);
        assert_eq!(s.counts.iter().sum::<u64>(), 1000);
        assert!(
            s.counts.iter().all(|&c| (90..=92).contains(&c)),
            "{:?}",
            s.counts
        );
        assert_eq!(s.fine_counts.iter().sum::<u64>(), 1000);
        assert_eq!((s.min, s.max), (0.0, 999.0));
        assert!((s.mean - 499.5).abs() < 1e-9);
        assert_eq!(s.sample.len(), RESERVOIR);
    }

    #[test]
    fn few_distinct_values_and_texts_are_categories() {
        let f = numeric([1.0, 2.0, 2.0, 3.0].repeat(100));
        let FeatureStats::Categorical(c) = f.stats else {
            panic!("categorical expected")
        };
        assert_eq!(c.values[0].value, CategoryValue::Number(2.0));
        assert_eq!(c.values[0].count, 200);
        let t = Feature::compute(
            "t".into(),
            Source {
                tensor: "text".into(),
                column: 0,
            },
            &Values::Text(vec![
                Some("a".into()),
                None,
                Some("b".into()),
                Some("a".into()),
            ]),
        );
        assert_eq!(t.nulls, 1);
        let FeatureStats::Categorical(c) = t.stats else {
            panic!("categorical expected")
        };
        assert_eq!(c.values[0].value, CategoryValue::Text("a".into()));
    }

    #[test]
    fn nulls_and_nan_are_counted_not_binned() {
        let mut v: Vec<Option<f64>> = (0..100).map(|i| Some(f64::from(i))).collect();
        v.push(None);
        v.push(Some(f64::NAN));
        let f = Feature::compute(
            "x".into(),
            Source {
                tensor: "input".into(),
                column: 0,
            },
            &Values::Numeric(v),
        );
        assert_eq!((f.rows, f.nulls), (102, 2));
    }
}
