use std::net::SocketAddr;
use std::time::Duration;

use crate::{Connection, ErrorKind, RequestError, RequestSpec};

/// After a failed connect, wait this long before the next attempt so that a
/// server that is down is not hammered by a tight loop of refused connects
/// (which would also flood the report with millions of connect errors).
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// One client slot of a run: it owns at most one connection and reconnects
/// when the connection breaks, so one broken socket costs one error, not the
/// rest of the run.
pub(crate) struct Worker {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<Connection>,
}

impl Worker {
    pub(crate) fn new(addr: SocketAddr, timeout: Duration) -> Worker {
        Worker {
            addr,
            timeout,
            conn: None,
        }
    }

    /// Sends one request; `Ok` means a 2xx answer was read to the end.
    pub(crate) async fn exchange(&mut self, spec: &RequestSpec) -> Result<(), ErrorKind> {
        // A server may close an idle keep-alive connection at any time; that
        // is not a failed request, so the request goes out on a new one.
        if let Some(conn) = &mut self.conn {
            if conn.ready().await.is_err() {
                self.conn = None;
            }
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => match Connection::connect(self.addr).await {
                Ok(conn) => self.conn.insert(conn),
                Err(e) => {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                    return Err(e.kind());
                }
            },
        };
        let result = match tokio::time::timeout(self.timeout, conn.send(spec)).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout(self.timeout)),
        };
        match result {
            Ok(answer) => {
                if !conn.is_open() {
                    self.conn = None;
                }
                if answer.status.is_success() {
                    Ok(())
                } else {
                    Err(ErrorKind::Status(answer.status.as_u16()))
                }
            }
            Err(e) => {
                // After a timeout or a broken connection the socket's state is
                // unknown (a late answer may still arrive): start afresh.
                self.conn = None;
                Err(e.kind())
            }
        }
    }
}

impl Worker {
    /// Opens the connection ahead of the first request. A failure is left for
    /// the first request to meet and count.
    pub(crate) async fn preconnect(&mut self) {
        if self.conn.is_none() {
            self.conn = Connection::connect(self.addr).await.ok();
        }
    }
}

/// A worker task's result; a panic in a worker is a bug in the generator and
/// is passed on rather than turned into a quietly short report.
pub(crate) fn unwrap_join<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("load worker cancelled: {e}"),
        },
    }
}
