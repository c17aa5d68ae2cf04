//! The folders of a repository: which are versions, and the prefixes of the
//! hidden ones a registration or deletion works in (never served, cleaned
//! up by recovery).

use std::path::Path;

use crate::RegistryError;

/// Prefix of the temporary folders registrations copy into.
pub const TMP_PREFIX: &str = ".tmp-";

/// Prefix of the folder a version is renamed to before it is removed (so it
/// is never served half-removed).
pub const DELETED_PREFIX: &str = ".deleted-";

/// The numeric (positive) version folders of a model folder, sorted.
pub fn version_folders(model_dir: &Path) -> Result<Vec<u64>, RegistryError> {
    let entries =
        std::fs::read_dir(model_dir).map_err(RegistryError::io(model_dir, "cannot read folder"))?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RegistryError::io(model_dir, "cannot read folder"))?;
        let Some(v) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&v| v > 0)
        else {
            continue;
        };
        if entry.path().is_dir() {
            versions.push(v);
        }
    }
    versions.sort_unstable();
    Ok(versions)
}
