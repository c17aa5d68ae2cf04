//! `REPO/registry.db`: schema, versioning of the schema, and the queries
//! the registry needs.
//!
//! The schema version lives in `PRAGMA user_version`; a database newer than
//! this binary is refused rather than guessed at. Foreign keys are on for
//! every connection, and the audit log is append-only by trigger: an UPDATE
//! or DELETE on it aborts the statement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::fsutil::FileRecord;
use crate::git::GitInfo;
use crate::RegistryError;

pub const DB_FILE: &str = "registry.db";
/// The schema this binary writes and reads.
pub const SCHEMA_VERSION: i64 = 5;

/// Schema version 1.
const SCHEMA_V1: &str = r#"
CREATE TABLE models (
    name        TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);
CREATE TABLE versions (
    id            INTEGER PRIMARY KEY,
    model         TEXT NOT NULL REFERENCES models(name),
    version       INTEGER NOT NULL CHECK (version > 0),
    description   TEXT NOT NULL DEFAULT '',
    tags          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(tags) AND json_type(tags) = 'object'),
    registered_by TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    message       TEXT,
    source_dir    TEXT,
    git_repo      TEXT,
    git_branch    TEXT,
    git_commit    TEXT,
    git_dirty     INTEGER CHECK (git_dirty IN (0, 1)),
    UNIQUE (model, version)
);
CREATE TABLE files (
    version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    PRIMARY KEY (version_id, path)
);
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
"#;

/// Schema version 2, applied over version 1: aliases (MLflow style, one
/// version per `(model, alias)`, the foreign key keeps an aliased version
/// from being deleted underneath it) and each model's high-water mark of
/// version numbers, so that a deleted version's number is never reused.
const SCHEMA_V2: &str = r#"
CREATE TABLE aliases (
    model      TEXT NOT NULL,
    alias      TEXT NOT NULL CHECK (alias <> '' AND alias NOT GLOB '*[^a-z0-9_-]*'),
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions(model, version)
);
CREATE INDEX aliases_by_version ON aliases(model, version);
ALTER TABLE models ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
UPDATE models SET last_version =
    COALESCE((SELECT MAX(version) FROM versions WHERE versions.model = models.name), 0);
"#;

/// Schema version 3: the intent journal of registrations in progress (see
/// the `journal` module). A row reserves its version number until the
/// version row replaces it or recovery rolls it back.
const SCHEMA_V3: &str = r#"
CREATE TABLE pending_registrations (
    id        INTEGER PRIMARY KEY,
    model     TEXT NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0),
    tmp_dir   TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    pid_start INTEGER,
    record    TEXT NOT NULL CHECK (json_valid(record)),
    UNIQUE (model, version)
);
"#;

/// Schema version 4: endpoints and their deployments, the desired state
/// `serve` reconciles with (see the `deployments` module). A deployment
/// names its model by name, not by foreign key: a model may be deployed
/// before its first version is registered, and the registry refuses to
/// delete a version a deployment resolves to.
const SCHEMA_V4: &str = r#"
CREATE TABLE endpoints (
    name              TEXT PRIMARY KEY NOT NULL,
    mirror_deployment TEXT,
    mirror_percent    INTEGER NOT NULL DEFAULT 0 CHECK (mirror_percent BETWEEN 0 AND 100),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE TABLE deployments (
    endpoint   TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (name <> '' AND name NOT GLOB '*[^a-z0-9_-]*'),
    model      TEXT NOT NULL,
    version    INTEGER CHECK (version > 0),
    alias      TEXT,
    weight     INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 100),
    settings   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, name),
    CHECK (version IS NULL OR alias IS NULL)
);
CREATE INDEX deployments_by_model ON deployments(model);
"#;

/// Schema version 5: training baselines, one per version (see the
/// `baselines` module). The statistics are JSON the monitoring crate
/// defines; the registry keeps them, the data file's name, row count and
/// SHA-256, and who recorded them when. Deleting the version deletes its
/// baseline.
const SCHEMA_V5: &str = r#"
CREATE TABLE baselines (
    model       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    data_name   TEXT NOT NULL,
    data_rows   INTEGER NOT NULL CHECK (data_rows >= 0),
    data_sha256 TEXT NOT NULL CHECK (length(data_sha256) = 64),
    stats       TEXT NOT NULL CHECK (json_valid(stats)),
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    PRIMARY KEY (model, version),
    FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
);
"#;

