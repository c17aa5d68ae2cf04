//! `ferroserve models`: aliases, listing, showing, searching and deleting
//! registered versions.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::folders::DELETED_PREFIX;
use crate::fsutil::fsync_dir;
use crate::names::check_alias_name;
use crate::open_existing;
use crate::store::{self, db_err};
use crate::{check_model_name, RegistryError};

/// A version named on the command line: `N`, `N:V` or `N@ALIAS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// The newest version.
    Newest(String),
    Number(String, u64),
    Alias(String, String),
}

impl VersionRef {
    pub fn model(&self) -> &str {
        match self {
            VersionRef::Newest(m) | VersionRef::Number(m, _) | VersionRef::Alias(m, _) => m,
        }
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionRef::Newest(m) => write!(f, "{m}"),
            VersionRef::Number(m, v) => write!(f, "{m}:{v}"),
            VersionRef::Alias(m, a) => write!(f, "{m}@{a}"),
        }
    }
}

/// Parses `N`, `N:V` or `N@ALIAS`.
pub fn parse_ref(s: &str) -> Result<VersionRef, String> {
    let r = if let Some((m, a)) = s.split_once('@') {
        check_alias_name(a).map_err(|e| e.to_string())?;
        VersionRef::Alias(m.to_string(), a.to_string())
    } else if let Some((m, v)) = s.split_once(':') {
        let v =
            v.parse::<u64>().ok().filter(|&v| v > 0).ok_or_else(|| {
                format!("{s:?}: the version after ':' must be a positive integer")
            })?;
        VersionRef::Number(m.to_string(), v)
    } else {
        VersionRef::Newest(s.to_string())
    };
    check_model_name(r.model()).map_err(|e| e.to_string())?;
    Ok(r)
}

/// Resolves a reference to a version number that has a row.
pub fn resolve(conn: &Connection, db: &Path, r: &VersionRef) -> Result<u64, RegistryError> {
    let not_found = |problem: String| RegistryError::NotFound {
        what: r.to_string(),
        problem,
    };
    let v: Option<i64> = match r {
        VersionRef::Newest(m) => conn
            .query_row(
                "SELECT MAX(version) FROM versions WHERE model = ?1",
                [m],
                |row| row.get(0),
            )
            .map_err(db_err(db, format!("cannot look up {r}")))?,
        VersionRef::Number(m, v) => conn
            .query_row(
                "SELECT version FROM versions WHERE model = ?1 AND version = ?2",
                params![m, *v as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_err(db, format!("cannot look up {r}")))?,
        VersionRef::Alias(m, a) => conn
            .query_row(
                "SELECT version FROM aliases WHERE model = ?1 AND alias = ?2",
                params![m, a],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_err(db, format!("cannot look up {r}")))?,
    };
    match (v, r) {
        (Some(v), _) => Ok(v as u64),
        (None, VersionRef::Alias(m, a)) => {
            Err(not_found(format!("model {m:?} has no alias {a:?}")))
        }
        (None, _) => Err(not_found("no such registered version".into())),
    }
}

/// What `models alias` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasMoved {
    pub model: String,
    pub alias: String,
    pub from: Option<u64>,
    pub to: u64,
}

/// Points `model@alias` at `version` (creating or moving it), audited as
/// `alias.moved` with the previous and the new version.
pub fn set_alias(
    repo: &Path,
    model: &str,
    alias: &str,
    version: u64,
    user: &str,
) -> Result<AliasMoved, RegistryError> {
    check_model_name(model)?;
    check_alias_name(alias)?;
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    let tx = store.write()?;
    resolve(&tx, &db, &VersionRef::Number(model.to_string(), version))?;
    let from: Option<i64> = tx
        .query_row(
            "SELECT version FROM aliases WHERE model = ?1 AND alias = ?2",
            params![model, alias],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err(&db, format!("cannot read alias {model}@{alias}")))?;
    let at = crate::now_rfc3339();
    tx.execute(
        "INSERT INTO aliases (model, alias, version, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (model, alias) DO UPDATE SET
             version = excluded.version, updated_at = excluded.updated_at,
             updated_by = excluded.updated_by",
        params![model, alias, version as i64, at, user],
    )
    .map_err(db_err(&db, format!("cannot set alias {model}@{alias}")))?;
    let moved = AliasMoved {
        model: model.to_string(),
        alias: alias.to_string(),
        from: from.map(|v| v as u64),
        to: version,
    };
    store::append_audit(
        &tx,
        &db,
        &at,
        user,
        crate::lifecycle::ALIAS_MOVED,
        &format!("{model}@{alias}"),
        &serde_json::json!({
            "model": model,
            "alias": alias,
            "from": moved.from,
            "to": version,
        }),
    )?;
    tx.commit()
        .map_err(db_err(&db, format!("cannot commit alias {model}@{alias}")))?;
    Ok(moved)
}

