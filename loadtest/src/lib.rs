//! Load generation against Open Inference Protocol servers (or any HTTP/1.1
//! server, or anything a [`Caller`] can reach).
//!
//! Two ways to offer load, because they answer different questions:
//!
//! - [`ClosedLoop`]: N connections, each sending its next request as soon as
//!   the previous answer arrives. It finds the peak throughput, but a slow
//!   server slows the client down with it, so its latencies flatter a server
//!   under stress.
//! - [`OpenLoop`]: requests arrive at a fixed rate whatever the server does,
//!   and each latency is measured from the moment the request *should* have
//!   been sent. A stalled server therefore shows up as the long tail it causes
//!   real users (no coordinated omission).
//!
//! Requests are prepared once ([`RequestSpec`]) so the generator spends its
//! CPU on sending, not on encoding: on a small machine it shares the cores
//! with the server it measures.
//!
//! Both loops speak HTTP/1.1 themselves (`run`) and drive any other protocol
//! through a [`Caller`] (`run_with`): a caller sends one request and says
//! whether it succeeded; pacing, timeouts, timing and counting stay here, the
//! same for every protocol, so their figures compare.
//!
//! Beside the generator: [`command`] (`ferroserve loadtest`), [`inputs`] and
//! [`grpc_client`] (requests over every protocol), and [`profiler`]
//! (`ferroserve profile`). This crate is a client of a server: it may use the
//! protocol, the runtime's manifests and the registry (the profiler stages a
//! bundle and starts `ferroserve serve` in a child process), never the server's
//! insides (`ferroserve-frontend`).

mod caller;
mod closed_loop;
pub mod command;
mod connection;
pub mod duration;
mod error;
pub mod grpc_client;
pub mod grpc_connection;
pub mod inputs;
mod open_loop;
pub mod profiler;
pub mod progress;
mod recorder;
mod report;
mod request;
mod worker;

#[cfg(test)]
mod test_server;

pub use caller::Caller;
pub use closed_loop::ClosedLoop;
pub use connection::{Answer, Connection};
pub use error::{ErrorKind, LoadError, RequestError};
pub use open_loop::OpenLoop;
pub use progress::{Counted, Progress};
pub use report::{Latencies, Report};
pub use request::RequestSpec;
/// The built-in HTTP/1.1 caller: one keep-alive connection, reconnecting
/// after a failure, sending the run's requests in turn.
pub use worker::Worker as HttpCaller;

use std::time::Duration;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Measure for this long after the warm-up.
    Duration(Duration),
    /// Send exactly this many measured requests after the warm-up.
    Requests(u64),
}

/// How long one request may take before it is abandoned and counted as a
/// timeout; without a bound a hung server would hang the load test too.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