/// An open registry database.
/// What a new database is filled with, in the transaction that creates its
/// schema: `(transaction, database path, repository)` to rows inserted.
pub(crate) type FillNew<'a> =
    &'a dyn Fn(&Transaction<'_>, &Path, &Path) -> Result<usize, RegistryError>;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// What a new version row records.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub model: &'a str,
    pub version: u64,
    /// Used for the `models` row when this is the model's first version.
    pub model_description: &'a str,
    pub description: &'a str,
    pub tags: &'a BTreeMap<String, String>,
    pub registered_by: &'a str,
    pub registered_at: &'a str,
    pub message: Option<&'a str>,
    pub source_dir: Option<&'a str>,
    pub git: &'a GitInfo,
}

impl Store {
    /// Whether `repo` already has a registry database.
    pub fn exists(repo: &Path) -> bool {
        repo.join(DB_FILE).is_file()
    }

    /// Connects to `REPO/registry.db`, creating it if absent, and brings
    /// its schema up to date. A new database gets the schema and, in the
    /// same transaction, what `fill_new` inserts (see [`Store::open`], which
    /// fills it with the version folders already there); so a crash during
    /// creation leaves either nothing or everything.
    pub(crate) fn connect(repo: &Path, fill_new: FillNew<'_>) -> Result<Store, RegistryError> {
        let path = repo.join(DB_FILE);
        let db = |what: &str| {
            let path = path.clone();
            let what = what.to_string();
            move |source| RegistryError::Db { path, what, source }
        };
        let conn = Connection::open(&path).map_err(db("cannot open"))?;
        // Concurrent registrations queue for the write lock instead of failing.
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(db("cannot set busy timeout"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(db("cannot turn on foreign keys"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db("cannot switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), mode, "registry database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("cannot set synchronous"))?;
        let mut store = Store { conn, path };
        store.migrate(repo, fill_new)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-write connection, for callers that need plain SQL.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// For read transactions (one consistent view of several tables).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn migrate(&mut self, repo: &Path, fill_new: FillNew<'_>) -> Result<(), RegistryError> {
        let path = self.path.clone();
        // The common case, an up-to-date schema, needs no write lock.
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err(&path, "cannot read schema version"))?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        // Otherwise read it again under the write lock: another process
        // may be creating the schema right now.
        let tx = self.write()?;
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| RegistryError::Db {
                path,
                what: what.into(),
                source,
            }
        };
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("cannot read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(RegistryError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        // Step by step, all in this one transaction: a crash leaves the
        // database as it was. found == 0 is a new database.
        if found < 1 {
            tx.execute_batch(SCHEMA_V1)
                .map_err(err("cannot create schema version 1"))?;
        }
        if found < 2 {
            tx.execute_batch(SCHEMA_V2)
                .map_err(err("cannot migrate to schema version 2"))?;
        }
        if found < 3 {
            tx.execute_batch(SCHEMA_V3)
                .map_err(err("cannot migrate to schema version 3"))?;
        }
        if found < 4 {
            tx.execute_batch(SCHEMA_V4)
                .map_err(err("cannot migrate to schema version 4"))?;
        }
        if found < 5 {
            tx.execute_batch(SCHEMA_V5)
                .map_err(err("cannot migrate to schema version 5"))?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err("cannot record schema version"))?;
        let imported = if found == 0 {
            fill_new(&tx, &path, repo)?
        } else {
            tracing::info!(db = %path.display(), from = found, to = SCHEMA_VERSION, "registry schema migrated");
            0
        };
        tx.commit().map_err(err("cannot commit the new schema"))?;
        if imported > 0 {
            tracing::info!(db = %path.display(), versions = imported, "registry created: imported existing version folders");
        }
        Ok(())
    }

    /// Starts a write transaction, taking the write lock at once (`BEGIN
    /// IMMEDIATE`), so that what is read inside it (the next version number)
    /// cannot change before it commits.
    pub fn write(&mut self) -> Result<Transaction<'_>, RegistryError> {
        let path = self.path.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| RegistryError::Db {
                path,
                what: "cannot start a write transaction".into(),
                source,
            })
    }
}

pub(crate) fn db_err(
    path: &Path,
    what: impl Into<String>,
) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    let path = path.to_path_buf();
    let what = what.into();
    move |source| RegistryError::Db { path, what, source }
}

/// The highest version of `model` with a row, if any.
pub fn max_version(
    tx: &Transaction<'_>,
    db: &Path,
    model: &str,
) -> Result<Option<u64>, RegistryError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT MAX(version) FROM versions WHERE model = ?1",
            [model],
            |r| r.get(0),
        )
        .map_err(db_err(db, format!("cannot read versions of {model:?}")))?;
    Ok(v.map(|v| v as u64))
}

