//! A bundle's `[drift]` section: how its deployments' drift windows are
//! cut and which statistic decides, per feature. Drift runs for a version
//! that has a training baseline in the registry (`ferroserve baseline`);
//! this section only tunes it. The statistics themselves are
//! `ferroserve-monitoring`'s; the method names are checked here so that a
//! typo fails the load naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The statistics a feature may be judged by.
pub const METHODS: [&str; 5] = ["wasserstein", "ks", "psi", "jensenshannon", "chisquare"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_window_rows")]
    window_rows: u64,
    #[serde(default)]
    window_s: u64,
    #[serde(default)]
    observe: Option<String>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    features: BTreeMap<String, RawFeatureRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatureRule {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
}

fn yes() -> bool {
    true
}
fn default_window_rows() -> u64 {
    1000
}

/// Which requests fill the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftObserve {
    /// Every answered request.
    All,
    /// The captured ones (off the request path, on the capture writer).
    Captured,
}

/// The validated section.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    pub enabled: bool,
    pub window_rows: u64,
    pub window_time: Option<Duration>,
    /// `None`: the captured requests if the bundle has `[capture]`, else all.
    pub observe: Option<DriftObserve>,
    /// Method name -> threshold, for every feature.
    pub thresholds: BTreeMap<String, f64>,
    /// Feature name -> (method, threshold), each optional.
    pub features: BTreeMap<String, (Option<String>, Option<f64>)>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            enabled: true,
            window_rows: default_window_rows(),
            window_time: None,
            observe: None,
            thresholds: BTreeMap::new(),
            features: BTreeMap::new(),
        }
    }
}

fn check_method(key: String, m: &str) -> Result<(), (String, String)> {
    if METHODS.contains(&m) {
        Ok(())
    } else {
        Err((key, format!("expected one of {METHODS:?}, got {m:?}")))
    }
}

fn check_threshold(key: String, t: f64) -> Result<(), (String, String)> {
    if t.is_finite() && t >= 0.0 {
        Ok(())
    } else {
        Err((key, format!("expected a number >= 0, got {t}")))
    }
}

/// `Err((key, problem))` names the key under `drift.`.
pub(super) fn validate(raw: RawDrift) -> Result<DriftConfig, (String, String)> {
    if raw.window_rows == 0 {
        return Err((
            "drift.window_rows".into(),
            "expected at least 1, got 0".into(),
        ));
    }
    let observe = match raw.observe.as_deref() {
        None => None,
        Some("all") => Some(DriftObserve::All),
        Some("captured") => Some(DriftObserve::Captured),
        Some(other) => {
            return Err((
                "drift.observe".into(),
                format!("expected \"all\" or \"captured\", got {other:?}"),
            ))
        }
    };
    for (m, &t) in &raw.thresholds {
        check_method(format!("drift.thresholds.{m}"), m)?;
        check_threshold(format!("drift.thresholds.{m}"), t)?;
    }
    let mut features = BTreeMap::new();
    for (name, r) in raw.features {
        if let Some(m) = &r.method {
            check_method(format!("drift.features.{name}.method"), m)?;
        }
        if let Some(t) = r.threshold {
            check_threshold(format!("drift.features.{name}.threshold"), t)?;
        }
        features.insert(name, (r.method, r.threshold));
    }
    Ok(DriftConfig {
        enabled: raw.enabled,
        window_rows: raw.window_rows,
        window_time: (raw.window_s > 0).then(|| Duration::from_secs(raw.window_s)),
        observe,
        thresholds: raw.thresholds,
        features,
    })
}
