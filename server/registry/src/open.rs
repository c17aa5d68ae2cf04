//! Opening a repository's registry: connect and migrate ([`crate::store`]),
//! fill a new database with the version folders already there
//! ([`crate::import`]), and finish or undo what a killed process left
//! ([`crate::journal`]). Every command that touches a registry goes through
//! here, so none of them sees a half-done registration.

use std::path::Path;

use crate::store::{self, Store};
use crate::RegistryError;

impl Store {
    /// Opens `REPO/registry.db`, creating it if absent (with a row for every
    /// version folder already in the repository), and recovers what an
    /// interrupted registration or deletion left.
    pub fn open(repo: &Path) -> Result<Store, RegistryError> {
        let mut store = Store::connect(repo, &crate::import::import_folders)?;
        // Finishing what a killed process left must not lock anyone out
        // of the registry: a failure is logged, and `repo check` reports
        // what is left.
        if let Err(e) = crate::journal::recover(&mut store, repo) {
            tracing::warn!(error = %e, "cannot finish the operations an interrupted process left");
        }
        Ok(store)
    }
}

/// Opens the registry of an existing repository: a folder of bundles
/// without a database is imported first (as `serve` does); a folder with
/// neither is an error rather than a new empty registry.
pub fn open_existing(repo: &Path) -> Result<Store, RegistryError> {
    crate::import::ensure(repo)?;
    if !Store::exists(repo) {
        return Err(RegistryError::Invalid {
            what: format!("repository {}", repo.display()),
            problem: format!("has no {} and no NAME/VERSION bundles", store::DB_FILE),
        });
    }
    Store::open(repo)
}
