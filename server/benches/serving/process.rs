//! A server under test, run as a child process: the real binary, measured
//! from outside the way clients see it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Lines of the child's stderr kept for error messages.
const LOG_TAIL: usize = 40;

/// A port a server announces on stderr as `<PROTOCOL> server listening on
/// ADDR` (ferroserve logs one line for HTTP and one for gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Grpc,
}

impl Listener {
    const ALL: [Listener; 2] = [Listener::Http, Listener::Grpc];

    fn announcement(self) -> &'static str {
        match self {
            Listener::Http => "HTTP server listening on ",
            Listener::Grpc => "gRPC server listening on ",
        }
    }
}

pub struct ServerProcess {
    name: String,
    child: Child,
    /// The HTTP address.
    pub addr: SocketAddr,
    /// The gRPC address, when the server was started expecting one.
    pub grpc_addr: Option<SocketAddr>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts `cmd` and waits until it has announced its HTTP listener, and
    /// every other one in `listeners`, on stderr.
    ///
    /// stderr is read on its own thread for the whole life of the child: a
    /// server that logs under load would otherwise block once the pipe
    /// buffer fills, and the benchmark would measure the pipe.
    pub fn start(
        name: &str,
        mut cmd: Command,
        listeners: &[Listener],
        ready_within: Duration,
    ) -> Result<ServerProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        if let Some(found) = listening_addr(&line) {
                            let _ = tx.send(found);
                        }
                        let mut log = log.lock().expect("log lock");
                        if log.len() == LOG_TAIL {
                            log.pop_front();
                        }
                        log.push_back(line);
                    }
                })
                .context("spawning the stderr reader")?;
        }
        let mut process = ServerProcess {
            name: name.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_addr: None,
            log,
        };
        let deadline = Instant::now() + ready_within;
        let mut waiting: Vec<Listener> = listeners.to_vec();
        if !waiting.contains(&Listener::Http) {
            waiting.push(Listener::Http);
        }
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((listener, addr)) => {
                    match listener {
                        Listener::Http => process.addr = addr,
                        Listener::Grpc => process.grpc_addr = Some(addr),
                    }
                    waiting.retain(|&l| l != listener);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.child.wait().ok();
                    bail!(
                        "{name} exited before it was ready ({status:?}); its last log lines:\n{}",
                        process.log_tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{name} had not announced its {waiting:?} listener(s) after {ready_within:?}; \
                     its last log lines:\n{}",
                    process.log_tail()
                ),
            }
        }
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resident memory in bytes (VmRSS): what the process actually holds in
    /// RAM, which is what a container's memory limit is charged for.
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading /proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS line in /proc/PID/status")?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("cannot read {line:?}"))?;
        Ok(kb * 1024)
    }

    /// Stops the server the way an orchestrator does (SIGTERM), so a server
    /// that hangs on shutdown is noticed; it is killed after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("{} ignored SIGTERM for {grace:?} and was killed", self.name)
    }
}

impl Drop for ServerProcess {
    /// Never leaves a server running behind a benchmark that failed.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The listener and address in a `… HTTP server listening on 127.0.0.1:PORT`
/// (or `gRPC server …`) log line, whatever the logger put before it.
fn listening_addr(line: &str) -> Option<(Listener, SocketAddr)> {
    Listener::ALL.into_iter().find_map(|listener| {
        let announcement = listener.announcement();
        let rest = &line[line.find(announcement)? + announcement.len()..];
        let token: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
            .collect();
        let addr = token.trim_end_matches([',', '.', ';']).parse().ok()?;
        Some((listener, addr))
    })
}

/// Sends one request and insists on a 2xx: measuring a server that
/// answers every request with an error would produce fine-looking,
/// meaningless figures.
pub fn check(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    spec: &ferroserve_loadtest::RequestSpec,
) -> Result<ferroserve_loadtest::Answer> {
    let answer = rt.block_on(async {
        let mut conn = ferroserve_loadtest::Connection::connect(addr).await?;
        conn.send(spec).await
    })?;
    if !answer.status.is_success() {
        bail!(
            "{} {} answered {}: {}",
            spec.method,
            spec.path,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(answer)
}
