//! CPU time of the load generator and of the server during a measurement.
//!
//! On a small machine the generator and the server share the cores, so a
//! throughput figure means little without knowing who used them: a ratio
//! that misses its target because the generator took a core reads
//! differently from one where the server was busy with itself.

use std::time::Instant;

/// Process CPU time (user + system, all threads) in seconds, from
/// `/proc/PID/stat`; `None` where there is no procfs.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// Machine-wide (busy, steal) CPU seconds from `/proc/stat`: busy time that
/// is neither the generator's nor the server's belongs to someone else, and
/// steal is time the hypervisor gave to other machines. Either one makes a
/// measurement on a shared machine suspect.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?;
    let steal = v.get(7).copied().unwrap_or(0.0);
    let tick = clock_ticks_per_second();
    Some((busy / tick, steal / tick))
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Cores used on average by this process and by `server` since `start`.
pub struct CpuMeter {
    server: Option<u32>,
    wall: Instant,
    client: Option<f64>,
    server_start: Option<f64>,
    machine: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub client_cores: Option<f64>,
    pub server_cores: Option<f64>,
    /// Busy cores outside the generator and the server.
    pub other_cores: Option<f64>,
    pub steal_cores: Option<f64>,
}

impl CpuMeter {
    pub fn start(server: Option<u32>) -> CpuMeter {
        CpuMeter {
            server,
            wall: Instant::now(),
            client: process_cpu_seconds(std::process::id()),
            server_start: server.and_then(process_cpu_seconds),
            machine: machine_cpu_seconds(),
        }
    }

    pub fn stop(self) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64();
        let cores = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / wall);
        let client_cores = cores(self.client, process_cpu_seconds(std::process::id()));
        let server_cores = cores(self.server_start, self.server.and_then(process_cpu_seconds));
        let machine = machine_cpu_seconds();
        let busy = cores(self.machine.map(|m| m.0), machine.map(|m| m.0));
        let other_cores =
            busy.map(|b| (b - client_cores.unwrap_or(0.0) - server_cores.unwrap_or(0.0)).max(0.0));
        CpuUse {
            client_cores,
            server_cores,
            other_cores,
            steal_cores: cores(self.machine.map(|m| m.1), machine.map(|m| m.1)),
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.2}"));
        write!(
            f,
            "CPU cores used: load generator {}, server {}, other processes {}",
            show(self.client_cores),
            show(self.server_cores),
            show(self.other_cores)
        )?;
        match self.steal_cores {
            Some(steal) if steal >= 0.01 => write!(f, ", stolen by the hypervisor {steal:.2}"),
            _ => Ok(()),
        }
    }
}
