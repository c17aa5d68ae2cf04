//! A bundle's `[capture]` section: which requests the server copies to
//! Parquet files for people and for drift statistics, and what of them.
//! Validated here so a typo fails the load naming the key; the writer
//! itself is `ferroserve-monitoring`'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a captured row may keep; `keep` names a subset (default: all).
pub const KEEP_FIELDS: [&str; 9] = [
    "inputs",
    "outputs",
    "request_id",
    "endpoint",
    "deployment",
    "model_version",
    "timestamp",
    "latency",
    "status",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    #[serde(default = "one")]
    sample_rate: f64,
    #[serde(default = "yes")]
    always_errors: bool,
    #[serde(default)]
    keep: Option<Vec<String>>,
    sink: Option<String>,
    #[serde(default = "default_file_mb")]
    max_file_mb: u64,
    #[serde(default = "default_file_age_s")]
    max_file_age_s: u64,
    #[serde(default = "default_queue")]
    queue: usize,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_file_mb() -> u64 {
    64
}
fn default_file_age_s() -> u64 {
    300
}
fn default_queue() -> usize {
    10_000
}

/// The validated section.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// 0 to 1, decided by request id.
    pub sample_rate: f64,
    pub always_errors: bool,
    /// Names from [`KEEP_FIELDS`], each once.
    pub keep: Vec<String>,
    /// The files' root folder; a relative path is relative to the server's
    /// working directory.
    pub sink: PathBuf,
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    pub queue: usize,
}

impl CaptureConfig {
    pub fn keeps(&self, field: &str) -> bool {
        self.keep.iter().any(|k| k == field)
    }
}

/// `Err((key, problem))` names the key under `capture.`.
pub(super) fn validate(raw: RawCapture) -> Result<CaptureConfig, (String, String)> {
    let key = |k: &str| format!("capture.{k}");
    if !(0.0..=1.0).contains(&raw.sample_rate) {
        return Err((
            key("sample_rate"),
            format!("expected a fraction from 0 to 1, got {}", raw.sample_rate),
        ));
    }
    let sink = match raw.sink.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        _ => {
            return Err((
                key("sink"),
                "expected the folder the capture files go to, got none".into(),
            ))
        }
    };
    let keep = match raw.keep {
        None => KEEP_FIELDS.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            for (i, k) in list.iter().enumerate() {
                if !KEEP_FIELDS.contains(&k.as_str()) {
                    return Err((
                        format!("capture.keep[{i}]"),
                        format!("expected one of {KEEP_FIELDS:?}, got {k:?}"),
                    ));
                }
                if list[..i].contains(k) {
                    return Err((
                        format!("capture.keep[{i}]"),
                        format!("{k:?} is listed twice"),
                    ));
                }
            }
            list
        }
    };
    for (name, value) in [
        ("max_file_mb", raw.max_file_mb),
        ("max_file_age_s", raw.max_file_age_s),
        ("queue", raw.queue as u64),
    ] {
        if value == 0 {
            return Err((key(name), "expected at least 1, got 0".into()));
        }
    }
    Ok(CaptureConfig {
        sample_rate: raw.sample_rate,
        always_errors: raw.always_errors,
        keep,
        sink,
        max_file_bytes: raw.max_file_mb.saturating_mul(1 << 20),
        max_file_age: Duration::from_secs(raw.max_file_age_s),
        queue: raw.queue,
    })
}

/// A deployment's changes to its bundle's `[capture]` (`ferroserve deploy
/// --capture key=value`, a deployment's `capture` table in `serve
/// --config`): the section's keys, each optional, so that a canary can be
/// captured at a higher rate than the rest or into its own sink without a
/// new bundle version; `enabled = false` turns capture off for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_age_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
}

impl CaptureOverride {
    /// The deployment's capture: `base` (the bundle's section, if any) with
    /// these keys replaced, validated as the section is. Without a bundle
    /// section, any key but `enabled = false` starts one from the defaults
    /// (and then needs `sink`).
    pub fn apply(
        &self,
        base: Option<&CaptureConfig>,
    ) -> Result<Option<CaptureConfig>, (String, String)> {
        if self.enabled == Some(false) || (base.is_none() && self == &CaptureOverride::default()) {
            return Ok(None);
        }
        let mut raw = match base {
            Some(c) => RawCapture {
                sample_rate: c.sample_rate,
                always_errors: c.always_errors,
                keep: Some(c.keep.clone()),
                sink: Some(c.sink.display().to_string()),
                max_file_mb: c.max_file_bytes >> 20,
                max_file_age_s: c.max_file_age.as_secs(),
                queue: c.queue,
            },
            None => RawCapture {
                sample_rate: one(),
                always_errors: yes(),
                keep: None,
                sink: None,
                max_file_mb: default_file_mb(),
                max_file_age_s: default_file_age_s(),
                queue: default_queue(),
            },
        };
        if let Some(v) = self.sample_rate {
            raw.sample_rate = v;
        }
        if let Some(v) = self.always_errors {
            raw.always_errors = v;
        }
        if let Some(v) = &self.keep {
            raw.keep = Some(v.clone());
        }
        if let Some(v) = &self.sink {
            raw.sink = Some(v.clone());
        }
        if let Some(v) = self.max_file_mb {
            raw.max_file_mb = v;
        }
        if let Some(v) = self.max_file_age_s {
            raw.max_file_age_s = v;
        }
        if let Some(v) = self.queue {
            raw.queue = v;
        }
        validate(raw).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> CaptureConfig {
        validate(
            toml::from_str(
                "sink = \"/bundle\"\nsample_rate = 0.5\nkeep = [\"inputs\"]\nmax_file_mb = 3",
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn an_override_replaces_only_its_keys() {
        let o = CaptureOverride {
            sample_rate: Some(0.1),
            sink: Some("/canary".into()),
            ..Default::default()
        };
        let c = o.apply(Some(&bundle())).unwrap().unwrap();
        assert_eq!(
            (c.sample_rate, c.sink.as_path()),
            (0.1, std::path::Path::new("/canary"))
        );
        assert_eq!(c.keep, vec!["inputs".to_string()]);
        assert_eq!(c.max_file_bytes, 3 << 20);
        // Nothing to change: the bundle's section as it is.
        assert_eq!(
            CaptureOverride::default().apply(Some(&bundle())).unwrap(),
            Some(bundle())
        );
    }

    #[test]
    fn enabled_false_turns_capture_off_and_a_sink_turns_it_on() {
        let off = CaptureOverride {
            enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(off.apply(Some(&bundle())).unwrap(), None);
        assert_eq!(CaptureOverride::default().apply(None).unwrap(), None);
        let on = CaptureOverride {
            sink: Some("/own".into()),
            ..Default::default()
        };
        let c = on.apply(None).unwrap().unwrap();
        assert_eq!((c.sample_rate, c.keep.len()), (1.0, KEEP_FIELDS.len()));
        // Turned on without a sink of its own or the bundle's: named.
        let rate = CaptureOverride {
            sample_rate: Some(0.2),
            ..Default::default()
        };
        assert_eq!(rate.apply(None).unwrap_err().0, "capture.sink");
    }

    #[test]
    fn overridden_values_are_validated_as_the_section_is() {
        let bad = CaptureOverride {
            sample_rate: Some(1.5),
            ..Default::default()
        };
        let (key, problem) = bad.apply(Some(&bundle())).unwrap_err();
        assert_eq!(key, "capture.sample_rate");
        assert!(problem.contains("got 1.5"), "{problem}");
    }
}
