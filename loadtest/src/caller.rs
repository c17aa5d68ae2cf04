use std::future::Future;
use std::time::Duration;

use crate::ErrorKind;

/// One client slot of a run, for any protocol: it owns its connection and
/// sends one request at a time.
///
/// The loops ([`ClosedLoop::run_with`](crate::ClosedLoop::run_with),
/// [`OpenLoop::run_with`](crate::OpenLoop::run_with)) do the rest the same
/// way for every protocol: they decide when each call starts, bound it by the
/// run's timeout, time it, and count its outcome. HTTP/1.1 with
/// [`RequestSpec`](crate::RequestSpec)s is built in (`run`); anything else
/// (gRPC, another client library) only has to implement this.
pub trait Caller: Send + 'static {
    /// Sends request number `ticket` of the run and waits for the whole
    /// answer. Tickets count up from 0 across all callers of a run, so
    /// `ticket % n` picks from a mix of `n` requests in its proportions.
    ///
    /// `Ok(())` means the answer was a success and passed whatever the caller
    /// checks; only those are timed. A caller that loses its connection
    /// should count that call as failed and reconnect on the next one, so
    /// one broken socket costs one error, not the rest of the run.
    fn call(&mut self, ticket: u64) -> impl Future<Output = Result<(), ErrorKind>> + Send;

    /// The call in flight was dropped because it outlived the run's timeout.
    /// On a connection that carries one request at a time (HTTP/1.1) its
    /// late answer could still arrive and be taken for the next one's, so
    /// such a caller drops the connection here. The default does nothing,
    /// which is right where dropping the call cancels it alone (an HTTP/2 or
    /// gRPC stream).
    fn abandon(&mut self) {}
}

/// One call bounded by `timeout`; a call that outlives it counts as
/// [`ErrorKind::Timeout`] and the caller is told it was abandoned.
pub(crate) async fn timed_call<C: Caller>(
    caller: &mut C,
    ticket: u64,
    timeout: Duration,
) -> Result<(), ErrorKind> {
    match tokio::time::timeout(timeout, caller.call(ticket)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            caller.abandon();
            Err(ErrorKind::Timeout)
        }
    }
}

/// A caller that needs no server: its answer is chosen by the ticket, and it
/// notes what the loop asked of it.
#[cfg(test)]
pub(crate) mod scripted {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::Caller;
    use crate::ErrorKind;

    #[derive(Default)]
    pub(crate) struct Log {
        pub(crate) tickets: Vec<u64>,
        pub(crate) abandoned: u64,
    }

    /// Ticket `i` gets `script[i % len]`; `None` never answers.
    pub(crate) struct Scripted {
        pub(crate) script: Arc<[Option<Result<(), ErrorKind>>]>,
        pub(crate) log: Arc<Mutex<Log>>,
    }

    impl Caller for Scripted {
        async fn call(&mut self, ticket: u64) -> Result<(), ErrorKind> {
            self.log.lock().unwrap().tickets.push(ticket);
            match self.script[(ticket % self.script.len() as u64) as usize] {
                Some(outcome) => {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                    outcome
                }
                None => std::future::pending().await,
            }
        }

        fn abandon(&mut self) {
            self.log.lock().unwrap().abandoned += 1;
        }
    }
}
