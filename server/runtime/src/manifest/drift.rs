//! A bundle's `[drift]` section: how its deployments' drift windows are
//! cut and which statistic decides, per feature. Drift runs for a version
//! that has a training baseline in the registry (`ferroserve baseline`);
//! this section only tunes it. The statistics themselves are
//! `ferroserve-monitoring`'s; the method names are checked here so that a
//! typo fails the load naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    features: BTreeMap<String, FeatureRule>,
}

/// One feature's method and threshold, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
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

/// `observe = "captured"` needs a capture to observe.
pub fn check_source(drift: &DriftConfig, captured: bool) -> Result<(), (String, String)> {
    if drift.observe == Some(DriftObserve::Captured) && !captured {
        return Err((
            "drift.observe".into(),
            "\"captured\" needs a [capture] section (the captured requests are what the window sees); use \"all\" or add [capture]".into(),
        ));
    }
    Ok(())
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

/// A deployment's changes to its bundle's `[drift]` (`ferroserve deploy
/// --drift key=value`, a deployment's `drift` table in `serve --config`):
/// the section's keys, each optional; `thresholds` and `features` are
/// merged into the bundle's by method and by feature (a feature's method
/// and threshold each replace the bundle's). `window_s = 0` removes the
/// time window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeatureRule>,
}

impl DriftOverride {
    /// `base` with these keys replaced or merged, validated as the section is.
    pub fn apply(&self, base: &DriftConfig) -> Result<DriftConfig, (String, String)> {
        let mut features: BTreeMap<String, FeatureRule> = base
            .features
            .iter()
            .map(|(k, (method, threshold))| {
                let rule = FeatureRule {
                    method: method.clone(),
                    threshold: *threshold,
                };
                (k.clone(), rule)
            })
            .collect();
        for (name, rule) in &self.features {
            let merged = features.entry(name.clone()).or_default();
            if rule.method.is_some() {
                merged.method = rule.method.clone();
            }
            if rule.threshold.is_some() {
                merged.threshold = rule.threshold;
            }
        }
        let mut thresholds = base.thresholds.clone();
        thresholds.extend(self.thresholds.iter().map(|(k, v)| (k.clone(), *v)));
        let observe = match (&self.observe, base.observe) {
            (Some(o), _) => Some(o.clone()),
            (None, Some(DriftObserve::All)) => Some("all".into()),
            (None, Some(DriftObserve::Captured)) => Some("captured".into()),
            (None, None) => None,
        };
        validate(RawDrift {
            enabled: self.enabled.unwrap_or(base.enabled),
            window_rows: self.window_rows.unwrap_or(base.window_rows),
            window_s: self
                .window_s
                .unwrap_or_else(|| base.window_time.map_or(0, |t| t.as_secs())),
            observe,
            thresholds,
            features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> DriftConfig {
        let raw = "window_rows = 500\nwindow_s = 60\nobserve = \"captured\"\n\
                   thresholds = { psi = 0.3, ks = 0.01 }\n\
                   features.age = { method = \"psi\", threshold = 0.4 }\n";
        validate(toml::from_str(raw).unwrap()).unwrap()
    }

    #[test]
    fn thresholds_and_features_merge_and_the_rest_replaces() {
        let o: DriftOverride = toml::from_str(
            "window_rows = 7\nwindow_s = 0\nobserve = \"all\"\nthresholds = { psi = 0.5 }\n\
             features.age = { threshold = 0.9 }\nfeatures.income = { method = \"ks\" }\n",
        )
        .unwrap();
        let d = o.apply(&bundle()).unwrap();
        assert_eq!((d.window_rows, d.window_time), (7, None));
        assert_eq!(d.observe, Some(DriftObserve::All));
        assert_eq!(d.thresholds["psi"], 0.5);
        assert_eq!(d.thresholds["ks"], 0.01);
        assert_eq!(d.features["age"], (Some("psi".into()), Some(0.9)));
        assert_eq!(d.features["income"], (Some("ks".into()), None));
        assert_eq!(DriftOverride::default().apply(&bundle()).unwrap(), bundle());
    }

    #[test]
    fn overridden_values_are_validated_naming_the_key() {
        let o: DriftOverride = toml::from_str("features.age = { method = \"median\" }").unwrap();
        assert_eq!(
            o.apply(&bundle()).unwrap_err().0,
            "drift.features.age.method"
        );
        let o: DriftOverride = toml::from_str("thresholds = { psi = -1.0 }").unwrap();
        assert_eq!(o.apply(&bundle()).unwrap_err().0, "drift.thresholds.psi");
        assert!(toml::from_str::<DriftOverride>("windows = 3").is_err());
        let captured = DriftConfig {
            observe: Some(DriftObserve::Captured),
            ..DriftConfig::default()
        };
        assert_eq!(
            check_source(&captured, false).unwrap_err().0,
            "drift.observe"
        );
        assert!(check_source(&captured, true).is_ok());
    }
}
