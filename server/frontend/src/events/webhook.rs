//! Webhook delivery: one task per configured URL, reading that webhook's
//! bounded queue in order and POSTing each event as
//! `application/cloudevents+json`, with a per-attempt timeout and bounded
//! retries under exponential backoff. It runs on its own tasks, off the
//! request path; a full queue drops new events (counted), so a slow or dead
//! receiver never slows serving.
//!
//! Retried: connection errors, timeouts, 408, 429 and 5xx. Other non-2xx
//! answers are permanent failures. Every attempt is counted in
//! `ferroserve_webhook_deliveries_total{outcome}` (`success`, `http_error`,
//! `timeout`, `connect_error`); an event given up on is logged and counted
//! in `ferroserve_webhook_failures_total`.
//!
//! Only `http://` URLs for now: `https://` needs a client TLS configuration
//! (roots, rustls connector) that is not wired yet.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use ferroserve_registry::events::{CloudEvent, EventBus};

/// Attempts and their pacing.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Per-attempt timeout (connect, send, answer).
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(5),
            retries: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Checks a `--webhook` URL.
pub fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{s:?}: https webhooks are not supported yet (no client TLS configuration); use http://"
            ))
        }
        _ => return Err(format!("{s:?}: a webhook URL starts with http://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{s:?}: no host"));
    }
    Ok(uri)
}

/// Starts one delivery task per URL, each reading its queue from
/// [`EventBus::new`]. Needs a tokio runtime.
pub fn spawn(
    bus: &EventBus,
    urls: Vec<Uri>,
    queues: Vec<mpsc::Receiver<Arc<CloudEvent>>>,
    policy: RetryPolicy,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(policy.timeout));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    for (url, mut queue) in urls.into_iter().zip(queues) {
        let client = client.clone();
        let policy = policy.clone();
        let bus = bus.clone();
        tokio::spawn(async move {
            let closed = bus.closed();
            tokio::pin!(closed);
            loop {
                let event = tokio::select! {
                    e = queue.recv() => match e { Some(e) => e, None => return },
                    () = &mut closed => return,
                };
                tokio::select! {
                    () = deliver(&client, &url, &event, &policy, &bus) => {}
                    () = &mut closed => return,
                }
            }
        });
    }
}

async fn deliver(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &Uri,
    event: &CloudEvent,
    policy: &RetryPolicy,
    bus: &EventBus,
) {
    let body = Bytes::from(event.to_json());
    let counters = bus.counters();
    let attempts = policy.retries + 1;
    let mut last = String::new();
    let mut made = 0;
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(policy.delay(attempt - 1)).await;
        }
        let req = Request::post(url.clone())
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .header(
                USER_AGENT,
                concat!("ferroserve/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .expect("a valid request");
        made = attempt;
        let (outcome, retry) = match tokio::time::timeout(policy.timeout, client.request(req)).await
        {
            Err(_) => {
                last = format!("no answer within {} ms", policy.timeout.as_millis());
                ("timeout", true)
            }
            Ok(Err(e)) => {
                last = format!("request failed: {e}");
                ("connect_error", true)
            }
            Ok(Ok(resp)) if resp.status().is_success() => ("success", false),
            Ok(Ok(resp)) => {
                let s = resp.status();
                last = format!("answered {s}");
                let retry = s.is_server_error()
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT;
                ("http_error", retry)
            }
        };
        counters
            .webhook_deliveries
            .with_label_values(&[outcome])
            .inc();
        if outcome == "success" {
            tracing::debug!(%url, id = %event.id, attempt, "webhook delivered");
            return;
        }
        tracing::debug!(%url, id = %event.id, attempt, error = %last, "webhook attempt failed");
        if !retry {
            break;
        }
    }
    counters.webhook_failures.inc();
    tracing::warn!(
        %url,
        id = %event.id,
        r#type = %event.ty,
        attempts = made,
        error = %last,
        "webhook delivery failed; event dropped for this webhook"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        let ms: Vec<u128> = (1..=8).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(p.delay(100), p.max_backoff);
    }

    #[test]
    fn only_http_urls() {
        parse_url("http://127.0.0.1:9/hook").unwrap();
        assert!(parse_url("https://example.com/")
            .unwrap_err()
            .contains("TLS"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
    }
}
