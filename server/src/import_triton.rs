//! `ferroserve import-triton`: a Triton model repository's models registered
//! as ferroserve bundles, version numbers kept.

use std::path::PathBuf;

use anyhow::Result;
use ferroserve_registry::triton_import::{import, ImportRequest};

#[derive(clap::Args)]
pub struct ImportTritonArgs {
    /// The Triton model repository (DIR/NAME/config.pbtxt, DIR/NAME/N/).
    pub dir: PathBuf,
    /// The ferroserve repository to register into (created if absent).
    #[arg(long)]
    pub repo: PathBuf,
    /// Who registers the versions (default: $USER, else $LOGNAME, else "unknown").
    #[arg(long)]
    pub user: Option<String>,
    /// Why (default: "imported from Triton model repository DIR").
    #[arg(long)]
    pub message: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Returns whether everything was imported (or was already there).
pub fn run(args: ImportTritonArgs) -> Result<bool> {
    let report = import(&ImportRequest {
        source: args.dir,
        repo: args.repo,
        user: args.user,
        message: args.message,
        check_loads: true,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok())
}