/// The highest version number `model` ever had, deleted ones included.
pub fn high_water(tx: &Transaction<'_>, db: &Path, model: &str) -> Result<u64, RegistryError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT last_version FROM models WHERE name = ?1",
            [model],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err(
            db,
            format!("cannot read the high-water mark of {model:?}"),
        ))?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Whether `model` version `version` has a row.
pub fn version_exists(
    tx: &Transaction<'_>,
    db: &Path,
    model: &str,
    version: u64,
) -> Result<bool, RegistryError> {
    tx.query_row(
        "SELECT 1 FROM versions WHERE model = ?1 AND version = ?2",
        params![model, version as i64],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(db_err(
        db,
        format!("cannot look up {model:?} version {version}"),
    ))
}

/// Inserts the model (if new), the version and its files; returns the
/// version's row id.
pub fn insert_version(
    tx: &Transaction<'_>,
    db: &Path,
    v: &NewVersion<'_>,
    files: &[FileRecord],
) -> Result<i64, RegistryError> {
    let subject = format!("{}:{}", v.model, v.version);
    tx.execute(
        "INSERT INTO models (name, description, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO NOTHING",
        params![v.model, v.model_description, v.registered_at],
    )
    .map_err(db_err(db, format!("cannot insert model {:?}", v.model)))?;
    tx.execute(
        "UPDATE models SET last_version = MAX(last_version, ?2) WHERE name = ?1",
        params![v.model, v.version as i64],
    )
    .map_err(db_err(db, format!("cannot update model {:?}", v.model)))?;
    let tags = serde_json::to_string(v.tags).expect("string map serializes");
    tx.execute(
        "INSERT INTO versions (model, version, description, tags, registered_by, registered_at,
                               message, source_dir, git_repo, git_branch, git_commit, git_dirty)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            v.model,
            v.version as i64,
            v.description,
            tags,
            v.registered_by,
            v.registered_at,
            v.message,
            v.source_dir,
            v.git.repo,
            v.git.branch,
            v.git.commit,
            v.git.dirty,
        ],
    )
    .map_err(db_err(db, format!("cannot insert version {subject}")))?;
    let id = tx.last_insert_rowid();
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO files (version_id, path, sha256, size) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(db_err(db, "cannot prepare file insert"))?;
    for f in files {
        stmt.execute(params![id, f.path, f.sha256, f.size as i64])
            .map_err(db_err(
                db,
                format!("cannot insert file {:?} of {subject}", f.path),
            ))?;
    }
    Ok(id)
}

/// Appends one audit entry.
pub fn append_audit(
    tx: &Transaction<'_>,
    db: &Path,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), RegistryError> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, actor, action, subject, detail.to_string()],
    )
    .map_err(db_err(
        db,
        format!("cannot append audit entry {action} {subject}"),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_database_has_schema_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.conn();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // A version of an unknown model is refused by the foreign key.
        let err = c
            .execute(
                "INSERT INTO versions (model, version, registered_by, registered_at) VALUES ('x', 1, 'u', 't')",
                [],
            )
            .unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        drop(store);
        // Reopening keeps the schema.
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let path = store.path().to_path_buf();
        let tx = store.write().unwrap();
        append_audit(
            &tx,
            &path,
            "t",
            "me",
            "register",
            "m:1",
            &serde_json::json!({}),
        )
        .unwrap();
        tx.commit().unwrap();
        let c = store.conn();
        let e = c
            .execute("UPDATE audit_log SET actor = 'x'", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        let e = c.execute("DELETE FROM audit_log", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_version_1_database_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut c = Connection::open(dir.path().join(DB_FILE)).unwrap();
            let tx = c.transaction().unwrap();
            tx.execute_batch(SCHEMA_V1).unwrap();
            tx.execute_batch(
                "INSERT INTO models (name, created_at) VALUES ('m', 't');
                 INSERT INTO versions (model, version, registered_by, registered_at)
                 VALUES ('m', 1, 'u', 't'), ('m', 4, 'u', 't');",
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let c = store.conn();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let hw: i64 = c
            .query_row(
                "SELECT last_version FROM models WHERE name = 'm'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hw, 4);
        c.execute("INSERT INTO aliases VALUES ('m', 'prod', 4, 't', 'u')", [])
            .unwrap();
        // An alias must point at an existing version, and be [a-z0-9_-]+.
        assert!(c
            .execute("INSERT INTO aliases VALUES ('m', 'x', 2, 't', 'u')", [])
            .is_err());
        assert!(c
            .execute("INSERT INTO aliases VALUES ('m', 'Bad', 1, 't', 'u')", [])
            .is_err());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, RegistryError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains(DB_FILE), "{err}");
    }
}
