//! Which files a run scores and where each one's results go: `--input`
//! patterns expanded, each file named by its path under its pattern's
//! root (the part of the pattern before its first wildcard), a shard's
//! share picked by a hash of that name, and the output named after it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::BatchError;

/// One input file of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// Its path under its pattern's root, `/`-separated: the name the
    /// shard hash, the output and the ledger use.
    pub name: String,
}

/// The extensions batch scoring reads.
pub const EXTENSIONS: &[&str] = &["parquet", "csv", "jsonl", "json", "ndjson", "npy"];

/// `K/N`: this copy takes the files whose name hashes to `K` modulo `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("expected K/N with 0 <= K < N (e.g. 0/4), got {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this shard takes the file named `name`: the first 8 bytes
    /// of its SHA-256 modulo the count, the same on every machine.
    pub fn takes(&self, name: &str) -> bool {
        let digest = Sha256::digest(name.as_bytes());
        let h = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        h % self.count == self.index
    }
}

/// Expands the patterns into files, sorted by name. A pattern that
/// matches nothing, a file of a kind batch cannot read, or two files of
/// the same name under different roots is an error naming the pattern.
pub fn expand(patterns: &[String]) -> Result<Vec<InputFile>, BatchError> {
    let mut by_name: BTreeMap<String, InputFile> = BTreeMap::new();
    for pattern in patterns {
        let root = pattern_root(pattern);
        let paths = glob::glob(pattern).map_err(|e| BatchError::Argument {
            argument: "--input",
            message: format!("{pattern:?} is not a valid pattern: {e}"),
        })?;
        let mut matched = 0;
        for entry in paths {
            let path = entry.map_err(|e| BatchError::Argument {
                argument: "--input",
                message: format!("{pattern:?}: cannot read {}", e.path().display()),
            })?;
            if !path.is_file() {
                continue;
            }
            matched += 1;
            let extension = extension_of(&path);
            if !EXTENSIONS.contains(&extension.as_str()) {
                return Err(BatchError::Argument {
                    argument: "--input",
                    message: format!(
                        "{}: expected one of .{}, got {:?}",
                        path.display(),
                        EXTENSIONS.join(", ."),
                        extension
                    ),
                });
            }
            let name = relative_name(&root, &path);
            if let Some(other) = by_name.get(&name) {
                if other.path != path {
                    return Err(BatchError::Argument {
                        argument: "--input",
                        message: format!(
                            "{} and {} would both write output {name:?}",
                            other.path.display(),
                            path.display()
                        ),
                    });
                }
                continue;
            }
            by_name.insert(name.clone(), InputFile { path, name });
        }
        if matched == 0 {
            return Err(BatchError::Argument {
                argument: "--input",
                message: format!("{pattern:?} matches no files"),
            });
        }
    }
    Ok(by_name.into_values().collect())
}

/// The lower-case extension of `path` ("" without one).
pub fn extension_of(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The folder a pattern's matches are named under: its components before
/// the first one with a wildcard (for a plain file name, its folder).
fn pattern_root(pattern: &str) -> PathBuf {
    let path = Path::new(pattern);
    let mut root = PathBuf::new();
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let components: Vec<Component> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let text = c.as_os_str().to_string_lossy();
        if wild(&text) || i + 1 == components.len() {
            break;
        }
        root.push(c);
    }
    root
}

fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `name` with its extension replaced by `extension`.
pub fn with_extension(name: &str, extension: &str) -> String {
    let path = Path::new(name);
    let stem = path.with_extension("");
    format!("{}.{extension}", stem.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_stop_at_the_first_wildcard() {
        assert_eq!(pattern_root("data/*.parquet"), PathBuf::from("data"));
        assert_eq!(
            pattern_root("data/2026/*/p*.csv"),
            PathBuf::from("data/2026")
        );
        assert_eq!(pattern_root("one.csv"), PathBuf::new());
        assert_eq!(pattern_root("/abs/dir/x.csv"), PathBuf::from("/abs/dir"));
    }

    #[test]
    fn names_are_relative_to_the_root() {
        assert_eq!(
            relative_name(Path::new("data"), Path::new("data/a/part-0.parquet")),
            "a/part-0.parquet"
        );
        assert_eq!(with_extension("a/part-0.parquet", "csv"), "a/part-0.csv");
    }

    #[test]
    fn shards_split_names_without_overlap() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for i in 0..200 {
            let name = format!("part-{i}.parquet");
            assert_eq!(shards.iter().filter(|s| s.takes(&name)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
