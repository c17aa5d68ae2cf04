//! Assembling the image: which files go in which layer, and the config
//! that runs them.
//!
//! Layers, bottom up: the base's (if any); a small system layer (users,
//! `/tmp`, `/models`, mount points); the runtime libraries; the binary;
//! one per model version. A new model version or a new binary changes only
//! its own layer, so registries and nodes keep the rest cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::archive::{self, Blob};
use crate::base::{self, Base};
use crate::elf;
use crate::error::PackageError;
use crate::layer::{sha256, Layer, LayerBuilder};
use crate::libs::{is_glibc, Library};
use crate::oci::{self, Descriptor, Platform};

pub const BINARY: &str = "/usr/local/bin/ferroserve";
pub const LIB_DIR: &str = "/usr/local/lib/ferroserve";
pub const MODELS: &str = "/models";
pub const USER: &str = "1000:1000";
pub const HTTP_PORT: u16 = 8000;
pub const GRPC_PORT: u16 = 8001;
pub const METRICS_PORT: u16 = 8002;

/// One model version to put under `/models/NAME/VERSION/`.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
    /// The version's files, relative to `dir`, as the registry recorded
    /// them: nothing else in the folder is packaged.
    pub files: Vec<String>,
    /// Files of the model folder itself (a Triton model's `config.pbtxt`
    /// and label files), put in `/models/NAME/`.
    pub model_files: Vec<PathBuf>,
    /// SHA-256 over the registry's record of the version's files.
    pub content_sha256: String,
}

pub struct Spec {
    pub binary: PathBuf,
    pub libraries: Vec<Library>,
    /// The ONNX Runtime library among `libraries` (`ORT_DYLIB_PATH`).
    pub ort_library: PathBuf,
    pub bundles: Vec<Bundle>,
    pub base: Option<PathBuf>,
    /// `os/arch`; the binary's own architecture when unset.
    pub platform: Option<String>,
    pub tag: String,
    pub labels: BTreeMap<String, String>,
    /// Every timestamp in the image (`SOURCE_DATE_EPOCH`).
    pub created: u64,
    pub version: String,
}

pub struct LayerSummary {
    pub what: String,
    pub digest: String,
    pub size: u64,
    pub files: usize,
    pub from_base: bool,
}

pub struct Packaged {
    pub manifest_digest: String,
    pub config_digest: String,
    pub archive_bytes: u64,
    pub layers: Vec<LayerSummary>,
    pub labels: BTreeMap<String, String>,
    /// glibc objects left to the base image.
    pub from_base_libraries: Vec<String>,
    pub platform: String,
}

