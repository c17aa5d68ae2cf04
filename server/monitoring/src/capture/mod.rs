//! Capture: a sampled copy of requests and their answers, written to
//! Parquet by a thread of its own.
//!
//! The request path only decides whether to sample ([`sampling`]) and
//! offers the sample to a bounded queue with `try_send`: a full queue drops
//! the sample and counts it, so a request never waits for a disk. The
//! writer thread ([`writer`]) turns samples into Arrow record batches
//! ([`columns`]) and writes them into files partitioned by endpoint,
//! deployment and hour ([`files`]); a file is written under a temporary
//! name and renamed when it is closed, so a reader (or a crash) never sees
//! half a file under a final name.

pub mod columns;
pub mod files;
pub mod sampling;
mod series;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Sender, TrySendError};
use ferroserve_backend_core::{Signature, Tensor};
use prometheus::{IntCounter, IntGauge};

pub use columns::Labels;
pub use series::CaptureSeries;

/// What a captured row keeps besides nothing; every field defaults to kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub inputs: bool,
    pub outputs: bool,
    pub request_id: bool,
    pub endpoint: bool,
    pub deployment: bool,
    pub model_version: bool,
    pub timestamp: bool,
    pub latency: bool,
    /// The answer's status code and, for a failure, its message.
    pub status: bool,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            inputs: true,
            outputs: true,
            request_id: true,
            endpoint: true,
            deployment: true,
            model_version: true,
            timestamp: true,
            latency: true,
            status: true,
        }
    }
}

/// One deployment's capture settings (a bundle's `[capture]`, possibly
/// overridden by the deployment).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    /// Fraction of requests captured, 0 to 1, decided by request id.
    pub sample_rate: f64,
    /// Failed requests are captured whatever the rate.
    pub always_errors: bool,
    pub keep: Keep,
    /// The root folder of the files.
    pub sink: PathBuf,
    /// A file is closed once it holds about this many bytes...
    pub max_file_bytes: u64,
    /// ... or has been open this long (and always at the end of an hour).
    pub max_file_age: Duration,
    /// Samples waiting for the writer; past this they are dropped.
    pub queue: usize,
    /// Column names for the features of tabular tensors, by tensor name.
    pub feature_names: HashMap<String, Vec<String>>,
}

impl CaptureSettings {
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(300);
    pub const DEFAULT_QUEUE: usize = 10_000;

    /// Every request, everything kept, default rotation, into `sink`.
    pub fn all(sink: PathBuf) -> CaptureSettings {
        CaptureSettings {
            sample_rate: 1.0,
            always_errors: true,
            keep: Keep::default(),
            sink,
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            max_file_age: Self::DEFAULT_MAX_FILE_AGE,
            queue: Self::DEFAULT_QUEUE,
            feature_names: HashMap::new(),
        }
    }
}

/// One finished request, as the front end saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub request_id: String,
    pub timestamp: SystemTime,
    pub latency: Duration,
    /// The answer's status (HTTP's codes; gRPC answers are mapped to them).
    pub status: u16,
    pub error: Option<String>,
    /// By name, as the request sent them; tensors share the request's bytes.
    pub inputs: Vec<(String, Tensor)>,
    /// By name; empty for a failed request.
    pub outputs: Vec<(String, Tensor)>,
}

impl Sample {
    fn unix_micros(&self) -> i64 {
        match self.timestamp.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        }
    }
}

/// The capture's counters, labelled by the caller (endpoint, deployment).
/// Written + dropped = offered samples, and `offered` counts only the
/// sampled ones.
#[derive(Debug, Clone)]
pub struct CaptureCounters {
    /// Samples in closed files (a file's samples count when it closes).
    pub written: IntCounter,
    /// Samples lost because the queue was full.
    pub dropped_queue_full: IntCounter,
    /// Samples lost because a file could not be written.
    pub dropped_write_error: IntCounter,
    /// Bytes of closed files.
    pub bytes: IntCounter,
    /// Files closed and renamed to their final names.
    pub files: IntCounter,
    pub queue_depth: IntGauge,
}

