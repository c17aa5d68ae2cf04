use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use std::sync::{Arc, Mutex};

use ferroserve_backend_core::{Backend, Tensor};

use super::batcher::Batcher;
use super::Job;
use crate::infer::{InferError, InferOutput};
use crate::infer_stats::{BatchTimes, InferStats};

/// An OS thread that owns one backend session and runs whole batches on it.
pub(super) struct Worker {
    pub backend: Box<dyn Backend>,
    pub batched: bool,
    /// Shared by the model's workers; whoever holds it is idle and forms
    /// the next batch.
    pub batcher: Arc<Mutex<Batcher>>,
    pub batch_rows: prometheus::Histogram,
    pub stats: Arc<InferStats>,
}

impl Worker {
    pub(super) fn run(mut self) {
        loop {
            let next = {
                let mut b = self.batcher.lock().unwrap_or_else(|e| e.into_inner());
                b.gather()
            };
            // None: the queue is closed and drained.
            let Some(mut jobs) = next else {
                return;
            };
            // Skip jobs whose clients stopped waiting while the batch formed.
            jobs.retain(|j| !j.abandoned());
            if jobs.is_empty() {
                continue;
            }
            self.run_batch(jobs);
        }
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
        let total_rows: usize = rows.iter().sum();
        self.batch_rows.observe(total_rows as f64);
        let stacked = stack_inputs(&jobs);
        let stacked_at = Instant::now();
        let result = stacked.and_then(|inputs| self.run_backend(inputs));
        let ran_at = Instant::now();
        let compute_time = ran_at - started;
        let outputs = match result {
            Ok(outputs) => outputs,
            // One bad request (an index out of range, say) fails the whole
            // batch inside the backend. Rather than fail its batch-mates too,
            // run each request alone so only the bad one gets the error.
            // Requests whose deadline passed meanwhile (a batch that hung
            // until the backend gave up on it) are answered with a timeout
            // instead of being run again.
            Err(_) if jobs.len() > 1 => {
                for job in jobs {
                    if let Some(job) = job.expire_if_late(Instant::now()) {
                        self.run_batch(vec![job]);
                    }
                }
                return;
            }
            Err(e) => return fail_all(jobs, e),
        };
        let per_job = if !self.batched || jobs.len() == 1 {
            vec![outputs]
        } else {
            match split_outputs(&outputs, &rows) {
                Ok(parts) => parts,
                Err(e) => return fail_all(jobs, e),
            }
        };
        let times = BatchTimes {
            input: stacked_at - started,
            infer: ran_at - stacked_at,
            output: ran_at.elapsed(),
        };
        // Recorded before anyone is answered: a client that has its answer
        // finds its batch in the statistics.
        if jobs.iter().any(|j| j.counted) {
            self.stats.batch(total_rows, &times);
        }
        for (job, outputs) in jobs.into_iter().zip(per_job) {
            let _ = job.reply.send(Ok(InferOutput {
                outputs,
                queue_time: started - job.enqueued,
                compute_time,
                batch: times,
            }));
        }
    }

    fn run_backend(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        match catch_unwind(AssertUnwindSafe(|| self.backend.run(inputs))) {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(e)) => Err(InferError::Backend(e.to_string())),
            Err(_) => Err(InferError::Backend(
                "the backend panicked while running the batch".into(),
            )),
        }
    }
}

/// Concatenates the jobs' inputs along dim 0, one tensor per model input.
/// The jobs keep their own inputs (cheap `Bytes` clones) so a failed batch
/// can be retried request by request.
fn stack_inputs(jobs: &[Job]) -> Result<Vec<Tensor>, InferError> {
    if let [job] = jobs {
        return Ok(job.inputs.clone());
    }
    (0..jobs[0].inputs.len())
        .map(|i| {
            Tensor::concat(jobs.iter().map(|j| j.inputs[i].clone()).collect())
                .map_err(|e| InferError::Backend(e.to_string()))
        })
        .collect()
}

/// Splits every output along dim 0 back into each job's rows.
fn split_outputs(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, InferError> {
    let mut per_job: Vec<Vec<Tensor>> = (0..rows.len())
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in outputs {
        let parts = out
            .split(rows)
            .map_err(|e| InferError::Backend(format!("model output: {e}")))?;
        for (dst, part) in per_job.iter_mut().zip(parts) {
            dst.push(part);
        }
    }
    Ok(per_job)
}

fn fail_all(jobs: Vec<Job>, err: InferError) {
    for job in jobs {
        let _ = job.reply.send(Err(err.clone()));
    }
}
