//! One worker process and its supervision: start (import + `init()`), run
//! a batch with a deadline, and kill-and-restart with backoff when the
//! process crashes, exits or hangs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferroserve_backend_core::Tensor;

use crate::frames::{FrameReader, RecvError};
use crate::protocol::{self, Message};

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The interpreter (a virtual environment's when the bundle has
    /// requirements).
    pub python: PathBuf,
    pub harness: PathBuf,
    pub script: PathBuf,
    /// `AZUREML_MODEL_DIR`: the bundle folder, where the script finds its
    /// model files.
    pub bundle_dir: PathBuf,
    /// `raw` or `tensor`.
    pub style: &'static str,
    /// For log lines: `model:version`.
    pub label: String,
    pub index: usize,
    pub init_timeout: Duration,
}

/// Whether the model's workers could start; shared by every instance of a
/// model, read by its readiness.
#[derive(Debug, Default)]
pub struct PoolStatus {
    failure: Mutex<Option<String>>,
}

impl ferroserve_backend_core::Health for PoolStatus {
    /// `None` when ready; else why not (init()'s exception and traceback).
    fn failure(&self) -> Option<String> {
        self.failure.lock().expect("status lock").clone()
    }
}

impl PoolStatus {
    fn set(&self, failure: Option<String>) {
        *self.failure.lock().expect("status lock") = failure;
    }
}

/// Why a worker could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerError {
    /// init() (or importing the script) failed: the model is not ready.
    Init(String),
    /// The process died or stopped answering; it was killed and will be
    /// restarted.
    Lost(String),
    /// run() raised: the process is fine.
    Raised(String),
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    messages: FrameReader<ChildStdout>,
}

impl Process {
    fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// The exit status if the process has exited (waiting briefly for it,
    /// since the pipe closes a moment before the process is reaped).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }
}

/// One supervised worker process.
pub struct Worker {
    spec: WorkerSpec,
    status: Arc<PoolStatus>,
    process: Option<Process>,
    /// Failures in a row, for the restart backoff.
    failures: u32,
    /// init() failed: not retried (a registered version never changes, so
    /// neither would the outcome); every batch fails with this.
    init_failed: Option<String>,
    /// How long the last batch's answer took, which decides whether the
    /// next one is waited for in a spin.
    last_round_trip: Duration,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the thread spins for an answer before it sleeps. About two
/// cross-core wake-ups on a virtual machine: a `run()` of a few µs is
/// answered within it, and the spin costs less than the wake-up it saves.
const ANSWER_SPIN: Duration = Duration::from_micros(50);

impl Worker {
    /// Starts the process and waits for its `init()`. An init failure is
    /// recorded in `status` (the model is then not ready) and in the log.
    pub fn start(spec: WorkerSpec, status: Arc<PoolStatus>) -> Worker {
        let mut w = Worker {
            spec,
            status,
            process: None,
            failures: 0,
            init_failed: None,
            last_round_trip: Duration::ZERO,
        };
        let _ = w.spawn();
        w
    }

    fn spawn(&mut self) -> Result<(), WorkerError> {
        let s = &self.spec;
        let mut child = Command::new(&s.python)
            .arg("-u")
            .arg(&s.harness)
            .arg(&s.script)
            .arg(s.style)
            .current_dir(&s.bundle_dir)
            .env("AZUREML_MODEL_DIR", &s.bundle_dir)
            .env("FERROSERVE_MODEL_DIR", &s.bundle_dir)
            .env("FERROSERVE_WORKER", s.index.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let why = format!(
                    "cannot start the Python interpreter {}: {e}",
                    s.python.display()
                );
                self.status.set(Some(why.clone()));
                WorkerError::Init(why)
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (label, index) = (s.label.clone(), s.index);
        std::thread::Builder::new()
            .name(format!("py-log-{index}"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::info!(target: "ferroserve::python", model = %label, worker = index, "{line}");
                }
            })
            .map_err(|e| WorkerError::Init(format!("cannot start a log thread: {e}")))?;
        let messages = FrameReader::new(stdout)
            .map_err(|e| WorkerError::Init(format!("cannot read the worker's output pipe: {e}")))?;
        let mut p = Process {
            child,
            stdin,
            messages,
        };
        let init_deadline = Instant::now() + s.init_timeout;
        let failure = match p.messages.recv(init_deadline, Duration::ZERO) {
            Ok(Message::Ready) => None,
            Ok(Message::Error {
                kind,
                message,
                traceback,
                ..
            }) => Some(format!(
                "init() of {} failed: {kind}: {message}\n{traceback}",
                s.script.display()
            )),
            Ok(Message::Result(_)) => Some("the worker answered before it was asked".into()),
            Err(RecvError::Io(e)) => Some(format!(
                "the worker exited during init() ({}): {e}",
                describe(p.exit_status())
            )),
            Err(RecvError::Timeout) => Some(format!(
                "init() of {} did not finish within {} s",
                s.script.display(),
                s.init_timeout.as_secs()
            )),
        };
        if let Some(why) = failure {
            p.kill();
            tracing::error!(model = %s.label, worker = s.index, "{why}");
            self.status.set(Some(why.clone()));
            self.init_failed = Some(why.clone());
            return Err(WorkerError::Init(why));
        }
        self.status.set(None);
        self.process = Some(p);
        Ok(())
    }

