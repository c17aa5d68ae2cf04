//! The webhook flags of `serve`: where lifecycle events go and how each
//! delivery is signed (Standard Webhooks). clap's derive does not keep where
//! each flag stood, and pairing `--webhook` with the `--webhook-secret-file`
//! after it needs that, so the flags are read by hand here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ferroserve_frontend::events::signature::Signer;
use ferroserve_frontend::events::webhook;

/// Where webhooks go and how they are signed. Each `--webhook` takes the
/// `--webhook-secret-file` written after it (before the next `--webhook`),
/// so a command line reads as one line per subscription; the positions
/// clap saw are kept for that pairing (see [`WebhookArgs::webhooks`]).
#[derive(clap::Args)]
pub struct WebhookFlags {
    /// POST every lifecycle event (CloudEvents 1.0 JSON) to this http:// or
    /// https:// URL; repeatable. Each delivery carries the Standard Webhooks
    /// headers webhook-id (the event id, the same on retries), webhook-timestamp
    /// and webhook-signature, made with the --webhook-secret-file that follows
    /// this --webhook (required unless --webhook-unsigned).
    #[arg(long = "webhook", value_name = "URL", value_parser = webhook::parse_url, help_heading = "Events")]
    webhooks: Vec<webhook::Url>,
    /// Signing secret of the --webhook written just before it: a file holding
    /// `whsec_` + base64 of 24 to 64 random bytes (e.g. `echo "whsec_$(openssl
    /// rand -base64 32)"`), the receiver holding the same. Several lines (blank
    /// lines and # comments ignored) sign with each, for rotating a secret.
    /// Kept in a file, not on the command line or in the environment, where
    /// other processes (the python backend's workers among them) could read it.
    #[arg(long, value_name = "PATH", help_heading = "Events")]
    webhook_secret_file: Vec<PathBuf>,
    /// Send the webhooks that have no --webhook-secret-file without a
    /// webhook-signature instead of refusing to start. Anyone who can reach
    /// their receivers can then forge events.
    #[arg(long, help_heading = "Events")]
    webhook_unsigned: bool,
    /// PEM file of CA certificates trusted for https:// webhooks besides the
    /// system's (for a private CA).
    #[arg(long, value_name = "PATH", help_heading = "Events")]
    webhook_ca_file: Option<PathBuf>,
}

/// [`WebhookFlags`] and where on the command line each `--webhook` and
/// `--webhook-secret-file` stood, which derive alone does not keep.
pub struct WebhookArgs {
    flags: WebhookFlags,
    url_at: Vec<usize>,
    secret_at: Vec<usize>,
}

impl clap::FromArgMatches for WebhookArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let at = |id: &str| m.indices_of(id).map(Iterator::collect).unwrap_or_default();
        Ok(WebhookArgs {
            url_at: at("webhooks"),
            secret_at: at("webhook_secret_file"),
            flags: WebhookFlags::from_arg_matches(m)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = WebhookArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for WebhookArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        WebhookFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        WebhookFlags::augment_args_for_update(cmd)
    }
}

impl WebhookArgs {
    /// Pairs each `--webhook` with the `--webhook-secret-file` after it and
    /// reads the secrets. A webhook with none is refused unless
    /// `--webhook-unsigned` says so: receivers that check signatures would
    /// reject its deliveries anyway, and one that does not check would accept
    /// forged ones, so a silent default either way would mislead.
    pub fn webhooks(&self) -> Result<Vec<webhook::Webhook>> {
        let f = &self.flags;
        let mut secret_of: Vec<Option<&PathBuf>> = vec![None; f.webhooks.len()];
        for (path, &at) in f.webhook_secret_file.iter().zip(&self.secret_at) {
            let Some(i) = self.url_at.iter().rposition(|&u| u < at) else {
                anyhow::bail!(
                    "--webhook-secret-file {} comes before any --webhook: write it after the --webhook URL it signs",
                    path.display()
                );
            };
            if let Some(first) = secret_of[i].replace(path) {
                anyhow::bail!(
                    "--webhook {} is followed by two secret files, --webhook-secret-file {} and {}: \
                     give one per webhook (one file may hold several secrets, one per line)",
                    f.webhooks[i],
                    first.display(),
                    path.display()
                );
            }
        }
        f.webhooks
            .iter()
            .zip(secret_of)
            .map(|(url, secret)| {
                let signer = match secret {
                    Some(path) => Some(Signer::from_file(path).map_err(|e| {
                        anyhow::anyhow!(
                            "--webhook-secret-file {} (of --webhook {url}): {e}",
                            path.display()
                        )
                    })?),
                    None if f.webhook_unsigned => None,
                    None => anyhow::bail!(
                        "--webhook {url} has no --webhook-secret-file: write `--webhook-secret-file PATH` \
                         after it (PATH holding a `whsec_` secret, see --help), or pass --webhook-unsigned \
                         to send its events unsigned"
                    ),
                };
                Ok(webhook::Webhook::new(url.clone(), signer))
            })
            .collect()
    }

    /// The shared delivery client, trusting `--webhook-ca-file` too.
    pub fn client(&self, hooks: &[webhook::Webhook], timeout: Duration) -> Result<webhook::Client> {
        let extra = match &self.flags.webhook_ca_file {
            Some(path) => webhook::read_ca_file(path)
                .map_err(|e| anyhow::anyhow!("--webhook-ca-file {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        let https = hooks.iter().filter(|h| h.url().scheme() == "https").count();
        webhook::client(&extra, timeout, https).context("building the webhook client")
    }
}