/// One line of `models list`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub description: String,
    /// `None` when every version was deleted.
    pub latest_version: Option<u64>,
    pub versions: u64,
    pub aliases: BTreeMap<String, u64>,
}

fn aliases_of(
    conn: &Connection,
    db: &Path,
    model: &str,
) -> Result<BTreeMap<String, u64>, RegistryError> {
    let mut stmt = conn
        .prepare_cached("SELECT alias, version FROM aliases WHERE model = ?1 ORDER BY alias")
        .map_err(db_err(db, "cannot read aliases"))?;
    let rows = stmt
        .query_map([model], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db_err(db, "cannot read aliases"))?;
    rows.map(|r| r.map(|(a, v)| (a, v as u64)))
        .collect::<Result<_, _>>()
        .map_err(db_err(db, "cannot read aliases"))
}

/// Every model, by name.
pub fn list(repo: &Path) -> Result<Vec<ModelSummary>, RegistryError> {
    let store = open_existing(repo)?;
    let db = store.path();
    let conn = store.conn();
    let mut stmt = conn
        .prepare(
            "SELECT m.name, m.description, MAX(v.version), COUNT(v.id)
             FROM models m LEFT JOIN versions v ON v.model = m.name
             GROUP BY m.name ORDER BY m.name",
        )
        .map_err(db_err(db, "cannot list models"))?;
    let rows: Vec<(String, String, Option<i64>, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .and_then(|rows| rows.collect())
        .map_err(db_err(db, "cannot list models"))?;
    rows.into_iter()
        .map(|(name, description, latest, n)| {
            Ok(ModelSummary {
                aliases: aliases_of(conn, db, &name)?,
                name,
                description,
                latest_version: latest.map(|v| v as u64),
                versions: n as u64,
            })
        })
        .collect()
}

/// Git provenance of a version, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct GitJson {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileJson {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// One version, as `models show` and `models search` print it (search
/// leaves `files` empty).
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub model: String,
    pub version: u64,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub registered_by: String,
    pub registered_at: String,
    pub message: Option<String>,
    pub source_dir: Option<String>,
    pub git: GitJson,
    /// The aliases pointing at this version.
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileJson>>,
}

const VERSION_COLUMNS: &str = "id, model, version, description, tags, registered_by, registered_at,
     message, source_dir, git_repo, git_branch, git_commit, git_dirty";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, VersionInfo, String)> {
    let tags: String = r.get(4)?;
    Ok((
        r.get(0)?,
        VersionInfo {
            model: r.get(1)?,
            version: r.get::<_, i64>(2)? as u64,
            description: r.get(3)?,
            tags: BTreeMap::new(),
            registered_by: r.get(5)?,
            registered_at: r.get(6)?,
            message: r.get(7)?,
            source_dir: r.get(8)?,
            git: GitJson {
                repo: r.get(9)?,
                branch: r.get(10)?,
                commit: r.get(11)?,
                dirty: r.get(12)?,
            },
            aliases: Vec::new(),
            files: None,
        },
        tags,
    ))
}

fn finish(
    conn: &Connection,
    db: &Path,
    (_, mut info, tags): (i64, VersionInfo, String),
) -> Result<VersionInfo, RegistryError> {
    info.tags = serde_json::from_str(&tags).unwrap_or_default();
    info.aliases = aliases_of(conn, db, &info.model)?
        .into_iter()
        .filter(|(_, v)| *v == info.version)
        .map(|(a, _)| a)
        .collect();
    Ok(info)
}