impl CaptureCounters {
    /// Counters registered nowhere (tests, or a caller that reads them
    /// directly).
    pub fn unregistered() -> CaptureCounters {
        let c = |name: &str| IntCounter::new(name, name).expect("a valid metric name");
        CaptureCounters {
            written: c("written"),
            dropped_queue_full: c("dropped_queue_full"),
            dropped_write_error: c("dropped_write_error"),
            bytes: c("bytes"),
            files: c("files"),
            queue_depth: IntGauge::new("queue_depth", "queue_depth").expect("a valid name"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture sink {path}: {why}")]
    Sink { path: PathBuf, why: String },
    #[error("capture: sample_rate must be between 0 and 1, got {0}")]
    Rate(f64),
    #[error("capture: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// Where a deployment's files go and what they are called.
#[derive(Debug, Clone)]
pub struct Target {
    pub labels: Labels,
    /// This server among replicas writing to the same sink (the file-name
    /// prefix).
    pub instance: String,
}

/// A running capture: the request path's handle. [`Capture::close`]
/// flushes every accepted sample, closes the file and waits for that;
/// dropping the handle lets the writer do the same on its own.
pub struct Capture {
    settings: CaptureSettings,
    /// `None` once closed. A read lock per offer: uncontended but for the
    /// one write at close.
    queue: RwLock<Option<Sender<Sample>>>,
    counters: CaptureCounters,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Capture {
    /// Checks that the sink can be written (a server with a capture it
    /// cannot write refuses to start, naming the folder) and starts the
    /// writer. `drift`, if given, sees every successful sample on the
    /// writer's thread (a deployment whose drift watches captured
    /// requests).
    pub fn start(
        settings: CaptureSettings,
        target: Target,
        signature: &Signature,
        batched: bool,
        counters: CaptureCounters,
        drift: Option<Arc<crate::drift::Monitor>>,
    ) -> Result<Capture, CaptureError> {
        if !(0.0..=1.0).contains(&settings.sample_rate) {
            return Err(CaptureError::Rate(settings.sample_rate));
        }
        files::check_writable(&settings.sink)?;
        let columns =
            columns::Columns::new(signature, batched, settings.keep, &settings.feature_names);
        let (tx, rx) = crossbeam_channel::bounded(settings.queue.max(1));
        let writer = writer::Writer::new(&settings, target, columns, counters.clone(), drift);
        let handle = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(CaptureError::Thread)?;
        Ok(Capture {
            settings,
            queue: RwLock::new(Some(tx)),
            counters,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn settings(&self) -> &CaptureSettings {
        &self.settings
    }

    /// Whether a request with this id is sampled (its outcome aside).
    pub fn sampled(&self, request_id: &str) -> bool {
        sampling::sampled(self.settings.sample_rate, request_id)
    }

    /// Whether a request with this id and outcome is to be captured: the
    /// caller builds a [`Sample`] only then.
    pub fn wants(&self, request_id: &str, failed: bool) -> bool {
        (failed && self.settings.always_errors) || self.sampled(request_id)
    }

    /// Queues a sample without waiting; a full queue drops it and counts it
    /// (so does a capture already closed).
    pub fn offer(&self, sample: Sample) {
        let queue = self.queue.read().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = queue.as_ref() else {
            self.counters.dropped_queue_full.inc();
            return;
        };
        match queue.try_send(sample) {
            Ok(()) => self.counters.queue_depth.set(queue.len() as i64),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped_queue_full.inc()
            }
        }
    }

    /// Flushes every accepted sample, closes the open file and waits for
    /// the writer. Later offers are counted dropped.
    pub fn close(&self) {
        self.queue.write().unwrap_or_else(|e| e.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = writer {
            let _ = h.join();
        }
    }
}

/// Shared by every request of a deployment.
pub type SharedCapture = Arc<Capture>;
