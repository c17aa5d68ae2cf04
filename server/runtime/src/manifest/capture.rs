//! A bundle's `[capture]` section: which requests the server copies to
//! Parquet files for people and for drift statistics, and what of them.
//! Validated here so a typo fails the load naming the key; the writer
//! itself is `ferroserve-monitoring`'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
