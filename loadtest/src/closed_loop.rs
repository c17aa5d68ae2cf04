use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::caller::timed_call;
use crate::recorder::Recorder;
use crate::worker::Worker;
use crate::{Caller, LoadError, Report, RequestSpec, Stop, DEFAULT_TIMEOUT};

/// N callers, each sending its next request the moment the previous answer
/// is in: the way to find a server's peak throughput at a given concurrency.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    /// Where [`run`](ClosedLoop::run) sends its HTTP requests;
    /// [`run_with`](ClosedLoop::run_with)'s callers know their own way.
    pub addr: SocketAddr,
    pub concurrency: usize,
    pub stop: Stop,
    /// Load that is sent but not measured, so connection set-up, lazy
    /// initialisation and cold caches do not count.
    pub warmup: Duration,
    pub timeout: Duration,
}

impl ClosedLoop {
    pub fn new(addr: SocketAddr, concurrency: usize, stop: Stop) -> ClosedLoop {
        ClosedLoop {
            addr,
            concurrency,
            stop,
            warmup: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn warmup(mut self, warmup: Duration) -> ClosedLoop {
        self.warmup = warmup;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> ClosedLoop {
        self.timeout = timeout;
        self
    }

    /// Runs HTTP/1.1 load against `addr`, one keep-alive connection per
    /// caller. `requests` are sent in turn (request `i` of the run is
    /// `requests[i % len]`), so a mix is sent in its given proportions.
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

    /// Runs the load with callers of any protocol: `connect(i)` makes caller
    /// `i` of `concurrency`, and is awaited for all of them before the clock
    /// starts, so connecting is not mistaken for the server being slow (a
    /// caller that could not connect should say so on its first call).
    ///
    /// With [`Stop::Duration`] a request counts when its answer arrives inside
    /// the measured window, whenever it was sent: counting by completion keeps
    /// the throughput unbiased at both edges of the window. With
    /// [`Stop::Requests`] exactly that many requests are sent after the
    /// warm-up and all of them are counted. Either way the run returns only
    /// once every request in flight is answered or has timed out.
    pub async fn run_with<C, F, Fut>(&self, mut connect: F) -> Result<Report, LoadError>
    where
        C: Caller,
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = C>,
    {
        self.check()?;
        let mut callers = Vec::with_capacity(self.concurrency);
        for i in 0..self.concurrency {
            callers.push(connect(i).await);
        }
        let tickets = Arc::new(AtomicU64::new(0));
        let warm_end = Instant::now() + self.warmup;
        let mut set = JoinSet::new();
        for caller in callers {
            set.spawn(drive(
                caller,
                Arc::clone(&tickets),
                warm_end,
                self.stop,
                self.timeout,
            ));
        }
        let mut total = Recorder::new();
        let mut last = warm_end;
        while let Some(joined) = set.join_next().await {
            let (recorder, done) = crate::worker::unwrap_join(joined);
            total.merge(recorder);
            last = last.max(done);
        }
        let elapsed = match self.stop {
            Stop::Duration(d) => d,
            Stop::Requests(_) => last.saturating_duration_since(warm_end),
        };
        Ok(total.into_report(elapsed))
    }

    fn check(&self) -> Result<(), LoadError> {
        if self.concurrency == 0 {
            return Err(LoadError::Zero {
                what: "concurrency",
            });
        }
        Ok(())
    }
}

/// One caller's loop. Returns what it recorded and when its last measured
/// answer arrived.
async fn drive<C: Caller>(
    mut caller: C,
    tickets: Arc<AtomicU64>,
    warm_end: Instant,
    stop: Stop,
    timeout: Duration,
) -> (Recorder, Instant) {
    let mut recorder = Recorder::new();
    let mut last = warm_end;
    match stop {
        Stop::Duration(d) => {
            let end = warm_end + d;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let i = tickets.fetch_add(1, Ordering::Relaxed);
                let outcome = timed_call(&mut caller, i, timeout).await;
                let done = Instant::now();
                if done >= warm_end && done <= end {
                    recorder.record(outcome, done - sent);
                    last = done;
                }
            }
        }
        Stop::Requests(n) => {
            let mut w = 0u64;
            while Instant::now() < warm_end {
                let _ = timed_call(&mut caller, w, timeout).await;
                w += 1;
            }
            loop {
                let i = tickets.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let sent = Instant::now();
                let outcome = timed_call(&mut caller, i, timeout).await;
                let done = Instant::now();
                recorder.record(outcome, done - sent);
                last = done;
            }
        }
    }
    (recorder, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::TestServer;
    use crate::ErrorKind;

    fn closed(addr: SocketAddr, concurrency: usize, stop: Stop) -> ClosedLoop {
        ClosedLoop::new(addr, concurrency, stop).timeout(Duration::from_secs(10))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_exactly_the_requested_count() {
        let server = TestServer::start().await;
        let report = closed(server.addr, 4, Stop::Requests(25))
            .run(&[RequestSpec::post("/ok", "ping")])
            .await
            .unwrap();
        assert_eq!(
            (report.requests, report.ok, report.error_count()),
            (25, 25, 0)
        );
        assert_eq!(report.latency.len(), 25);
        assert_eq!(server.requests(), 25);
        assert_eq!(server.bytes_received(), 25 * 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn non_2xx_answers_are_errors_by_status() {
        let server = TestServer::start().await;
        let mix = [RequestSpec::get("/ok"), RequestSpec::get("/status/503")];
        let report = closed(server.addr, 3, Stop::Requests(10))
            .run(&mix)
            .await
            .unwrap();
        assert_eq!((report.requests, report.ok), (10, 5));
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[&ErrorKind::Status(503)], 5);
        // Failures have no latency: only the five 200s are in the histogram.
        assert_eq!(report.latency.len(), 5);
        assert_eq!(server.requests(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_kept_alive() {
        let server = TestServer::start().await;
        let report = closed(server.addr, 2, Stop::Requests(40))
            .run(&[RequestSpec::get("/ok")])
            .await
            .unwrap();
        assert_eq!(report.ok, 40);
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_connection_is_reopened() {
        let server = TestServer::start().await;
        let report = closed(server.addr, 1, Stop::Requests(3))
            .run(&[RequestSpec::get("/close")])
            .await
            .unwrap();
        assert_eq!((report.requests, report.ok), (3, 3));
        assert_eq!(server.connections(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connections_are_connect_errors() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let report = closed(addr, 2, Stop::Requests(3))
            .run(&[RequestSpec::get("/ok")])
            .await
            .unwrap();
        assert_eq!((report.requests, report.ok), (3, 0));
        assert_eq!(report.errors[&ErrorKind::Connect], 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_requests_time_out() {
        let server = TestServer::start().await;
        let report = ClosedLoop::new(server.addr, 1, Stop::Requests(2))
            .timeout(Duration::from_millis(100))
            .run(&[RequestSpec::get("/hang")])
            .await
            .unwrap();
        assert_eq!((report.requests, report.ok), (2, 0));
        assert_eq!(report.errors[&ErrorKind::Timeout], 2);
        // A timed-out connection is not reused: its answer could still come.
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_run_counts_what_completed_in_its_window() {
        let server = TestServer::start().await;
        let report = closed(server.addr, 2, Stop::Duration(Duration::from_millis(300)))
            .warmup(Duration::from_millis(100))
            .run(&[RequestSpec::get("/ok")])
            .await
            .unwrap();
        assert_eq!(report.elapsed, Duration::from_millis(300));
        assert!(report.ok > 0);
        assert_eq!(report.ok, report.requests);
        // The server also saw the warm-up and answers after the window.
        assert!(server.requests() >= report.requests);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_caller_is_timed_and_counted_the_same_way() {
        use crate::caller::scripted::{Log, Scripted};
        use std::sync::Mutex;

        let script: Arc<[_]> = vec![
            Some(Ok(())),
            Some(Err(ErrorKind::BadAnswer)),
            Some(Err(ErrorKind::GrpcStatus(14))),
            None,
        ]
        .into();
        let log = Arc::new(Mutex::new(Log::default()));
        let mut made = Vec::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let report = ClosedLoop::new(addr, 3, Stop::Requests(12))
            .timeout(Duration::from_millis(50))
            .run_with(|i| {
                made.push(i);
                let caller = Scripted {
                    script: Arc::clone(&script),
                    log: Arc::clone(&log),
                };
                async move { caller }
            })
            .await
            .unwrap();
        assert_eq!(made, [0, 1, 2]);
        assert_eq!((report.requests, report.ok), (12, 3));
        assert_eq!(report.errors[&ErrorKind::BadAnswer], 3);
        assert_eq!(report.errors[&ErrorKind::GrpcStatus(14)], 3);
        assert_eq!(report.errors[&ErrorKind::Timeout], 3);
        assert_eq!(report.latency.len(), 3);
        let log = log.lock().unwrap();
        // Every ticket once, and each call that timed out was abandoned.
        let mut tickets = log.tickets.clone();
        tickets.sort_unstable();
        assert_eq!(tickets, (0..12).collect::<Vec<_>>());
        assert_eq!(log.abandoned, 3);
    }

    #[tokio::test]
    async fn bad_settings_are_refused() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = closed(addr, 0, Stop::Requests(1))
            .run(&[RequestSpec::get("/")])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Zero {
                    what: "concurrency"
                }
            ),
            "{err}"
        );
        let err = closed(addr, 1, Stop::Requests(1))
            .run(&[])
            .await
            .unwrap_err();
        assert!(matches!(err, LoadError::NoRequests), "{err}");
        let err = closed(addr, 0, Stop::Requests(1))
            .run_with(|_| -> std::future::Ready<Worker> { panic!("no caller for a refused run") })
            .await
            .unwrap_err();
        assert!(matches!(err, LoadError::Zero { .. }), "{err}");
    }
}
