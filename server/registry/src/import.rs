//! First use of a repository folder without `registry.db`: every
//! `NAME/VERSION/` folder holding a `bundle.toml`, and every version folder
//! of a Triton model (`NAME/config.pbtxt` beside `NAME/VERSION/`), gets a
//! version row (with the hashes of its files, `registered_by = "import"`)
//! and an audit entry, all in the transaction that creates the schema.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Transaction;

use crate::folders::version_folders;
use crate::fsutil::hash_tree;
use crate::git::GitInfo;
use crate::store::{self, NewVersion, Store};
use crate::RegistryError;
use ferroserve_runtime::manifest::{is_bundle_dir, Manifest};

/// Who imported versions are recorded as registered by.
pub const IMPORT_ACTOR: &str = "import";

/// Makes sure `repo` has a registry database, creating it (and importing
/// the version folders already there) when it has none. Returns how many
/// versions were imported; 0 when the database already existed, so calling
/// it again never duplicates anything.
pub fn ensure(repo: &Path) -> Result<usize, RegistryError> {
    if Store::exists(repo) {
        // Opening checks the schema version.
        Store::open(repo)?;
        return Ok(0);
    }
    if !has_bundles(repo) {
        return Ok(0);
    }
    let store = Store::open(repo)?;
    let n: i64 = store
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM versions WHERE registered_by = ?1",
            [IMPORT_ACTOR],
            |r| r.get(0),
        )
        .map_err(|source| RegistryError::Db {
            path: store.path().to_path_buf(),
            what: "cannot count imported versions".into(),
            source,
        })?;
    Ok(n as usize)
}

/// Whether any `NAME/VERSION/bundle.toml` (or Triton version folder)
/// exists under `repo`.
fn has_bundles(repo: &Path) -> bool {
    let Ok(models) = std::fs::read_dir(repo) else {
        return false;
    };
    models.flatten().any(|m| {
        let dir = m.path();
        !m.file_name().to_string_lossy().starts_with('.')
            && version_folders(&dir)
                .is_ok_and(|vs| vs.iter().any(|v| is_bundle_dir(&dir.join(v.to_string()))))
    })
}

/// Inserts a row for every `NAME/VERSION/bundle.toml` folder (or Triton
/// version folder) that has none.
/// Hidden folders and non-numeric version folders (such as a `.tmp-*` left
/// by a crashed registration) are skipped, as the server skips them.
pub(crate) fn import_folders(
    tx: &Transaction<'_>,
    db: &Path,
    repo: &Path,
) -> Result<usize, RegistryError> {
    let entries =
        std::fs::read_dir(repo).map_err(RegistryError::io(repo, "cannot read repository"))?;
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RegistryError::io(repo, "cannot read repository"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        models.push(name);
    }
    models.sort();
    let at = crate::now_rfc3339();
    let mut imported = 0;
    for name in models {
        let model_dir = repo.join(&name);
        for version in version_folders(&model_dir)? {
            let dir = model_dir.join(version.to_string());
            if !is_bundle_dir(&dir) || store::version_exists(tx, db, &name, version)? {
                continue;
            }
            let files = hash_tree(&dir)?;
            // The manifest is only read for its description and tags: a
            // version that no longer validates is still recorded as it is.
            let (description, tags) = match Manifest::load(&dir) {
                Ok(m) => (m.description, m.tags),
                Err(e) => {
                    tracing::warn!(error = %e, "importing a version whose manifest does not validate");
                    (String::new(), BTreeMap::new())
                }
            };
            let source_dir = dir.to_string_lossy().into_owned();
            store::insert_version(
                tx,
                db,
                &NewVersion {
                    model: &name,
                    version,
                    model_description: &description,
                    description: &description,
                    tags: &tags,
                    registered_by: IMPORT_ACTOR,
                    registered_at: &at,
                    message: Some("imported from the existing repository folder"),
                    source_dir: Some(&source_dir),
                    git: &GitInfo::default(),
                },
                &files,
            )?;
            store::append_audit(
                tx,
                db,
                &at,
                IMPORT_ACTOR,
                "import",
                &format!("{name}:{version}"),
                &serde_json::json!({
                    "model": name,
                    "version": version,
                    "files": files.len(),
                    "source_dir": source_dir,
                }),
            )?;
            imported += 1;
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    use ferroserve_runtime::manifest::MANIFEST_FILE;

    fn bundle(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        // Not a valid manifest: import records the folder as it is.
        std::fs::write(dir.join(MANIFEST_FILE), "name = 'm'\n").unwrap();
        std::fs::write(dir.join("weights.bin"), b"123").unwrap();
    }

    #[test]
    fn imports_numeric_version_folders_once() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        bundle(&r.join("m/1"));
        bundle(&r.join("m/3"));
        bundle(&r.join("m/.tmp-9-9"));
        bundle(&r.join("m/latest"));
        bundle(&r.join(".hidden/1"));
        std::fs::create_dir_all(r.join("m/4")).unwrap(); // no manifest
        assert_eq!(ensure(r).unwrap(), 2);
        assert_eq!(ensure(r).unwrap(), 0);
        let store = Store::open(r).unwrap();
        let c = store.conn();
        let versions: Vec<i64> = c
            .prepare("SELECT version FROM versions ORDER BY version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(versions, [1, 3]);
        let files: i64 = c
            .query_row("SELECT COUNT(*) FROM files", [], |row| row.get(0))
            .unwrap();
        assert_eq!(files, 4);
        let audits: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'import' AND actor = 'import'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(audits, 2);
    }

    #[test]
    fn triton_version_folders_are_imported() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        for v in ["1", "3", "x"] {
            std::fs::create_dir_all(r.join("t").join(v)).unwrap();
            std::fs::write(r.join("t").join(v).join("model.onnx"), b"onnx").unwrap();
        }
        std::fs::write(r.join("t/config.pbtxt"), "max_batch_size: 0\n").unwrap();
        // A folder beside version folders, without a config: not a model.
        std::fs::create_dir_all(r.join("u/1")).unwrap();
        assert!(has_bundles(r));
        assert_eq!(ensure(r).unwrap(), 2);
        let store = Store::open(r).unwrap();
        let versions: Vec<(String, i64)> = store
            .conn()
            .prepare("SELECT model, version FROM versions ORDER BY model, version")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(versions, [("t".into(), 1), ("t".into(), 3)]);
    }

    #[test]
    fn no_bundles_no_database() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("m/.tmp-1")).unwrap();
        assert_eq!(ensure(repo.path()).unwrap(), 0);
        assert!(!Store::exists(repo.path()));
    }
}