pub fn write(spec: &Spec, out: &Path) -> Result<Packaged, PackageError> {
    let bin = elf::read(&spec.binary)?;
    let platform = platform(spec.platform.as_deref(), bin.architecture)?;
    let base = match &spec.base {
        Some(dir) => Some(base::open(dir, &platform)?),
        None => None,
    };
    let interpreter = bin.interpreter.clone().ok_or_else(|| {
        PackageError::Invalid(format!(
            "{} is statically linked; the packager expects the dynamically linked ferroserve",
            spec.binary.display()
        ))
    })?;
    let base_has = |p: &str| base.as_ref().is_some_and(|b| b.has(p));

    let mut builds: Vec<(String, LayerBuilder)> = Vec::new();
    builds.push(("system files".into(), system_layer(base.as_ref())));

    let mut libs = LayerBuilder::default();
    let mut from_base_libraries = Vec::new();
    let leave_glibc = base_has(&interpreter);
    let mut ort_soname = None;
    let ort_real =
        std::fs::canonicalize(&spec.ort_library).map_err(PackageError::io(&spec.ort_library))?;
    let interp_real = std::fs::canonicalize(&interpreter).ok();
    let interp_name = Path::new(&interpreter)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut interp_found = leave_glibc;
    for lib in &spec.libraries {
        let real = std::fs::canonicalize(&lib.path).map_err(PackageError::io(&lib.path))?;
        if real == ort_real {
            ort_soname = Some(lib.soname.clone());
        }
        let is_interp = Some(&real) == interp_real.as_ref() || lib.soname == interp_name;
        if leave_glibc && is_glibc(&lib.soname) {
            from_base_libraries.push(lib.soname.clone());
            continue;
        }
        let path = format!("{LIB_DIR}/{}", lib.soname);
        if is_interp {
            libs.symlink(&interpreter, &path);
            interp_found = true;
        }
        if !libs.contains(&path) {
            libs.file(&path, real, 0o755);
        }
    }
    if !interp_found {
        return Err(PackageError::Invalid(format!(
            "the binary's dynamic loader {interpreter} is not among the runtime libraries{}",
            if spec.base.is_some() {
                " nor in the base image"
            } else {
                ""
            }
        )));
    }
    if let Some(base) = base.as_ref().filter(|_| leave_glibc) {
        check_glibc(&spec.binary, &bin, &spec.libraries, base)?;
    }
    let ort_soname = ort_soname.ok_or_else(|| {
        PackageError::Invalid(format!(
            "ONNX Runtime ({}) is not among the runtime libraries",
            spec.ort_library.display()
        ))
    })?;
    builds.push(("runtime libraries".into(), libs));

    let mut binary = LayerBuilder::default();
    binary.file(BINARY, spec.binary.clone(), 0o755);
    builds.push(("ferroserve binary".into(), binary));

    for b in &spec.bundles {
        builds.push((format!("model {}:{}", b.name, b.version), bundle_layer(b)?));
    }

    // Compression is most of the time: one thread per core, each taking
    // the next layer; layers are spooled beside the output.
    let mtime = spec.created;
    let spool = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let names: Vec<String> = builds.iter().map(|(name, _)| name.clone()).collect();
    let count = builds.len();
    let queue = std::sync::Mutex::new(builds.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new((0..count).map(|_| None).collect::<Vec<_>>());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(count);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue lock").pop();
                let Some((i, (_, b))) = next else { break };
                let done = b.finish(mtime, &spool);
                results.lock().expect("results lock")[i] = Some(done);
            });
        }
    });
    let finished: Vec<Result<Layer, PackageError>> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every layer was built"))
        .collect();
    let layers: Vec<Layer> = finished.into_iter().collect::<Result<_, _>>()?;

    let labels = labels(spec, base.as_ref());
    let config = config_json(
        spec,
        base.as_ref(),
        &platform,
        &layers,
        &names,
        &labels,
        &ort_soname,
    );
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialize");
    let config_digest = sha256(&config_bytes);

    let mut descriptors: Vec<Descriptor> = Vec::new();
    let mut summaries = Vec::new();
    let mut blobs: BTreeMap<String, Blob<'_>> = BTreeMap::new();
    if let Some(b) = &base {
        for l in &b.manifest.layers {
            descriptors.push(Descriptor {
                annotations: BTreeMap::new(),
                platform: None,
                ..l.clone()
            });
            summaries.push(LayerSummary {
                what: "base".into(),
                digest: l.digest.clone(),
                size: l.size,
                files: 0,
                from_base: true,
            });
            blobs.insert(l.digest.clone(), Blob::File(b.blob_path(&l.digest)));
        }
    }
    for (layer, what) in layers.iter().zip(&names) {
        descriptors.push(Descriptor {
            media_type: oci::LAYER_GZIP.into(),
            digest: layer.digest.clone(),
            size: layer.size,
            platform: None,
            annotations: BTreeMap::new(),
        });
        summaries.push(LayerSummary {
            what: what.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            files: layer.files,
            from_base: false,
        });
        blobs.insert(layer.digest.clone(), Blob::Open(&layer.blob, layer.size));
    }
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST.into()),
        config: Descriptor {
            media_type: oci::CONFIG.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: descriptors,
        annotations: BTreeMap::from([(
            "org.opencontainers.image.created".to_string(),
            rfc3339(spec.created),
        )]),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
    let manifest_digest = sha256(&manifest_bytes);
    let index = oci::Index {
        schema_version: 2,
        media_type: Some(oci::INDEX.into()),
        manifests: vec![Descriptor {
            media_type: oci::MANIFEST.into(),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            platform: Some(platform.clone()),
            annotations: BTreeMap::from([(oci::REF_NAME.to_string(), spec.tag.clone())]),
        }],
    };
    let index_bytes = serde_json::to_vec(&index).expect("indexes serialize");
    blobs.insert(config_digest.clone(), Blob::Bytes(&config_bytes));
    blobs.insert(manifest_digest.clone(), Blob::Bytes(&manifest_bytes));
    let archive_bytes = archive::write(out, spec.created, blobs, &index_bytes)?;
    Ok(Packaged {
        manifest_digest,
        config_digest,
        archive_bytes,
        layers: summaries,
        labels,
        from_base_libraries,
        platform: format!("{}/{}", platform.os, platform.architecture),
    })
}

