//! `ferroserve repo check`: the repository's folders against its registry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use ferroserve_registry::check;

use crate::output::print_json;

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Verify every version's files against the recorded hashes and sizes,
    /// and the database against the folders; report every difference and
    /// exit 1 if there is any. Never repairs anything.
    Check {
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `ferroserve repo ...`; `Ok(false)` when the check found problems.
pub fn run(cmd: RepoCommand) -> Result<bool> {
    match cmd {
        RepoCommand::Check { repo, json } => {
            let report = check::check(&repo)?;
            if json {
                print_json(&report)?;
            } else {
                for p in &report.problems {
                    println!("{:<18} {}: {}", p.kind, p.path, p.detail);
                }
                println!(
                    "{}: {} versions, {} files checked, {} problem(s)",
                    if report.ok { "ok" } else { "FAILED" },
                    report.versions_checked,
                    report.files_checked,
                    report.problems.len()
                );
            }
            std::io::stdout().flush()?;
            Ok(report.ok)
        }
    }
}
