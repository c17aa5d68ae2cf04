//! The clients of the hot-swap benchmark: the open-loop load's callers,
//! which check every answer, the swapper that changes the deployment's
//! version on a fixed cadence, and the prober that watches which version
//! answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferroserve_loadtest::{Answer, Caller, Connection, ErrorKind, RequestError, RequestSpec};

/// The response header naming the deployment that answered.
pub const DEPLOYMENT_HEADER: &str = "x-ferroserve-deployment";

/// Failed answers kept word for word, per phase, for the report.
const KEEP_FAILURES: usize = 10;

/// After a failed connect, wait before trying again (as the loadtest
/// crate's own worker does) so a dead server is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// `model_version` from an infer answer. ferroserve writes it second in the
/// JSON header (`{"model_name":…,"model_version":"N",…`), so only the start
/// of the body is searched, and a binary-data answer parses the same way.
pub fn model_version(body: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"model_version\":\"";
    let head = &body[..body.len().min(512)];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &head[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What the load's answers said, beyond what the loadtest report counts.
#[derive(Default)]
pub struct Tally {
    /// Measured (post-warm-up) answers by `model_version`: 1, 2, other.
    pub by_version: [AtomicU64; 3],
    /// Every failed call, warm-up included.
    pub failures: AtomicU64,
    /// The first few failures, word for word.
    pub samples: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("tally lock");
        if samples.len() < KEEP_FAILURES {
            samples.push(what);
        }
    }

    pub fn versions(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.by_version[i].load(Ordering::Relaxed))
    }

    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("tally lock").clone()
    }
}

/// One connection of the open-loop pool. Unlike the loadtest crate's own
/// HTTP caller it reads each answer: a 200 from the wrong deployment or
/// without a version counts as a failure, and every failure is kept in the
/// tally so that it can be shown, not just counted.
pub struct CheckedCaller {
    addr: SocketAddr,
    conn: Option<Connection>,
    spec: Arc<RequestSpec>,
    deployment: Arc<str>,
    /// Tickets below this are the loop's warm-up arrivals.
    measured_from: u64,
    tally: Arc<Tally>,
}

impl CheckedCaller {
    pub async fn connect(
        addr: SocketAddr,
        spec: Arc<RequestSpec>,
        deployment: Arc<str>,
        measured_from: u64,
        tally: Arc<Tally>,
    ) -> CheckedCaller {
        CheckedCaller {
            addr,
            conn: Connection::connect(addr).await.ok(),
            spec,
            deployment,
            measured_from,
            tally,
        }
    }

    async fn exchange(&mut self) -> Result<Answer, ErrorKind> {
        if let Some(conn) = &mut self.conn {
            // An idle keep-alive connection the server closed is not a failed
            // request: the request goes out on a new one.
            if conn.ready().await.is_err() {
                self.conn = None;
            }
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => match Connection::connect(self.addr).await {
                Ok(conn) => self.conn.insert(conn),
                Err(e) => {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                    return Err(e.kind());
                }
            },
        };
        match conn.send(&self.spec).await {
            Ok(answer) => {
                if !conn.is_open() {
                    self.conn = None;
                }
                Ok(answer)
            }
            Err(e) => {
                self.conn = None;
                Err(e.kind())
            }
        }
    }
}