/// On a base's C library, the binary and the libraries shipped beside it
/// must need no newer glibc than the base defines: the loader would refuse
/// them at start, far from this command.
fn check_glibc(
    binary: &Path,
    bin: &elf::ElfInfo,
    libraries: &[Library],
    base: &Base,
) -> Result<(), PackageError> {
    let Some(has) = base.glibc else {
        return Err(PackageError::Base {
            dir: base.dir.clone(),
            problem: "has a dynamic loader but no libc.so.6 could be read from its layers".into(),
        });
    };
    let mut needs = vec![(binary.display().to_string(), bin.glibc_needed)];
    for lib in libraries.iter().filter(|l| !is_glibc(&l.soname)) {
        needs.push((lib.soname.clone(), lib.glibc_needed));
    }
    if let Some((who, (major, minor))) = needs
        .into_iter()
        .filter_map(|(who, v)| v.map(|v| (who, v)))
        .max_by_key(|(_, v)| *v)
        .filter(|(_, v)| *v > has)
    {
        return Err(PackageError::Base {
            dir: base.dir.clone(),
            problem: format!(
                "its C library defines up to GLIBC_{}.{}, but {who} needs GLIBC_{major}.{minor}: \
                 use a newer base, or build ferroserve on an older system",
                has.0, has.1
            ),
        });
    }
    Ok(())
}

fn platform(asked: Option<&str>, binary_arch: &str) -> Result<Platform, PackageError> {
    let Some(asked) = asked else {
        return Ok(Platform {
            architecture: binary_arch.into(),
            os: "linux".into(),
            variant: None,
        });
    };
    let (os, arch) = asked.split_once('/').ok_or_else(|| {
        PackageError::Invalid(format!(
            "--platform {asked:?}: expected OS/ARCH, such as linux/{binary_arch}"
        ))
    })?;
    if os != "linux" {
        return Err(PackageError::Invalid(format!(
            "--platform {asked}: ferroserve images are linux images, not {os}"
        )));
    }
    if arch != binary_arch {
        return Err(PackageError::Invalid(format!(
            "--platform {asked}: the binary is built for {binary_arch}; package a {arch} build of ferroserve (--binary) for {arch}"
        )));
    }
    Ok(Platform {
        architecture: arch.into(),
        os: os.into(),
        variant: None,
    })
}

