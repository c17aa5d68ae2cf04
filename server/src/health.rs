//! `ferroserve health`: asks a running server whether it is ready (or
//! live), for a container's HEALTHCHECK. Images hold no curl, and a shell
//! pipeline would hide why a check failed; this exits 0 or 1 and says why.

use std::time::Duration;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct HealthArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Check liveness (GET /v2/health/live) instead of readiness.
    #[arg(long)]
    pub live: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
}

/// True when the server answered 200.
pub fn run(args: HealthArgs) -> Result<bool> {
    let base = args.url.trim_end_matches('/');
    if !base.starts_with("http://") {
        anyhow::bail!(
            "--url {}: expected an http:// address (the check runs beside the server, over loopback)",
            args.url
        );
    }
    let url = format!(
        "{base}/v2/health/{}",
        if args.live { "live" } else { "ready" }
    );
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("--url {}: not a URL", args.url))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let answer = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(args.timeout_s), client.get(uri)).await
    });
    match answer {
        Ok(Ok(r)) if r.status().is_success() => {
            println!("{url}: {}", r.status());
            Ok(true)
        }
        Ok(Ok(r)) => {
            eprintln!("{url}: {}", r.status());
            Ok(false)
        }
        Ok(Err(e)) => {
            // hyper-util's error says "client error (Connect)"; the cause
            // (connection refused, ...) is in its sources.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{url}: {why}");
            Ok(false)
        }
        Err(_) => {
            eprintln!("{url}: no answer within {} s", args.timeout_s);
            Ok(false)
        }
    }
}
