//! Webhook delivery: one task per configured URL, reading that webhook's
//! bounded queue in order and POSTing each event as
//! `application/cloudevents+json`, with a per-attempt timeout and bounded
//! retries under exponential backoff. It runs on its own tasks, off the
//! request path; a full queue drops new events (counted), so a slow or dead
//! receiver never slows serving.
//!
//! Every attempt carries the [Standard Webhooks] headers: `webhook-id` (the
//! event id, the same on every retry, so a receiver can drop duplicates),
//! `webhook-timestamp` (Unix seconds of this attempt, so a receiver can
//! refuse replays) and, for a webhook with secrets, `webhook-signature` (see
//! [`super::signature`]). Each attempt is signed anew since its timestamp is
//! part of what is signed.
//!
//! Retried: connection errors (TLS handshake failures included), timeouts,
//! 408, 429 and 5xx. Other non-2xx answers, 3xx too (redirects are not
//! followed: the specification counts them as failures, and following one
//! would hand a signed event to a URL nobody configured), are permanent
//! failures. Every attempt is counted in
//! `ferroserve_webhook_deliveries_total{outcome}` (`success`, `http_error`,
//! `timeout`, `connect_error`, `tls_error`); an event given up on is logged
//! and counted in `ferroserve_webhook_failures_total`.
//!
//! `https://` receivers are checked against the system's roots (as
//! rustls-native-certs finds them, `SSL_CERT_FILE` and `SSL_CERT_DIR`
//! included) plus those of `--webhook-ca-file`, with rustls and the same
//! `ring` provider the listeners use. Connections go straight to the
//! receiver: proxy environment variables are not read, as before.
//!
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use reqwest::StatusCode;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::signature::Signer;
use ferroserve_registry::events::{CloudEvent, EventBus};

pub use reqwest::{Client, Url};

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

/// One subscription: where to POST and, unless it was configured unsigned,
/// the secrets that sign each delivery.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: Url,
    signer: Option<Signer>,
    /// The URL as logs show it: without credentials or query, which may
    /// hold a token.
    name: String,
}

impl Webhook {
    pub fn new(url: Url, signer: Option<Signer>) -> Webhook {
        let name = log_name(&url);
        Webhook { url, signer, name }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The URL for logs (no user, password or query).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn log_name(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Checks a `--webhook` URL.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{s:?}: a webhook URL starts with http:// or https://"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?}: no host"));
    }
    Ok(url)
}

/// Why `--webhook-ca-file` cannot be used. The message is the problem
/// alone: the caller names the file and the flag.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not valid PEM: {0}")]
    Pem(&'static str),
    #[error("no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)")]
    Empty,
    #[error("certificate {n} cannot be a trusted root: {source}")]
    Unusable {
        n: usize,
        #[source]
        source: rustls::Error,
    },
}

/// Why the HTTP client cannot be built (not expected with a valid
/// configuration: it names what rustls or reqwest refused).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Reads a PEM file of CA certificates, each checked to be usable as a
/// trust anchor so that a wrong file fails at start-up, not at the first
/// delivery.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let bytes = std::fs::read(path).map_err(CaFileError::Read)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            CaFileError::Pem(match e {
                pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
                pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
                pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
                pem::Error::SectionTooLarge => "a PEM block is too large",
                _ => "it cannot be parsed",
            })
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty);
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|source| CaFileError::Unusable { n: i + 1, source })?;
    }
    Ok(certs)
}

