//! CPU time and resident memory of the server under test (and its child
//! processes: Python workers), sampled from `/proc` every 100 ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One sample: since the profile started, cores in use over the last
/// interval, and resident bytes (server plus children).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub cpu_cores: f64,
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

fn pids(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Ok(kids) = std::fs::read_to_string(t.path().join("children")) {
                    out.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    out
}

/// (CPU seconds, resident bytes) of `root` and its descendants.
pub fn usage(root: u32) -> Option<(f64, u64)> {
    let mut cpu = 0.0;
    let mut rss = 0;
    let mut any = false;
    for pid in pids(root) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are 11 and 12 after the ')'.
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        cpu += ticks / TICKS;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                rss += kb * 1024;
            }
        }
        any = true;
    }
    any.then_some((cpu, rss))
}

/// Samples in the background until dropped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, origin: Instant, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut last = usage(pid).map(|(c, _)| (c, Instant::now()));
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let now = Instant::now();
                let Some((cpu, rss)) = usage(pid) else { break };
                if let Some((c0, t0)) = last {
                    let dt = now.duration_since(t0).as_secs_f64().max(1e-6);
                    s.lock().expect("samples").push(Sample {
                        t_s: now.duration_since(origin).as_secs_f64(),
                        cpu_cores: ((cpu - c0) / dt).max(0.0),
                        rss_bytes: rss,
                    });
                }
                last = Some((cpu, now));
            }
        });
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
