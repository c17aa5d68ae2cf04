//! The model repository folder: `REPO/NAME/VERSION/bundle.toml`, or a
//! Triton model's `REPO/NAME/config.pbtxt` with `REPO/NAME/VERSION/`.

use std::path::{Path, PathBuf};

use ferroserve_runtime::manifest::{is_bundle_dir, Manifest, ManifestError, MANIFEST_FILE};

/// The newest version of one model in the repository.
#[derive(Debug, Clone)]
pub struct BundleVersion {
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("cannot read model repository {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("model repository {} holds no bundle (expected NAME/VERSION/{MANIFEST_FILE}, or a Triton model NAME/config.pbtxt with NAME/VERSION/)", dir.display())]
    Empty { dir: PathBuf },
}

/// Finds the newest version of every model. Version folders are positive
/// integers; other entries are skipped with a warning, as a stray file in a
/// repository should not stop a server.
pub fn newest_versions(repo: &Path) -> Result<Vec<BundleVersion>, RepositoryError> {
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|source| RepositoryError::Read {
            dir: dir.to_path_buf(),
            source,
        })
    };
    let mut found = Vec::new();
    for entry in read(repo)? {
        let entry = entry.map_err(|source| RepositoryError::Read {
            dir: repo.to_path_buf(),
            source,
        })?;
        let model_dir = entry.path();
        let Some(name) = model_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !model_dir.is_dir() || name.starts_with('.') {
            continue;
        }
        let mut newest: Option<(u64, PathBuf)> = None;
        for v in read(&model_dir)? {
            let Ok(v) = v else { continue };
            let path = v.path();
            let Some(version) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
            else {
                continue;
            };
            if !is_bundle_dir(&path) {
                tracing::warn!(dir = %path.display(), "skipping version folder without {MANIFEST_FILE} (or a Triton config.pbtxt in its model folder)");
                continue;
            }
            if newest.as_ref().is_none_or(|(n, _)| version > *n) {
                newest = Some((version, path));
            }
        }
        match newest {
            Some((version, dir)) => found.push(BundleVersion { name, version, dir }),
            None => {
                tracing::warn!(dir = %model_dir.display(), "skipping folder with no NAME/VERSION/{MANIFEST_FILE}")
            }
        }
    }
    if found.is_empty() {
        return Err(RepositoryError::Empty {
            dir: repo.to_path_buf(),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

impl BundleVersion {
    /// Reads the manifest and checks that it names the folder it lives in,
    /// since clients reach the model by the folder's name.
    pub fn manifest(&self) -> Result<Manifest, ManifestError> {
        let m = Manifest::load(&self.dir)?;
        if m.name != self.name {
            return Err(ManifestError {
                file: m.file.clone(),
                key: "name".into(),
                problem: format!(
                    "is {:?} but the bundle lives in folder {:?}",
                    m.name, self.name
                ),
            });
        }
        Ok(m)
    }
}