/// Users and the folders a container needs: `/tmp` for anyone, `/models`
/// writable by the server's user (it keeps the registry there), and mount
/// points for the runtime.
fn system_layer(base: Option<&Base>) -> LayerBuilder {
    let mut l = LayerBuilder::default();
    l.dir("/tmp", 0o1777, 0, 0);
    l.dir(MODELS, 0o755, 1000, 1000);
    for d in ["/proc", "/sys", "/dev", "/etc"] {
        l.dir(d, 0o755, 0, 0);
    }
    // The base's files with our user added (field 2 is the uid of passwd
    // and the gid of group), unless it has id 1000 already.
    let files = [
        (
            "/etc/passwd",
            base.and_then(|b| b.passwd.as_ref()),
            "root:x:0:0:root:/root:/sbin/nologin\n",
            "ferroserve:x:1000:1000:ferroserve:/tmp:/sbin/nologin\n",
        ),
        (
            "/etc/group",
            base.and_then(|b| b.group.as_ref()),
            "root:x:0:\n",
            "ferroserve:x:1000:\n",
        ),
    ];
    for (path, text, default, line) in files {
        let mut t = text.cloned().unwrap_or_else(|| default.to_string());
        if !t.lines().any(|l| l.split(':').nth(2) == Some("1000")) {
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(line);
        }
        l.bytes(path, t.into_bytes(), 0o644);
    }
    l
}

fn bundle_layer(b: &Bundle) -> Result<LayerBuilder, PackageError> {
    let mut l = LayerBuilder::default();
    // Every layer that lists /models must say the same of it: the upper
    // layer's metadata wins, and the server's user writes the registry there.
    l.dir(MODELS, 0o755, 1000, 1000);
    let root = format!("{MODELS}/{}/{}", b.name, b.version);
    let dir = std::fs::canonicalize(&b.dir).map_err(PackageError::io(&b.dir))?;
    for rel in &b.files {
        let path = Path::new(rel);
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(PackageError::Invalid(format!(
                "{}:{}: file {rel:?} is not a plain path inside the version folder",
                b.name, b.version
            )));
        }
        let from = b.dir.join(path);
        // A symlink may point anywhere on this machine; only what stays in
        // the version folder goes into an image.
        let real = std::fs::canonicalize(&from).map_err(PackageError::io(&from))?;
        if !real.starts_with(&dir) {
            return Err(PackageError::Invalid(format!(
                "{}:{}: {} leads outside the version folder (to {}); only the bundle's own files are packaged",
                b.name,
                b.version,
                from.display(),
                real.display()
            )));
        }
        l.file(&format!("{root}/{rel}"), real, mode_of(&from));
    }
    for f in &b.model_files {
        let name = f.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            PackageError::Invalid(format!("{}: a file name that is not UTF-8", f.display()))
        })?;
        l.file(
            &format!("{MODELS}/{}/{name}", b.name),
            f.clone(),
            mode_of(f),
        );
    }
    Ok(l)
}

/// 0755 for executables (an entry script's helpers), else 0644.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

