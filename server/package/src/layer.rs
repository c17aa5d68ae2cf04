//! One image layer: a gzip'd tar whose bytes depend only on its contents.
//! Entries are sorted by path, every parent folder is listed, and
//! timestamps, owners and modes are set rather than copied from the disk,
//! so the same inputs always give the same digest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::PackageError;

enum Source {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
}

struct Entry {
    source: Source,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// Paths are absolute in the image (`/usr/local/bin/x`).
#[derive(Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// A finished layer, compressed, with its two digests.
pub struct Layer {
    pub blob: Vec<u8>,
    /// `sha256:` of the gzip'd bytes (the manifest's descriptor).
    pub digest: String,
    /// `sha256:` of the tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub files: usize,
}

impl LayerBuilder {
    pub fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) {
        self.insert(path, Source::Dir, mode, uid, gid);
    }

    pub fn file(&mut self, path: &str, from: PathBuf, mode: u32) {
        self.insert(path, Source::File(from), mode, 0, 0);
    }

    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.insert(path, Source::Bytes(data), mode, 0, 0);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Source::Symlink(target.to_string()), 0o777, 0, 0);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    fn insert(&mut self, path: &str, source: Source, mode: u32, uid: u64, gid: u64) {
        let path = path.trim_matches('/').to_string();
        // Parents first, as plain root-owned folders unless set already.
        let mut parent = String::new();
        for part in path.split('/').take(path.matches('/').count()) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry {
                source: Source::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        self.entries.insert(
            path,
            Entry {
                source,
                mode,
                uid,
                gid,
            },
        );
    }

    /// Writes the tar, gzip'd, with every timestamp at `mtime` (seconds).
    pub fn finish(self, mtime: u64) -> Result<Layer, PackageError> {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Hashing::new(Vec::new()), flate2::Compression::default());
        let mut tar = tar::Builder::new(Hashing::new(gz));
        let files = self.entries.len();
        for (path, e) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(mtime);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mode(e.mode);
            let io = |p: &str| PackageError::io(PathBuf::from(p));
            match &e.source {
                Source::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                        .map_err(io(path))?;
                }
                Source::Bytes(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, &data[..]).map_err(io(path))?;
                }
                Source::File(from) => {
                    let f = std::fs::File::open(from).map_err(PackageError::io(from))?;
                    let len = f.metadata().map_err(PackageError::io(from))?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(len);
                    tar.append_data(&mut h, path, f)
                        .map_err(PackageError::io(from))?;
                }
                Source::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target).map_err(io(path))?;
                }
            }
        }
        let inner = tar.into_inner().map_err(PackageError::io("layer"))?;
        let (gz, diff_id) = inner.finish();
        let outer = gz.finish().map_err(PackageError::io("layer"))?;
        let (blob, digest) = outer.finish();
        Ok(Layer {
            blob,
            digest,
            diff_id,
            files,
        })
    }
}

/// A writer that hashes what passes through it.
pub(crate) struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashing<W> {
    pub(crate) fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The writer and `sha256:HEX` of everything written.
    pub(crate) fn finish(self) -> (W, String) {
        (self.inner, format!("sha256:{:x}", self.hasher.finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[&str]) -> Layer {
        let mut b = LayerBuilder::default();
        for p in order {
            b.bytes(p, p.as_bytes().to_vec(), 0o644);
        }
        b.dir("/tmp", 0o1777, 0, 0);
        b.finish(0).unwrap()
    }

    #[test]
    fn same_contents_in_any_order_give_the_same_digest() {
        let a = sample(&["/etc/passwd", "/models/m/1/a", "/models/m/1/b"]);
        let b = sample(&["/models/m/1/b", "/etc/passwd", "/models/m/1/a"]);
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.digest, a.diff_id);
        assert_eq!(a.digest, sha256(&a.blob));
        let c = sample(&["/etc/passwd", "/models/m/1/a", "/models/m/1/c"]);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn parents_are_listed_before_children_with_set_metadata() {
        let layer = sample(&["/models/m/1/a"]);
        let tar_bytes = {
            let mut d = flate2::read::GzDecoder::new(&layer.blob[..]);
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut v).unwrap();
            v
        };
        assert_eq!(sha256(&tar_bytes), layer.diff_id);
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let seen: Vec<(String, u32, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "models/",
                "models/m/",
                "models/m/1/",
                "models/m/1/a",
                "tmp/"
            ]
        );
        assert!(seen.iter().all(|s| s.2 == 0));
        assert_eq!(seen[4].1, 0o1777);
    }
}
