//! A deployment's drift monitor: built from the training baseline the
//! registry keeps with its version, tuned by the bundle's `[drift]`, its
//! threshold crossings emitted as `io.ferroserve.drift.detected` and
//! `io.ferroserve.drift.resolved`, and its latest report as JSON for
//! `GET /v2/models/{m}/drift`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferroserve_monitoring::drift::{
    Baseline, Closed, DriftSeries, DriftSettings, Method, Monitor, Observed, Rule, Rules, Snapshot,
    Watched,
};
use ferroserve_registry::{events::EventBus, lifecycle as types};
use ferroserve_runtime::manifest::{DriftConfig, DriftObserve};
use ferroserve_runtime::Model;
use serde_json::json;

/// The baseline recorded for `model` version `version`, if any. Blocking:
/// reads the registry.
pub fn load_baseline(repo: &Path, model: &str, version: u64) -> Result<Option<Baseline>, String> {
    let stored = ferroserve_registry::baselines::get(repo, model, version)
        .map_err(|e| format!("cannot read the baseline of {model}:{version}: {e}"))?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    serde_json::from_str(&stored.stats).map(Some).map_err(|e| {
        format!("the baseline of {model}:{version} recorded at {} cannot be read by this server: {e}; record it again with `ferroserve baseline`", stored.recorded_at)
    })
}

/// The monitoring crate's settings from a bundle's `[drift]`.
pub fn settings(config: &DriftConfig, captured: bool) -> DriftSettings {
    let method = |m: &str| m.parse::<Method>().ok();
    let rules = Rules {
        features: config
            .features
            .iter()
            .map(|(name, (m, t))| {
                (
                    name.clone(),
                    Rule {
                        method: m.as_deref().and_then(method),
                        threshold: *t,
                    },
                )
            })
            .collect(),
        thresholds: config
            .thresholds
            .iter()
            .filter_map(|(m, &t)| method(m).map(|m| (m, t)))
            .collect(),
    };
    let observed = match config.observe {
        Some(DriftObserve::All) => Observed::All,
        Some(DriftObserve::Captured) => Observed::Captured,
        None if captured => Observed::Captured,
        None => Observed::All,
    };
    DriftSettings {
        window_rows: config.window_rows,
        window_time: config.window_time,
        observed,
        rules,
    }
}

/// A running monitor of `model` on `endpoint/deployment`.
pub fn start(
    baseline: Baseline,
    model: &Model,
    endpoint: &str,
    deployment: &str,
    series: DriftSeries,
    events: EventBus,
) -> Result<Monitor, String> {
    let m = &model.manifest;
    for (name, (method, _)) in &m.drift.features {
        let Some(f) = baseline
            .features
            .iter()
            .chain(&baseline.outputs)
            .find(|f| &f.name == name)
        else {
            let names: Vec<&str> = baseline
                .features
                .iter()
                .chain(&baseline.outputs)
                .map(|f| f.name.as_str())
                .collect();
            return Err(format!(
                "{}: drift.features.{name}: the baseline has no feature {name:?} (its features: {names:?})",
                m.file.display()
            ));
        };
        if let Some(method) = method.as_deref().and_then(|s| s.parse::<Method>().ok()) {
            if !f.is_numeric() && !method.fits_categories() {
                return Err(format!(
                    "{}: drift.features.{name}.method: {method} needs a numeric feature; {name:?} is categorical in the baseline (use psi, jensenshannon or chisquare)",
                    m.file.display()
                ));
            }
        }
    }
    let watched = Watched {
        endpoint: endpoint.to_string(),
        deployment: deployment.to_string(),
        model: model.name.clone(),
        version: model.version_label.clone(),
    };
    let settings = settings(&m.drift, m.capture.is_some());
    let w = watched.clone();
    let on_close = Box::new(move |closed: &Closed| emit_crossings(&events, &w, closed));
    Monitor::new(
        Arc::new(baseline),
        &model.signature,
        m.batching.max_batch_size > 0,
        settings,
        watched,
        series,
        on_close,
    )
    .map_err(|e| format!("the version's training baseline does not fit the model: {e}"))
}

/// Closes `monitor`'s time windows on time: a thread that ticks it a
/// tenth of its `window_s` apart (10 ms to 1 s) for as long as the
/// deployment holds it. Nothing to do for windows by row count only.
pub fn start_clock(monitor: &Arc<Monitor>) {
    let Some(window) = monitor.settings().window_time else {
        return;
    };
    let period = (window / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let weak = Arc::downgrade(monitor);
    let spawned = std::thread::Builder::new()
        .name("drift-clock".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match weak.upgrade() {
                Some(m) => m.tick(),
                None => break,
            }
        });
    if let Err(e) = spawned {
        let w = monitor.watched();
        tracing::warn!(endpoint = %w.endpoint, deployment = %w.deployment, error = %e,
            "no drift clock: time windows close at the first request after their time");
    }
}

fn emit_crossings(events: &EventBus, w: &Watched, closed: &Closed) {
    let window = &closed.report.window;
    for c in &closed.crossings {
        let ty = if c.detected {
            types::DRIFT_DETECTED
        } else {
            types::DRIFT_RESOLVED
        };
        let data = json!({
            "endpoint": w.endpoint,
            "deployment": w.deployment,
            "model": w.model,
            "version": w.version,
            "side": c.side,
            "feature": c.feature,
            "method": c.method,
            "score": c.score,
            "threshold": c.threshold,
            "window": {"rows": window.rows, "from": window.from, "to": window.to},
        });
        events.emit(events.event(ty, &format!("{}/{}", w.endpoint, w.deployment), data));
    }
}

/// One deployment's drift as JSON: the last closed window's report (if a
/// window has closed yet) and the window filling now.
pub fn to_json(monitor: &Monitor, snap: &Snapshot) -> serde_json::Value {
    let w = monitor.watched();
    let b = monitor.baseline();
    let mut doc = json!({
        "endpoint": w.endpoint,
        "deployment": w.deployment,
        "model_version": w.version,
        "baseline": {
            "data": b.data.name,
            "rows": b.data.rows,
            "sha256": b.data.sha256,
            "created_at": b.created_at,
        },
        "observed": match monitor.settings().observed {
            Observed::All => "all",
            Observed::Captured => "captured",
        },
        "windows_closed": snap.windows,
        "open_window": {
            "rows": snap.open_rows,
            "closes_at_rows": snap.window_rows,
            "closes_after_seconds": snap.window_time.map(|t| t.as_secs_f64()),
        },
        "drifted": false,
        "window": null,
        "features": [],
        "outputs": [],
    });
    if let Some(r) = &snap.last {
        doc["drifted"] = json!(r.drifted);
        doc["window"] = json!(r.window);
        doc["features"] = json!(r.features);
        doc["outputs"] = json!(r.outputs);
    }
    doc
}
