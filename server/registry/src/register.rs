//! `ferroserve register`: validate a bundle, copy it into the repository as
//! the next version, atomically, and record it.
//!
//! The order makes a crash at any point harmless:
//! 1. copy into `REPO/NAME/.tmp-PID-NANOS/`, fsync every file and folder,
//!    hash the copy (a crash leaves a `.tmp-*` folder, which the server and
//!    the importer skip and the next open of the registry removes);
//! 2. under the database's write lock, pick the next version (above every
//!    row, folder, pending row and the model's high-water mark, so that a
//!    deleted number is not given out again) and commit a pending row that
//!    reserves it and holds everything the version row will record;
//! 3. rename the temporary folder to the version and fsync `REPO/NAME/`;
//! 4. in one transaction, insert the version, file and audit rows and
//!    delete the pending row.
//!
//! A crash after 2 leaves a pending row, which the next open of the
//! registry rolls forward (the folder got its name, with the recorded
//! hashes) or back (it did not); see [`crate::journal`]. So a row always
//! has its folder, a version folder is never half-written, and no complete
//! folder is left without a row.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::folders::{version_folders, TMP_PREFIX};
use crate::fsutil::{copy_tree_durably, fsync_dir, hash_tree, FileRecord};
use crate::git::{self, GitInfo};
use crate::journal::{self, PendingVersion};
use crate::store::{self, Store};
use crate::{check_model_name, RegistryError};
use ferroserve_runtime::manifest::Manifest;
use ferroserve_runtime::{LoadSettings, Model};

/// What `ferroserve register` was asked to do.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The bundle folder to register.
    pub source: PathBuf,
    pub repo: PathBuf,
    pub name: String,
    /// Merged over the manifest's `[tags]` (these win).
    pub tags: BTreeMap<String, String>,
    /// The version's description; the manifest's when `None`.
    pub description: Option<String>,
    /// Why it was registered.
    pub message: Option<String>,
    /// Who registered it; the environment's user when `None`.
    pub user: Option<String>,
    /// Load the model on its backend before accepting it (the command line
    /// always does; off only where no backend library is available).
    pub check_loads: bool,
    /// Record git provenance of `source`. Off for uploads: their folder is a
    /// temporary extraction inside the repository, and any checkout around
    /// it says nothing about where the bundle came from.
    pub record_git: bool,
}

/// A registered version.
#[derive(Debug, Clone)]
pub struct Registered {
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
    pub files: Vec<FileRecord>,
    pub git: GitInfo,
    pub registered_by: String,
}

/// The user recorded when `--user` is not given: `$USER`, else `$LOGNAME`,
/// else `"unknown"`.
pub fn default_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The user a command acts as: `--user` when given and not blank, else
/// [`default_user`].
pub fn user_or_default(user: Option<String>) -> String {
    user.filter(|u| !u.trim().is_empty())
        .unwrap_or_else(default_user)
}

/// Parses `--tag k=v`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "expected KEY=VALUE with a non-empty key, got {s:?}"
        )),
    }
}

/// What [`register_with`] may do beyond [`register`].
#[derive(Debug, Clone, Default)]
pub struct RegisterOptions {
    /// Register as exactly this version instead of the next one. It must be
    /// above every number the model has had (registered, reserved or
    /// deleted), so a number still always means the same files; used to
    /// keep a Triton repository's version numbers.
    pub version: Option<u64>,
    /// The folder recorded as the source (and whose git provenance is
    /// recorded) when `source` is a staging copy of it.
    pub provenance: Option<PathBuf>,
}

/// Validates, copies and records one bundle; see the module documentation.
pub fn register(req: &RegisterRequest) -> Result<Registered, RegistryError> {
    register_with(req, &RegisterOptions::default())
}

