//! The intent journal that makes registration and deletion survive
//! `kill -9` at any point, and the recovery that runs when the registry is
//! opened.
//!
//! A filesystem rename and a database commit cannot be one atomic step, so
//! a registration first commits a `pending_registrations` row naming the
//! version number, the temporary folder and everything the version row will
//! record (files and hashes included), then renames the folder, then
//! commits the version row and deletes the pending row in one transaction.
//! Whoever opens the registry next finishes what a dead process left:
//!
//! - a pending row whose folder reached its version name, with the
//!   recorded hashes, is rolled forward (the version becomes visible, and
//!   the audit entry says it was recovered);
//! - a pending row whose folder did not get there is rolled back (the
//!   temporary folder is removed, the number is free again: it was never
//!   visible);
//! - a `.tmp-*` folder of a dead process (killed while copying, before its
//!   pending row) is removed;
//! - a `.deleted-V-*` folder of a dead process is put back under `V` when
//!   the version's row still exists (the deletion never committed), and
//!   removed when it does not (the deletion committed, the cleanup did not
//!   run).
//!
//! This is the registry finishing its own interrupted operations, as SQLite
//! replays its journal; `repo check` still only reports, never repairs,
//! differences between the folders and the database.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::folders::DELETED_PREFIX;
use crate::folders::TMP_PREFIX;
use crate::fsutil::{fsync_dir, hash_tree, FileRecord};
use crate::git::GitInfo;
use crate::store::db_err;
use crate::store::{self, NewVersion, Store};
use crate::RegistryError;

/// Everything a version row, its file rows and its audit entry record,
/// kept in the pending row until the folder is in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingVersion {
    pub model: String,
    pub version: u64,
    pub model_description: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub registered_by: String,
    pub registered_at: String,
    pub message: Option<String>,
    pub source_dir: Option<String>,
    pub git: GitInfo,
    pub files: Vec<FileRecord>,
    /// The `model.registered` audit entry's detail.
    pub audit: serde_json::Value,
}

/// Who holds a pending row: a process id and its start time (clock ticks
/// since boot, from `/proc/PID/stat`), so that a reused pid is not taken
/// for the registration that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start: Option<u64>,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: process_start(pid),
        }
    }

    /// Whether the process is still running. Without `/proc`, every owner
    /// is taken to be alive, so nothing is ever recovered from under a
    /// running registration.
    pub fn alive(&self) -> bool {
        if !Path::new("/proc/self").exists() {
            return true;
        }
        match (process_start(self.pid), self.start) {
            (None, _) => false,
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        }
    }
}

/// Field 22 of `/proc/PID/stat`, the process's start time.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The highest version number reserved by a pending row of `model`.
pub fn max_pending(tx: &Transaction<'_>, db: &Path, model: &str) -> Result<u64, RegistryError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT MAX(version) FROM pending_registrations WHERE model = ?1",
            [model],
            |r| r.get(0),
        )
        .map_err(db_err(
            db,
            format!("cannot read pending versions of {model:?}"),
        ))?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Records the intent to rename `tmp_dir` (a name inside `REPO/MODEL/`) to
/// the pending version; returns the row's id.
pub fn begin(
    tx: &Transaction<'_>,
    db: &Path,
    p: &PendingVersion,
    tmp_dir: &str,
    owner: Owner,
) -> Result<i64, RegistryError> {
    let record = serde_json::to_string(p).expect("pending version serializes");
    tx.execute(
        "INSERT INTO pending_registrations (model, version, tmp_dir, pid, pid_start, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            p.model,
            p.version as i64,
            tmp_dir,
            owner.pid,
            owner.start.map(|s| s as i64),
            record
        ],
    )
    .map_err(db_err(
        db,
        format!("cannot record pending version {}:{}", p.model, p.version),
    ))?;
    Ok(tx.last_insert_rowid())
}

