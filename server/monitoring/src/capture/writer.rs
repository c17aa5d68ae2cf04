//! The writer thread: samples from the queue into record batches, record
//! batches into the open file, and the file closed when it is big enough,
//! old enough, or its hour is over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::columns::Columns;
use super::files::{self, OpenFile};
use super::{CaptureCounters, CaptureSettings, Sample, Target};
use crate::drift::Monitor;

/// Rows gathered before they are written as one record batch.
const BATCH_ROWS: usize = 4096;
/// Pending samples are written at least this often, and an old file is
/// noticed within it.
const TICK: Duration = Duration::from_millis(500);
/// How long the thread sleeps between looks at the queue: at 100,000
/// samples a second, 2,000 wait for it, well inside a default queue.
const POLL: Duration = Duration::from_millis(20);

pub(super) struct Writer {
    sink: PathBuf,
    max_file_bytes: u64,
    max_file_age: Duration,
    target: Target,
    columns: Columns,
    counters: CaptureCounters,
    pending: Vec<Sample>,
    pending_rows: usize,
    open: Option<OpenFile>,
    /// Samples in the open file: counted written when it closes, dropped
    /// if it cannot be.
    open_samples: u64,
    drift: Option<Arc<Monitor>>,
}

impl Writer {
    pub(super) fn new(
        settings: &CaptureSettings,
        target: Target,
        columns: Columns,
        counters: CaptureCounters,
        drift: Option<Arc<Monitor>>,
    ) -> Writer {
        Writer {
            sink: settings.sink.clone(),
            max_file_bytes: settings.max_file_bytes,
            max_file_age: settings.max_file_age,
            target,
            columns,
            counters,
            pending: Vec::new(),
            pending_rows: 0,
            open: None,
            open_samples: 0,
            drift,
        }
    }

    /// Until the queue closes: then everything accepted is written and the
    /// file closed.
    ///
    /// The thread sleeps and then takes what has queued up, instead of
    /// blocking on the queue: a receiver blocked on an empty queue has to be
    /// woken by every send (a futex call on the request's thread and a
    /// context switch per sample, which on a small machine costs the
    /// serving threads more than writing the sample does).
    pub(super) fn run(mut self, queue: Receiver<Sample>) {
        let mut last_write = Instant::now();
        loop {
            let mut closed = false;
            loop {
                match queue.try_recv() {
                    Ok(sample) => {
                        self.add(sample);
                        if self.pending_rows >= BATCH_ROWS {
                            self.write_pending();
                            last_write = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.counters.queue_depth.set(queue.len() as i64);
            if closed {
                break;
            }
            if last_write.elapsed() >= TICK {
                self.write_pending();
                last_write = Instant::now();
            }
            if self
                .open
                .as_ref()
                .is_some_and(|f| f.opened.elapsed() >= self.max_file_age)
            {
                self.close_file();
            }
            std::thread::sleep(POLL);
        }
        self.write_pending();
        self.close_file();
        self.counters.queue_depth.set(0);
    }

    fn add(&mut self, sample: Sample) {
        if let Some(drift) = &self.drift {
            if sample.status == 200 {
                let outputs: Vec<_> = sample.outputs.iter().map(|(_, t)| t.clone()).collect();
                drift.observe(&sample.inputs, &outputs, sample.timestamp);
            }
        }
        self.pending_rows += self.columns.rows_of(&sample);
        self.pending.push(sample);
    }

    /// Writes the pending samples, each run of one hour into that hour's
    /// file.
    fn write_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        while !pending.is_empty() {
            let hour = files::hour_of(pending[0].timestamp);
            let same = pending
                .iter()
                .position(|s| files::hour_of(s.timestamp) != hour)
                .unwrap_or(pending.len());
            let rest = pending.split_off(same);
            self.write_hour(hour, &pending);
            pending = rest;
        }
    }

    fn write_hour(&mut self, hour: i64, samples: &[Sample]) {
        if self.open.as_ref().is_some_and(|f| f.hour != hour) {
            self.close_file();
        }
        let lost = |w: &Writer, why: String| {
            tracing::error!(endpoint = %w.target.labels.endpoint, deployment = %w.target.labels.deployment, samples = samples.len(), "capture: {why}; the samples are dropped");
            w.counters.dropped_write_error.inc_by(samples.len() as u64);
        };
        let batch = match self.columns.batch(samples, &self.target.labels) {
            Ok(b) => b,
            Err(e) => return lost(self, format!("cannot build a record batch: {e}")),
        };
        if self.open.is_none() {
            match OpenFile::create(
                &self.sink,
                &self.target.labels,
                &self.target.instance,
                hour,
                self.columns.schema(),
            ) {
                Ok(f) => self.open = Some(f),
                Err(e) => return lost(self, e.to_string()),
            }
        }
        let file = self.open.as_mut().expect("opened above");
        if let Err(e) = file.write(&batch) {
            // The file may be torn: its earlier samples are lost with it.
            if let Some(f) = self.open.take() {
                f.discard();
            }
            self.counters
                .dropped_write_error
                .inc_by(std::mem::take(&mut self.open_samples));
            return lost(self, e.to_string());
        }
        self.open_samples += samples.len() as u64;
        if file.size() >= self.max_file_bytes {
            self.close_file();
        }
    }

    fn close_file(&mut self) {
        let Some(file) = self.open.take() else {
            return;
        };
        let samples = std::mem::take(&mut self.open_samples);
        match file.close() {
            Ok((path, size)) => {
                self.counters.written.inc_by(samples);
                self.counters.files.inc();
                self.counters.bytes.inc_by(size);
                tracing::debug!(path = %path.display(), bytes = size, "capture file closed");
            }
            Err(e) => {
                self.counters.dropped_write_error.inc_by(samples);
                tracing::error!(endpoint = %self.target.labels.endpoint, deployment = %self.target.labels.deployment, samples, "capture: cannot close the file: {e}; its samples are lost");
            }
        }
    }
}
