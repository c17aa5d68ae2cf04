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

/// A finished layer, compressed into an unnamed temporary file (a model
/// may be larger than memory), with its two digests.
pub struct Layer {
    pub blob: std::fs::File,
    pub size: u64,
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
    pub fn finish(self, mtime: u64, spool: &std::path::Path) -> Result<Layer, PackageError> {
        let file = tempfile::tempfile_in(spool).map_err(PackageError::io(spool))?;
        let gz = flate2::GzBuilder::new().mtime(0).write(
            Hashing::new(std::io::BufWriter::new(file)),
            flate2::Compression::default(),
        );
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
                    // A file that grows meanwhile must not spill past its
                    // header's size; one that shrinks is an error.
                    let mut body = std::io::Read::take(f, len);
                    tar.append_data(&mut h, path, &mut body)
                        .map_err(PackageError::io(from))?;
                    if body.limit() != 0 {
                        return Err(PackageError::Invalid(format!(
                            "{} shrank while it was being packaged",
                            from.display()
                        )));
                    }
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
        let (buffered, digest) = outer.finish();
        let blob = buffered
            .into_inner()
            .map_err(|e| PackageError::io(spool)(e.into_error()))?;
        let size = blob.metadata().map_err(PackageError::io(spool))?.len();
        Ok(Layer {
            blob,
            size,
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
        b.finish(0, &std::env::temp_dir()).unwrap()
    }

    fn bytes_of(layer: &Layer) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut f = layer.blob.try_clone().unwrap();
        f.rewind().unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        assert_eq!(v.len() as u64, layer.size);
        v
    }

    #[test]
    fn same_contents_in_any_order_give_the_same_digest() {
        let a = sample(&["/etc/passwd", "/models/m/1/a", "/models/m/1/b"]);
        let b = sample(&["/models/m/1/b", "/etc/passwd", "/models/m/1/a"]);
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.digest, a.diff_id);
        assert_eq!(a.digest, sha256(&bytes_of(&a)));
        let c = sample(&["/etc/passwd", "/models/m/1/a", "/models/m/1/c"]);
        assert_ne!(a.digest, c.digest);
    }

    /// The digest of fixed contents, pinned: a change of tar or gzip
    /// output (a crate upgrade, another deflate backend) changes every
    /// image's digest, and should be a decision, not an accident.
    #[test]
    fn a_fixed_layer_has_a_fixed_digest() {
        let layer = sample(&["/etc/passwd", "/models/m/1/a"]);
        assert_eq!(layer.diff_id, PINNED_DIFF_ID);
        assert_eq!(layer.digest, PINNED_DIGEST);
    }

    const PINNED_DIFF_ID: &str =
        "sha256:b860dbc337789f449183da64c666a3a168792bf151472ea4a38c0496cb817298";
    const PINNED_DIGEST: &str =
        "sha256:7eba34178b3c5bc64fe5d39275a6e1d1a658f703873b03bfb1efdb28dad730e1";

    #[test]
    fn parents_are_listed_before_children_with_set_metadata() {
        let layer = sample(&["/models/m/1/a"]);
        let tar_bytes = {
            let gz = bytes_of(&layer);
            let mut d = flate2::read::GzDecoder::new(&gz[..]);
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
