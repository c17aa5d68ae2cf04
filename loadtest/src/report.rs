use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ErrorKind;

/// The outcome of a run, warm-up excluded.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests that got an answer or failed, i.e. `ok` plus all errors.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The measured window the rates are computed over.
    pub elapsed: Duration,
    /// Latency of 2xx answers in microseconds; the full histogram is kept so
    /// callers can ask for any quantile, not only the ones printed.
    pub latency: Histogram<u64>,
}

/// The usual latency quantiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latencies {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// All requests per second, failures included.
    pub fn throughput(&self) -> f64 {
        per_second(self.requests, self.elapsed)
    }

    /// 2xx answers per second: the figure to compare servers by, since a
    /// server that fails fast must not win on speed.
    pub fn ok_per_second(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    /// The latency at quantile `q` (0.0..=1.0); zero when nothing succeeded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latency.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    pub fn latencies(&self) -> Latencies {
        Latencies {
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: if self.latency.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.latency.max())
            },
        }
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "requests {} (ok {}, errors {}) in {:.2} s: {:.1} req/s ({:.1} ok/s)",
            self.requests,
            self.ok,
            self.error_count(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.ok_per_second()
        )?;
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            writeln!(f, "errors: {}", list.join(", "))?;
        }
        let l = self.latencies();
        write!(
            f,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;

    #[test]
    fn counts_rates_and_quantiles() {
        let mut a = Recorder::new();
        for ms in 1..=100u64 {
            a.record(Ok(()), Duration::from_millis(ms));
        }
        let mut b = Recorder::new();
        b.record(Err(ErrorKind::Status(503)), Duration::from_millis(1));
        b.record(Err(ErrorKind::Status(503)), Duration::from_millis(1));
        b.record(Err(ErrorKind::Io), Duration::from_millis(1));
        a.merge(b);
        let r = a.into_report(Duration::from_secs(2));
        assert_eq!((r.requests, r.ok, r.error_count()), (103, 100, 3));
        assert_eq!(r.errors[&ErrorKind::Status(503)], 2);
        assert_eq!(r.errors[&ErrorKind::Io], 1);
        assert_eq!(r.throughput(), 51.5);
        assert_eq!(r.ok_per_second(), 50.0);
        let l = r.latencies();
        // Three significant digits: quantiles are within 0.1%.
        assert!(
            (49_900..=50_100).contains(&(l.p50.as_micros() as u64)),
            "{l:?}"
        );
        assert!(
            (99_900..=100_100).contains(&(l.max.as_micros() as u64)),
            "{l:?}"
        );
        let text = r.to_string();
        assert!(text.contains("status 503: 2"), "{text}");
        assert!(text.contains("io: 1"), "{text}");
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let r = Recorder::new().into_report(Duration::ZERO);
        assert_eq!(r.throughput(), 0.0);
        assert_eq!(r.latencies().max, Duration::ZERO);
    }
}
