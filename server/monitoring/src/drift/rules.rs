//! Which statistic decides whether a feature drifted, and at what value:
//! Evidently's and Azure ML's defaults unless a feature says otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A drift statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Wasserstein distance divided by the reference's standard deviation.
    Wasserstein,
    /// Two-sample Kolmogorov–Smirnov test; its score is the p-value.
    Ks,
    /// Population Stability Index.
    Psi,
    /// Jensen–Shannon distance.
    Jensenshannon,
    /// Pearson's chi-square test; its score is the p-value.
    Chisquare,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Wasserstein,
        Method::Ks,
        Method::Psi,
        Method::Jensenshannon,
        Method::Chisquare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Wasserstein => "wasserstein",
            Method::Ks => "ks",
            Method::Psi => "psi",
            Method::Jensenshannon => "jensenshannon",
            Method::Chisquare => "chisquare",
        }
    }

    /// Evidently's threshold: a distance at or above it, or a p-value
    /// below it, is drift.
    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Wasserstein => 0.1,
            Method::Ks => 0.05,
            Method::Psi => 0.2,
            Method::Jensenshannon => 0.1,
            Method::Chisquare => 0.05,
        }
    }

    /// Whether the score is a p-value (small means drift).
    pub fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::Chisquare)
    }

    /// Whether `score` crosses `threshold`.
    pub fn crosses(self, score: f64, threshold: f64) -> bool {
        if self.is_p_value() {
            score < threshold
        } else {
            score >= threshold
        }
    }

    /// Whether the method applies to a categorical feature (KS and
    /// Wasserstein need an order and a distance between values).
    pub fn fits_categories(self) -> bool {
        !matches!(self, Method::Wasserstein | Method::Ks)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                format!("expected one of {}, got {s:?}", names.join(", "))
            })
    }
}

/// A feature's own choice of method or threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub method: Option<Method>,
    pub threshold: Option<f64>,
}

/// Evidently's defaults, overridden per feature and per method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// By feature name.
    pub features: BTreeMap<String, Rule>,
    /// Thresholds replacing a method's default for every feature.
    pub thresholds: BTreeMap<Method, f64>,
}

/// Reference sets larger than this decide numeric drift by Wasserstein
/// distance, smaller ones by the KS test (Evidently's choice).
pub const LARGE_REFERENCE: u64 = 1000;

impl Rules {
    /// The method and threshold that decide `feature`'s drift.
    pub fn decide(&self, feature: &str, numeric: bool, reference_rows: u64) -> (Method, f64) {
        let rule = self.features.get(feature);
        let method = rule.and_then(|r| r.method).unwrap_or(if !numeric {
            Method::Jensenshannon
        } else if reference_rows > LARGE_REFERENCE {
            Method::Wasserstein
        } else {
            Method::Ks
        });
        let threshold = rule
            .and_then(|r| r.threshold)
            .unwrap_or_else(|| self.threshold(method));
        (method, threshold)
    }

    /// The threshold of `method` for features without their own.
    pub fn threshold(&self, method: Method) -> f64 {
        self.thresholds
            .get(&method)
            .copied()
            .unwrap_or_else(|| method.default_threshold())
    }
}
