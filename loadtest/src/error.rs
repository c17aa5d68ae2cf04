use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a run could not start at all.
///
/// Failures of single requests are not errors of the run: a load test has to
/// survive the failures it is there to count, so those end up in
/// [`Report::errors`](crate::Report::errors) by [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("the arrival rate must be a positive number of requests per second, got {0}")]
    Rate(f64),
    #[error("no requests to send: the request list is empty")]
    NoRequests,
    #[error("invalid request header: {0}")]
    Header(String),
}

/// Why one request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("HTTP/1.1 handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("connection failed mid-request: {0}")]
    Io(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl RequestError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::Connect { .. } | RequestError::Handshake { .. } => ErrorKind::Connect,
            RequestError::Io(_) => ErrorKind::Io,
            RequestError::Timeout(_) => ErrorKind::Timeout,
        }
    }
}

/// How a request failed, coarse enough to count: a report that listed every
/// message would be unreadable after a million requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The server answered with a status outside 2xx.
    Status(u16),
    /// No connection could be made (refused, reset during the handshake).
    Connect,
    /// The connection broke while the request was in flight.
    Io,
    /// No answer within the run's timeout.
    Timeout,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "status {code}"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::Timeout => f.write_str("timeout"),
        }
    }
}
