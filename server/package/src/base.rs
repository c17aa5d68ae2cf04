//! A base image given as an OCI layout folder (what `skopeo copy
//! docker://debian:bookworm-slim oci:DIR` writes): its manifest for the
//! platform, its config, and which files its layers leave in place.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::PackageError;
use crate::oci::{self, Descriptor, Index, Manifest, Platform};

pub struct Base {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub config: serde_json::Value,
    /// Paths (no leading `/`) present after the base's layers.
    pub files: BTreeSet<String>,
    /// Symlinks among them, to their targets (merged-usr bases link
    /// `lib64` to `usr/lib64`).
    pub links: BTreeMap<String, String>,
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// The newest `GLIBC_x.y` the base's C library defines, if it has one.
    pub glibc: Option<(u32, u32)>,
}

impl Base {
    /// The blob's file; the digest was checked when the manifest was read.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..])
    }

    /// Whether `path` exists in the base's file system, following its
    /// symlinks (at most 40, as the kernel does).
    pub fn has(&self, path: &str) -> bool {
        let mut parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while !parts.is_empty() {
            let part = parts.remove(0);
            match part.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(part),
            }
            let here = done.join("/");
            if let Some(target) = self.links.get(&here) {
                hops += 1;
                if hops > 40 {
                    return false;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut rest: Vec<String> = target
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                rest.append(&mut parts);
                parts = rest;
            } else if !self.files.contains(&here) {
                return false;
            }
        }
        true
    }
}

/// `sha256:` and 64 lowercase hex digits: anything else could name a
/// path outside the layout.
fn check_digest(dir: &Path, digest: &str) -> Result<PathBuf, PackageError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(PackageError::Base {
            dir: dir.to_path_buf(),
            problem: format!("digest {digest:?}: expected sha256: and 64 lowercase hex digits"),
        });
    }
    Ok(dir.join("blobs/sha256").join(hex))
}

pub fn open(dir: &Path, platform: &Platform) -> Result<Base, PackageError> {
    let bad = |problem: String| PackageError::Base {
        dir: dir.to_path_buf(),
        problem,
    };
    let read_json = |digest: Option<&str>| -> Result<serde_json::Value, PackageError> {
        let path = match digest {
            None => dir.join("index.json"),
            Some(d) => check_digest(dir, d)?,
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            bad(format!(
                "cannot read {} ({e}); expected an OCI image layout folder (skopeo copy ... oci:DIR)",
                path.display()
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
    };
    // index.json, and any nested index, down to one manifest.
    let mut doc = read_json(None)?;
    let manifest = loop {
        let index: Index =
            serde_json::from_value(doc.clone()).map_err(|e| bad(format!("index.json: {e}")))?;
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == platform.os && p.architecture == platform.architecture)
            })
            .collect();
        let chosen = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(bad(format!(
                    "no image for {}/{}",
                    platform.os, platform.architecture
                )))
            }
            _ => {
                return Err(bad(format!(
                    "holds {} images for {}/{}; copy one alone (skopeo copy ... oci:DIR:TAG)",
                    candidates.len(),
                    platform.os,
                    platform.architecture
                )))
            }
        };
        let next = read_json(Some(&chosen.digest))?;
        match chosen.media_type.as_str() {
            oci::INDEX => doc = next,
            oci::MANIFEST => {
                break serde_json::from_value::<Manifest>(next)
                    .map_err(|e| bad(format!("manifest {}: {e}", chosen.digest)))?
            }
            other => {
                return Err(bad(format!(
                    "manifest media type {other} is not OCI's; convert it with skopeo copy --format oci"
                )))
            }
        }
    };
    let config = read_json(Some(&manifest.config.digest))?;
    match config["architecture"].as_str() {
        Some(arch) if arch == platform.architecture => {}
        Some(arch) => {
            return Err(bad(format!(
                "is for {arch}, the binary for {}",
                platform.architecture
            )))
        }
        None => return Err(bad("its config has no architecture".into())),
    }
    for layer in &manifest.layers {
        check_digest(dir, &layer.digest)?;
    }
    let mut base = Base {
        dir: dir.to_path_buf(),
        manifest,
        config,
        files: BTreeSet::new(),
        links: BTreeMap::new(),
        passwd: None,
        group: None,
        glibc: None,
    };
    for layer in base.manifest.layers.clone() {
        scan_layer(&mut base, &layer)?;
    }
    Ok(base)
}

