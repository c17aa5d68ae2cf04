use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::Job;

/// How jobs are gathered into batches, as configured in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// 0: the model has no batch dimension; every job runs alone.
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// Sizes at which a batch is sent at once instead of waiting out the delay.
    pub preferred_batch_sizes: Vec<usize>,
}

/// Forms batches from the queue. Shared by a model's instance workers
/// behind a mutex: only an idle worker gathers, so jobs that arrive while
/// every worker is busy join the next batch instead of waiting behind it,
/// and the worker that formed a batch runs it with no hand-off to another
/// thread.
pub(super) struct Batcher {
    policy: BatchPolicy,
    queue: Receiver<Job>,
    /// A job taken from the queue that could not join the batch being formed
    /// (too many rows, or other non-batch dims); it opens the next batch.
    held: Option<Job>,
}

impl Batcher {
    pub(super) fn new(policy: BatchPolicy, queue: Receiver<Job>) -> Self {
        Batcher {
            policy,
            queue,
            held: None,
        }
    }

    /// Blocks for the first live job, then adds jobs until the batch is full,
    /// hits a preferred size with nothing else waiting, or the first job has
    /// waited `max_queue_delay`. `None` once the queue is closed and drained.
    pub(super) fn gather(&mut self) -> Option<Vec<Job>> {
        let first = loop {
            let job = match self.held.take() {
                Some(j) => j,
                None => self.queue.recv().ok()?,
            };
            if let Some(job) = job.expire_if_late(Instant::now()) {
                break job;
            }
        };
        let max = self.policy.max_batch_size;
        if max == 0 {
            return Some(vec![first]);
        }
        let window_end = first.enqueued + self.policy.max_queue_delay;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < max {
            let job = match self.queue.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if self.policy.preferred_batch_sizes.contains(&rows) {
                        break;
                    }
                    let now = Instant::now();
                    if now >= window_end {
                        break;
                    }
                    match self.queue.recv_timeout(window_end - now) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let Some(job) = job.expire_if_late(Instant::now()) else {
                continue;
            };
            if rows + job.rows > max || !same_inner_dims(&batch[0], &job) {
                self.held = Some(job);
                break;
            }
            rows += job.rows;
            batch.push(job);
        }
        Some(batch)
    }
}

/// Jobs can share a batch only if every input agrees on all dims after the
/// batch dim; otherwise their rows cannot be stacked into one tensor.
fn same_inner_dims(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|(x, y)| x.dtype == y.dtype && x.shape.get(1..) == y.shape.get(1..))
}
