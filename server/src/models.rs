//! `ferroserve models`: aliases, list, show, search and delete of registered
//! versions (`--json` for scripts, plain tables otherwise).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use ferroserve_registry::models::{self, parse_ref, SearchFilter, VersionInfo, VersionRef};
use ferroserve_registry::register::{parse_tag, user_or_default};

use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Point NAME@ALIAS at version VERSION (creating or moving the alias).
    ///
    /// Every set or move is recorded in the audit log (`alias.moved`, with the
    /// previous and the new version). NAME@ALIAS can then be given to
    /// `models show` and `models delete`.
    Alias {
        /// The model.
        name: String,
        /// The alias: one or more of a-z, 0-9, '_' and '-'.
        alias: String,
        /// The registered version it points at from now on.
        version: u64,
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// Who moves it (default: $USER, else $LOGNAME, else "unknown").
        #[arg(long)]
        user: Option<String>,
    },
    /// List every model: newest version, number of versions, aliases.
    List {
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one version: NAME (the newest), NAME:VERSION or NAME@ALIAS.
    Show {
        /// The version: NAME (the newest), NAME:VERSION or NAME@ALIAS.
        #[arg(value_name = "NAME[:VERSION|@ALIAS]", value_parser = parse_ref)]
        reference: VersionRef,
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find versions; every filter given must match.
    Search {
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// A tag KEY=VALUE the version must carry; repeatable.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Model name pattern: `*` matches any run of characters, `?` one.
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        /// Only versions this alias points at.
        #[arg(long)]
        alias: Option<String>,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a version (NAME:VERSION): its rows and its folder.
    ///
    /// Refused while an alias points at it (move the alias first); --force
    /// does not change that. --force only lets a version whose folder is
    /// already gone lose its row. The number is never given out again.
    Delete {
        /// The version to delete (NAME@ALIAS is accepted but always refused).
        #[arg(value_name = "NAME:VERSION", value_parser = parse_ref)]
        reference: VersionRef,
        /// Model repository folder (holding registry.db).
        #[arg(long)]
        repo: PathBuf,
        /// Also delete the row of a version whose folder is already gone.
        /// Never overrides an alias.
        #[arg(long)]
        force: bool,
        /// Who deletes it (default: $USER, else $LOGNAME, else "unknown").
        #[arg(long)]
        user: Option<String>,
    },
}

fn or_dash(s: Option<impl ToString>) -> String {
    s.map_or_else(|| "-".to_string(), |s| s.to_string())
}

fn tags_text(info: &VersionInfo) -> String {
    info.tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `ferroserve models ...`.
pub fn run(cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::Alias {
            name,
            alias,
            version,
            repo,
            user,
        } => {
            let moved = models::set_alias(&repo, &name, &alias, version, &user_or_default(user))?;
            match moved.from {
                Some(from) if from != moved.to => {
                    println!("{name}@{alias}: moved from {from} to {}", moved.to)
                }
                Some(_) => println!("{name}@{alias}: already {}", moved.to),
                None => println!("{name}@{alias}: set to {}", moved.to),
            }
        }
        ModelsCommand::List { repo, json } => {
            let list = models::list(&repo)?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.clone(),
                            or_dash(m.latest_version),
                            m.versions.to_string(),
                            m.aliases
                                .iter()
                                .map(|(a, v)| format!("{a}={v}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "LATEST", "VERSIONS", "ALIASES"], &rows);
            }
        }
        ModelsCommand::Show {
            reference,
            repo,
            json,
        } => {
            let info = models::show(&repo, &reference)?;
            if json {
                print_json(&info)?;
            } else {
                println!("model:          {}", info.model);
                println!("version:        {}", info.version);
                println!("aliases:        {}", info.aliases.join(", "));
                println!("description:    {}", info.description);
                println!("tags:           {}", tags_text(&info));
                println!("registered by:  {}", info.registered_by);
                println!("registered at:  {}", info.registered_at);
                println!("message:        {}", or_dash(info.message.as_ref()));
                println!("source:         {}", or_dash(info.source_dir.as_ref()));
                println!(
                    "git:            {} {} {}{}",
                    or_dash(info.git.repo.as_ref()),
                    or_dash(info.git.branch.as_ref()),
                    or_dash(info.git.commit.as_ref()),
                    match info.git.dirty {
                        Some(true) => " (dirty)",
                        _ => "",
                    }
                );
                println!();
                let rows: Vec<Vec<String>> = info
                    .files
                    .iter()
                    .flatten()
                    .map(|f| vec![f.size.to_string(), f.sha256.clone(), f.path.clone()])
                    .collect();
                print_table(&["SIZE", "SHA256", "PATH"], &rows);
            }
        }
        ModelsCommand::Search {
            repo,
            tags,
            name,
            alias,
            json,
        } => {
            let found = models::search(&repo, &SearchFilter { tags, name, alias })?;
            if json {
                print_json(&found)?;
            } else {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|v| {
                        vec![
                            v.model.clone(),
                            v.version.to_string(),
                            v.aliases.join(","),
                            v.registered_at.clone(),
                            v.registered_by.clone(),
                            tags_text(v),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "VERSION", "ALIASES", "REGISTERED", "BY", "TAGS"],
                    &rows,
                );
            }
        }
        ModelsCommand::Delete {
            reference,
            repo,
            force,
            user,
        } => {
            if matches!(reference, VersionRef::Newest(_)) {
                anyhow::bail!(
                    "{reference}: name the version to delete explicitly, as NAME:VERSION"
                );
            }
            let d = models::delete(&repo, &reference, force, &user_or_default(user))?;
            println!("deleted {}:{} ({} files)", d.model, d.version, d.files);
        }
    }
    Ok(())
}
