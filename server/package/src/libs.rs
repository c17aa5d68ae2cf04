//! The shared libraries the binary runs with. By default those the running
//! process has mapped (after ONNX Runtime is loaded, so its library and its
//! C++ runtime are among them): what ran here is what the image gets, as ko
//! takes a Go binary as built. `--runtime-libs DIR` names them instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::elf;
use crate::error::PackageError;

/// One shared object: the file to copy and the name the loader asks for.
#[derive(Debug, Clone)]
pub struct Library {
    pub path: PathBuf,
    pub soname: String,
    /// The newest `GLIBC_x.y` it needs (checked against a base's libc).
    pub glibc_needed: Option<(u32, u32)>,
}

/// Every shared object mapped into this process, but the executable.
pub fn loaded() -> Result<Vec<Library>, PackageError> {
    let maps_path = Path::new("/proc/self/maps");
    let maps = std::fs::read_to_string(maps_path).map_err(PackageError::io(maps_path))?;
    let exe = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces)
        let Some(path) = line.splitn(6, ' ').nth(5).map(str::trim) else {
            continue;
        };
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let p = PathBuf::from(path);
        let is_so = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".so") || n.contains(".so."));
        if is_so && Some(&p) != exe.as_ref() && !paths.contains(&p) {
            paths.push(p);
        }
    }
    paths.iter().map(|p| library(p)).collect()
}

/// Every ELF shared object in `dir` (symlinks followed; each file once).
pub fn from_dir(dir: &Path) -> Result<Vec<Library>, PackageError> {
    let mut by_file: BTreeMap<PathBuf, Library> = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(PackageError::io(dir))?;
    for entry in entries {
        let entry = entry.map_err(PackageError::io(dir))?;
        let path = entry.path();
        let real = std::fs::canonicalize(&path).map_err(PackageError::io(&path))?;
        if !real.is_file() || by_file.contains_key(&real) {
            continue;
        }
        let mut magic = [0u8; 4];
        let is_elf = std::fs::File::open(&real)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if is_elf {
            by_file.insert(real.clone(), library(&real)?);
        }
    }
    if by_file.is_empty() {
        return Err(PackageError::Invalid(format!(
            "--runtime-libs {}: holds no shared library",
            dir.display()
        )));
    }
    Ok(by_file.into_values().collect())
}

fn library(path: &Path) -> Result<Library, PackageError> {
    let info = elf::read(path)?;
    let soname = match info.soname {
        Some(s) => s,
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string(),
    };
    Ok(Library {
        path: path.to_path_buf(),
        soname,
        glibc_needed: info.glibc_needed,
    })
}

/// glibc's own objects: they must come from one build, so an image on a
/// base that has a C library takes all of them from the base.
pub fn is_glibc(soname: &str) -> bool {
    const GLIBC: [&str; 9] = [
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libresolv.so.2",
        "libutil.so.1",
        "libanl.so.1",
        "libmvec.so.1",
    ];
    GLIBC.contains(&soname) || soname.starts_with("ld-linux")
}
