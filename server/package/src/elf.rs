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
    Ok(ElfInfo {
        interpreter,
        soname,
        architecture,
    })
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
    fn not_elf_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        let e = read(&f).err().unwrap().to_string();
        assert!(e.contains("not an ELF file"), "{e}");
    }
}
