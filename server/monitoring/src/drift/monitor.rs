//! Online drift of one deployment: answered requests fill a tumbling
//! window (by rows, or by time, whichever comes first); a full window is
//! scored against the baseline, sets the gauges, and reports each feature
//! that crossed its threshold since the last window, up or down, once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferroserve_backend_core::{Signature, Tensor};

use super::baseline::Baseline;
use super::report::{evaluate, Report};
use super::rules::{Method, Rules};
use super::series::DriftSeries;
use super::window::{Plan, PlanError, Prepared, Window};

/// Which requests a deployment's drift window sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Every answered request, on the request's own thread.
    All,
    /// The captured ones, on the capture writer's thread (off the request
    /// path; the sample rate thins the window).
    Captured,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// A window closes when it holds this many rows...
    pub window_rows: u64,
    /// ...or when it is this old, if set (counted from its first row).
    pub window_time: Option<Duration>,
    pub observed: Observed,
    pub rules: Rules,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            window_rows: 1000,
            window_time: None,
            observed: Observed::All,
            rules: Rules::default(),
        }
    }
}

/// A feature that crossed its threshold between two windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub feature: String,
    /// `input` or `output`.
    pub side: &'static str,
    /// Drifted now (`io.ferroserve.drift.detected`), or back within its
    /// threshold (`io.ferroserve.drift.resolved`).
    pub detected: bool,
    pub method: Method,
    pub score: Option<f64>,
    pub threshold: f64,
}

/// What a closed window produced.
#[derive(Debug, Clone)]
pub struct Closed {
    pub report: Arc<Report>,
    pub crossings: Vec<Crossing>,
}

/// Called with every closed window, on the thread that closed it; it
/// must not block (the front end emits events from it).
pub type OnClose = Box<dyn Fn(&Closed) + Send + Sync>;

/// Who is watched, for the gauges.
#[derive(Debug, Clone)]
pub struct Watched {
    pub endpoint: String,
    pub deployment: String,
    pub model: String,
    pub version: String,
}

pub struct Monitor {
    prepared: Prepared,
    plan: Plan,
    settings: DriftSettings,
    watched: Watched,
    series: DriftSeries,
    on_close: OnClose,
    open: Mutex<Open>,
    closed: Mutex<Last>,
}

struct Open {
    window: Window,
    opened: Instant,
    seq: u64,
}

#[derive(Default)]
struct Last {
    seq: u64,
    report: Option<Arc<Report>>,
    /// Whether each feature (inputs, then outputs) drifted in the last
    /// scored window.
    drifted: Vec<bool>,
    windows: u64,
}

/// What `GET /v2/models/{m}/drift` shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The last closed window's report.
    pub last: Option<Arc<Report>>,
    /// Rows in the window filling now.
    pub open_rows: u64,
    pub window_rows: u64,
    pub window_time: Option<Duration>,
    pub windows: u64,
}

impl Monitor {
    /// A monitor of `baseline` for a model with this signature; fails if
    /// a baseline feature reads a tensor or column the model lacks.
    pub fn new(
        baseline: Arc<Baseline>,
        signature: &Signature,
        batched: bool,
        settings: DriftSettings,
        watched: Watched,
        series: DriftSeries,
        on_close: OnClose,
    ) -> Result<Monitor, PlanError> {
        let plan = Plan::new(&baseline, signature, batched)?;
        let window = Window::new(&baseline);
        Ok(Monitor {
            prepared: Prepared::new(baseline),
            plan,
            settings,
            watched,
            series,
            on_close,
            open: Mutex::new(Open {
                window,
                opened: Instant::now(),
                seq: 0,
            }),
            closed: Mutex::new(Last::default()),
        })
    }

    pub fn settings(&self) -> &DriftSettings {
        &self.settings
    }

    pub fn baseline(&self) -> &Baseline {
        &self.prepared.baseline
    }

    pub fn watched(&self) -> &Watched {
        &self.watched
    }

    /// Adds an answered request (named inputs, outputs in signature order)
    /// and scores the window if that filled it.
    pub fn observe(&self, inputs: &[(String, Tensor)], outputs: &[Tensor], at: SystemTime) {
        let full = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.window.rows == 0 {
                open.opened = Instant::now();
            }
            self.plan
                .observe(&self.prepared, &mut open.window, inputs, outputs, at);
            if open.window.rows >= self.settings.window_rows.max(1) || self.aged(&open) {
                Some(self.take(&mut open))
            } else {
                None
            }
        };
        if let Some((window, seq)) = full {
            self.score(window, seq);
        }
    }

    /// Closes the open window if it is old enough (with a `window_time`)
    /// and holds a row. Without this a quiet deployment's time window
    /// would stay open until its next request; the front end calls it
    /// from a clock.
    pub fn tick(&self) {
        let full = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            self.aged(&open).then(|| self.take(&mut open))
        };
        if let Some((window, seq)) = full {
            self.score(window, seq);
        }
    }

    /// A time window that holds a row and has been open its time (counted
    /// from its first row).
    fn aged(&self, open: &Open) -> bool {
        open.window.rows > 0
            && self
                .settings
                .window_time
                .is_some_and(|t| open.opened.elapsed() >= t)
    }

    fn take(&self, open: &mut Open) -> (Window, u64) {
        let fresh = Window::new(&self.prepared.baseline);
        open.seq += 1;
        open.opened = Instant::now();
        (std::mem::replace(&mut open.window, fresh), open.seq)
    }

    /// Scores a full window outside the lock that requests take.
    fn score(&self, window: Window, seq: u64) {
        let report = Arc::new(evaluate(
            &self.prepared.baseline,
            &window,
            &self.settings.rules,
        ));
        let crossings = {
            let mut last = self.closed.lock().unwrap_or_else(|e| e.into_inner());
            // Two windows closed at once on two threads: the older one
            // must not overwrite the newer one's state.
            if seq < last.seq {
                return;
            }
            let now: Vec<bool> = report
                .features
                .iter()
                .chain(&report.outputs)
                .map(|f| f.drifted)
                .collect();
            let before = if last.drifted.len() == now.len() {
                last.drifted.clone()
            } else {
                vec![false; now.len()]
            };
            let sides = report
                .features
                .iter()
                .map(|f| ("input", f))
                .chain(report.outputs.iter().map(|f| ("output", f)));
            let crossings: Vec<Crossing> = sides
                .zip(before.iter().zip(&now))
                .filter(|(_, (b, n))| b != n)
                .map(|((side, f), (_, &detected))| Crossing {
                    feature: f.name.clone(),
                    side,
                    detected,
                    method: f.method,
                    score: f.score,
                    threshold: f.threshold,
                })
                .collect();
            last.seq = seq;
            last.drifted = now;
            last.report = Some(Arc::clone(&report));
            last.windows += 1;
            crossings
        };
        self.series
            .record(&self.watched.endpoint, &self.watched.deployment, &report);
        (self.on_close)(&Closed { report, crossings });
    }

    pub fn snapshot(&self) -> Snapshot {
        let open_rows = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window
            .rows;
        let last = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            last: last.report.clone(),
            open_rows,
            window_rows: self.settings.window_rows,
            window_time: self.settings.window_time,
            windows: last.windows,
        }
    }
}
