use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::caller::timed_call;
use crate::recorder::Recorder;
use crate::worker::Worker;
use crate::{Caller, LoadError, Report, RequestSpec, Stop, DEFAULT_TIMEOUT};

/// Requests arrive at a fixed rate, whatever the server does; a bounded pool
/// of connections (callers) sends them.
///
/// Request `i` is due at `start + i / rate` and its latency is measured from
/// that moment, not from when a connection got round to sending it. When the
/// server stalls, every connection is busy, due requests wait for one, and
/// the wait is part of their latency: the report shows what users arriving
/// at that rate would have seen, instead of quietly sending less (coordinated
/// omission).
#[derive(Debug, Clone)]
pub struct OpenLoop {
    pub addr: SocketAddr,
    /// Arrivals per second.
    pub rate: f64,
    /// Size of the connection pool, i.e. the most requests in flight at once.
    pub connections: usize,
    pub stop: Stop,
    /// Arrivals during this first stretch are sent but not measured.
    pub warmup: Duration,
    pub timeout: Duration,
}

impl OpenLoop {
    pub fn new(addr: SocketAddr, rate: f64, connections: usize, stop: Stop) -> OpenLoop {
        OpenLoop {
            addr,
            rate,
            connections,
            stop,
            warmup: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn warmup(mut self, warmup: Duration) -> OpenLoop {
        self.warmup = warmup;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> OpenLoop {
        self.timeout = timeout;
        self
    }

    /// Runs HTTP/1.1 load against `addr`; `requests` are sent in turn as in
    /// [`ClosedLoop::run`](crate::ClosedLoop::run). Every measured arrival is
    /// sent and counted, even when the server falls behind, so a run can
    /// last longer than its nominal duration.
    pub async fn run(&self, requests: &[RequestSpec]) -> Result<Report, LoadError> {
        self.check()?;
        if requests.is_empty() {
            return Err(LoadError::NoRequests);
        }
        let requests: Arc<[RequestSpec]> = requests.into();
        let addr = self.addr;
        self.run_with(|_| Worker::connect(addr, Arc::clone(&requests)))
            .await
    }

    /// Runs the load with callers of any protocol, `connect(i)` making caller
    /// `i` of the pool of `connections`, all of them before the clock starts
    /// (see [`ClosedLoop::run_with`](crate::ClosedLoop::run_with)).
    pub async fn run_with<C, F, Fut>(&self, mut connect: F) -> Result<Report, LoadError>
    where
        C: Caller,
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = C>,
    {
        self.check()?;
        let rate = self.rate;
        let warm_n = (rate * self.warmup.as_secs_f64()).ceil() as u64;
        let total = match self.stop {
            Stop::Duration(d) => (rate * (self.warmup + d).as_secs_f64()).ceil() as u64,
            Stop::Requests(n) => warm_n + n,
        };
        let mut callers = Vec::with_capacity(self.connections);
        for i in 0..self.connections {
            callers.push(connect(i).await);
        }
        // The clock starts once every connection is open, so connecting is
        // not mistaken for the server being slow.
        let schedule = Schedule {
            rate,
            start: Instant::now(),
            warm_n,
            total,
        };
        let arrivals = Arc::new(Semaphore::new(0));
        let tickets = Arc::new(AtomicU64::new(0));
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let mut set = JoinSet::new();
        for caller in callers {
            set.spawn(drive(
                caller,
                Arc::clone(&arrivals),
                Arc::clone(&tickets),
                schedule,
                self.timeout,
            ));
        }
        let dispatcher = {
            let arrivals = Arc::clone(&arrivals);
            let cancel = Arc::clone(&cancel.0);
            let pool = self.connections;
            std::thread::Builder::new()
                .name("loadtest-arrivals".into())
                .spawn(move || release_arrivals(schedule, &arrivals, &cancel, pool))
                .expect("spawning the arrival thread")
        };

        let mut total = Recorder::new();
        let measure_start = schedule.due(warm_n);
        let mut last = measure_start;
        while let Some(joined) = set.join_next().await {
            let (recorder, done) = crate::worker::unwrap_join(joined);
            total.merge(recorder);
            last = last.max(done);
        }
        let _ = dispatcher.join();
        Ok(total.into_report(last.saturating_duration_since(measure_start)))
    }

    fn check(&self) -> Result<(), LoadError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(LoadError::Rate(self.rate));
        }
        if self.connections == 0 {
            return Err(LoadError::Zero {
                what: "connections",
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: f64,
    start: Instant,
    /// Arrivals before this index are warm-up.
    warm_n: u64,
    total: u64,
}

impl Schedule {
    /// When arrival `i` is due.
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Stops the arrival thread if the run is dropped half-way.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Releases one semaphore permit per arrival as it falls due. It runs on an
/// OS thread because tokio's timer has millisecond resolution, which would
/// bunch arrivals into clumps and add up to a millisecond to every latency;
/// a thread's sleep is precise to tens of microseconds. Every arrival that is
/// due at a wake-up is released at once, so a late wake-up never loses any.
fn release_arrivals(schedule: Schedule, arrivals: &Semaphore, cancel: &AtomicBool, pool: usize) {
    let mut released = 0u64;
    while released < schedule.total && !cancel.load(Ordering::Relaxed) {
        let elapsed = schedule.start.elapsed().as_secs_f64();
        let due = ((elapsed * schedule.rate).floor() as u64 + 1).min(schedule.total);
        if due > released {
            arrivals.add_permits((due - released) as usize);
            released = due;
        }
        if released < schedule.total {
            std::thread::sleep(
                schedule
                    .due(released)
                    .saturating_duration_since(Instant::now()),
            );
        }
    }
    // One extra permit per connection: each wakes, finds no arrival left and
    // ends.
    arrivals.add_permits(pool);
}

async fn drive<C: Caller>(
    mut caller: C,
    arrivals: Arc<Semaphore>,
    tickets: Arc<AtomicU64>,
    schedule: Schedule,
    timeout: Duration,
) -> (Recorder, Instant) {
    let mut recorder = Recorder::new();
    let mut last = schedule.due(schedule.warm_n);
    loop {
        match arrivals.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        // Permits and tickets are handed out one for one and in order, so
        // arrival `i` is only taken once it is due.
        let i = tickets.fetch_add(1, Ordering::Relaxed);
        if i >= schedule.total {
            break;
        }
        let intended = schedule.due(i);
        let outcome = timed_call(&mut caller, i, timeout).await;
        let done = Instant::now();
        if i >= schedule.warm_n {
            recorder.record(outcome, done.saturating_duration_since(intended));
            last = last.max(done);
        }
    }
    (recorder, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::TestServer;
    use crate::ErrorKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_exactly_the_requested_count_after_the_warmup() {
        let server = TestServer::start().await;
        let mix = [RequestSpec::get("/ok"), RequestSpec::get("/status/500")];
        let report = OpenLoop::new(server.addr, 2000.0, 4, Stop::Requests(40))
            .warmup(Duration::from_millis(10))
            .run(&mix)
            .await
            .unwrap();
        assert_eq!(report.requests, 40);
        assert_eq!(report.ok + report.errors[&ErrorKind::Status(500)], 40);
        // 10 ms at 2000/s is 20 warm-up arrivals, sent but not counted.
        assert_eq!(server.requests(), 60);
        assert!(server.connections() <= 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_run_sends_rate_times_duration() {
        let server = TestServer::start().await;
        let report = OpenLoop::new(
            server.addr,
            500.0,
            2,
            Stop::Duration(Duration::from_millis(200)),
        )
        .run(&[RequestSpec::get("/ok")])
        .await
        .unwrap();
        assert_eq!((report.requests, report.ok), (100, 100));
    }

    /// The server takes 50 ms per request and there is one connection, while
    /// arrivals come every millisecond. The fifth arrival is due at 4 ms but
    /// cannot be sent before the first four are answered (200 ms), so its
    /// latency is at least 200 + 50 - 4 ms. A closed loop would report about
    /// 50 ms for every request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_a_connection_counts_as_latency() {
        let server = TestServer::start().await;
        let report = OpenLoop::new(server.addr, 1000.0, 1, Stop::Requests(5))
            .run(&[RequestSpec::get("/sleep/50")])
            .await
            .unwrap();
        assert_eq!(report.ok, 5);
        assert!(
            report.latencies().max >= Duration::from_millis(246),
            "{report}"
        );
        assert!(
            report.quantile(0.0) >= Duration::from_millis(50),
            "{report}"
        );
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_caller_gets_every_arrival_once() {
        use crate::caller::scripted::{Log, Scripted};
        use std::sync::Mutex;

        let script: Arc<[_]> = vec![Some(Ok(())), Some(Err(ErrorKind::BadAnswer))].into();
        let log = Arc::new(Mutex::new(Log::default()));
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let report = OpenLoop::new(addr, 2000.0, 3, Stop::Requests(20))
            .warmup(Duration::from_millis(5))
            .run_with(|_| {
                let caller = Scripted {
                    script: Arc::clone(&script),
                    log: Arc::clone(&log),
                };
                async move { caller }
            })
            .await
            .unwrap();
        assert_eq!((report.requests, report.ok), (20, 10));
        assert_eq!(report.errors[&ErrorKind::BadAnswer], 10);
        // 5 ms at 2000/s is 10 warm-up arrivals, sent but not counted.
        let mut tickets = log.lock().unwrap().tickets.clone();
        tickets.sort_unstable();
        assert_eq!(tickets, (0..30).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn bad_settings_are_refused() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let get = [RequestSpec::get("/")];
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = OpenLoop::new(addr, rate, 1, Stop::Requests(1))
                .run(&get)
                .await
                .unwrap_err();
            assert!(matches!(err, LoadError::Rate(_)), "{err}");
        }
        let err = OpenLoop::new(addr, 1.0, 0, Stop::Requests(1))
            .run(&get)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Zero {
                    what: "connections"
                }
            ),
            "{err}"
        );
    }
}