/// [`register`], with an explicit version number or provenance.
pub fn register_with(
    req: &RegisterRequest,
    opts: &RegisterOptions,
) -> Result<Registered, RegistryError> {
    check_model_name(&req.name)?;
    let source = std::fs::canonicalize(&req.source)
        .map_err(RegistryError::io(&req.source, "cannot open bundle folder"))?;
    if !source
        .join(ferroserve_runtime::manifest::MANIFEST_FILE)
        .is_file()
        && ferroserve_runtime::manifest::pbtxt::config_of_version_dir(&source).is_some()
    {
        // Its config and labels live in the folder above: a copy of the
        // version folder alone would not load.
        return Err(RegistryError::Invalid {
            what: format!("bundle folder {}", source.display()),
            problem: format!(
                "it is a version folder of a Triton model (no {}; its configuration is {}): \
                 register the Triton repository with `ferroserve import-triton`",
                ferroserve_runtime::manifest::MANIFEST_FILE,
                ferroserve_runtime::manifest::pbtxt::CONFIG_FILE
            ),
        });
    }
    let manifest = Manifest::load(&source)?;
    if manifest.name != req.name {
        return Err(RegistryError::Invalid {
            what: format!("bundle {}", manifest.file.display()),
            problem: format!(
                "its manifest names the model {:?} but it is being registered as {:?}; \
                 the names must match",
                manifest.name, req.name
            ),
        });
    }
    if req.check_loads {
        ferroserve_runtime::onnxruntime::init()?;
        let model = Model::from_manifest(
            manifest.clone(),
            &LoadSettings {
                version: Some(0),
                ..LoadSettings::default()
            },
        )
        .map_err(|source| RegistryError::Load {
            dir: manifest.dir.clone(),
            source,
        })?;
        if let Some(why) = model.not_ready() {
            return Err(RegistryError::Invalid {
                what: format!("bundle {}", manifest.dir.display()),
                problem: format!("its entry script does not start: {why}"),
            });
        }
        drop(model);
    }
    let origin = match &opts.provenance {
        Some(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        None => source.clone(),
    };
    let git = if req.record_git {
        git::provenance(&origin)
    } else {
        GitInfo::default()
    };

    std::fs::create_dir_all(&req.repo).map_err(RegistryError::io(
        &req.repo,
        "cannot create repository folder",
    ))?;
    let repo = std::fs::canonicalize(&req.repo).map_err(RegistryError::io(
        &req.repo,
        "cannot open repository folder",
    ))?;
    let model_dir = repo.join(&req.name);
    if model_dir.starts_with(&source) {
        return Err(RegistryError::Invalid {
            what: format!("bundle folder {}", source.display()),
            problem: format!("it contains the repository folder {}", model_dir.display()),
        });
    }
    let mut store = Store::open(&repo)?;
    let new_model_dir = !model_dir.is_dir();
    std::fs::create_dir_all(&model_dir)
        .map_err(RegistryError::io(&model_dir, "cannot create model folder"))?;
    if new_model_dir {
        fsync_dir(&repo)?;
    }

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = model_dir.join(format!("{TMP_PREFIX}{}-{nanos}", std::process::id()));
    let staged = copy_tree_durably(&source, &tmp)
        .and_then(|()| fsync_dir(&model_dir))
        .and_then(|()| hash_tree(&tmp));
    let files = match staged {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let user = req
        .user
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(default_user);
    let mut tags = manifest.tags.clone();
    tags.extend(req.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let description = req
        .description
        .clone()
        .unwrap_or(manifest.description.clone());
    let at = crate::now_rfc3339();
    let source_dir = origin.to_string_lossy().into_owned();

    crate::pause::pause_point("copied");
    let db = store.path().to_path_buf();
    let tmp_name = tmp
        .file_name()
        .and_then(|n| n.to_str())
        .expect("temporary folder name is UTF-8")
        .to_string();
    let mut pending = PendingVersion {
        model: req.name.clone(),
        version: 0,
        model_description: manifest.description.clone(),
        description,
        tags,
        registered_by: user.clone(),
        registered_at: at,
        message: req.message.clone(),
        source_dir: Some(source_dir),
        git: git.clone(),
        files: files.clone(),
        audit: serde_json::Value::Null,
    };
    // Step 2: reserve the number in a committed pending row.
    let reserved = (|| {
        let tx = store.write()?;
        let from_rows = store::max_version(&tx, &db, &req.name)?.unwrap_or(0);
        let from_folders = version_folders(&model_dir)?.last().copied().unwrap_or(0);
        // Deleted versions leave their number in the high-water mark: a
        // number, once given out, always means the same files.
        let deleted = store::high_water(&tx, &db, &req.name)?;
        let reserved = journal::max_pending(&tx, &db, &req.name)?;
        let next = from_rows.max(from_folders).max(deleted).max(reserved) + 1;
        pending.version = match opts.version {
            None => next,
            Some(v) if v >= next => v,
            Some(v) => {
                let problem = if store::version_exists(&tx, &db, &req.name, v)? {
                    "it is already registered".to_string()
                } else if model_dir.join(v.to_string()).exists() {
                    format!(
                        "its folder {} already exists",
                        model_dir.join(v.to_string()).display()
                    )
                } else {
                    format!(
                        "the numbers of {:?} up to {} are taken (registered, reserved or deleted; \
                         a number is never given to other files)",
                        req.name,
                        next - 1
                    )
                };
                return Err(RegistryError::Invalid {
                    what: format!("version {}:{v}", req.name),
                    problem,
                });
            }
        };
        pending.audit = serde_json::json!({
            "model": pending.model,
            "version": pending.version,
            "description": pending.description,
            "tags": pending.tags,
            "message": pending.message,
            "source_dir": pending.source_dir,
            "git": {
                "repo": git.repo,
                "branch": git.branch,
                "commit": git.commit,
                "dirty": git.dirty,
            },
            "files": files.len(),
        });
        let id = journal::begin(&tx, &db, &pending, &tmp_name, journal::Owner::me())?;
        tx.commit().map_err(|source| RegistryError::Db {
            path: db.clone(),
            what: format!("cannot reserve a version of {}", req.name),
            source,
        })?;
        Ok::<i64, RegistryError>(id)
    })();
    let id = match reserved {
        Ok(id) => id,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    crate::pause::pause_point("reserved");
    let version = pending.version;
    let dir = model_dir.join(version.to_string());
    // Undoes steps 2 and 3 after a failure in this process (a crash is
    // undone, or finished, by the next open's recovery instead).
    let undo = |store: &mut Store, renamed: bool| {
        if renamed {
            // Rename first, so it never shows half-deleted under its number.
            let _ = std::fs::rename(&dir, &tmp);
            let _ = fsync_dir(&model_dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        if let Ok(tx) = store.write() {
            if journal::forget(&tx, &db, id).is_ok() {
                let _ = tx.commit();
            }
        }
    };
    // Step 3: the rename.
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        undo(&mut store, false);
        return Err(RegistryError::Io {
            path: dir,
            what: format!("cannot rename {} to the new version", tmp.display()),
            source: e,
        });
    }
    // Step 4: the version row replaces the pending one.
    let committed = fsync_dir(&model_dir).and_then(|()| {
        crate::pause::pause_point("renamed");
        let tx = store.write()?;
        journal::finish(&tx, &db, id, &pending, false)?;
        tx.commit().map_err(|source| RegistryError::Db {
            path: db.clone(),
            what: format!("cannot commit version {}:{version}", req.name),
            source,
        })
    });
    if let Err(e) = committed {
        undo(&mut store, true);
        return Err(e);
    }
    Ok(Registered {
        name: req.name.clone(),
        version,
        dir,
        files,
        git,
        registered_by: user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse() {
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_tag("k=").unwrap(), ("k".into(), String::new()));
        assert!(parse_tag("=v").is_err());
        assert!(parse_tag("novalue").is_err());
    }
}
