//! `ferroserve import-triton DIR --repo R`: registers every model of a
//! Triton repository as ferroserve bundles, keeping version numbers.
//!
//! Each version folder `DIR/NAME/N/` becomes a bundle: its files, the label
//! files `config.pbtxt` names (from `DIR/NAME/`), and a `bundle.toml`
//! equivalent to the config, written into a staging folder and registered
//! as version N through the registry's usual atomic, journalled path
//! ([`crate::register_with`]), which also checks that the model
//! loads. When the config's `version_policy` serves more than the newest
//! version (or a pinned one), an endpoint NAME with the same versions is
//! written to the registry (see [`crate::deployments::version_policy`]), so the imported
//! repository serves what Triton served.
//!
//! A model whose config is refused is reported with the reason and
//! skipped; the others are imported. Running it again reports the
//! versions already there instead of failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::deployments::version_policy as versions;
use crate::deployments::{self, EndpointSpec};
use crate::models::{self, VersionRef};
use crate::{
    folders::version_folders, fsutil, hashing, register_with, RegisterOptions, RegisterRequest,
    RegistryError, Store,
};
use ferroserve_runtime::manifest::pbtxt::{self as config, ModelConfig, CONFIG_FILE};
use ferroserve_runtime::manifest::{VersionPolicy, MANIFEST_FILE};

/// What `import-triton` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The Triton model repository.
    pub source: PathBuf,
    /// The ferroserve repository to register into (created if absent).
    pub repo: PathBuf,
    /// Recorded as who registered the versions.
    pub user: Option<String>,
    /// Why (recorded with each version); a default names the source.
    pub message: Option<String>,
    /// Load each model before registering it (off only in tests without
    /// ONNX Runtime).
    pub check_loads: bool,
}

/// What happened to one version folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VersionOutcome {
    /// Registered as the same version number.
    Imported,
    /// The repository already has this version with the same model file.
    AlreadyImported,
    /// Not registered; why.
    Failed { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    pub version: u64,
    #[serde(flatten)]
    pub outcome: VersionOutcome,
}

/// What happened to one model folder.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub name: String,
    /// Why the whole model was refused (its config), if it was.
    pub refused: Option<String>,
    pub versions: Vec<VersionReport>,
    /// Settings of the config that were ignored: `path: why`.
    pub ignored: Vec<String>,
    /// The version policy, as Triton writes it.
    pub version_policy: Option<String>,
    /// What was done about the endpoint the policy needs, if any.
    pub endpoint: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub repo: String,
    pub models: Vec<ModelReport>,
    /// Folders of the source that are not Triton models (no config.pbtxt).
    pub skipped: Vec<String>,
}

impl ImportReport {
    /// Whether every model and version went in (or was already there).
    pub fn ok(&self) -> bool {
        self.models.iter().all(|m| {
            m.refused.is_none()
                && m.versions
                    .iter()
                    .all(|v| !matches!(v.outcome, VersionOutcome::Failed { .. }))
        })
    }

    /// The report as lines of text, ending with a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let (mut imported, mut already, mut failed) = (0, 0, 0);
        for m in &self.models {
            if let Some(why) = &m.refused {
                let _ = writeln!(out, "{}: refused: {why}", m.name);
                continue;
            }
            for i in &m.ignored {
                let _ = writeln!(out, "{}: ignored {i}", m.name);
            }
            for v in &m.versions {
                let line = match &v.outcome {
                    VersionOutcome::Imported => {
                        imported += 1;
                        "imported".to_string()
                    }
                    VersionOutcome::AlreadyImported => {
                        already += 1;
                        "already imported (same model file)".to_string()
                    }
                    VersionOutcome::Failed { reason } => {
                        failed += 1;
                        format!("failed: {reason}")
                    }
                };
                let _ = writeln!(out, "{}:{}: {line}", m.name, v.version);
            }
            if let Some(e) = &m.endpoint {
                let _ = writeln!(out, "{}: {e}", m.name);
            }
        }
        for s in &self.skipped {
            let _ = writeln!(
                out,
                "{s}: skipped: not a Triton model folder (no {CONFIG_FILE})"
            );
        }
        let refused = self.models.iter().filter(|m| m.refused.is_some()).count();
        let _ = writeln!(
            out,
            "{} model(s) in {}: {} refused; versions: {imported} imported, {already} already imported, {failed} failed; into {}",
            self.models.len(),
            self.source,
            refused,
            self.repo
        );
        out
    }
}

