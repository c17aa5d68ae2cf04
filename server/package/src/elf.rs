//! What the dynamic loader needs to know about a binary: its interpreter
//! (`PT_INTERP`, the path the kernel starts it with) and a library's
//! soname (the name other objects ask the loader for).

use std::path::Path;

use object::elf::{DT_SONAME, EM_AARCH64, EM_X86_64};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;

use crate::error::PackageError;

pub struct ElfInfo {
    pub interpreter: Option<String>,
    /// The newest `GLIBC_x.y` symbol version the object needs.
    pub glibc_needed: Option<(u32, u32)>,
    pub soname: Option<String>,
    /// The OCI architecture name (`amd64`, `arm64`).
    pub architecture: &'static str,
}

pub fn read(path: &Path) -> Result<ElfInfo, PackageError> {
    let data = std::fs::read(path).map_err(PackageError::io(path))?;
    let bad = |problem: String| PackageError::Elf {
        path: path.to_path_buf(),
        problem,
    };
    let file = ElfFile64::<Endianness>::parse(&*data).map_err(|e| bad(e.to_string()))?;
    let endian = file.endian();
    let header = file.elf_header();
    let architecture = match header.e_machine(endian) {
        EM_X86_64 => "amd64",
        EM_AARCH64 => "arm64",
        other => {
            return Err(bad(format!(
                "machine {other} is neither x86-64 nor aarch64"
            )))
        }
    };
    let mut interpreter = None;
    for ph in file.elf_program_headers() {
        if let Some(bytes) = ph
            .interpreter(endian, &*data)
            .map_err(|e| bad(e.to_string()))?
        {
            interpreter = Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    let table = file
        .elf_section_table()
        .dynamic_table(endian, &*data)
        .map_err(|e| bad(e.to_string()))?;
    let mut soname = None;
    for d in &table {
        if d.tag == DT_SONAME {
            let name = table.string(d).map_err(|e| bad(e.to_string()))?;
            soname = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    let sections = file.elf_section_table();
    let mut glibc_needed = None;
    if let Some((mut needs, link)) = sections
        .gnu_verneed(endian, &*data)
        .map_err(|e| bad(e.to_string()))?
    {
        let strings = sections
            .strings(endian, &*data, link)
            .map_err(|e| bad(e.to_string()))?;
        while let Some((_, mut aux)) = needs.next().map_err(|e| bad(e.to_string()))? {
            while let Some(a) = aux.next().map_err(|e| bad(e.to_string()))? {
                let name = a.name(endian, strings).map_err(|e| bad(e.to_string()))?;
                glibc_needed = glibc_needed.max(glibc_version(name));
            }
        }
    }
    Ok(ElfInfo {
        interpreter,
        glibc_needed,
        soname,
        architecture,
    })
}

/// The newest `GLIBC_x.y` a C library defines (its version definitions).
pub fn glibc_defined(data: &[u8]) -> Option<(u32, u32)> {
    let file = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = file.endian();
    let sections = file.elf_section_table();
    let (mut defs, link) = sections.gnu_verdef(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    let mut newest = None;
    while let Ok(Some((_, mut aux))) = defs.next() {
        while let Ok(Some(a)) = aux.next() {
            if let Ok(name) = a.name(endian, strings) {
                newest = newest.max(glibc_version(name));
            }
        }
    }
    newest
}

/// `GLIBC_2.34` as (2, 34); other version names as None.
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix("GLIBC_")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_has_an_interpreter_and_libc_a_soname() {
        let me = read(&std::env::current_exe().unwrap()).unwrap();
        let interp = me.interpreter.expect("a dynamically linked test binary");
        assert!(interp.contains("ld-linux"), "{interp}");
        let libs = crate::libs::loaded().unwrap();
        let libc = libs
            .iter()
            .find(|l| l.soname == "libc.so.6")
            .expect("libc among the loaded libraries");
        assert!(libc.path.is_file());
    }

    #[test]
    fn glibc_versions_needed_and_defined() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert!((2, 9) < (2, 34), "compared as numbers, not text");
        let me = read(&std::env::current_exe().unwrap()).unwrap();
        let needed = me
            .glibc_needed
            .expect("a test binary needs some GLIBC_ version");
        let libc = crate::libs::loaded()
            .unwrap()
            .into_iter()
            .find(|l| l.soname == "libc.so.6")
            .unwrap();
        let defined = glibc_defined(&std::fs::read(&libc.path).unwrap()).unwrap();
        assert!(needed <= defined, "{needed:?} > {defined:?}");
    }

    #[test]
    fn not_elf_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        let e = read(&f).err().unwrap().to_string();
        assert!(e.contains("not an ELF file"), "{e}");
    }
}
