//! The Python backend's settings on the command line (`serve`,
//! `register`, `baseline` and `batch` all load entry-script bundles).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

/// The Python backend's settings (entry-script bundles), for every
/// command that loads a bundle.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Python entry scripts")]
pub struct PythonArgs {
    /// Interpreter for python bundles (and the base of their virtual
    /// environments). Default: $FERROSERVE_PYTHON, else the project's
    /// .venv/bin/python when there is one, else python3.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Where the virtual environments of bundles with a requirements.txt
    /// are built and shared (default: ~/.cache/ferroserve/python-envs).
    #[arg(long, value_name = "DIR")]
    pub python_envs: Option<PathBuf>,
    /// pip --index-url for building environments.
    #[arg(long, value_name = "URL")]
    pub pip_index_url: Option<String>,
    /// pip --find-links (repeatable).
    #[arg(long, value_name = "PATH_OR_URL")]
    pub pip_find_links: Vec<String>,
    /// pip --no-index: install only from --pip-find-links and pip's cache.
    #[arg(long)]
    pub pip_offline: bool,
    /// Seconds a worker's import and init() may take.
    #[arg(long, default_value_t = 300)]
    pub python_init_timeout_s: u64,
}

impl PythonArgs {
    pub fn configure(&self) -> Result<()> {
        let mut c = ferroserve_backend_python::PythonConfig::default();
        c.python = match (&self.python, std::env::var_os("FERROSERVE_PYTHON")) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => PathBuf::from(p),
            (None, None) => {
                let exe = std::env::current_exe().ok();
                ferroserve_runtime::onnxruntime::search_roots(exe.as_deref())
                    .into_iter()
                    .map(|r| r.join(".venv/bin/python"))
                    .find(|p| p.is_file())
                    .unwrap_or(c.python)
            }
        };
        if let Some(r) = &self.python_envs {
            c.envs_root = r.clone();
        }
        c.pip = ferroserve_backend_python::PipOptions {
            index_url: self.pip_index_url.clone(),
            find_links: self.pip_find_links.clone(),
            offline: self.pip_offline,
        };
        c.init_timeout = Duration::from_secs(self.python_init_timeout_s);
        // Workers start in their bundle's folder: a relative path given
        // here means relative to where the command was run. A bare name
        // (`python3`) is left for PATH lookup.
        if c.python.components().count() > 1 {
            c.python = std::path::absolute(&c.python)?;
        }
        c.envs_root = std::path::absolute(&c.envs_root)?;
        let harness = ferroserve_backend_python::configure(c.clone())?;
        tracing::debug!(python = %c.python.display(), envs = %c.envs_root.display(), harness = %harness.display(), "Python backend configured");
        Ok(())
    }
}
