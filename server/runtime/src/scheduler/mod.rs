//! Dynamic batching: one bounded queue and N instance worker threads per
//! model version.
//!
//! Requests wait in a crossbeam queue; an idle worker takes the batcher
//! (a mutex shared by the workers) and forms a batch, so while every worker
//! is busy the queue fills and the next batch comes out larger, and the
//! worker that formed a batch runs it without handing it to another thread.
//! No inference ever runs on a tokio thread.

mod batcher;
mod worker;

use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use ferroserve_backend_core::{Backend, Tensor};
use tokio::sync::oneshot;

use crate::infer::{InferError, InferOutput};
use crate::infer_stats::InferStats;

pub use batcher::BatchPolicy;

/// One request waiting to be batched.
pub struct Job {
    /// In the order of the backend's inputs.
    pub inputs: Vec<Tensor>,
    /// Size of dim 0, or 1 for a model without a batch dimension.
    pub rows: usize,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<InferOutput, InferError>>,
    /// Whether the batch it runs in counts in the model's statistics
    /// (false for warm-up requests).
    pub counted: bool,
}

impl Job {
    /// True once nobody waits for the answer (the client went away or its
    /// front end gave up at the deadline), so the work can be skipped.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn expire_if_late(self, now: Instant) -> Option<Job> {
        if now >= self.deadline {
            let waited = now - self.enqueued;
            let _ = self.reply.send(Err(InferError::Timeout(format!(
                "request timed out after waiting {} ms in the queue",
                waited.as_millis()
            ))));
            None
        } else if self.abandoned() {
            None
        } else {
            Some(self)
        }
    }
}

/// The per-model-version scheduler. Dropping it closes the queue; the threads
/// finish the jobs already queued, then exit and free their sessions.
pub struct Scheduler {
    queue: Option<Sender<Job>>,
    max_queue_size: usize,
}

impl Scheduler {
    /// Starts the batcher and one worker thread per backend instance. The
    /// workers record every batch in `batch_rows` and, for batches of
    /// counted jobs, in `stats`.
    pub fn start(
        label: &str,
        backends: Vec<Box<dyn Backend>>,
        policy: BatchPolicy,
        max_queue_size: usize,
        batch_rows: prometheus::Histogram,
        stats: std::sync::Arc<InferStats>,
    ) -> std::io::Result<Scheduler> {
        let (queue_tx, queue_rx) = crossbeam_channel::bounded::<Job>(max_queue_size);
        let batched = policy.max_batch_size > 0;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(batcher::Batcher::new(
            policy, queue_rx,
        )));
        for (i, backend) in backends.into_iter().enumerate() {
            let worker = worker::Worker {
                backend,
                batched,
                batcher: std::sync::Arc::clone(&shared),
                batch_rows: batch_rows.clone(),
                stats: std::sync::Arc::clone(&stats),
            };
            std::thread::Builder::new()
                .name(format!("{label}-worker-{i}"))
                .spawn(move || worker.run())?;
        }
        Ok(Scheduler {
            queue: Some(queue_tx),
            max_queue_size,
        })
    }

    /// Queues a job without ever blocking: a full queue is an immediate error
    /// so the client can be told to retry instead of waiting unboundedly.
    pub fn submit(&self, job: Job) -> Result<(), InferError> {
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| InferError::Unavailable("model is shutting down".into()))?;
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => InferError::QueueFull(format!(
                "queue is full ({} requests waiting); retry later",
                self.max_queue_size
            )),
            TrySendError::Disconnected(_) => {
                InferError::Unavailable("model is shutting down".into())
            }
        })
    }

    /// Requests waiting for a batch, for the queue-depth gauge.
    pub fn queue_depth(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // Closing the queue is enough: the threads drain it and exit on their own.
        self.queue.take();
    }
}