/// Makes a pending version visible: the version, file and audit rows, and
/// the pending row gone, in the caller's transaction.
pub fn finish(
    tx: &Transaction<'_>,
    db: &Path,
    id: i64,
    p: &PendingVersion,
    recovered: bool,
) -> Result<(), RegistryError> {
    store::insert_version(
        tx,
        db,
        &NewVersion {
            model: &p.model,
            version: p.version,
            model_description: &p.model_description,
            description: &p.description,
            tags: &p.tags,
            registered_by: &p.registered_by,
            registered_at: &p.registered_at,
            message: p.message.as_deref(),
            source_dir: p.source_dir.as_deref(),
            git: &p.git,
        },
        &p.files,
    )?;
    let mut detail = p.audit.clone();
    if recovered {
        detail["recovered"] = serde_json::Value::Bool(true);
    }
    store::append_audit(
        tx,
        db,
        &p.registered_at,
        &p.registered_by,
        crate::lifecycle::MODEL_REGISTERED,
        &format!("{}:{}", p.model, p.version),
        &detail,
    )?;
    forget(tx, db, id)
}

/// Deletes a pending row.
pub fn forget(tx: &Transaction<'_>, db: &Path, id: i64) -> Result<(), RegistryError> {
    tx.execute("DELETE FROM pending_registrations WHERE id = ?1", [id])
        .map_err(db_err(
            db,
            format!("cannot delete pending registration {id}"),
        ))?;
    Ok(())
}

/// What recovery did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// `MODEL:VERSION` of registrations rolled forward.
    pub rolled_forward: Vec<String>,
    /// `MODEL:VERSION` of registrations rolled back.
    pub rolled_back: Vec<String>,
    /// `MODEL:VERSION` of deletions undone (folder put back).
    pub restored: Vec<String>,
    /// Leftover folders removed, relative to the repository.
    pub removed: Vec<String>,
}

impl Recovered {
    fn is_empty(&self) -> bool {
        self == &Recovered::default()
    }
}

struct PendingRow {
    id: i64,
    tmp_dir: String,
    owner: Owner,
    record: String,
}

/// Finishes or undoes what dead processes left; see the module
/// documentation. Cheap when there is nothing to do: one query and one
/// folder listing per model, no write lock.
pub fn recover(store: &mut Store, repo: &Path) -> Result<Recovered, RegistryError> {
    let db = store.path().to_path_buf();
    let pending: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM pending_registrations", [], |r| {
            r.get(0)
        })
        .map_err(db_err(&db, "cannot count pending registrations"))?;
    let leftovers = leftover_folders(repo);
    if pending == 0 && leftovers.iter().all(|(_, _, owner)| owner.alive()) {
        return Ok(Recovered::default());
    }

    // Under the write lock, so that two processes never recover the same
    // thing, and a registration cannot move between reading and acting.
    let mut done = Recovered::default();
    let tx = store.write()?;
    let rows: Vec<PendingRow> = {
        let mut stmt = tx
            .prepare("SELECT id, tmp_dir, pid, pid_start, record FROM pending_registrations")
            .map_err(db_err(&db, "cannot read pending registrations"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingRow {
                    id: r.get(0)?,
                    tmp_dir: r.get(1)?,
                    owner: Owner {
                        pid: r.get(2)?,
                        start: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                    },
                    record: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_err(&db, "cannot read pending registrations"))?;
        rows
    };
    for row in rows.into_iter().filter(|r| !r.owner.alive()) {
        let p: PendingVersion = match serde_json::from_str(&row.record) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(id = row.id, error = %e, "unreadable pending registration left alone");
                continue;
            }
        };
        let subject = format!("{}:{}", p.model, p.version);
        let model_dir = repo.join(&p.model);
        let dir = model_dir.join(p.version.to_string());
        let tmp = model_dir.join(&row.tmp_dir);
        if dir.is_dir() {
            let on_disk = hash_tree(&dir)?;
            if on_disk == p.files {
                finish(&tx, &db, row.id, &p, true)?;
                done.rolled_forward.push(subject);
            } else {
                // Not what the registration wrote: leave it for `repo
                // check` to report; the row keeps its number reserved.
                tracing::warn!(version = %subject, dir = %dir.display(), "folder of an interrupted registration differs from what it recorded; left as it is");
            }
        } else {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(RegistryError::io(
                    &tmp,
                    "cannot remove the folder of an interrupted registration",
                ))?;
                fsync_dir(&model_dir)?;
            }
            forget(&tx, &db, row.id)?;
            done.rolled_back.push(subject);
        }
    }
    for (model, name, owner) in leftover_folders(repo) {
        if owner.alive() {
            continue;
        }
        let model_dir = repo.join(&model);
        let path = model_dir.join(&name);
        if name.starts_with(TMP_PREFIX) {
            // A pending row of a live process may still name it.
            let named: bool = tx
                .query_row(
                    "SELECT 1 FROM pending_registrations WHERE model = ?1 AND tmp_dir = ?2",
                    params![model, name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db_err(&db, "cannot read pending registrations"))?
                .is_some();
            if named {
                continue;
            }
            std::fs::remove_dir_all(&path).map_err(RegistryError::io(
                &path,
                "cannot remove the leftover of an interrupted registration",
            ))?;
            fsync_dir(&model_dir)?;
            done.removed.push(format!("{model}/{name}"));
        } else if let Some(version) = deleted_version(&name) {
            let dir = model_dir.join(version.to_string());
            let row = store::version_exists(&tx, &db, &model, version)?;
            if row && !dir.exists() {
                std::fs::rename(&path, &dir).map_err(RegistryError::io(
                    &path,
                    format!("cannot put back {}", dir.display()),
                ))?;
                fsync_dir(&model_dir)?;
                done.restored.push(format!("{model}:{version}"));
            } else if !row {
                std::fs::remove_dir_all(&path).map_err(RegistryError::io(
                    &path,
                    "cannot remove the folder of a deleted version",
                ))?;
                fsync_dir(&model_dir)?;
                done.removed.push(format!("{model}/{name}"));
            }
        }
    }
    tx.commit().map_err(db_err(
        &db,
        "cannot commit recovery of interrupted operations",
    ))?;
    if !done.is_empty() {
        tracing::info!(
            rolled_forward = ?done.rolled_forward,
            rolled_back = ?done.rolled_back,
            restored = ?done.restored,
            removed = ?done.removed,
            "finished operations that interrupted processes left"
        );
    }
    Ok(done)
}

