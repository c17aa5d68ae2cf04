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
    /// The server answered with an HTTP status outside 2xx.
    Status(u16),
    /// The server answered a gRPC call with a status other than OK (the
    /// numeric code, 1 to 16).
    GrpcStatus(i32),
    /// The server said the request succeeded but the answer failed the
    /// caller's check (the wrong number or size of outputs, say): a server
    /// that answers fast with the wrong thing must not count as fast.
    BadAnswer,
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
            ErrorKind::GrpcStatus(code) => match GRPC_CODES.get(*code as usize) {
                Some(name) if *code > 0 => write!(f, "grpc {name} ({code})"),
                _ => write!(f, "grpc status {code}"),
            },
            ErrorKind::BadAnswer => f.write_str("bad answer"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::Timeout => f.write_str("timeout"),
        }
    }
}

/// gRPC status code names, indexed by code
/// (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_as_words() {
        assert_eq!(ErrorKind::Status(503).to_string(), "status 503");
        assert_eq!(
            ErrorKind::GrpcStatus(14).to_string(),
            "grpc unavailable (14)"
        );
        assert_eq!(ErrorKind::GrpcStatus(99).to_string(), "grpc status 99");
        assert_eq!(ErrorKind::GrpcStatus(-1).to_string(), "grpc status -1");
        assert_eq!(ErrorKind::BadAnswer.to_string(), "bad answer");
    }
}