/// Applies one layer's entries (and whiteouts) to the file list.
fn scan_layer(base: &mut Base, layer: &Descriptor) -> Result<(), PackageError> {
    let path = base.blob_path(&layer.digest);
    let file = std::fs::File::open(&path).map_err(PackageError::io(&path))?;
    let reader: Box<dyn Read> = match layer.media_type.as_str() {
        oci::LAYER_GZIP => Box::new(flate2::read::GzDecoder::new(file)),
        oci::LAYER_TAR => Box::new(file),
        other => {
            return Err(PackageError::Base {
                dir: base.dir.clone(),
                problem: format!(
                    "layer {} is {other}; only gzip'd or plain tar layers can be read",
                    layer.digest
                ),
            })
        }
    };
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(PackageError::io(&path))? {
        let mut entry = entry.map_err(PackageError::io(&path))?;
        let name = entry
            .path()
            .map_err(PackageError::io(&path))?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_matches('/')
            .to_string();
        let (parent, file) = name.rsplit_once('/').unwrap_or(("", &name));
        if let Some(gone) = file.strip_prefix(".wh.") {
            // `.wh..wh..opq` empties the folder; `.wh.NAME` removes NAME
            // and everything under it.
            let target = match (gone, parent.is_empty()) {
                (".wh..opq", _) => parent.to_string(),
                (_, true) => gone.to_string(),
                (_, false) => format!("{parent}/{gone}"),
            };
            let under = format!("{target}/");
            base.files.retain(|f| !f.starts_with(&under));
            base.links.retain(|f, _| !f.starts_with(&under));
            if gone != ".wh..opq" {
                base.files.remove(&target);
                base.links.remove(&target);
                if target == "etc/passwd" {
                    base.passwd = None;
                } else if target == "etc/group" {
                    base.group = None;
                }
            }
            continue;
        }
        base.links.remove(&name);
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            if let Ok(Some(target)) = entry.link_name() {
                base.links
                    .insert(name.clone(), target.to_string_lossy().into_owned());
            }
        }
        let file_name = name.rsplit('/').next().unwrap_or_default();
        let is_libc = file_name == "libc.so.6"
            || (file_name.starts_with("libc-") && file_name.ends_with(".so"));
        if kind.is_file() && is_libc {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(PackageError::io(&path))?;
            base.glibc = base.glibc.max(crate::elf::glibc_defined(&bytes));
        }
        if kind.is_file() && (name == "etc/passwd" || name == "etc/group") {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(PackageError::io(&path))?;
            if name == "etc/passwd" {
                base.passwd = Some(text);
            } else {
                base.group = Some(text);
            }
        }
        base.files.insert(name);
    }
    Ok(())
}

/// A merged-usr base (`lib64 -> usr/lib64`) with no layers, for tests.
#[cfg(test)]
pub(crate) fn merged_usr() -> Base {
    let files = [
        "lib64",
        "usr",
        "usr/lib64",
        "usr/lib64/ld-linux-x86-64.so.2",
        "usr/lib",
        "etc",
    ];
    Base {
        dir: PathBuf::from("/nowhere"),
        manifest: Manifest {
            schema_version: 2,
            media_type: None,
            config: Descriptor {
                media_type: oci::CONFIG.into(),
                digest: String::new(),
                size: 0,
                platform: None,
                annotations: Default::default(),
            },
            layers: vec![],
            annotations: Default::default(),
        },
        config: serde_json::Value::Null,
        files: files.iter().map(|f| f.to_string()).collect(),
        links: BTreeMap::from([
            ("lib64".to_string(), "usr/lib64".to_string()),
            ("usr/lib".to_string(), "/usr/lib64".to_string()),
        ]),
        passwd: None,
        group: None,
        glibc: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_through_the_bases_symlinks() {
        let b = merged_usr();
        assert!(b.has("/lib64/ld-linux-x86-64.so.2"));
        assert!(b.has("/usr/lib/ld-linux-x86-64.so.2"));
        assert!(b.has("/usr/lib64/../lib64/ld-linux-x86-64.so.2"));
        assert!(!b.has("/lib64/libc.so.6"));
        assert!(!b.has("/lib/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn digests_that_could_escape_are_refused() {
        let d = Path::new("/l");
        assert!(check_digest(d, &format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:abcd",
            "",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(check_digest(d, bad).is_err(), "{bad}");
        }
    }
}