impl Caller for CheckedCaller {
    async fn call(&mut self, ticket: u64) -> Result<(), ErrorKind> {
        let answer = match self.exchange().await {
            Ok(a) => a,
            Err(kind) => {
                self.tally
                    .fail(format!("request {ticket}: no answer ({kind})"));
                return Err(kind);
            }
        };
        if !answer.status.is_success() {
            self.tally.fail(format!(
                "request {ticket}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
            ));
            return Err(ErrorKind::Status(answer.status.as_u16()));
        }
        let deployment = answer
            .headers
            .get(DEPLOYMENT_HEADER)
            .and_then(|v| v.to_str().ok());
        let version = model_version(&answer.body);
        if deployment != Some(&*self.deployment) || version.is_none() {
            self.tally.fail(format!(
                "request {ticket}: 200 with {DEPLOYMENT_HEADER} {deployment:?} and model_version \
                 {version:?} (expected deployment {:?})",
                self.deployment
            ));
            return Err(ErrorKind::BadAnswer);
        }
        if ticket >= self.measured_from {
            let slot = match version {
                Some(1) => 0,
                Some(2) => 1,
                _ => 2,
            };
            self.tally.by_version[slot].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A late answer to an abandoned request could be read as the next
    /// one's: the connection is not reused.
    fn abandon(&mut self) {
        self.conn = None;
    }
}

/// One `PUT` of the deployment to a new version.
#[derive(Debug, Clone)]
pub struct Swap {
    /// Just before the request was sent.
    pub t0: Instant,
    /// Until the whole answer was in: load, warm-up and the routing swap.
    pub put: Duration,
    pub from: u32,
    pub to: u32,
    /// `None` when the answer was a 200; otherwise what went wrong.
    pub failure: Option<String>,
}

/// Where a swapper sends its requests and how often.
#[derive(Clone)]
pub struct SwapPlan {
    pub addr: SocketAddr,
    pub endpoint: String,
    pub deployment: String,
    pub model: String,
    /// The version the deployment is at when the swapper starts.
    pub current: u32,
    pub interval: Duration,
    /// Before the first swap (the load's warm-up).
    pub delay: Duration,
    /// Swaps attempted before a stop is obeyed.
    pub at_least: usize,
}

/// The swaps done, and the version the deployment was left at.
pub struct SwapOutcome {
    pub swaps: Vec<Swap>,
    pub current: u32,
}

pub fn put_deployment(endpoint: &str, deployment: &str, model: &str, version: u32) -> RequestSpec {
    let body = serde_json::json!({"model": model, "version": version}).to_string();
    let mut spec = RequestSpec::post(
        format!("/v2/admin/endpoints/{endpoint}/deployments/{deployment}"),
        body,
    );
    spec.method = hyper::Method::PUT;
    spec.header("content-type", "application/json")
        .expect("a static header is valid")
}

/// Swaps between versions 1 and 2 every `interval` (a swap that takes
/// longer is followed by the next at once) on its own thread and runtime,
/// until `stop` is set and `at_least` swaps have been tried.
pub fn spawn_swapper(plan: SwapPlan, stop: Arc<AtomicBool>) -> JoinHandle<Result<SwapOutcome>> {
    std::thread::Builder::new()
        .name("swapper".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(swap_loop(plan, &stop))
        })
        .expect("spawning the swapper thread")
}

async fn swap_loop(plan: SwapPlan, stop: &AtomicBool) -> Result<SwapOutcome> {
    let start = tokio::time::Instant::now() + plan.delay;
    tokio::time::sleep_until(start).await;
    let mut current = plan.current;
    let mut swaps = Vec::new();
    let mut conn: Option<Connection> = None;
    let mut tick = 0u32;
    while !(stop.load(Ordering::Relaxed) && swaps.len() >= plan.at_least) {
        let to = if current == 1 { 2 } else { 1 };
        let spec = put_deployment(&plan.endpoint, &plan.deployment, &plan.model, to);
        let t0 = Instant::now();
        let answer = send_on(&mut conn, plan.addr, &spec);
        let answer = tokio::time::timeout(Duration::from_secs(120), answer).await;
        let put = t0.elapsed();
        let failure = match answer {
            Ok(Ok(a)) if a.status.is_success() => None,
            Ok(Ok(a)) => Some(format!(
                "{} {}",
                a.status,
                String::from_utf8_lossy(&a.body[..a.body.len().min(500)])
            )),
            Ok(Err(e)) => Some(format!("no answer: {e}")),
            Err(_) => Some("no answer within 120 s".to_string()),
        };
        if failure.is_none() {
            current = to;
        } else {
            conn = None;
        }
        swaps.push(Swap {
            t0,
            put,
            from: if to == 1 { 2 } else { 1 },
            to,
            failure,
        });
        // The next tick not yet passed: a slow swap skips ticks rather than
        // being followed by a burst.
        let elapsed = start.elapsed();
        tick = (tick + 1).max((elapsed.as_secs_f64() / plan.interval.as_secs_f64()).ceil() as u32);
        tokio::time::sleep_until(start + plan.interval * tick).await;
    }
    Ok(SwapOutcome { swaps, current })
}

/// Sends `spec` on `conn`, opening a new connection first when there is none
/// or the server closed the idle one.
async fn send_on(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    spec: &RequestSpec,
) -> Result<Answer, RequestError> {
    if let Some(c) = conn.as_mut() {
        if c.ready().await.is_err() {
            *conn = None;
        }
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Connection::connect(addr).await?),
    };
    c.send(spec).await
}

