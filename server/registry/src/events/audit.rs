//! Appends every emitted event to the registry's audit log
//! (`REPO/registry.db`, table `audit_log`) from a thread of its own, so
//! SQLite's fsyncs and lock waits stay off the caller's path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{CloudEvent, EventCounters};
use crate::{store, Store};

const QUEUE: usize = 1024;

enum Msg {
    Event(Arc<CloudEvent>),
    Flush(Sender<()>),
}

pub(super) struct AuditWriter {
    tx: Sender<Msg>,
    counters: EventCounters,
}

impl AuditWriter {
    /// `None` when the repository has no registry database.
    pub fn start(repo: &Path, actor: String, counters: EventCounters) -> Option<AuditWriter> {
        if !Store::exists(repo) {
            return None;
        }
        let (tx, rx) = bounded(QUEUE);
        let repo = repo.to_path_buf();
        let c = counters.clone();
        std::thread::Builder::new()
            .name("ferroserve-audit".into())
            .spawn(move || run(&repo, &actor, &rx, &c))
            .ok()?;
        Some(AuditWriter { tx, counters })
    }

    pub fn append(&self, event: Arc<CloudEvent>) {
        if let Err(e) = self.tx.try_send(Msg::Event(event)) {
            self.counters.drop_event("audit_queue_full", 1);
            if let TrySendError::Full(Msg::Event(ev)) = e {
                tracing::warn!(id = %ev.id, "audit queue full; event not written to the audit log");
            }
        }
    }

    /// Waits (at most `timeout`) until what was queued before is written.
    pub fn flush(&self, timeout: Duration) {
        let (done_tx, done_rx) = bounded(1);
        if self.tx.send_timeout(Msg::Flush(done_tx), timeout).is_ok() {
            let _ = done_rx.recv_timeout(timeout);
        }
    }
}

fn run(repo: &Path, actor: &str, rx: &Receiver<Msg>, counters: &EventCounters) {
    let mut store = None;
    for msg in rx {
        let event = match msg {
            Msg::Event(e) => e,
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if store.is_none() {
            match Store::open(repo) {
                Ok(s) => store = Some(s),
                Err(e) => {
                    counters.drop_event("audit_failed", 1);
                    tracing::warn!(error = %e, id = %event.id, "cannot open the registry; event not audited");
                    continue;
                }
            }
        }
        let s = store.as_mut().expect("opened above");
        if let Err(e) = write(s, actor, &event) {
            counters.drop_event("audit_failed", 1);
            tracing::warn!(error = %e, id = %event.id, "event not written to the audit log");
        }
    }
}

fn write(s: &mut Store, actor: &str, event: &CloudEvent) -> Result<(), String> {
    let db = s.path().to_path_buf();
    let detail = serde_json::to_value(event).map_err(|e| e.to_string())?;
    let tx = s.write().map_err(|e| e.to_string())?;
    store::append_audit(
        &tx,
        &db,
        &event.time,
        actor,
        &event.ty,
        &event.subject,
        &detail,
    )
    .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}