    /// Waits out the backoff after `failures` failures in a row and starts
    /// a new process.
    fn restart(&mut self) -> Result<(), WorkerError> {
        let backoff = Duration::from_millis(25)
            .saturating_mul(1 << self.failures.min(7))
            .min(MAX_BACKOFF);
        tracing::warn!(model = %self.spec.label, worker = self.spec.index, failures = self.failures, backoff_ms = backoff.as_millis() as u64, "restarting the worker");
        std::thread::sleep(backoff);
        self.spawn()
    }

    /// Sends one batch and waits for its answer until `timeout`.
    pub fn run(
        &mut self,
        tensors: &[(&str, &Tensor)],
        timeout: Duration,
    ) -> Result<Vec<(String, Tensor)>, WorkerError> {
        if let Some(why) = &self.init_failed {
            return Err(WorkerError::Init(why.clone()));
        }
        if self.process.is_none() {
            self.restart()?;
        }
        let p = self.process.as_mut().expect("started above");
        // One write for small frames: headers and data together.
        let written = {
            let mut w = std::io::BufWriter::with_capacity(64 << 10, &mut p.stdin);
            protocol::write_run(&mut w, tensors)
        };
        if let Err(e) = written {
            let status = describe(p.exit_status());
            let lost = format!("the worker exited ({status}) before taking the batch: {e}");
            self.lose(&lost);
            return Err(WorkerError::Lost(lost));
        }
        let sent = Instant::now();
        let spin = if self.last_round_trip <= 2 * ANSWER_SPIN {
            ANSWER_SPIN
        } else {
            Duration::ZERO
        };
        let answer = p.messages.recv(sent + timeout, spin);
        self.last_round_trip = sent.elapsed();
        match answer {
            Ok(Message::Result(out)) => {
                self.failures = 0;
                Ok(out)
            }
            Ok(Message::Error { kind, message, .. }) => {
                self.failures = 0;
                Err(WorkerError::Raised(format!("{kind}: {message}")))
            }
            Ok(Message::Ready) => {
                let lost = "the worker answered READY to a batch".to_string();
                self.lose(&lost);
                Err(WorkerError::Lost(lost))
            }
            Err(RecvError::Io(e)) => {
                let status = describe(p.exit_status());
                let lost = format!(
                    "the worker exited ({status}) while running the batch ({e}); it is restarted"
                );
                self.lose(&lost);
                Err(WorkerError::Lost(lost))
            }
            Err(RecvError::Timeout) => {
                let lost = format!(
                    "the worker did not answer within {} ms; it was killed and is restarted",
                    timeout.as_millis()
                );
                self.lose(&lost);
                Err(WorkerError::Lost(lost))
            }
        }
    }

    /// Kills the process after a failure; the next batch starts a new one
    /// (after a backoff that grows with failures in a row), so the failing
    /// batch's answer does not wait for a restart.
    fn lose(&mut self, why: &str) {
        tracing::warn!(model = %self.spec.label, worker = self.spec.index, "{why}");
        if let Some(p) = self.process.take() {
            p.kill();
        }
        self.failures += 1;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            // Closing stdin ends the harness's loop; kill in case it is busy.
            drop(p.stdin);
            let mut child = p.child;
            let deadline = Instant::now() + Duration::from_millis(200);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        None => "still running".into(),
    }
}
