//! Where a bundle came from: the git checkout around its folder, if any,
//! read with the `git` binary.

use std::path::Path;
use std::process::Command;

/// Git provenance of a folder. All `None` when the folder is not inside a
/// git checkout (or `git` is not installed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitInfo {
    /// The checkout's top-level folder.
    pub repo: Option<String>,
    /// The current branch; `None` on a detached HEAD.
    pub branch: Option<String>,
    /// The HEAD commit; `None` in a repository without commits.
    pub commit: Option<String>,
    /// Whether `git status --porcelain` reports anything for the folder
    /// (modified, staged or untracked files).
    pub dirty: Option<bool>,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Reading status must not take the index lock of someone's checkout.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches(['\n', '\r'])
            .to_string(),
    )
}

/// Reads the provenance of `dir`.
pub fn provenance(dir: &Path) -> GitInfo {
    let Some(repo) = git(dir, &["rev-parse", "--show-toplevel"]).filter(|s| !s.is_empty()) else {
        return GitInfo::default();
    };
    let branch = git(dir, &["symbolic-ref", "--short", "-q", "HEAD"]).filter(|s| !s.is_empty());
    let commit = git(dir, &["rev-parse", "--verify", "-q", "HEAD"]).filter(|s| !s.is_empty());
    let dirty = git(dir, &["status", "--porcelain", "--", "."]).map(|s| !s.trim().is_empty());
    GitInfo {
        repo: Some(repo),
        branch,
        commit,
        dirty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_checkout_everything_is_none() {
        let dir = tempfile::tempdir().unwrap();
        // A temp folder could sit under a checkout on some machines; only
        // assert when git agrees it does not.
        if git(dir.path(), &["rev-parse", "--show-toplevel"]).is_none() {
            assert_eq!(provenance(dir.path()), GitInfo::default());
        }
    }
}