/// `(model, folder name, owner)` of every `.tmp-PID-*` and
/// `.deleted-V-PID-*` folder in the repository. A name without a readable
/// pid was not made by a ferroserve process, whose names always carry one;
/// it is reported as owned by pid 0, which is never alive in `/proc`.
pub fn leftover_folders(repo: &Path) -> Vec<(String, String, Owner)> {
    let mut out = Vec::new();
    let Ok(models) = std::fs::read_dir(repo) else {
        return out;
    };
    for m in models.flatten() {
        let Some(model) = m.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if model.starts_with('.') || !m.path().is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(m.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let pid = if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
                rest.split('-').next()
            } else if let Some(rest) = name.strip_prefix(DELETED_PREFIX) {
                rest.split('-').nth(1)
            } else {
                continue;
            };
            let owner = match pid.and_then(|p| p.parse::<u32>().ok()) {
                Some(pid) => Owner { pid, start: None },
                None => Owner {
                    pid: 0,
                    start: None,
                },
            };
            out.push((model.clone(), name, owner));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// The version of a `.deleted-V-PID-NANOS` folder name.
fn deleted_version(name: &str) -> Option<u64> {
    name.strip_prefix(DELETED_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        let me = Owner::me();
        assert!(me.alive());
        if Path::new("/proc/self").exists() {
            assert!(me.start.is_some());
            // Same pid, another start time: the pid was reused.
            let reused = Owner {
                pid: me.pid,
                start: me.start.map(|s| s + 1),
            };
            assert!(!reused.alive());
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            assert!(!Owner { pid, start: None }.alive());
        }
    }

    #[test]
    fn deleted_folder_names_parse() {
        assert_eq!(deleted_version(".deleted-12-345-678"), Some(12));
        assert_eq!(deleted_version(".deleted-x-345-678"), None);
        assert_eq!(deleted_version(".tmp-1-2"), None);
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;

    /// Without `/proc` nothing is ever recovered (every owner counts as
    /// alive), so these tests have nothing to check there.
    fn no_proc() -> bool {
        let missing = !Path::new("/proc/self").exists();
        if missing {
            eprintln!("skipped: no /proc to tell dead processes from live ones");
        }
        missing
    }

    /// An owner that has certainly exited.
    fn dead() -> Owner {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        Owner { pid, start: None }
    }

    fn pending(repo: &Path, version: u64, tmp: &str, owner: Owner) -> PendingVersion {
        let model_dir = repo.join("m");
        std::fs::create_dir_all(model_dir.join(tmp)).unwrap();
        std::fs::write(model_dir.join(tmp).join("bundle.toml"), b"name = 'm'").unwrap();
        let files = hash_tree(&model_dir.join(tmp)).unwrap();
        let p = PendingVersion {
            model: "m".into(),
            version,
            model_description: String::new(),
            description: "d".into(),
            tags: BTreeMap::new(),
            registered_by: "u".into(),
            registered_at: "t".into(),
            message: None,
            source_dir: None,
            git: GitInfo::default(),
            files,
            audit: serde_json::json!({"version": version}),
        };
        let mut store = Store::open(repo).unwrap();
        let db = store.path().to_path_buf();
        let tx = store.write().unwrap();
        begin(&tx, &db, &p, tmp, owner).unwrap();
        tx.commit().unwrap();
        p
    }

    fn versions(store: &Store) -> Vec<i64> {
        let mut stmt = store
            .conn()
            .prepare("SELECT version FROM versions ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn pending_count(store: &Store) -> i64 {
        store
            .conn()
            .query_row("SELECT COUNT(*) FROM pending_registrations", [], |r| {
                r.get(0)
            })
            .unwrap()
    }

    #[test]
    fn renamed_folder_is_rolled_forward_and_audited() {
        if no_proc() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        pending(repo, 1, ".tmp-1-1", dead());
        // The dead process got as far as the rename.
        std::fs::rename(repo.join("m/.tmp-1-1"), repo.join("m/1")).unwrap();
        let store = Store::open(repo).unwrap();
        assert_eq!(versions(&store), [1]);
        assert_eq!(pending_count(&store), 0);
        let detail: String = store
            .conn()
            .query_row(
                "SELECT detail FROM audit_log WHERE action = 'io.ferroserve.model.registered'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(detail.contains("\"recovered\":true"), "{detail}");
    }

    #[test]
    fn unrenamed_folder_is_rolled_back_and_live_owners_are_left_alone() {
        if no_proc() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        pending(repo, 1, ".tmp-1-1", dead());
        pending(
            repo,
            2,
            &format!(".tmp-{}-2", std::process::id()),
            Owner::me(),
        );
        // A copy that died before its pending row.
        std::fs::create_dir_all(repo.join("m/.tmp-999999999-3")).unwrap();
        let store = Store::open(repo).unwrap();
        assert!(versions(&store).is_empty());
        assert_eq!(pending_count(&store), 1, "the live one stays");
        assert!(!repo.join("m/.tmp-1-1").exists());
        assert!(!repo.join("m/.tmp-999999999-3").exists());
        assert!(repo
            .join(format!("m/.tmp-{}-2", std::process::id()))
            .exists());
    }

    #[test]
    fn interrupted_deletion_is_undone_or_completed() {
        if no_proc() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        let owner = dead();
        pending(repo, 1, ".tmp-1-1", owner);
        std::fs::rename(repo.join("m/.tmp-1-1"), repo.join("m/1")).unwrap();
        drop(Store::open(repo).unwrap());
        // Killed after renaming version 1 away, before the commit: the row
        // is still there, so the folder comes back.
        let trash = format!(".deleted-1-{}-5", owner.pid);
        std::fs::rename(repo.join("m/1"), repo.join("m").join(&trash)).unwrap();
        let store = Store::open(repo).unwrap();
        assert!(repo.join("m/1/bundle.toml").is_file());
        assert!(!repo.join("m").join(&trash).exists());
        assert_eq!(versions(&store), [1]);
        // A trash folder whose row is gone (the deletion committed) is
        // removed.
        let trash = format!(".deleted-7-{}-5", owner.pid);
        std::fs::create_dir_all(repo.join("m").join(&trash)).unwrap();
        drop(store);
        drop(Store::open(repo).unwrap());
        assert!(!repo.join("m").join(&trash).exists());
    }
}
