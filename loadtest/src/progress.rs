//! Live counts of a run in progress, for a progress line: a [`Caller`]
//! wrapper bumps shared counters as calls finish. The loops' own counting
//! (and so the report) is not involved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Caller, ErrorKind};

/// Calls finished so far, warm-up included.
#[derive(Debug, Default)]
pub struct Progress {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    /// `(ok, errors)`.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// A caller whose outcomes are also counted in a shared [`Progress`].
pub struct Counted<C> {
    inner: C,
    progress: Arc<Progress>,
}

impl<C: Caller> Counted<C> {
    pub fn new(inner: C, progress: Arc<Progress>) -> Counted<C> {
        Counted { inner, progress }
    }
}

impl<C: Caller> Caller for Counted<C> {
    async fn call(&mut self, ticket: u64) -> Result<(), ErrorKind> {
        let outcome = self.inner.call(ticket).await;
        match outcome {
            Ok(()) => self.progress.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.progress.errors.fetch_add(1, Ordering::Relaxed),
        };
        outcome
    }

    fn abandon(&mut self) {
        // The loop counts the abandoned call as a timeout; so does this.
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.inner.abandon();
    }
}