/// The client every webhook task shares: HTTP/1.1, no redirects, no
/// proxy, no retries of its own (the [`RetryPolicy`] is the only one, so
/// the counters count every attempt), connections limited to
/// `connect_timeout` and TLS trusting `extra_roots` plus, when any of the
/// `https_webhooks` is configured, the system's roots.
///
/// With no root at all (a system without a CA bundle, and no
/// `--webhook-ca-file`) the client is still built and says so in a
/// warning rather than refusing to start: webhooks are a side channel, so
/// serving goes on, `http://` webhooks work and `https://` ones fail as
/// `tls_error`, each failure logged.
pub fn client(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
    https_webhooks: usize,
) -> Result<reqwest::Client, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(ClientError::Tls)?;
    }
    // Only https:// webhooks need them: a server without one neither reads
    // the system's bundle nor warns about it.
    if https_webhooks > 0 {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "cannot load some of the system's CA certificates");
        }
        let (system, _unusable) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(
            system,
            extra = extra_roots.len(),
            "webhook TLS roots loaded"
        );
    }
    if roots.is_empty() && https_webhooks > 0 {
        tracing::warn!(
            https_webhooks,
            "no trusted CA certificate: the system has none and no --webhook-ca-file was given, \
             so every https:// webhook will fail (install the system CA bundle or pass --webhook-ca-file)"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(ClientError::Build)
}

/// Starts one delivery task per webhook, each reading its queue from
/// [`EventBus::new`]. Needs a tokio runtime.
pub fn spawn(
    bus: &EventBus,
    client: reqwest::Client,
    webhooks: Vec<Webhook>,
    queues: Vec<mpsc::Receiver<Arc<CloudEvent>>>,
    policy: RetryPolicy,
) {
    for (hook, mut queue) in webhooks.into_iter().zip(queues) {
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
                    () = deliver(&client, &hook, &event, &policy, &bus) => {}
                    () = &mut closed => return,
                }
            }
        });
    }
}

async fn deliver(
    client: &reqwest::Client,
    hook: &Webhook,
    event: &CloudEvent,
    policy: &RetryPolicy,
    bus: &EventBus,
) {
    let url = hook.name();
    let body = Bytes::from(event.to_json());
    let counters = bus.counters();
    let attempts = policy.retries + 1;
    let mut last = String::new();
    let mut made = 0;
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(policy.delay(attempt - 1)).await;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut req = client
            .post(hook.url.clone())
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .header(
                USER_AGENT,
                concat!("ferroserve/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(signer) = &hook.signer {
            req = req.header(
                "webhook-signature",
                signer.sign(&event.id, timestamp, &body),
            );
        }
        let req = req.body(body.clone());
        made = attempt;
        let (outcome, retry) = match tokio::time::timeout(policy.timeout, req.send()).await {
            Err(_) => {
                last = format!("no answer within {} ms", policy.timeout.as_millis());
                ("timeout", true)
            }
            Ok(Err(e)) => {
                let e = e.without_url();
                let outcome = if is_tls(&e) {
                    "tls_error"
                } else {
                    "connect_error"
                };
                last = format!("request failed: {}", chain(&e));
                (outcome, true)
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

/// Whether the connection failed in its TLS handshake (an untrusted or
/// mismatched certificate, a protocol the receiver does not speak), told
/// apart from a receiver that is not there at all. rustls' error reaches
/// here inside two `io::Error`s (tokio-rustls', then hyper-rustls'), and an
/// `io::Error`'s `source()` skips the error it wraps, so the walk goes
/// through `get_ref()` instead.
fn is_tls(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The error and its causes, `: `-separated: reqwest's own message alone
/// ("error sending request") does not say what went wrong.
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
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
    fn http_and_https_urls_only() {
        parse_url("http://127.0.0.1:9/hook").unwrap();
        parse_url("https://example.com/").unwrap();
        assert!(parse_url("ftp://x/").unwrap_err().contains("http://"));
        assert!(parse_url("/relative").unwrap_err().contains("not a URL"));
        assert!(parse_url("https://").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn logs_show_no_credentials_or_query() {
        let h = Webhook::new(
            parse_url("https://user:pa55@hooks.example.com:8443/in?token=t0k#x").unwrap(),
            None,
        );
        assert_eq!(h.name(), "https://hooks.example.com:8443/in");
        assert_eq!(
            h.url().as_str(),
            "https://user:pa55@hooks.example.com:8443/in?token=t0k#x"
        );
    }

    #[test]
    fn ca_files_must_hold_usable_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let e = read_ca_file(&dir.path().join("absent.pem")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read it"), "{e}");
        let e = read_ca_file(&write("text.pem", "not a certificate\n")).unwrap_err();
        assert!(matches!(e, CaFileError::Empty), "{e}");
        let e =
            read_ca_file(&write("open.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n")).unwrap_err();
        assert!(e.to_string().contains("no END line"), "{e}");
        let e = read_ca_file(&write(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("certificate 1 cannot be a trusted root"),
            "{e}"
        );
    }

    #[test]
    fn a_client_builds_with_the_ring_provider() {
        client(&[], Duration::from_secs(1), 0).unwrap();
    }
}
