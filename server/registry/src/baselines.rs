//! Training baselines kept with registered versions (Azure ML's "dataset
//! associated with a registered model"): one per version, replaced by
//! recording another, audited, and deleted with the version.
//!
//! The statistics are JSON this crate does not read: the monitoring crate
//! defines them, and a baseline recorded by a newer binary is still kept
//! and handed back whole.

use std::path::Path;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::models::{resolve, VersionRef};
use crate::store::{append_audit, db_err};
use crate::{now_rfc3339, open_existing, RegistryError};

/// The audit action of recording a baseline.
pub const BASELINE_RECORDED: &str = "io.ferroserve.baseline.recorded";

/// A baseline as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredBaseline {
    pub model: String,
    pub version: u64,
    pub data_name: String,
    pub data_rows: u64,
    pub data_sha256: String,
    /// The statistics, as JSON text.
    pub stats: String,
    pub recorded_at: String,
    pub recorded_by: String,
}

/// What recording a baseline needs.
#[derive(Debug, Clone)]
pub struct NewBaseline<'a> {
    pub data_name: &'a str,
    pub data_rows: u64,
    pub data_sha256: &'a str,
    pub stats: &'a str,
    pub actor: &'a str,
}

/// Resolves `r` to a registered version number.
pub fn resolve_version(repo: &Path, r: &VersionRef) -> Result<u64, RegistryError> {
    let store = open_existing(repo)?;
    resolve(store.conn(), store.path(), r)
}

/// Records (or replaces) the baseline of `model` version `version`, with
/// an audit entry naming the data file, in one transaction.
pub fn record(
    repo: &Path,
    model: &str,
    version: u64,
    b: &NewBaseline<'_>,
) -> Result<StoredBaseline, RegistryError> {
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    let tx = store.write()?;
    let subject = format!("{model}:{version}");
    let exists: bool = tx
        .query_row(
            "SELECT 1 FROM versions WHERE model = ?1 AND version = ?2",
            params![model, version as i64],
            |_| Ok(()),
        )
        .optional()
        .map_err(db_err(&db, format!("cannot look up {subject}")))?
        .is_some();
    if !exists {
        return Err(RegistryError::NotFound {
            what: subject,
            problem: "no such registered version".into(),
        });
    }
    let at = now_rfc3339();
    tx.execute(
        "INSERT INTO baselines (model, version, data_name, data_rows, data_sha256, stats, recorded_at, recorded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (model, version) DO UPDATE SET
            data_name = excluded.data_name, data_rows = excluded.data_rows,
            data_sha256 = excluded.data_sha256, stats = excluded.stats,
            recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by",
        params![
            model,
            version as i64,
            b.data_name,
            b.data_rows as i64,
            b.data_sha256,
            b.stats,
            at,
            b.actor
        ],
    )
    .map_err(db_err(&db, format!("cannot record the baseline of {subject}")))?;
    append_audit(
        &tx,
        &db,
        &at,
        b.actor,
        BASELINE_RECORDED,
        &subject,
        &serde_json::json!({"model": model, "version": version, "data": b.data_name, "rows": b.data_rows, "sha256": b.data_sha256}),
    )?;
    tx.commit().map_err(db_err(
        &db,
        format!("cannot commit the baseline of {subject}"),
    ))?;
    Ok(StoredBaseline {
        model: model.into(),
        version,
        data_name: b.data_name.into(),
        data_rows: b.data_rows,
        data_sha256: b.data_sha256.into(),
        stats: b.stats.into(),
        recorded_at: at,
        recorded_by: b.actor.into(),
    })
}

/// The baseline of `model` version `version`, if one was recorded. A
/// repository without a database has none.
pub fn get(
    repo: &Path,
    model: &str,
    version: u64,
) -> Result<Option<StoredBaseline>, RegistryError> {
    if !crate::Store::exists(repo) {
        return Ok(None);
    }
    let store = open_existing(repo)?;
    let db = store.path();
    store
        .conn()
        .query_row(
            "SELECT data_name, data_rows, data_sha256, stats, recorded_at, recorded_by
             FROM baselines WHERE model = ?1 AND version = ?2",
            params![model, version as i64],
            |r| {
                Ok(StoredBaseline {
                    model: model.into(),
                    version,
                    data_name: r.get(0)?,
                    data_rows: r.get::<_, i64>(1)? as u64,
                    data_sha256: r.get(2)?,
                    stats: r.get(3)?,
                    recorded_at: r.get(4)?,
                    recorded_by: r.get(5)?,
                })
            },
        )
        .optional()
        .map_err(db_err(
            db,
            format!("cannot read the baseline of {model}:{version}"),
        ))
}