/// One version with its files.
pub fn show(repo: &Path, r: &VersionRef) -> Result<VersionInfo, RegistryError> {
    let store = open_existing(repo)?;
    let db = store.path();
    let conn = store.conn();
    let version = resolve(conn, db, r)?;
    let row = conn
        .query_row(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = ?1 AND version = ?2"),
            params![r.model(), version as i64],
            version_row,
        )
        .map_err(db_err(db, format!("cannot read {r}")))?;
    let id = row.0;
    let mut info = finish(conn, db, row)?;
    let mut stmt = conn
        .prepare("SELECT path, sha256, size FROM files WHERE version_id = ?1 ORDER BY path")
        .map_err(db_err(db, "cannot read files"))?;
    let files = stmt
        .query_map([id], |r| {
            Ok(FileJson {
                path: r.get(0)?,
                sha256: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(db_err(db, "cannot read files"))?;
    info.files = Some(files);
    Ok(info)
}

/// The filters of `models search`; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub tags: Vec<(String, String)>,
    /// A glob on the model name: `*` any run, `?` one character.
    pub name: Option<String>,
    pub alias: Option<String>,
}

/// Every version matching `filter`, by model then version.
pub fn search(repo: &Path, filter: &SearchFilter) -> Result<Vec<VersionInfo>, RegistryError> {
    let store = open_existing(repo)?;
    let db = store.path();
    let conn = store.conn();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions ORDER BY model, version"
        ))
        .map_err(db_err(db, "cannot search versions"))?;
    let rows: Vec<_> = stmt
        .query_map([], version_row)
        .and_then(|rows| rows.collect())
        .map_err(db_err(db, "cannot search versions"))?;
    let mut out = Vec::new();
    for row in rows {
        if filter
            .name
            .as_deref()
            .is_some_and(|p| !glob_match(p, &row.1.model))
        {
            continue;
        }
        let info = finish(conn, db, row)?;
        if !filter.tags.iter().all(|(k, v)| info.tags.get(k) == Some(v)) {
            continue;
        }
        if filter
            .alias
            .as_ref()
            .is_some_and(|a| !info.aliases.contains(a))
        {
            continue;
        }
        out.push(info);
    }
    Ok(out)
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// With a registry, a version exists once its row is committed: a folder
/// without a row (left by a registration killed between its rename and its
/// commit, or copied in by hand) is never served. Replaces each model's
/// newest folder by its newest recorded version and drops models with none,
/// warning about what was skipped.
pub fn recorded_only(
    repo: &Path,
    bundles: &mut Vec<crate::repository::BundleVersion>,
) -> Result<(), RegistryError> {
    let store = open_existing(repo)?;
    let conn = store.conn();
    let mut stmt = conn
        .prepare("SELECT model, MAX(version) FROM versions GROUP BY model")
        .map_err(db_err(store.path(), "cannot read versions"))?;
    let newest: BTreeMap<String, i64> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(db_err(store.path(), "cannot read versions"))?;
    bundles.retain_mut(|b| {
        let Some(&v) = newest.get(&b.name) else {
            tracing::warn!(model = %b.name, "no registered version; not served (run `ferroserve repo check`)");
            return false;
        };
        let v = v as u64;
        if v != b.version {
            tracing::warn!(
                model = %b.name,
                unrecorded = b.version,
                serving = v,
                "version folder has no registry row; serving the newest registered version (run `ferroserve repo check`)"
            );
            b.version = v;
            b.dir = repo.join(&b.name).join(v.to_string());
        }
        true
    });
    Ok(())
}

/// `serve --alias ALIAS`: replaces, for each model that has ALIAS, the
/// newest version in `bundles` by the aliased one; models without it keep
/// their newest. The registry must be readable: serving by alias never
/// falls back silently to the newest versions.
pub fn apply_alias(
    repo: &Path,
    alias: &str,
    bundles: &mut [crate::repository::BundleVersion],
) -> Result<(), RegistryError> {
    check_alias_name(alias)?;
    let store = open_existing(repo)?;
    let conn = store.conn();
    let mut stmt = conn
        .prepare("SELECT model, version FROM aliases WHERE alias = ?1")
        .map_err(db_err(store.path(), "cannot read aliases"))?;
    let aliased: BTreeMap<String, i64> = stmt
        .query_map([alias], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(db_err(store.path(), "cannot read aliases"))?;
    for b in bundles.iter_mut() {
        let Some(&v) = aliased.get(&b.name) else {
            continue;
        };
        let dir = repo.join(&b.name).join(v.to_string());
        if !ferroserve_runtime::manifest::is_bundle_dir(&dir) {
            return Err(RegistryError::NotFound {
                what: format!("folder {}", dir.display()),
                problem: format!(
                    "{}@{alias} points at version {v}, which has no bundle folder; \
                     run `ferroserve repo check`",
                    b.name
                ),
            });
        }
        tracing::info!(model = %b.name, alias, version = v, newest = b.version, "serving the aliased version");
        b.version = v as u64;
        b.dir = dir;
    }
    Ok(())
}

/// What `models delete` did.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub model: String,
    pub version: u64,
    pub files: u64,
    /// Whether the version folder was there to remove.
    pub folder_removed: bool,
}

/// Deletes a version: refused while an alias points at it (`force` does
/// not change that). Otherwise, under the database's write lock: the folder
/// is renamed to `.deleted-*` (so a crash never leaves a half-deleted
/// version under its number; the server and the importer skip dot folders),
/// the rows are deleted (files cascade), the model's high-water mark keeps
/// the number from being given out again, an audit entry
/// `version.deleted` is appended, and the transaction commits; only then is
/// the renamed folder removed. A version whose folder is already missing
/// is only deleted with `force`.
pub fn delete(
    repo: &Path,
    r: &VersionRef,
    force: bool,
    user: &str,
) -> Result<Deleted, RegistryError> {
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    let repo = std::fs::canonicalize(repo)
        .map_err(RegistryError::io(repo, "cannot open repository folder"))?;
    let tx = store.write()?;
    let version = resolve(&tx, &db, r)?;
    let model = r.model().to_string();
    let subject = format!("{model}:{version}");
    let pointing: Vec<String> = aliases_of(&tx, &db, &model)?
        .into_iter()
        .filter(|(_, v)| *v == version)
        .map(|(a, _)| format!("{model}@{a}"))
        .collect();
    if !pointing.is_empty() {
        return Err(RegistryError::Conflict {
            what: format!("version {subject}"),
            problem: format!(
                "alias {} points at it; move the alias to another version first \
                 (--force does not override an alias)",
                pointing.join(", ")
            ),
        });
    }
    let deployed = crate::deployments::users_of(&tx, &db, &model, version)?;
    if !deployed.is_empty() {
        return Err(RegistryError::Conflict {
            what: format!("version {subject}"),
            problem: format!(
                "deployment {} serves it; point the deployment at another version or                  remove it first (--force does not override a deployment)",
                deployed.join(", ")
            ),
        });
    }
    let files: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM files f JOIN versions v ON v.id = f.version_id
             WHERE v.model = ?1 AND v.version = ?2",
            params![model, version as i64],
            |row| row.get(0),
        )
        .map_err(db_err(&db, format!("cannot count files of {subject}")))?;

    let model_dir = repo.join(&model);
    let dir = model_dir.join(version.to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let trash = model_dir.join(format!(
        "{DELETED_PREFIX}{version}-{}-{nanos}",
        std::process::id()
    ));
    let folder_removed = if dir.is_dir() {
        std::fs::rename(&dir, &trash).map_err(RegistryError::io(
            &dir,
            format!("cannot rename to {}", trash.display()),
        ))?;
        fsync_dir(&model_dir)?;
        true
    } else if force {
        false
    } else {
        return Err(RegistryError::NotFound {
            what: format!("folder {}", dir.display()),
            problem: format!(
                "version {subject} has a row but no folder; run `ferroserve repo check`, \
                 and pass --force to delete the row anyway"
            ),
        });
    };
    crate::pause::pause_point("trashed");
    let at = crate::now_rfc3339();
    let recorded = (|| {
        tx.execute(
            "UPDATE models SET last_version = MAX(last_version, ?2) WHERE name = ?1",
            params![model, version as i64],
        )
        .map_err(db_err(&db, format!("cannot update model {model:?}")))?;
        tx.execute(
            "DELETE FROM versions WHERE model = ?1 AND version = ?2",
            params![model, version as i64],
        )
        .map_err(db_err(&db, format!("cannot delete {subject}")))?;
        store::append_audit(
            &tx,
            &db,
            &at,
            user,
            crate::lifecycle::VERSION_DELETED,
            &subject,
            &serde_json::json!({
                "model": model,
                "version": version,
                "files": files,
                "force": force,
                "folder_removed": folder_removed,
            }),
        )
    })();
    let committed = recorded.and_then(|()| {
        tx.commit()
            .map_err(db_err(&db, format!("cannot commit deleting {subject}")))
    });
    if let Err(e) = committed {
        if folder_removed {
            // Still recorded: put the folder back under its number.
            let _ = std::fs::rename(&trash, &dir);
            let _ = fsync_dir(&model_dir);
        }
        return Err(e);
    }
    crate::pause::pause_point("deleted");
    if folder_removed {
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(dir = %trash.display(), error = %e, "version deleted but its renamed folder could not be removed; `ferroserve repo check` reports it");
        }
        let _ = fsync_dir(&model_dir);
    }
    Ok(Deleted {
        model,
        version,
        files: files as u64,
        folder_removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(parse_ref("m").unwrap(), VersionRef::Newest("m".into()));
        assert_eq!(parse_ref("m:3").unwrap(), VersionRef::Number("m".into(), 3));
        assert_eq!(
            parse_ref("m@prod-1_a").unwrap(),
            VersionRef::Alias("m".into(), "prod-1_a".into())
        );
        for bad in ["m:0", "m:x", "m@", "m@Prod", "m@a.b", ":1", "@a", "a/b:1"] {
            assert!(parse_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("ml?", "mlp"));
        assert!(glob_match("*-v*", "resnet-v2"));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("ml?", "ml"));
        assert!(!glob_match("conv", "conv2"));
        assert!(!glob_match("*x", "abc"));
    }
}