fn labels(spec: &Spec, base: Option<&Base>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = base
        .and_then(|b| b.config["config"]["Labels"].as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in [
        ("org.opencontainers.image.title", "ferroserve".to_string()),
        (
            "org.opencontainers.image.description",
            format!(
                "ferroserve {} serving {}",
                spec.version,
                models_list(&spec.bundles)
            ),
        ),
        ("org.opencontainers.image.version", spec.version.clone()),
        ("org.opencontainers.image.created", rfc3339(spec.created)),
        ("org.opencontainers.image.licenses", "Apache-2.0".into()),
        ("dev.ferroserve.models", models_list(&spec.bundles)),
    ] {
        labels.insert(k.into(), v);
    }
    for b in &spec.bundles {
        labels.insert(
            format!("dev.ferroserve.model.{}.{}.sha256", b.name, b.version),
            b.content_sha256.clone(),
        );
    }
    labels.extend(spec.labels.clone());
    labels
}

fn models_list(bundles: &[Bundle]) -> String {
    bundles
        .iter()
        .map(|b| format!("{}:{}", b.name, b.version))
        .collect::<Vec<_>>()
        .join(",")
}

#[allow(clippy::too_many_arguments)]
fn config_json(
    spec: &Spec,
    base: Option<&Base>,
    platform: &Platform,
    layers: &[Layer],
    names: &[String],
    labels: &BTreeMap<String, String>,
    ort_soname: &str,
) -> serde_json::Value {
    use serde_json::{json, Value};
    let created = rfc3339(spec.created);
    let mut doc = base.map_or_else(|| json!({}), |b| b.config.clone());
    let ours = [
        (
            "PATH",
            "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("LD_LIBRARY_PATH", LIB_DIR.to_string()),
        ("ORT_DYLIB_PATH", format!("{LIB_DIR}/{ort_soname}")),
        ("TMPDIR", "/tmp".into()),
        ("HOME", "/tmp".into()),
        ("XDG_CACHE_HOME", "/tmp/.cache".into()),
    ];
    let mut env: Vec<String> = doc["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|e| {
                    !ours
                        .iter()
                        .any(|(k, _)| e.split_once('=').is_some_and(|(ek, _)| ek == *k))
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    env.extend(ours.iter().map(|(k, v)| format!("{k}={v}")));
    let ports: serde_json::Map<String, Value> = [HTTP_PORT, GRPC_PORT, METRICS_PORT]
        .iter()
        .map(|p| (format!("{p}/tcp"), json!({})))
        .collect();
    let cmd = json!([
        "serve",
        "--repo",
        MODELS,
        "--host",
        "0.0.0.0",
        "--http-port",
        HTTP_PORT.to_string(),
        "--grpc-port",
        GRPC_PORT.to_string(),
        "--metrics-port",
        METRICS_PORT.to_string()
    ]);
    doc["architecture"] = json!(platform.architecture);
    doc["os"] = json!(platform.os);
    doc["created"] = json!(created);
    doc["config"] = json!({
        "User": USER,
        "Env": env,
        "Entrypoint": [BINARY],
        "Cmd": cmd,
        "WorkingDir": "/tmp",
        "ExposedPorts": ports,
        "Volumes": {MODELS: {}},
        "Labels": labels,
        "StopSignal": "SIGTERM",
    });
    let mut diff_ids: Vec<Value> = doc["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    diff_ids.extend(layers.iter().map(|l| json!(l.diff_id)));
    doc["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    // One history entry per layer that is not marked empty: a base whose
    // history does not add up gets one plain entry per layer instead.
    let mut history: Vec<Value> = doc["history"].as_array().cloned().unwrap_or_default();
    let base_layers = base.map_or(0, |b| b.manifest.layers.len());
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .count();
    if non_empty != base_layers {
        history = (0..base_layers)
            .map(|i| json!({"created_by": format!("base image layer {}", i + 1)}))
            .collect();
    }
    history.extend(
        names
            .iter()
            .map(|n| json!({"created": created, "created_by": format!("ferroserve package: {n}")})),
    );
    doc["history"] = json!(history);
    doc
}

/// `SOURCE_DATE_EPOCH` seconds as RFC 3339 in UTC.
pub fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_must_match_the_binary() {
        assert_eq!(platform(None, "amd64").unwrap().architecture, "amd64");
        assert!(platform(Some("linux/amd64"), "amd64").is_ok());
        let e = platform(Some("linux/arm64"), "amd64")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("built for amd64"), "{e}");
        let e = platform(Some("windows/amd64"), "amd64")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("linux images"), "{e}");
        let e = platform(Some("amd64"), "amd64").err().unwrap().to_string();
        assert!(e.contains("OS/ARCH"), "{e}");
    }

    #[test]
    fn a_base_with_an_older_glibc_is_refused() {
        let me = std::env::current_exe().unwrap();
        let info = elf::read(&me).unwrap();
        let needed = info.glibc_needed.unwrap();
        let mut base = crate::base::merged_usr();
        base.glibc = Some((2, 17));
        let e = check_glibc(&me, &info, &[], &base)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("GLIBC_2.17") && e.contains(&format!("GLIBC_{}.{}", needed.0, needed.1)),
            "{e}"
        );
        base.glibc = Some(needed);
        assert!(check_glibc(&me, &info, &[], &base).is_ok());
        base.glibc = None;
        let e = check_glibc(&me, &info, &[], &base)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no libc.so.6"), "{e}");
    }

    #[test]
    fn epoch_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
