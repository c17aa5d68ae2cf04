//! Starts the real `ferroserve` binary on a loopback port and talks to it
//! over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The generated example bundles; the test script generates them first.
pub fn examples_repo() -> PathBuf {
    let dir = workspace_root().join("examples/models");
    assert!(
        dir.join("mlp/1/bundle.toml").is_file(),
        "example models missing: run `.venv/bin/python examples/generate.py` (scripts/test.sh does)"
    );
    dir
}

/// Copies one example bundle into `repo/NAME/1`, returning its folder.
pub fn copy_example(name: &str, repo: &Path) -> PathBuf {
    let src = examples_repo().join(name).join("1");
    let dst = repo.join(name).join("1");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

pub struct Server {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(repo: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(repo, extra, &[])
    }

    /// Like [`Server::start`], with extra environment variables (applied
    /// after the default `RUST_LOG=info`, so they may override it).
    pub fn start_with_env(repo: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = serve_command(repo, extra);
        let mut child = cmd
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferroserve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut http = None;
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr_after = |marker: &str| {
                    line.find(marker).map(|i| {
                        line[i + marker.len()..]
                            .trim()
                            .parse::<SocketAddr>()
                            .unwrap()
                    })
                };
                if let Some(a) = addr_after("HTTP server listening on ") {
                    http = Some(a);
                }
                if let (Some(h), Some(g)) = (http, addr_after("gRPC server listening on ")) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((h, g));
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (addr, grpc_addr) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not become ready; log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            addr,
            grpc_addr,
            child,
            log,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The `/metrics` page (over plain HTTP).
    pub fn metrics(&self) -> String {
        let r = self.request("GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        send_sigterm(pid);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_sigterm(pid: i32) {
    // `kill` from the shell keeps the tests free of a libc dependency.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Runs `ferroserve serve` on a repository expected to fail at start-up and
/// returns its exit status and stderr.
pub fn start_failure(repo: &Path, envs: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    start_failure_with_args(repo, &[], envs)
}

/// Like [`start_failure`], with extra command-line arguments.
pub fn start_failure_with_args(
    repo: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let out = serve_command(repo, extra)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run ferroserve");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A deliberately plain HTTP/1.1 client: one request per connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header block");
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

/// The value of one series in Prometheus text, e.g.
/// `metric_value(text, "ferroserve_rejected_requests_total", r#"reason="unauthorized""#)`;
/// an empty `labels` means a series without labels.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `ferroserve serve` on `repo`, both ports on free loopback ports.
fn serve_command(repo: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    cmd.args(["serve", "--repo"])
        .arg(repo)
        .args([
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .args(extra);
    cmd
}
