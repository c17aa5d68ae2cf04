//! The `oci-archive`: a tar of an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/...`), written under a temporary name and
//! renamed when whole, so a killed run leaves no half image behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::PackageError;

pub enum Blob<'a> {
    Bytes(&'a [u8]),
    File(PathBuf),
    /// An open file (a spooled layer), read from its start.
    Open(&'a std::fs::File, u64),
}

pub fn write(
    out: &Path,
    mtime: u64,
    blobs: BTreeMap<String, Blob<'_>>,
    index_json: &[u8],
) -> Result<u64, PackageError> {
    let partial = PathBuf::from(format!("{}.{}.partial", out.display(), std::process::id()));
    let written = write_to(&partial, mtime, &blobs, index_json);
    match written {
        Ok(size) => {
            std::fs::rename(&partial, out).map_err(PackageError::io(out))?;
            Ok(size)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn write_to(
    partial: &Path,
    mtime: u64,
    blobs: &BTreeMap<String, Blob<'_>>,
    index_json: &[u8],
) -> Result<u64, PackageError> {
    let partial = partial.to_path_buf();
    let io = |p: &Path| PackageError::io(p.to_path_buf());
    let file = std::fs::File::create(&partial).map_err(io(&partial))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        tar.append_data(&mut h, dir, std::io::empty())
            .map_err(io(&partial))?;
    }
    for (digest, blob) in blobs {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let name = format!("blobs/sha256/{hex}");
        match blob {
            Blob::Bytes(data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                tar.append_data(&mut h, &name, *data)
                    .map_err(io(&partial))?;
            }
            Blob::Open(file, len) => {
                let mut f = file.try_clone().map_err(io(&partial))?;
                std::io::Seek::rewind(&mut f).map_err(io(&partial))?;
                let mut h = header(tar::EntryType::Regular, *len, 0o644);
                tar.append_data(&mut h, &name, std::io::Read::take(f, *len))
                    .map_err(io(&partial))?;
            }
            Blob::File(path) => {
                let f = std::fs::File::open(path).map_err(io(path))?;
                let len = f.metadata().map_err(io(path))?.len();
                let mut h = header(tar::EntryType::Regular, len, 0o644);
                tar.append_data(&mut h, &name, f).map_err(io(path))?;
            }
        }
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (name, data) in [("index.json", index_json), ("oci-layout", &layout[..])] {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        tar.append_data(&mut h, name, data).map_err(io(&partial))?;
    }
    let mut w = tar.into_inner().map_err(io(&partial))?;
    w.flush().map_err(io(&partial))?;
    let file = w
        .into_inner()
        .map_err(|e| PackageError::io(partial.clone())(e.into_error()))?;
    file.sync_all().map_err(io(&partial))?;
    let size = file.metadata().map_err(io(&partial))?.len();
    Ok(size)
}
