//! What one loaded model version has done, counted as Triton's statistics
//! extension counts it: lock-free atomics, written by the request path (per
//! request outcome) and by the instance workers (per batch), read by
//! [`InferStats::snapshot`].
//!
//! - Per request: `success` and `fail` count requests and their total time
//!   in the model (validation, queue, batch, answer). A request counts once
//!   its inputs passed validation: a request refused as malformed never
//!   reached the model and is in neither (Triton counts failures that
//!   reach the model). `queue` and the three `compute_*` are recorded for
//!   successful requests only, so their counts equal `success.count`; each
//!   request gets the full input-copy, run and output-split times of the
//!   batch it ran in, as Triton attributes them.
//! - Per batch that succeeded: `execution_count` (batches), `inference_count`
//!   (rows), and per batch size the count of such batches and their stage
//!   times. A batch that failed in the backend is not an execution: its
//!   requests are retried one by one, and those that succeed count in their
//!   own batches of one.
//! - `last_inference`: milliseconds since the epoch of the last request or
//!   batch that finished, success or failure.
//!
//! Warm-up requests are not counted: only what clients (and mirrored
//! copies of their requests) asked for. A request whose client went away
//! before its answer is in neither `success` nor `fail` (its batch, if it
//! ran, still counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration.
#[derive(Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

