//! `ferroserve repo check`: every version's files against the recorded
//! hashes and sizes, and the database against the folders. It reports every
//! difference and never repairs anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::folders::version_folders;
use crate::folders::TMP_PREFIX;
use crate::fsutil::hash_tree;
use crate::journal::leftover_folders;
use crate::store::{Store, DB_FILE};
use crate::RegistryError;

/// One difference between the database and the folders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `missing_folder`, `unrecorded_folder`, `missing_file`, `extra_file`,
    /// `hash_mismatch`, `size_mismatch`, `leftover`, `unreadable`.
    pub kind: &'static str,
    pub model: String,
    pub version: Option<u64>,
    /// The file or folder concerned, relative to the repository.
    pub path: String,
    pub detail: String,
}

/// The outcome of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub versions_checked: u64,
    pub files_checked: u64,
    pub problems: Vec<Problem>,
}

type Recorded = BTreeMap<String, (String, u64)>;

/// Checks `repo`, which must have a registry database (a folder without
/// one has nothing to check against; `serve` or `register` create it).
pub fn check(repo: &Path) -> Result<Report, RegistryError> {
    if !Store::exists(repo) {
        return Err(RegistryError::NotFound {
            what: format!("{}", repo.join(DB_FILE).display()),
            problem: "the repository has no registry database to check against".into(),
        });
    }
    let store = Store::open(repo)?;
    let db = store.path().to_path_buf();
    let dberr = |what: &str| {
        let path = db.clone();
        let what = what.to_string();
        move |source| RegistryError::Db { path, what, source }
    };
    // model -> version -> path -> (sha256, size)
    let mut recorded: BTreeMap<String, BTreeMap<u64, Recorded>> = BTreeMap::new();
    {
        let conn = store.conn();
        let mut stmt = conn
            .prepare("SELECT model, version FROM versions")
            .map_err(dberr("cannot read versions"))?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(dberr("cannot read versions"))?;
        for (m, v) in rows {
            recorded.entry(m).or_default().entry(v as u64).or_default();
        }
        let mut stmt = conn
            .prepare(
                "SELECT v.model, v.version, f.path, f.sha256, f.size
                 FROM files f JOIN versions v ON v.id = f.version_id",
            )
            .map_err(dberr("cannot read files"))?;
        let rows: Vec<(String, i64, String, String, i64)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(dberr("cannot read files"))?;
        for (m, v, p, sha, size) in rows {
            recorded
                .entry(m)
                .or_default()
                .entry(v as u64)
                .or_default()
                .insert(p, (sha, size as u64));
        }
    }
    // Versions being registered right now: their folder may already have
    // its name while the row is not committed yet. (Those of dead
    // processes were finished or undone when the store was opened.)
    let pending: BTreeSet<(String, u64)> = {
        let mut stmt = store
            .conn()
            .prepare("SELECT model, version FROM pending_registrations")
            .map_err(dberr("cannot read pending registrations"))?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(dberr("cannot read pending registrations"))?;
        rows.into_iter().map(|(m, v)| (m, v as u64)).collect()
    };
    drop(store);

    let mut problems = Vec::new();
    let mut versions_checked = 0;
    let mut files_checked = 0;
    let problem = |kind, model: &str, version, path: String, detail: String| Problem {
        kind,
        model: model.to_string(),
        version,
        path,
        detail,
    };

    // Rows against folders.
    for (model, versions) in &recorded {
        for (&version, files) in versions {
            versions_checked += 1;
            let rel = format!("{model}/{version}");
            let dir = repo.join(&rel);
            if !dir.is_dir() {
                problems.push(problem(
                    "missing_folder",
                    model,
                    Some(version),
                    rel,
                    "the version has a row but no folder".into(),
                ));
                continue;
            }
            let on_disk = match hash_tree(&dir) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(problem(
                        "unreadable",
                        model,
                        Some(version),
                        rel,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let mut seen = BTreeSet::new();
            for f in on_disk {
                seen.insert(f.path.clone());
                let path = format!("{rel}/{}", f.path);
                match files.get(&f.path) {
                    None => problems.push(problem(
                        "extra_file",
                        model,
                        Some(version),
                        path,
                        "file on disk that the registry did not record".into(),
                    )),
                    Some((sha, size)) => {
                        files_checked += 1;
                        if *size != f.size {
                            problems.push(problem(
                                "size_mismatch",
                                model,
                                Some(version),
                                path.clone(),
                                format!("recorded {size} bytes, found {}", f.size),
                            ));
                        }
                        if *sha != f.sha256 {
                            problems.push(problem(
                                "hash_mismatch",
                                model,
                                Some(version),
                                path,
                                format!("recorded sha256 {sha}, found {}", f.sha256),
                            ));
                        }
                    }
                }
            }
            for p in files.keys().filter(|p| !seen.contains(*p)) {
                problems.push(problem(
                    "missing_file",
                    model,
                    Some(version),
                    format!("{rel}/{p}"),
                    "recorded file is not on disk".into(),
                ));
            }
        }
    }

    // Leftovers of dead processes that opening the registry could not
    // clean up; those of running registrations and deletions are theirs.
    for (model, name, owner) in leftover_folders(repo) {
        if owner.alive() {
            continue;
        }
        let detail = if name.starts_with(TMP_PREFIX) {
            "left by an interrupted registration"
        } else {
            "left by an interrupted deletion"
        };
        problems.push(problem(
            "leftover",
            &model,
            None,
            format!("{model}/{name}"),
            detail.into(),
        ));
    }

    // Folders against rows.
    let entries =
        std::fs::read_dir(repo).map_err(RegistryError::io(repo, "cannot read repository"))?;
    let mut models: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    models.sort();
    for model in models {
        let model_dir = repo.join(&model);
        let known = recorded.get(&model);
        for version in version_folders(&model_dir)? {
            if !known.is_some_and(|vs| vs.contains_key(&version))
                && !pending.contains(&(model.clone(), version))
            {
                problems.push(problem(
                    "unrecorded_folder",
                    &model,
                    Some(version),
                    format!("{model}/{version}"),
                    "version folder without a row in the registry".into(),
                ));
            }
        }
    }
    problems.sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
    Ok(Report {
        ok: problems.is_empty(),
        versions_checked,
        files_checked,
        problems,
    })
}
