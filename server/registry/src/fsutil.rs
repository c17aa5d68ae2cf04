//! Copying a bundle durably and listing its files.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::hashing::sha256_file;
use crate::RegistryError;

/// One file of a version: its path relative to the version folder (with
/// `/` separators), SHA-256 and size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// Names never copied from a source folder: a bundle that is the top of a
/// git checkout should not drag the history along.
const SKIPPED: &[&str] = &[".git"];

/// Copies the regular files and folders under `src` into `dst` (which must
/// not exist), fsyncing every file and every folder. Symlinks to files are
/// copied as the file they point to; symlinked folders and special files
/// are refused, so a bundle cannot pull in a tree from elsewhere.
pub fn copy_tree_durably(src: &Path, dst: &Path) -> Result<(), RegistryError> {
    std::fs::create_dir(dst).map_err(RegistryError::io(dst, "cannot create folder"))?;
    let entries = std::fs::read_dir(src).map_err(RegistryError::io(src, "cannot read folder"))?;
    for entry in entries {
        let entry = entry.map_err(RegistryError::io(src, "cannot read folder"))?;
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        let link =
            std::fs::symlink_metadata(&from).map_err(RegistryError::io(&from, "cannot inspect"))?;
        let meta = std::fs::metadata(&from).map_err(RegistryError::io(&from, "cannot inspect"))?;
        if meta.is_dir() {
            if link.file_type().is_symlink() {
                return Err(RegistryError::Bundle {
                    path: from,
                    problem: "is a symlink to a folder; bundles may only hold real folders".into(),
                });
            }
            copy_tree_durably(&from, &to)?;
        } else if meta.is_file() {
            std::fs::copy(&from, &to).map_err(RegistryError::io(
                &from,
                format!("cannot copy to {}", to.display()),
            ))?;
            File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(RegistryError::io(&to, "cannot fsync"))?;
        } else {
            return Err(RegistryError::Bundle {
                path: from,
                problem: "is neither a regular file nor a folder".into(),
            });
        }
    }
    fsync_dir(dst)
}

/// fsyncs a folder, so that the names in it (new files, a rename) are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), RegistryError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(RegistryError::io(dir, "cannot fsync folder"))
}

/// Every regular file under `dir`, sorted by relative path, with its hash.
pub fn hash_tree(dir: &Path) -> Result<Vec<FileRecord>, RegistryError> {
    let mut files = Vec::new();
    collect(dir, "", &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|(rel, path)| {
            let (sha256, size) =
                sha256_file(&path).map_err(RegistryError::io(&path, "cannot hash"))?;
            Ok(FileRecord {
                path: rel,
                sha256,
                size,
            })
        })
        .collect()
}

fn collect(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(RegistryError::io(dir, "cannot read folder"))?;
    for entry in entries {
        let entry = entry.map_err(RegistryError::io(dir, "cannot read folder"))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(RegistryError::Bundle {
                path,
                problem: "file name is not UTF-8".into(),
            });
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::metadata(&path).map_err(RegistryError::io(&path, "cannot inspect"))?;
        if meta.is_dir() {
            collect(&path, &rel, out)?;
        } else if meta.is_file() {
            out.push((rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_nested_files_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(src.join(".git")).unwrap();
        std::fs::write(src.join("a.txt"), b"a").unwrap();
        std::fs::write(src.join("sub/deeper/b.bin"), b"bb").unwrap();
        std::fs::write(src.join(".git/HEAD"), b"ref").unwrap();
        let dst = dir.path().join("dst");
        copy_tree_durably(&src, &dst).unwrap();
        let files = hash_tree(&dst).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "sub/deeper/b.bin"]);
        assert_eq!(files[1].size, 2);
        // The destination must not exist beforehand: no merging into a version.
        assert!(copy_tree_durably(&src, &dst).is_err());
    }

    #[test]
    fn refuses_symlinked_folders() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::symlink(dir.path(), src.join("escape")).unwrap();
        let err = copy_tree_durably(&src, &dir.path().join("dst")).unwrap_err();
        assert!(err.to_string().contains("escape"), "{err}");
    }
}
