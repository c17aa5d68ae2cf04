//! The layouts KServe's storage initializer leaves in `/mnt/models`, served
//! as a repository: a bare `model.onnx` (the file, or a folder holding
//! one), one bundle folder, one Triton model folder, or a repository whose
//! one model takes the InferenceService's name (`--model-name`).
//!
//! The model directory is read-only in a KServe pod, and the registry must
//! be written somewhere, so such a layout becomes a small repository under
//! the temporary folder: version folders of symlinks to the real files,
//! with a manifest (or `config.pbtxt`) naming the model as asked. A plain
//! repository without `--model-name`, or whose models include it, is
//! served where it is, as always.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferroserve_runtime::manifest::{is_bundle_dir, MANIFEST_FILE};

/// A repository built under the temporary folder; removed when dropped.
pub struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    pub fn repo(&self) -> &Path {
        self.dir.path()
    }
}

/// What `--repo` holds.
enum Layout {
    /// A `.onnx` file, and the folder of any files beside it.
    BareModel(PathBuf),
    /// A folder with `bundle.toml`.
    Bundle,
    /// A folder with `config.pbtxt` and numbered version folders.
    TritonModel,
    /// `NAME/VERSION/...` folders (bundles or Triton models).
    Repository,
}

/// The repository to serve for `--repo dir` (and `--model-name`): `None`
/// where `dir` is served as it is.
pub fn resolve(dir: &Path, model_name: Option<&str>) -> Result<Option<Staged>> {
    let layout = layout_of(dir)?;
    // Every name becomes a folder of the staged repository: --model-name
    // is checked just below, a name read from a manifest or file here.
    let name = |fallback: &dyn Fn() -> Result<String>| -> Result<String> {
        if let Some(n) = model_name {
            return Ok(n.to_string());
        }
        let n = fallback()?;
        ferroserve_registry::names::check_model_name(&n).map_err(|e| {
            anyhow::anyhow!(
                "the model name taken from {} {n:?}: {e} (give --model-name)",
                dir.display()
            )
        })?;
        Ok(n)
    };
    if let Some(n) = model_name {
        ferroserve_registry::names::check_model_name(n)
            .map_err(|e| anyhow::anyhow!("--model-name {n:?}: {e}"))?;
    }
    match layout {
        Layout::BareModel(model) => {
            let name = name(&|| {
                Ok(model
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("model")
                    .to_string())
            })?;
            let staged = staging()?;
            let version = staged.repo().join(&name).join("1");
            std::fs::create_dir_all(&version)?;
            link(&model, &version.join("model.onnx"))?;
            // Files beside it: external weights (model.onnx.data), labels.
            let folder = model.parent().unwrap_or(Path::new("."));
            for entry in std::fs::read_dir(folder)
                .with_context(|| format!("cannot read {}", folder.display()))?
            {
                let entry = entry?;
                let file_name = entry.file_name();
                if entry.path() != model
                    && file_name != "model.onnx"
                    && file_name != MANIFEST_FILE
                    && !file_name.to_string_lossy().starts_with('.')
                {
                    link(&entry.path(), &version.join(&file_name))?;
                }
            }
            std::fs::write(
                version.join(MANIFEST_FILE),
                format!(
                    "# Written by ferroserve serve for {}: its inputs and outputs are the model's own.\n\
                     name = {}\nbackend = \"onnx\"\nmodel = \"model.onnx\"\n",
                    model.display(),
                    toml_string(&name)
                ),
            )?;
            Ok(Some(staged))
        }
        Layout::Bundle => {
            let name = name(&|| bundle_name(dir))?;
            let staged = staging()?;
            stage_bundle_version(dir, &staged.repo().join(&name).join("1"), &name)?;
            Ok(Some(staged))
        }
        Layout::TritonModel => {
            let name = name(&|| {
                Ok(dir
                    .file_name()
                    .and_then(|s| s.to_str())
                    .context("the model folder has no name")?
                    .to_string())
            })?;
            let staged = staging()?;
            stage_triton_model(dir, &staged.repo().join(&name))?;
            Ok(Some(staged))
        }
        Layout::Repository => {
            let Some(wanted) = model_name else {
                return Ok(None);
            };
            let models = model_folders(dir)?;
            if models.iter().any(|m| m == wanted) {
                return Ok(None);
            }
            match models.as_slice() {
                [only] => {
                    let staged = staging()?;
                    let from = dir.join(only);
                    let to = staged.repo().join(wanted);
                    if from.join("config.pbtxt").is_file() {
                        stage_triton_model(&from, &to)?;
                    } else {
                        for v in version_folders(&from)? {
                            stage_bundle_version(&from.join(&v), &to.join(&v), wanted)?;
                        }
                    }
                    Ok(Some(staged))
                }
                [] => bail!(
                    "--model-name {wanted:?}: {} holds no model; expected a model.onnx, a bundle folder (bundle.toml), \
                     a Triton model folder (config.pbtxt and version folders) or a repository of NAME/VERSION folders",
                    dir.display()
                ),
                _ => bail!(
                    "--model-name {wanted:?}: the repository {} holds {} models ({}) and none of them is {wanted:?}; \
                     name one of them, or leave --model-name out to serve them all",
                    dir.display(),
                    models.len(),
                    models.join(", ")
                ),
            }
        }
    }
}

