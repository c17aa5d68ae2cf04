use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Caller, Connection, ErrorKind, RequestSpec};

/// After a failed connect, wait this long before the next attempt so that a
/// server that is down is not hammered by a tight loop of refused connects
/// (which would also flood the report with millions of connect errors).
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// One HTTP/1.1 client slot of a run: it owns at most one connection and
/// reconnects when the connection breaks, so one broken socket costs one
/// error, not the rest of the run.
pub struct Worker {
    addr: SocketAddr,
    conn: Option<Connection>,
    /// The run's requests; call `i` sends `requests[i % len]`.
    requests: Arc<[RequestSpec]>,
}

impl Worker {
    /// A worker with its connection already open, so the run's clock does
    /// not include connecting. A failure is left for the first request to
    /// meet and count.
    pub async fn connect(addr: SocketAddr, requests: Arc<[RequestSpec]>) -> Worker {
        Worker {
            addr,
            conn: Connection::connect(addr).await.ok(),
            requests,
        }
    }

    /// Sends one request; `Ok` means a 2xx answer was read to the end.
    async fn exchange(&mut self, spec: &RequestSpec) -> Result<(), ErrorKind> {
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
        match conn.send(spec).await {
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
                // After a broken connection the socket's state is unknown:
                // start afresh.
                self.conn = None;
                Err(e.kind())
            }
        }
    }
}

impl Caller for Worker {
    async fn call(&mut self, ticket: u64) -> Result<(), ErrorKind> {
        let requests = Arc::clone(&self.requests);
        let spec = &requests[(ticket % requests.len() as u64) as usize];
        self.exchange(spec).await
    }

    /// A late answer to the abandoned request could still arrive on this
    /// connection and be read as the next request's: it is not reused.
    fn abandon(&mut self) {
        self.conn = None;
    }
}

/// A worker task's result; a panic in a worker is a bug in the generator (or
/// in a caller) and is passed on rather than turned into a quietly short
/// report.
pub(crate) fn unwrap_join<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("load worker cancelled: {e}"),
        },
    }
}
