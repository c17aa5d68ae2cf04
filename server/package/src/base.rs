//! A base image given as an OCI layout folder (what `skopeo copy
//! docker://debian:bookworm-slim oci:DIR` writes): its manifest for the
//! platform, its config, and which files its layers leave in place.

use std::collections::BTreeSet;
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
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl Base {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

pub fn open(dir: &Path, platform: &Platform) -> Result<Base, PackageError> {
    let bad = |problem: String| PackageError::Base {
        dir: dir.to_path_buf(),
        problem,
    };
    let read_json = |digest: Option<&str>| -> Result<serde_json::Value, PackageError> {
        let path = match digest {
            None => dir.join("index.json"),
            Some(d) => blob_path(dir, d),
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
    let arch = config["architecture"].as_str().unwrap_or_default();
    if arch != platform.architecture {
        return Err(bad(format!(
            "is for {arch}, the binary for {}",
            platform.architecture
        )));
    }
    let mut base = Base {
        dir: dir.to_path_buf(),
        manifest,
        config,
        files: BTreeSet::new(),
        passwd: None,
        group: None,
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
            let target = if parent.is_empty() {
                gone.to_string()
            } else {
                format!("{parent}/{gone}")
            };
            base.files.remove(&target);
            continue;
        }
        if name == "etc/passwd" || name == "etc/group" {
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