fn layout_of(dir: &Path) -> Result<Layout> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("--repo {}: cannot read it", dir.display()))?;
    if meta.is_file() {
        if dir.extension().is_some_and(|e| e == "onnx") {
            return Ok(Layout::BareModel(dir.to_path_buf()));
        }
        bail!(
            "--repo {}: expected a folder or a .onnx file, got another file",
            dir.display()
        );
    }
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok(Layout::Bundle);
    }
    if dir.join("config.pbtxt").is_file() {
        return Ok(Layout::TritonModel);
    }
    let mut onnx = Vec::new();
    let mut has_model_folders = false;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "onnx") {
            onnx.push(path);
        } else if path.is_dir()
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            && version_folders(&path).is_ok_and(|v| !v.is_empty())
        {
            has_model_folders = true;
        }
    }
    match (onnx.len(), has_model_folders) {
        (1, false) => Ok(Layout::BareModel(onnx.remove(0))),
        (n, false) if n > 1 => bail!(
            "--repo {}: holds {n} .onnx files and no bundle; KServe's model directory should hold one model.onnx",
            dir.display()
        ),
        _ => Ok(Layout::Repository),
    }
}

/// Model folders: those with a version folder that holds a bundle.
fn model_folders(repo: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(repo).with_context(|| format!("cannot read {}", repo.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        if version_folders(&path)?
            .iter()
            .any(|v| is_bundle_dir(&path.join(v)))
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Numbered sub-folders of a model folder.
fn version_folders(model: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(model).with_context(|| format!("cannot read {}", model.display()))?
    {
        let path = entry?.path();
        if let Some(n) = path.file_name().and_then(|n| n.to_str()) {
            if path.is_dir() && n.parse::<u64>().is_ok_and(|v| v > 0) {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn bundle_name(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}", dir.join(MANIFEST_FILE).display()))?;
    match table.get("name") {
        Some(toml::Value::String(n)) => Ok(n.clone()),
        _ => bail!(
            "{}: no name = \"...\" (give --model-name)",
            dir.join(MANIFEST_FILE).display()
        ),
    }
}

/// A version folder of symlinks to `from`'s entries, and its manifest with
/// `name` set.
fn stage_bundle_version(from: &Path, to: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() != MANIFEST_FILE {
            link(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    let file = from.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", file.display()))?;
    doc["name"] = toml_edit::value(name);
    std::fs::write(to.join(MANIFEST_FILE), doc.to_string())?;
    Ok(())
}

/// A Triton model folder of symlinked versions, its `config.pbtxt` without
/// a top-level `name` (Triton then takes the folder's).
fn stage_triton_model(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() != "config.pbtxt" {
            link(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    let text = std::fs::read_to_string(from.join("config.pbtxt"))?;
    std::fs::write(to.join("config.pbtxt"), without_top_level_name(&text))?;
    Ok(())
}

/// Drops `name: "..."` lines at brace depth 0 of a protobuf text file.
fn without_top_level_name(text: &str) -> String {
    let mut depth = 0i32;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        let trimmed = code.trim_start();
        let is_name = depth == 0
            && trimmed
                .strip_prefix("name")
                .is_some_and(|rest| rest.trim_start().starts_with(':'));
        // Braces inside strings are rare in configs; names never hold them.
        depth += code.matches(['{', '[']).count() as i32;
        depth -= code.matches(['}', ']']).count() as i32;
        if !is_name {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn staging() -> Result<Staged> {
    let dir = tempfile::Builder::new()
        .prefix("ferroserve-models-")
        .tempdir()
        .context("cannot create the staged repository under the temporary folder (set TMPDIR to a writable folder)")?;
    Ok(Staged { dir })
}

fn link(from: &Path, to: &Path) -> Result<()> {
    let from = std::fs::canonicalize(from)
        .with_context(|| format!("cannot resolve {}", from.display()))?;
    std::os::unix::fs::symlink(&from, to)
        .with_context(|| format!("cannot link {} to {}", to.display(), from.display()))
}

fn toml_string(s: &str) -> String {
    toml_edit::value(s).to_string().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_name_goes_nested_names_stay() {
        let cfg = "name: \"old\"\nplatform: \"onnxruntime_onnx\"\ninput [\n  {\n    name: \"x\"\n  }\n]\n";
        let out = without_top_level_name(cfg);
        assert!(!out.contains("\"old\""), "{out}");
        assert!(out.contains("name: \"x\""), "{out}");
        assert!(out.contains("platform"), "{out}");
    }
}
