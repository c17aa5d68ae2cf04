//! `ferroserve package`: resolves the chosen model versions in the
//! registry, checks their files against the recorded hashes, finds the
//! binary's runtime libraries, and has `ferroserve-package` write the OCI
//! image archive.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferroserve_package::{libs, Bundle, Spec};
use ferroserve_registry::models::{self, parse_ref};
use ferroserve_registry::{hashing, import};
use ferroserve_runtime::manifest::{BackendKind, Manifest};
use sha2::{Digest, Sha256};

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Model repository holding the versions to package.
    #[arg(long)]
    pub repo: PathBuf,
    /// A registered version to put in the image: NAME (its newest),
    /// NAME:VERSION or NAME@ALIAS. Repeatable.
    #[arg(long = "model", value_name = "MODEL", required = true)]
    pub models: Vec<String>,
    /// The image archive to write (oci-archive: `podman load -i`, `skopeo
    /// copy oci-archive:FILE ...`).
    #[arg(long)]
    pub out: PathBuf,
    /// A base image as an OCI layout folder (`skopeo copy
    /// docker://debian:bookworm-slim oci:DIR`); its C library is used and
    /// its layers kept. Unset: the image holds only what ferroserve needs.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// The image's OS/ARCH; must be the binary's (linux/amd64 here).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// A folder holding the shared libraries to ship (ONNX Runtime's among
    /// them) instead of those this process loaded.
    #[arg(long, value_name = "DIR")]
    pub runtime_libs: Option<PathBuf>,
    /// The ferroserve binary to ship (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The image's name inside the archive (org.opencontainers.image.ref.name).
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// An extra image label, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PackageArgs) -> Result<()> {
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--label {l:?}: expected KEY=VALUE"))?;
        if k.starts_with("dev.ferroserve.") {
            bail!("--label {k}: the dev.ferroserve. labels say what the image holds and are set by package itself");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    check_tag(&args.tag)?;
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970"))?,
        Err(_) => 0,
    };
    import::ensure(&args.repo)
        .with_context(|| format!("opening the registry of {}", args.repo.display()))?;
    let mut bundles = Vec::new();
    for m in &args.models {
        let r = parse_ref(m).map_err(|e| anyhow::anyhow!("--model {e}"))?;
        let info = models::show(&args.repo, &r)?;
        let name = info.model.clone();
        let dir = args.repo.join(&name).join(info.version.to_string());
        if bundles
            .iter()
            .any(|b: &Bundle| b.name == name && b.version == info.version)
        {
            bail!("--model {m}: {name}:{} is named twice", info.version);
        }
        let manifest = Manifest::load(&dir)?;
        if manifest.backend != BackendKind::Onnx && args.base.is_none() {
            bail!(
                "--model {m}: {name}:{} runs on the {} backend, which needs {} in the image; \
                 give --base with an image that has it",
                info.version,
                manifest.backend,
                match manifest.backend {
                    BackendKind::Python => "python3",
                    _ => "an OpenCL driver",
                }
            );
        }
        // What goes in the image is what was registered.
        let files = info.files.unwrap_or_default();
        if files.is_empty() {
            bail!(
                "--model {m}: the registry records no files for {name}:{}; run `ferroserve repo check`",
                info.version
            );
        }
        let mut listing = String::new();
        for f in &files {
            let path = dir.join(&f.path);
            let (sha, _) = hashing::sha256_file(&path)
                .with_context(|| format!("--model {m}: reading {}", path.display()))?;
            if sha != f.sha256 {
                bail!(
                    "--model {m}: {} changed since it was registered (SHA-256 {sha}, the registry has {}); run `ferroserve repo check`",
                    path.display(),
                    f.sha256
                );
            }
            listing.push_str(&format!("{}  {}\n", f.sha256, f.path));
        }
        let model_dir = args.repo.join(&name);
        let mut model_files = Vec::new();
        if model_dir.join("config.pbtxt").is_file() {
            let entries = std::fs::read_dir(&model_dir)
                .with_context(|| format!("reading {}", model_dir.display()))?;
            for e in entries {
                let p = e
                    .with_context(|| format!("reading {}", model_dir.display()))?
                    .path();
                if p.is_file() {
                    model_files.push(p);
                }
            }
            model_files.sort();
        }
        bundles.push(Bundle {
            name,
            version: info.version,
            dir,
            files: files.iter().map(|f| f.path.clone()).collect(),
            model_files,
            content_sha256: format!("{:x}", Sha256::digest(listing.as_bytes())),
        });
    }
    bundles.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));

    let (libraries, ort_library) = match &args.runtime_libs {
        Some(dir) => {
            let libraries = libs::from_dir(dir)?;
            let ort = libraries
                .iter()
                .find(|l| l.soname.starts_with("libonnxruntime.so"))
                .map(|l| l.path.clone())
                .with_context(|| {
                    format!(
                        "--runtime-libs {}: no libonnxruntime.so* in it",
                        dir.display()
                    )
                })?;
            (libraries, ort)
        }
        None => {
            let ort = ferroserve_runtime::onnxruntime::init()?;
            (libs::loaded()?, ort)
        }
    };
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this binary")?,
    };
    let spec = Spec {
        binary,
        libraries,
        ort_library,
        bundles,
        base: args.base.clone(),
        platform: args.platform.clone(),
        tag: args.tag.clone(),
        labels,
        created,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let done = ferroserve_package::write(&spec, &args.out)?;
    if args.json {
        let layers: Vec<_> = done
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "what": l.what, "digest": l.digest, "size": l.size,
                    "files": l.files, "from_base": l.from_base,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "out": args.out, "digest": done.manifest_digest, "config": done.config_digest,
                "bytes": done.archive_bytes, "platform": done.platform, "tag": args.tag,
                "layers": layers, "labels": done.labels,
                "libraries_from_base": done.from_base_libraries,
            })
        );
        return Ok(());
    }
    println!(
        "wrote {} ({:.1} MiB, {}): {}",
        args.out.display(),
        done.archive_bytes as f64 / (1024.0 * 1024.0),
        done.platform,
        done.manifest_digest
    );
    for l in &done.layers {
        println!(
            "  {:<24} {:>10.1} KiB  {}{}",
            l.what,
            l.size as f64 / 1024.0,
            l.digest,
            if l.from_base { "  (base)" } else { "" }
        );
    }
    if !done.from_base_libraries.is_empty() {
        println!(
            "  from the base image: {}",
            done.from_base_libraries.join(", ")
        );
    }
    println!(
        "load it: podman load -i {0}   or   skopeo copy oci-archive:{0} docker-daemon:ferroserve:{1}",
        args.out.display(),
        args.tag
    );
    Ok(())
}

/// A Docker tag: what `skopeo`, `umoci` and `podman` take after the colon.
fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("--tag {tag:?}: expected a tag of letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')");
    }
    Ok(())
}
