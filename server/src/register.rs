//! `ferroserve register`: a bundle folder becomes the next version of a model.

use std::path::PathBuf;

use anyhow::Result;
use ferroserve_registry as registry;

use crate::python::PythonArgs;

#[derive(clap::Args)]
pub struct RegisterArgs {
    /// The bundle folder (holding bundle.toml).
    pub dir: PathBuf,
    /// Model repository folder (created if absent).
    #[arg(long)]
    pub repo: PathBuf,
    /// Model name; must equal the manifest's `name`.
    #[arg(long)]
    pub name: String,
    /// A tag KEY=VALUE, recorded over the manifest's [tags]; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = registry::register::parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Description of this version (default: the manifest's).
    #[arg(long)]
    pub description: Option<String>,
    /// Why this version is registered.
    #[arg(long)]
    pub message: Option<String>,
    /// Who registers it (default: $USER, else $LOGNAME, else "unknown").
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub python: PythonArgs,
}

pub fn run(args: RegisterArgs) -> Result<()> {
    args.python.configure()?;
    let done = registry::register(&registry::RegisterRequest {
        source: args.dir,
        repo: args.repo,
        name: args.name,
        tags: args.tags.into_iter().collect(),
        description: args.description,
        message: args.message,
        user: args.user,
        check_loads: true,
        record_git: true,
    })?;
    tracing::info!(
        model = %done.name,
        version = done.version,
        dir = %done.dir.display(),
        files = done.files.len(),
        registered_by = %done.registered_by,
        "registered"
    );
    println!("{}", done.version);
    Ok(())
}
