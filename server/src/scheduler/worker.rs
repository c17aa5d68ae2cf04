use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use ferroserve_backend_core::{Backend, Tensor};

use super::Job;
use crate::infer::{InferError, InferOutput};

/// An OS thread that owns one backend session and runs whole batches on it.
pub(super) struct Worker {
    pub backend: Box<dyn Backend>,
    pub batched: bool,
    pub idle: Sender<()>,
    pub work: Receiver<Vec<Job>>,
    pub batch_rows: prometheus::Histogram,
}

impl Worker {
    pub(super) fn run(mut self) {
        loop {
            if self.idle.send(()).is_err() {
                return;
            }
            let Ok(mut jobs) = self.work.recv() else {
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

    fn run_batch(&mut self, mut jobs: Vec<Job>) {
        let started = Instant::now();
        let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
        self.batch_rows.observe(rows.iter().sum::<usize>() as f64);
        let inputs = match stack_inputs(&mut jobs) {
            Ok(inputs) => inputs,
            Err(e) => return fail_all(jobs, e),
        };
        let result = catch_unwind(AssertUnwindSafe(|| self.backend.run(inputs)));
        let compute_time = started.elapsed();
        let outputs = match result {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return fail_all(jobs, InferError::Backend(e.to_string())),
            Err(_) => {
                return fail_all(
                    jobs,
                    InferError::Backend("the backend panicked while running the batch".into()),
                )
            }
        };
        if !self.batched || jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            let queue_time = started - job.enqueued;
            let _ = job.reply.send(Ok(InferOutput {
                outputs,
                queue_time,
                compute_time,
            }));
            return;
        }
        // Split every output along dim 0 back into each job's rows.
        let mut per_job: Vec<Vec<Tensor>> = (0..jobs.len())
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for out in &outputs {
            match out.split(&rows) {
                Ok(parts) => {
                    for (dst, part) in per_job.iter_mut().zip(parts) {
                        dst.push(part);
                    }
                }
                Err(e) => return fail_all(jobs, InferError::Backend(format!("model output: {e}"))),
            }
        }
        for (job, outputs) in jobs.into_iter().zip(per_job) {
            let queue_time = started - job.enqueued;
            let _ = job.reply.send(Ok(InferOutput {
                outputs,
                queue_time,
                compute_time,
            }));
        }
    }
}

/// Concatenates the jobs' inputs along dim 0, one tensor per model input.
fn stack_inputs(jobs: &mut [Job]) -> Result<Vec<Tensor>, InferError> {
    if jobs.len() == 1 {
        return Ok(std::mem::take(&mut jobs[0].inputs));
    }
    let n = jobs[0].inputs.len();
    let mut columns: Vec<Vec<Tensor>> = (0..n).map(|_| Vec::with_capacity(jobs.len())).collect();
    for job in jobs.iter_mut() {
        for (col, t) in columns.iter_mut().zip(std::mem::take(&mut job.inputs)) {
            col.push(t);
        }
    }
    columns
        .into_iter()
        .map(|col| Tensor::concat(col).map_err(|e| InferError::Backend(e.to_string())))
        .collect()
}

fn fail_all(jobs: Vec<Job>, err: InferError) {
    for job in jobs {
        let _ = job.reply.send(Err(err.clone()));
    }
}