/// A copy of a [`DurationStat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationTotal {
    pub count: u64,
    pub ns: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl DurationStat {
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(nanos(d), Ordering::Relaxed);
    }

    pub fn total(&self) -> DurationTotal {
        DurationTotal {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::AddAssign for DurationTotal {
    fn add_assign(&mut self, o: DurationTotal) {
        self.count += o.count;
        self.ns += o.ns;
    }
}

/// How long one batch's stages took: stacking the requests' inputs, the
/// backend's run, splitting the outputs back per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTimes {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

impl BatchTimes {
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

#[derive(Default)]
struct BatchSizeStat {
    input: DurationStat,
    infer: DurationStat,
    output: DurationStat,
}

/// The statistics of one loaded model version.
pub struct InferStats {
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Indexed by batch size (rows), 1 to the largest batch the model
    /// takes; index 0 is unused.
    by_size: Box<[BatchSizeStat]>,
}

/// A copy of [`InferStats`] at one moment; several can be summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub success: DurationTotal,
    pub fail: DurationTotal,
    pub queue: DurationTotal,
    pub compute_input: DurationTotal,
    pub compute_infer: DurationTotal,
    pub compute_output: DurationTotal,
    pub inference_count: u64,
    pub execution_count: u64,
    /// 0: never.
    pub last_inference_ms: u64,
    /// `(batch size, [input, infer, output])`, ascending, sizes that ran.
    pub batches: Vec<(u64, [DurationTotal; 3])>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl InferStats {
    /// Statistics for a model whose batches hold at most `max_batch_size`
    /// rows (0, no batch dimension: every batch is one request, size 1).
    pub fn new(max_batch_size: usize) -> InferStats {
        let sizes = max_batch_size.max(1) + 1;
        InferStats {
            success: DurationStat::default(),
            fail: DurationStat::default(),
            queue: DurationStat::default(),
            compute_input: DurationStat::default(),
            compute_infer: DurationStat::default(),
            compute_output: DurationStat::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            by_size: (0..sizes).map(|_| BatchSizeStat::default()).collect(),
        }
    }

    fn touch(&self) {
        self.last_inference_ms
            .fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// One request answered: `total` in the model, `queue` waiting for its
    /// batch, and its batch's stage times.
    pub fn success(&self, total: Duration, queue: Duration, batch: &BatchTimes) {
        self.success.add(total);
        self.queue.add(queue);
        self.compute_input.add(batch.input);
        self.compute_infer.add(batch.infer);
        self.compute_output.add(batch.output);
        self.touch();
    }

    /// One request that reached the model and failed after `total`.
    pub fn failure(&self, total: Duration) {
        self.fail.add(total);
        self.touch();
    }

    /// One batch of `rows` rows ran.
    pub fn batch(&self, rows: usize, times: &BatchTimes) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        // Validation and the batcher keep rows within 1..=max_batch_size.
        if let Some(s) = self.by_size.get(rows).filter(|_| rows > 0) {
            s.input.add(times.input);
            s.infer.add(times.infer);
            s.output.add(times.output);
        } else {
            debug_assert!(false, "a batch of {rows} rows is outside the model's sizes");
        }
        self.touch();
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            success: self.success.total(),
            fail: self.fail.total(),
            queue: self.queue.total(),
            compute_input: self.compute_input.total(),
            compute_infer: self.compute_infer.total(),
            compute_output: self.compute_output.total(),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
            batches: self
                .by_size
                .iter()
                .enumerate()
                .filter_map(|(size, s)| {
                    let t = [s.input.total(), s.infer.total(), s.output.total()];
                    (t[0].count > 0).then_some((size as u64, t))
                })
                .collect(),
        }
    }
}

impl StatsSnapshot {
    /// Adds `other` (another deployment of the same model version).
    pub fn merge(&mut self, other: &StatsSnapshot) {
        self.success += other.success;
        self.fail += other.fail;
        self.queue += other.queue;
        self.compute_input += other.compute_input;
        self.compute_infer += other.compute_infer;
        self.compute_output += other.compute_output;
        self.inference_count += other.inference_count;
        self.execution_count += other.execution_count;
        self.last_inference_ms = self.last_inference_ms.max(other.last_inference_ms);
        for (size, t) in &other.batches {
            match self.batches.binary_search_by_key(size, |b| b.0) {
                Ok(i) => {
                    for (a, b) in self.batches[i].1.iter_mut().zip(t) {
                        *a += *b;
                    }
                }
                Err(i) => self.batches.insert(i, (*size, *t)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(us: u64) -> BatchTimes {
        BatchTimes {
            input: Duration::from_micros(us),
            infer: Duration::from_micros(2 * us),
            output: Duration::from_micros(us),
        }
    }

    #[test]
    fn requests_and_batches_add_up() {
        let s = InferStats::new(4);
        assert_eq!(s.snapshot(), StatsSnapshot::default());
        // A batch of two requests (3 rows), then one request alone.
        let t = times(10);
        s.batch(3, &t);
        s.success(Duration::from_micros(100), Duration::from_micros(20), &t);
        s.success(Duration::from_micros(90), Duration::from_micros(10), &t);
        s.batch(1, &times(5));
        s.success(
            Duration::from_micros(50),
            Duration::from_micros(1),
            &times(5),
        );
        s.failure(Duration::from_micros(7));
        let snap = s.snapshot();
        assert_eq!(
            snap.success,
            DurationTotal {
                count: 3,
                ns: 240_000
            }
        );
        assert_eq!(
            snap.fail,
            DurationTotal {
                count: 1,
                ns: 7_000
            }
        );
        assert_eq!(
            snap.queue,
            DurationTotal {
                count: 3,
                ns: 31_000
            }
        );
        assert_eq!(
            snap.compute_infer,
            DurationTotal {
                count: 3,
                ns: 50_000
            }
        );
        assert_eq!((snap.inference_count, snap.execution_count), (4, 2));
        let sizes: Vec<(u64, u64)> = snap.batches.iter().map(|(b, t)| (*b, t[0].count)).collect();
        assert_eq!(sizes, [(1, 1), (3, 1)]);
        assert_eq!(
            snap.batches[1].1[1],
            DurationTotal {
                count: 1,
                ns: 20_000
            }
        );
        assert!(snap.last_inference_ms > 1_600_000_000_000);
    }

    #[test]
    fn snapshots_of_two_deployments_merge_by_batch_size() {
        let a = InferStats::new(8);
        let b = InferStats::new(0);
        a.batch(2, &times(1));
        a.batch(8, &times(1));
        b.batch(1, &times(3));
        b.batch(1, &times(3));
        let mut sum = a.snapshot();
        sum.merge(&b.snapshot());
        let sizes: Vec<(u64, u64)> = sum.batches.iter().map(|(b, t)| (*b, t[2].count)).collect();
        assert_eq!(sizes, [(1, 2), (2, 1), (8, 1)]);
        assert_eq!((sum.inference_count, sum.execution_count), (12, 4));
        assert_eq!(sum.batches[0].1[0].ns, 6_000);
    }
}
