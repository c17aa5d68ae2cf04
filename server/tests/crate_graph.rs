//! The crate graph is the architecture (ARCHITECTURE.md): each crate of the
//! workspace sits in one layer and may depend only on crates of the layers
//! below it, and inside a crate no top-level module reaches a module that
//! reaches it back. These tests read the workspace as cargo sees it
//! (`cargo metadata`) and the sources as they are, so an arrow pointing up,
//! a new crate nobody placed, or an import cycle fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Bottom up. A crate may depend on crates of lower layers only: never on
/// one of its own layer (the backends know only `backends/core`), never on
/// one above.
const LAYERS: &[(&str, &[&str])] = &[
    ("backend interface", &["ferroserve-backend-core"]),
    (
        "backends",
        &[
            "ferroserve-backend-ort",
            "ferroserve-backend-python",
            "ferroserve-backend-opencl",
        ],
    ),
    ("protocol", &["ferroserve-protocol"]),
    ("runtime", &["ferroserve-runtime"]),
    ("registry", &["ferroserve-registry"]),
    ("monitoring", &["ferroserve-monitoring"]),
    ("server", &["ferroserve-frontend"]),
    (
        "tools",
        &[
            "ferroserve-loadtest",
            "ferroserve-batch",
            "ferroserve-package",
        ],
    ),
    ("binary", &["ferroserve"]),
];

/// What a layer that only turns bytes or tensors into other bytes uses none of.
const NO_SOCKETS_OR_STORAGE: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "tonic",
    "reqwest",
    "rusqlite",
];

/// External crates a layer must not use, and why: the protocol crate is
/// bytes in, typed requests out; the runtime runs models in a plain program;
/// neither of them nor the registry may speak HTTP or gRPC.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "ferroserve-protocol",
        NO_SOCKETS_OR_STORAGE,
        "the protocol layer knows no sockets, no tokio and no storage",
    ),
    (
        "ferroserve-runtime",
        &[
            "hyper",
            "hyper-util",
            "tonic",
            "reqwest",
            "rusqlite",
            "tokio-rustls",
        ],
        "the runtime must load and run models without a server or a registry",
    ),
    (
        "ferroserve-registry",
        &["hyper", "hyper-util", "tonic", "reqwest", "tokio-rustls"],
        "the registry must not know the front ends",
    ),
    (
        "ferroserve-monitoring",
        NO_SOCKETS_OR_STORAGE,
        "capture and drift statistics know tensors and files, not the front ends or the registry's storage",
    ),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_path_buf()
}

/// `cargo metadata` of the workspace's own packages, with the
/// dependencies each declares.
fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package name -> (dependency name, kind: normal, dev or build).
fn dependencies(meta: &Value) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_string();
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().expect("dependency name").to_string(),
                    d["kind"].as_str().unwrap_or("normal").to_string(),
                )
            })
            .collect();
        out.insert(name, deps);
    }
    out
}

fn layer_of(name: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, crates)| crates.contains(&name))
}

#[test]
fn every_workspace_crate_has_a_layer_and_depends_only_downward() {
    let deps = dependencies(&metadata());
    let mut problems = Vec::new();
    for (name, list) in &deps {
        let Some(layer) = layer_of(name) else {
            problems.push(format!(
                "crate {name} is in no layer: add it to LAYERS (and to ARCHITECTURE.md)"
            ));
            continue;
        };
        for (dep, kind) in list {
            if !deps.contains_key(dep) {
                continue;
            }
            let dep_layer = layer_of(dep).expect("every workspace crate is checked above");
            if dep_layer >= layer {
                problems.push(format!(
                    "{name} ({}) has a {kind} dependency on {dep} ({}): a crate may only depend on lower layers",
                    LAYERS[layer].0, LAYERS[dep_layer].0
                ));
            }
        }
    }
    for (_, crates) in LAYERS {
        for c in *crates {
            if !deps.contains_key(*c) {
                problems.push(format!("LAYERS names {c}, which is not a workspace crate"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_lower_layers_use_no_network_or_storage_crates() {
    let deps = dependencies(&metadata());
    let mut problems = Vec::new();
    for (name, forbidden, why) in FORBIDDEN {
        let list = deps.get(*name).unwrap_or_else(|| panic!("{name} exists"));
        for (dep, kind) in list {
            if kind != "dev" && forbidden.contains(&dep.as_str()) {
                problems.push(format!("{name} depends on {dep}: {why}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The top-level module a source file belongs to (`src/foo.rs` and
/// `src/foo/**` are `foo`); `None` for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("readable source folder")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::NAME` paths of a file outside comments and its unit tests,
/// including `use crate::{a, b::c}` groups.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let n = ident(item.trim());
                if n.starts_with(|c: char| c.is_ascii_lowercase()) {
                    names.insert(n);
                }
            }
        } else {
            let n = ident(rest);
            if n.starts_with(|c: char| c.is_ascii_lowercase()) {
                names.insert(n);
            }
        }
    }
    names
}

type Edges = BTreeMap<String, BTreeSet<String>>;

/// Every pair of modules that reach each other through imports.
fn cycles_of(edges: &Edges) -> Vec<(String, String)> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for n in edges.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let mut out = Vec::new();
    for a in edges.keys() {
        for b in reach(a) {
            if a < &b && reach(&b).contains(a) {
                out.push((a.clone(), b));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let root = workspace_root();
    let meta = metadata();
    let mut cycles = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest path"));
        let src = manifest.parent().expect("package folder").join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges = Edges::new();
        for f in &files {
            let Some(top) = top_module(&src, f) else {
                continue;
            };
            let text = std::fs::read_to_string(f).expect("readable source");
            for n in crate_paths(&text) {
                if n != top {
                    edges.entry(top.clone()).or_default().insert(n);
                }
            }
        }
        let rel = src
            .strip_prefix(&root)
            .unwrap_or(&src)
            .display()
            .to_string();
        for (a, b) in cycles_of(&edges) {
            cycles.push(format!("{rel}: {a} <-> {b}"));
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that reach each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The check above must be able to fail: two files that name each other.
    let a =
        crate_paths("use crate::b::Thing;\nfn f() { crate::c::g(); }\n// crate::d in a comment\n");
    assert_eq!(
        a,
        ["b", "c"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    let g = crate_paths("use crate::{b, c::D, Error};\n#[cfg(test)]\nmod tests { use crate::z; }");
    assert_eq!(
        g,
        ["b", "c"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    let edges = |pairs: &[(&str, &str)]| {
        let mut e = Edges::new();
        for (a, b) in pairs {
            e.entry(a.to_string()).or_default().insert(b.to_string());
        }
        e
    };
    assert!(cycles_of(&edges(&[("a", "b"), ("b", "c")])).is_empty());
    assert_eq!(
        cycles_of(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        [("a", "b"), ("a", "c"), ("b", "c")].map(|(x, y)| (x.to_string(), y.to_string()))
    );
}
