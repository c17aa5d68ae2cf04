use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::{ErrorKind, Report};

/// Largest latency the histogram tells apart: an hour, in microseconds.
/// Anything slower is recorded as an hour rather than dropped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What one worker saw. Each worker keeps its own so recording needs no
/// lock on the hot path; they are merged once at the end.
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Latency is kept for 2xx answers only: a server that rejects fast
    /// (503 when its queue is full) would otherwise look faster the more it
    /// fails. Failures are counted instead.
    pub(crate) fn record(&mut self, outcome: Result<(), ErrorKind>, latency: Duration) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.latency.saturating_record(us);
            }
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds merge");
    }

    pub(crate) fn into_report(self, elapsed: Duration) -> Report {
        let errors: u64 = self.errors.values().sum();
        Report {
            requests: self.ok + errors,
            ok: self.ok,
            errors: self.errors,
            elapsed,
            latency: self.latency,
        }
    }
}