/// Imports every model of `req.source`; see the module documentation.
/// Errors are only those that stop everything (the source cannot be read);
/// a model or version that cannot be imported is in the report.
pub fn import(req: &ImportRequest) -> Result<ImportReport, RegistryError> {
    let entries = std::fs::read_dir(&req.source).map_err(RegistryError::io(
        &req.source,
        "cannot read the Triton model repository",
    ))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RegistryError::io(&req.source, "cannot read folder"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        folders.push(name);
    }
    folders.sort();
    let mut report = ImportReport {
        source: req.source.display().to_string(),
        repo: req.repo.display().to_string(),
        models: Vec::new(),
        skipped: Vec::new(),
    };
    for name in folders {
        let model_dir = req.source.join(&name);
        if !model_dir.join(CONFIG_FILE).is_file() {
            report.skipped.push(name);
            continue;
        }
        report.models.push(import_model(req, &name, &model_dir)?);
    }
    Ok(report)
}

fn policy_text(p: &VersionPolicy) -> String {
    match p {
        VersionPolicy::Latest(n) => format!("latest {{ num_versions: {n} }}"),
        VersionPolicy::All => "all { }".into(),
        VersionPolicy::Specific(vs) => format!(
            "specific {{ versions: [{}] }}",
            vs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn import_model(
    req: &ImportRequest,
    name: &str,
    model_dir: &Path,
) -> Result<ModelReport, RegistryError> {
    let mut report = ModelReport {
        name: name.to_string(),
        refused: None,
        versions: Vec::new(),
        ignored: Vec::new(),
        version_policy: None,
        endpoint: None,
    };
    if let Err(e) = crate::check_model_name(name) {
        report.refused = Some(e.to_string());
        return Ok(report);
    }
    let config = match config::read(model_dir) {
        Ok(c) => c,
        Err(e) => {
            report.refused = Some(e.to_string());
            return Ok(report);
        }
    };
    config.warn_ignored();
    report.ignored = config
        .ignored
        .iter()
        .map(|i| format!("{}: {}", i.path, i.why))
        .collect();
    report.version_policy = Some(policy_text(&config.version_policy));
    let found = version_folders(model_dir)?;
    if found.is_empty() {
        report.refused = Some(format!(
            "{} has no version folder (NAME/1/, NAME/2/, ...)",
            model_dir.display()
        ));
        return Ok(report);
    }
    for v in found {
        let outcome = match import_version(req, &config, name, model_dir, v) {
            Ok(o) => o,
            Err(e) => VersionOutcome::Failed {
                reason: e.to_string(),
            },
        };
        report.versions.push(VersionReport {
            version: v,
            outcome,
        });
    }
    if Store::exists(&req.repo) {
        report.endpoint = write_endpoint(req, name, &config.version_policy)?;
    }
    Ok(report)
}

/// The model file a version is compared by on a second run.
fn model_file_sha(dir: &Path, file: &str) -> Option<String> {
    hashing::sha256_file(&dir.join(file)).ok().map(|(h, _)| h)
}

fn import_version(
    req: &ImportRequest,
    config: &ModelConfig,
    name: &str,
    model_dir: &Path,
    version: u64,
) -> Result<VersionOutcome, RegistryError> {
    let version_dir = model_dir.join(version.to_string());
    let own_manifest = version_dir.join(MANIFEST_FILE).is_file();
    let model_file = if own_manifest {
        ferroserve_runtime::manifest::Manifest::load(&version_dir)?
            .model_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.default_model_filename.clone()
    };
    // Already there?
    if Store::exists(&req.repo) {
        match models::show(&req.repo, &VersionRef::Number(name.to_string(), version)) {
            Ok(info) => {
                let recorded = info
                    .files
                    .unwrap_or_default()
                    .into_iter()
                    .find(|f| f.path == model_file)
                    .map(|f| f.sha256);
                let ours = model_file_sha(&version_dir, &model_file);
                return if recorded.is_some() && recorded == ours {
                    Ok(VersionOutcome::AlreadyImported)
                } else {
                    Ok(VersionOutcome::Failed {
                        reason: format!(
                            "{}:{version} is already in {} with a different {model_file}; it is not replaced (versions are immutable)",
                            name,
                            req.repo.display()
                        ),
                    })
                };
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let staging = tempfile::Builder::new()
        .prefix("ferroserve-import-")
        .tempdir()
        .map_err(RegistryError::io(
            &std::env::temp_dir(),
            "cannot create a staging folder",
        ))?;
    let source = if own_manifest {
        // A ferroserve bundle inside a Triton folder: served from its
        // bundle.toml, so registered as it is.
        version_dir.clone()
    } else {
        let bundle = staging.path().join(name);
        stage_version(config, &version_dir, &bundle, &req.source)?;
        bundle
    };
    let message = req.message.clone().unwrap_or_else(|| {
        format!(
            "imported from Triton model repository {}",
            req.source.display()
        )
    });
    register_with(
        &RegisterRequest {
            source,
            repo: req.repo.clone(),
            name: name.to_string(),
            tags: BTreeMap::new(),
            description: None,
            message: Some(message),
            user: req.user.clone(),
            check_loads: req.check_loads,
            record_git: true,
        },
        &RegisterOptions {
            version: Some(version),
            provenance: Some(version_dir),
        },
    )?;
    Ok(VersionOutcome::Imported)
}

/// Writes into `dst` (which must not exist) a ferroserve bundle equivalent
/// to Triton version folder `version_dir` with `config`: its files, the
/// label files, and a `bundle.toml`. `source` is named in the description.
pub fn stage_version(
    config: &ModelConfig,
    version_dir: &Path,
    dst: &Path,
    source: &Path,
) -> Result<(), RegistryError> {
    // Checks the model file and the labels as serving would.
    config.manifest(version_dir)?;
    fsutil::copy_tree_durably(version_dir, dst)?;
    for file in config.label_files.values() {
        let from = config.model_dir.join(file);
        let to = dst.join(file);
        if to.exists() {
            let same = std::fs::read(&from).ok() == std::fs::read(&to).ok();
            if !same {
                return Err(RegistryError::Bundle {
                    path: to,
                    problem: format!(
                        "the label file {file:?} of {} has a namesake with other content in the version folder",
                        config.file.display()
                    ),
                });
            }
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(RegistryError::io(parent, "cannot create folder"))?;
        }
        std::fs::copy(&from, &to).map_err(RegistryError::io(
            &from,
            format!("cannot copy to {}", to.display()),
        ))?;
    }
    let toml = bundle_toml(config, source);
    std::fs::write(dst.join(MANIFEST_FILE), toml)
        .map_err(RegistryError::io(dst, "cannot write bundle.toml"))?;
    Ok(())
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<T: ToString>(xs: &[T]) -> String {
    format!(
        "[{}]",
        xs.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// A `bundle.toml` saying what `config` says (its version policy becomes
/// an endpoint, see [`versions`]).
pub fn bundle_toml(config: &ModelConfig, source: &Path) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Imported by `ferroserve import-triton` from {}",
        config.file.display()
    );
    let _ = writeln!(
        t,
        "# Its version_policy, {}, is an endpoint of the registry (see `ferroserve endpoints list`).",
        policy_text(&config.version_policy)
    );
    for i in &config.ignored {
        let _ = writeln!(t, "# Ignored: {}: {}", i.path, i.why);
    }
    let _ = writeln!(t, "name = {}", quoted(&config.name));
    let _ = writeln!(
        t,
        "description = {}",
        quoted(&format!(
            "Triton model {} imported from {}",
            config.name,
            source.display()
        ))
    );
    let _ = writeln!(t, "backend = \"onnx\"");
    let _ = writeln!(t, "model = {}", quoted(&config.default_model_filename));
    for (section, specs) in [
        ("inputs", &config.declared.inputs),
        ("outputs", &config.declared.outputs),
    ] {
        for s in specs {
            let _ = writeln!(t, "\n[[{section}]]");
            let _ = writeln!(t, "name = {}", quoted(&s.name));
            let _ = writeln!(t, "datatype = \"{}\"", s.dtype);
            let _ = writeln!(t, "shape = {}", list(&s.shape));
            if let Some(l) = config
                .label_files
                .get(&s.name)
                .filter(|_| section == "outputs")
            {
                let _ = writeln!(t, "labels = {}", quoted(l));
            }
        }
    }
    let b = &config.batching;
    let _ = writeln!(t, "\n[batching]");
    let _ = writeln!(t, "max_batch_size = {}", b.max_batch_size);
    let _ = writeln!(t, "max_queue_delay_us = {}", b.max_queue_delay_us);
    let _ = writeln!(
        t,
        "preferred_batch_sizes = {}",
        list(&b.preferred_batch_sizes)
    );
    let _ = writeln!(t, "max_queue_size = {}", b.max_queue_size);
    let _ = writeln!(t, "timeout_ms = {}", b.timeout_ms);
    let i = &config.instances;
    let _ = writeln!(t, "\n[instances]");
    let _ = writeln!(t, "count = {}", i.count);
    let _ = writeln!(t, "device = {}", quoted(&i.device));
    let _ = writeln!(t, "intra_op_threads = {}", i.intra_op_threads);
    let _ = writeln!(t, "\n[tags]");
    let _ = writeln!(t, "source = \"triton\"");
    t
}

/// Writes the endpoint `policy` needs over the versions now registered,
/// unless the plain implicit endpoint is that already, or an endpoint of
/// that name exists and differs (it is left as it is, and said).
fn write_endpoint(
    req: &ImportRequest,
    name: &str,
    policy: &VersionPolicy,
) -> Result<Option<String>, RegistryError> {
    let snap = deployments::snapshot(&req.repo)?;
    let available: Vec<u64> = snap
        .versions
        .iter()
        .filter(|(m, _)| m == name)
        .map(|(_, v)| *v)
        .collect();
    if available.is_empty() {
        return Ok(None);
    }
    // Only versions that are there: one that failed to import is reported
    // above, and must not stop the imported repository from serving.
    let policy = match policy {
        VersionPolicy::Specific(vs) => {
            let have: Vec<u64> = vs
                .iter()
                .copied()
                .filter(|v| available.contains(v))
                .collect();
            if have.is_empty() {
                return Ok(Some(format!(
                    "no version of version_policy {} was imported: no endpoint written",
                    policy_text(policy)
                )));
            }
            VersionPolicy::Specific(have)
        }
        other => other.clone(),
    };
    let Some(spec) = versions::endpoint(name, &policy, &available) else {
        return Ok(None);
    };
    let described = describe(&spec);
    if let Some(existing) = snap.endpoints.iter().find(|e| e.name == name) {
        return Ok(Some(if existing == &spec {
            format!("endpoint {name} already serves {described}")
        } else {
            format!(
                "endpoint {name} exists and differs from what version_policy {} asks ({described}); left as it is",
                policy_text(&policy)
            )
        }));
    }
    let user = req
        .user
        .clone()
        .unwrap_or_else(crate::register::default_user);
    deployments::apply_config(&req.repo, std::slice::from_ref(&spec), &user)?;
    Ok(Some(format!(
        "endpoint {name} written for version_policy {}: {described}",
        policy_text(&policy)
    )))
}

fn describe(spec: &EndpointSpec) -> String {
    spec.deployments
        .iter()
        .map(|d| format!("{} -> {} (weight {})", d.name, d.target, d.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroserve_runtime::manifest::Manifest;

    fn triton_repo(dir: &Path, config: &str, versions: &[u64]) {
        let m = dir.join("m");
        for v in versions {
            std::fs::create_dir_all(m.join(v.to_string())).unwrap();
            std::fs::write(
                m.join(v.to_string()).join("model.onnx"),
                format!("model {v}"),
            )
            .unwrap();
        }
        std::fs::write(m.join(CONFIG_FILE), config).unwrap();
        std::fs::write(m.join("labels.txt"), "zero\none\n").unwrap();
    }

    const CONFIG: &str = r#"
        name: "m"
        backend: "onnxruntime"
        max_batch_size: 16
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "p" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" } ]
        dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 200
                           default_queue_policy { default_timeout_microseconds: 1500 max_queue_size: 7 } }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        parameters { key: "intra_op_thread_count" value { string_value: "1" } }
        version_policy { specific { versions: [ 1, 3 ] } }
    "#;

    #[test]
    fn staged_bundle_reads_back_as_the_same_manifest() {
        let src = tempfile::tempdir().unwrap();
        triton_repo(src.path(), CONFIG, &[1]);
        let version_dir = src.path().join("m/1");
        let served = Manifest::load(&version_dir).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dst = out.path().join("m");
        let config = config::read(&src.path().join("m")).unwrap();
        stage_version(&config, &version_dir, &dst, src.path()).unwrap();
        let text = std::fs::read_to_string(dst.join(MANIFEST_FILE)).unwrap();
        let imported = Manifest::load(&dst).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(imported.name, served.name);
        assert_eq!(imported.backend, served.backend);
        assert_eq!(imported.declared, served.declared);
        assert_eq!(imported.batching, served.batching);
        assert_eq!(imported.instances, served.instances);
        assert_eq!(imported.labels, served.labels);
        assert_eq!(imported.label_files, served.label_files);
        assert_eq!(imported.batching.timeout_ms, 2);
        assert_eq!(imported.instances.count, 2);
        assert_eq!(imported.tags["source"], "triton");
        assert!(dst.join("labels.txt").is_file() && dst.join("model.onnx").is_file());
    }

    #[test]
    fn names_with_quotes_survive_the_toml() {
        let config = config::parse_config(
            r#"input { name: "we\"ird \\ name" data_type: TYPE_STRING dims: [ 1 ] }"#,
            Path::new("/r/m/config.pbtxt"),
            "m",
        )
        .unwrap();
        let text = bundle_toml(&config, Path::new("/r"));
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["inputs"][0]["name"].as_str(), Some("we\"ird \\ name"));
        assert_eq!(v["inputs"][0]["datatype"].as_str(), Some("BYTES"));
    }

    #[test]
    fn versions_keep_their_numbers_and_a_second_run_reports_them() {
        let src = tempfile::tempdir().unwrap();
        triton_repo(src.path(), CONFIG, &[1, 3, 4]);
        // A refused model beside it, and a folder that is not a model.
        std::fs::create_dir_all(src.path().join("seq/1")).unwrap();
        std::fs::write(src.path().join("seq/1/model.onnx"), b"x").unwrap();
        std::fs::write(
            src.path().join("seq/config.pbtxt"),
            "sequence_batching { }\n",
        )
        .unwrap();
        std::fs::create_dir_all(src.path().join("notes")).unwrap();
        let repo = tempfile::tempdir().unwrap();
        let req = ImportRequest {
            source: src.path().to_path_buf(),
            repo: repo.path().join("r"),
            user: Some("tester".into()),
            message: None,
            check_loads: false,
        };
        let report = import(&req).unwrap();
        assert!(!report.ok());
        assert_eq!(report.skipped, ["notes"]);
        let m = &report.models[0];
        assert_eq!(m.name, "m");
        assert!(m.refused.is_none());
        let got: Vec<(u64, VersionOutcome)> = m
            .versions
            .iter()
            .map(|v| (v.version, v.outcome.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, VersionOutcome::Imported),
                (3, VersionOutcome::Imported),
                (4, VersionOutcome::Imported)
            ]
        );
        assert!(
            m.endpoint
                .as_deref()
                .unwrap()
                .contains("endpoint m written"),
            "{m:?}"
        );
        let seq = &report.models[1];
        assert!(
            seq.refused
                .as_deref()
                .unwrap()
                .contains("sequence_batching: not supported"),
            "{seq:?}"
        );
        let text = report.to_text();
        assert!(
            text.contains("2 model(s)") && text.contains("3 imported"),
            "{text}"
        );

        // The versions, their provenance, and the endpoint for the policy.
        let info = models::show(&req.repo, &VersionRef::Number("m".into(), 3)).unwrap();
        assert_eq!(info.registered_by, "tester");
        assert!(info.source_dir.unwrap().ends_with("m/3"));
        assert!(info.files.unwrap().iter().any(|f| f.path == "bundle.toml"));
        let e = deployments::get(&req.repo, "m").unwrap();
        let ds: Vec<(String, String, u32)> = e
            .deployments
            .iter()
            .map(|d| (d.name.clone(), d.target.to_string(), d.weight))
            .collect();
        assert_eq!(
            ds,
            [
                ("default".into(), "version 3".into(), 100),
                ("v1".into(), "version 1".into(), 0)
            ]
        );

        // Again: nothing new, nothing fails.
        let again = import(&req).unwrap();
        let m = &again.models[0];
        assert!(m
            .versions
            .iter()
            .all(|v| v.outcome == VersionOutcome::AlreadyImported));
        assert!(
            m.endpoint.as_deref().unwrap().contains("already serves"),
            "{m:?}"
        );

        // A changed model file under an imported number is not replaced.
        std::fs::write(src.path().join("m/1/model.onnx"), b"retrained").unwrap();
        let third = import(&req).unwrap();
        match &third.models[0].versions[0].outcome {
            VersionOutcome::Failed { reason } => {
                assert!(reason.contains("different model.onnx"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_number_below_the_high_water_mark_is_refused() {
        let src = tempfile::tempdir().unwrap();
        triton_repo(src.path(), "max_batch_size: 0", &[2]);
        let repo = tempfile::tempdir().unwrap();
        // Version 5 exists already (registered some other way).
        let other = tempfile::tempdir().unwrap();
        let b = other.path().join("m");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("model.onnx"), b"x").unwrap();
        std::fs::write(
            b.join(MANIFEST_FILE),
            "name = \"m\"\nbackend = \"onnx\"\nmodel = \"model.onnx\"\n",
        )
        .unwrap();
        let req = RegisterRequest {
            source: b.clone(),
            repo: repo.path().to_path_buf(),
            name: "m".into(),
            tags: BTreeMap::new(),
            description: None,
            message: None,
            user: None,
            check_loads: false,
            record_git: false,
        };
        let opts = RegisterOptions {
            version: Some(5),
            provenance: None,
        };
        assert_eq!(register_with(&req, &opts).unwrap().version, 5);
        let e = register_with(&req, &opts).unwrap_err();
        assert!(
            e.to_string().contains("m:5") && e.to_string().contains("already registered"),
            "{e}"
        );
        let report = import(&ImportRequest {
            source: src.path().to_path_buf(),
            repo: repo.path().to_path_buf(),
            user: None,
            message: None,
            check_loads: false,
        })
        .unwrap();
        match &report.models[0].versions[0].outcome {
            VersionOutcome::Failed { reason } => {
                assert!(reason.contains("up to 5 are taken"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // No staging or temporary folder is left in the repository.
        let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("m"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["5"]);
    }

    #[test]
    fn a_triton_version_folder_is_not_registered_directly() {
        let src = tempfile::tempdir().unwrap();
        triton_repo(src.path(), "max_batch_size: 0", &[1]);
        let repo = tempfile::tempdir().unwrap();
        let e = crate::register(&RegisterRequest {
            source: src.path().join("m/1"),
            repo: repo.path().to_path_buf(),
            name: "m".into(),
            tags: BTreeMap::new(),
            description: None,
            message: None,
            user: None,
            check_loads: false,
            record_git: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("import-triton"), "{e}");
    }
}
