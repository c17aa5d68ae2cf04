//! Loading a registered version to run it in this process (`baseline`
//! and `batch`), as the server would load it but without serving it.

use anyhow::{bail, Context, Result};
use ferroserve_runtime::manifest::Manifest;
use ferroserve_runtime::{LoadSettings, Model};

use crate::python::PythonArgs;

/// Loads `manifest` as version `version` of `label` (`name:version`) and
/// fails unless it is ready to run.
pub fn load(manifest: Manifest, version: u64, label: &str, python: &PythonArgs) -> Result<Model> {
    python.configure()?;
    ferroserve_runtime::onnxruntime::init()?;
    let model = Model::from_manifest(
        manifest,
        &LoadSettings {
            version: Some(version),
            ..LoadSettings::default()
        },
    )
    .with_context(|| format!("model {label} does not load"))?;
    if let Some(why) = model.not_ready() {
        bail!("model {label} is not ready: {why}");
    }
    Ok(model)
}