/// One probe: a request sent alone and its answer.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub sent: Instant,
    pub received: Instant,
    /// The answering version; `None` when the request failed.
    pub version: Option<u32>,
}

/// What the prober saw.
pub struct ProbeOutcome {
    pub probes: Vec<Probe>,
    /// The first few failures, word for word.
    pub failures: Vec<String>,
    pub failure_count: u64,
}

/// Sends `spec` over one connection, each request as soon as the previous
/// answer is in, until `stop` is set; every answer is timed and its
/// version noted.
pub fn spawn_prober(
    addr: SocketAddr,
    spec: RequestSpec,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<ProbeOutcome>> {
    std::thread::Builder::new()
        .name("prober".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut out = ProbeOutcome {
                    probes: Vec::with_capacity(1 << 16),
                    failures: Vec::new(),
                    failure_count: 0,
                };
                let mut conn = Some(
                    Connection::connect(addr)
                        .await
                        .context("the prober cannot connect")?,
                );
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = send_on(&mut conn, addr, &spec);
                    let answer = tokio::time::timeout(Duration::from_secs(30), answer).await;
                    let received = Instant::now();
                    let failure = match &answer {
                        Ok(Ok(a)) if a.status.is_success() => match model_version(&a.body) {
                            Some(v) => {
                                out.probes.push(Probe {
                                    sent,
                                    received,
                                    version: Some(v),
                                });
                                continue;
                            }
                            None => "200 without a model_version".to_string(),
                        },
                        Ok(Ok(a)) => format!(
                            "{} {}",
                            a.status,
                            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
                        ),
                        Ok(Err(e)) => format!("no answer: {e}"),
                        Err(_) => "no answer within 30 s".to_string(),
                    };
                    conn = None;
                    out.failure_count += 1;
                    if out.failures.len() < KEEP_FAILURES {
                        out.failures.push(failure);
                    }
                    out.probes.push(Probe {
                        sent,
                        received,
                        version: None,
                    });
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
                Ok(out)
            })
        })
        .expect("spawning the prober thread")
}

/// When the traffic moved for one swap, as the prober saw it.
#[derive(Debug, Clone, Copy)]
pub struct Changeover {
    /// From `t0` to the first answer by the new version.
    pub first_new: Option<Duration>,
    /// From `t0` to the first new-version answer after which no answer by
    /// the old version arrived (before the next swap).
    pub all_new: Option<Duration>,
    /// Old-version answers to probes sent after the PUT had answered:
    /// traffic the swap had promised to move that had not moved.
    pub stale_after_put: u64,
    /// Probes answered between `t0` and the next swap.
    pub probes: u64,
}

/// The changeover of each successful swap in `swaps` (in order, and taken
/// while `probes` ran); a failed swap gets `None`.
pub fn changeovers(swaps: &[Swap], probes: &[Probe]) -> Vec<Option<Changeover>> {
    swaps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.failure.is_some() {
                return None;
            }
            let end = swaps.get(i + 1).map(|n| n.t0);
            let window: Vec<&Probe> = probes
                .iter()
                .filter(|p| p.received >= s.t0 && end.is_none_or(|e| p.received < e))
                .collect();
            let last_old = window.iter().rposition(|p| p.version == Some(s.from));
            let first_new = window.iter().position(|p| p.version == Some(s.to));
            let all_new = window
                .iter()
                .skip(last_old.map_or(0, |i| i + 1))
                .find(|p| p.version == Some(s.to));
            let put_done = s.t0 + s.put;
            Some(Changeover {
                first_new: first_new.map(|i| window[i].received - s.t0),
                all_new: all_new.map(|p| p.received - s.t0),
                stale_after_put: window
                    .iter()
                    .filter(|p| p.sent > put_done && p.version == Some(s.from))
                    .count() as u64,
                probes: window.len() as u64,
            })
        })
        .collect()
}
