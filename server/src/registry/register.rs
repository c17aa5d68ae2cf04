//! `ferroserve register`: validate a bundle, copy it into the repository as
//! the next version, atomically, and record it.
//!
//! The order makes a crash at any point harmless:
//! 1. copy into `REPO/NAME/.tmp-PID-NANOS/`, fsync every file and folder,
//!    hash the copy (a crash leaves a `.tmp-*` folder, which the server and
//!    the importer skip and the next registration of NAME removes);
//! 2. take the database's write lock, pick the next version, rename the
//!    temporary folder to it and fsync `REPO/NAME/` (a crash leaves a
//!    complete version folder without a row; the version number is never
//!    reused, as the next one counts folders too, and the model's
//!    high-water mark, so that deleted numbers are not given out again);
//! 3. insert the version, file and audit rows and commit, in one transaction.
//!
//! So a row always has its folder, and a version folder is never half-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::fsutil::{copy_tree_durably, fsync_dir, hash_tree, FileRecord};
use super::git::{self, GitInfo};
use super::import::version_folders;
use super::store::{self, NewVersion, Store};
use super::{check_model_name, RegistryError};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::model::Model;

/// Prefix of the temporary folders registrations copy into.
pub const TMP_PREFIX: &str = ".tmp-";

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

/// Parses `--tag k=v`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "expected KEY=VALUE with a non-empty key, got {s:?}"
        )),
    }
}

/// Validates, copies and records one bundle; see the module documentation.
pub fn register(req: &RegisterRequest) -> Result<Registered, RegistryError> {
    check_model_name(&req.name)?;
    let source = std::fs::canonicalize(&req.source)
        .map_err(RegistryError::io(&req.source, "cannot open bundle folder"))?;
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
        crate::runtime::init_onnxruntime()?;
        let model = Model::load(manifest.clone(), 0, &Metrics::new()).map_err(|source| {
            RegistryError::Load {
                dir: manifest.dir.clone(),
                source,
            }
        })?;
        drop(model);
    }
    let git = if req.record_git {
        git::provenance(&source)
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
    remove_stale_temporaries(&model_dir);

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
    let at = super::now_rfc3339();
    let source_dir = source.to_string_lossy().into_owned();

    let db = store.path().to_path_buf();
    let tx = match store.write() {
        Ok(tx) => tx,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let next = (|| {
        let from_rows = store::max_version(&tx, &db, &req.name)?.unwrap_or(0);
        let from_folders = version_folders(&model_dir)?.last().copied().unwrap_or(0);
        // Deleted versions leave their number in the high-water mark: a
        // number, once given out, always means the same files.
        let deleted = store::high_water(&tx, &db, &req.name)?;
        Ok::<u64, RegistryError>(from_rows.max(from_folders).max(deleted) + 1)
    })();
    let version = match next {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let dir = model_dir.join(version.to_string());
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(RegistryError::Io {
            path: dir,
            what: format!("cannot rename {} to the new version", tmp.display()),
            source: e,
        });
    }
    let recorded = fsync_dir(&model_dir).and_then(|()| {
        store::insert_version(
            &tx,
            &db,
            &NewVersion {
                model: &req.name,
                version,
                model_description: &manifest.description,
                description: &description,
                tags: &tags,
                registered_by: &user,
                registered_at: &at,
                message: req.message.as_deref(),
                source_dir: Some(&source_dir),
                git: &git,
            },
            &files,
        )?;
        store::append_audit(
            &tx,
            &db,
            &at,
            &user,
            crate::events::types::MODEL_REGISTERED,
            &format!("{}:{version}", req.name),
            &serde_json::json!({
                "model": req.name,
                "version": version,
                "description": description,
                "tags": tags,
                "message": req.message,
                "source_dir": source_dir,
                "git": {
                    "repo": git.repo,
                    "branch": git.branch,
                    "commit": git.commit,
                    "dirty": git.dirty,
                },
                "files": files.len(),
            }),
        )
    });
    let committed = recorded.and_then(|()| {
        tx.commit().map_err(|source| RegistryError::Db {
            path: db.clone(),
            what: format!("cannot commit version {}:{version}", req.name),
            source,
        })
    });
    if let Err(e) = committed {
        // Not recorded: take the folder back out of sight (rename first,
        // so it never shows half-deleted under its version number).
        let _ = std::fs::rename(&dir, &tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = fsync_dir(&model_dir);
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

/// Removes `.tmp-*` folders left by registrations that died. A folder whose
/// name carries the id of a process still running is left alone: it may be
/// a registration in progress. Without `/proc`, nothing is removed (the
/// folders are skipped everywhere anyway).
fn remove_stale_temporaries(model_dir: &Path) {
    let proc_fs = Path::new("/proc/self").exists();
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = match pid {
            Some(pid) => !proc_fs || Path::new("/proc").join(pid.to_string()).exists(),
            None => !proc_fs,
        };
        if alive {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the leftover of an interrupted registration")
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove the leftover of an interrupted registration")
            }
        }
    }
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

    #[test]
    fn stale_temporaries_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".tmp-x");
        let live = dir.path().join(format!(".tmp-{}-1", std::process::id()));
        let version = dir.path().join("1");
        for d in [&stale, &live, &version] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale_temporaries(dir.path());
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists());
        }
        assert!(live.exists());
        assert!(version.exists());
    }
}
