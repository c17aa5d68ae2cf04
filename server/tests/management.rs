//! The registry over HTTP (`/v2/admin/models...`), against the real binary
//! on a loopback port with a temporary repository.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::{copy_example, examples_repo, metric_value, Reply, Server};

const TOKEN: &str = "mgmt-Q8w2eR5tY7uI9oP1aS3d";

fn gz() -> (&'static str, String) {
    ("Content-Type", "application/gzip".to_string())
}

/// A tar.gz of the example `mlp` bundle, under `prefix` ("" = at the root).
fn bundle_archive(prefix: &str) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    let src = examples_repo().join("mlp").join("1");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        b.append_path_with_name(entry.path(), name).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A tar.gz holding one entry with a raw (unchecked) name.
fn raw_archive(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(enc);
    let mut h = tar::Header::new_gnu();
    let bytes = name.as_bytes();
    h.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        let lb = l.as_bytes();
        h.as_gnu_mut().unwrap().linkname[..lb.len()].copy_from_slice(lb);
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

/// Every path under `dir`, recursively, less SQLite's `-wal`/`-shm` files
/// (they come and go with the registry's connections).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            if !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm") {
                out.insert(p);
            }
        }
    }
    out
}

fn upload(server: &Server, query: &str, body: &[u8]) -> Reply {
    server.request(
        "POST",
        &format!("/v2/admin/models/mlp/versions{query}"),
        &[gz()],
        body,
    )
}

fn error_of(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn upload_show_list_alias_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_example("mlp", &repo);
    let server = Server::start(&repo, &[]);

    let r = upload(
        &server,
        "?message=from%20http&tag=stage=test&tag=team=ml",
        &bundle_archive("mlp/"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "mlp");
    assert_eq!(v["version"], 2);
    assert_eq!(v["registered_by"], "http");
    assert_eq!(v["message"], "from http");
    assert_eq!(v["tags"]["stage"], "test");
    assert!(repo.join("mlp/2/bundle.toml").is_file());

    let r = server.request("GET", "/v2/admin/models/mlp", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    assert!(!r.json()["files"].as_array().unwrap().is_empty());
    let r = server.request("GET", "/v2/admin/models/mlp/versions/1", &[], b"");
    assert_eq!(r.json()["version"], 1, "{}", r.text());
    let r = server.request("GET", "/v2/admin/models", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list[0]["name"], "mlp");
    assert_eq!(list[0]["latest_version"], 2);
    assert_eq!(list[0]["versions"], 2);
    let r = server.request("GET", "/v2/admin/models?tag=stage=test&name=ml*", &[], b"");
    let found = r.json();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["version"], 2);

    // Aliases: set, show by alias, and a delete refused while it points.
    let r = server.request(
        "PUT",
        "/v2/admin/models/mlp/aliases/prod",
        &[],
        br#"{"version": 2}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["to"], 2);
    let r = server.request("GET", "/v2/admin/models/mlp@prod", &[], b"");
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    let r = server.request(
        "PUT",
        "/v2/admin/models/mlp/aliases/prod",
        &[],
        br#"{"version": "two"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("version"), "{}", r.text());
    // The upload moved the model's implicit endpoint (it tracks the newest
    // version) to version 2: that one is served, so it stays.
    let r = server.request("GET", "/v2/models/mlp", &[], b"");
    assert_eq!(
        r.json()["versions"],
        serde_json::json!(["2"]),
        "{}",
        r.text()
    );
    let r = server.request("DELETE", "/v2/admin/models/mlp/versions/2", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(error_of(&r).contains("mlp/default"), "{}", r.text());

    // Version 3 takes over; 2 is no longer served but its alias keeps it.
    let r = upload(&server, "", &bundle_archive(""));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 3);
    let r = server.request("DELETE", "/v2/admin/models/mlp/versions/2", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(error_of(&r).contains("mlp@prod"), "{}", r.text());
    let r = server.request("DELETE", "/v2/admin/models/mlp/versions/3", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());

    // An unaliased, unserved version goes.
    let r = server.request("DELETE", "/v2/admin/models/mlp/versions/1", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!repo.join("mlp/1").exists());
    let r = server.request("GET", "/v2/admin/models/mlp/versions/1", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = server.request("DELETE", "/v2/admin/models/mlp/versions/9", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());

    // No upload folders left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let metrics = server.metrics();
    for (ty, n) in [
        ("io.ferroserve.model.registered", 2.0),
        ("io.ferroserve.alias.moved", 1.0),
        ("io.ferroserve.version.deleted", 1.0),
    ] {
        let labels = format!("type=\"{ty}\"");
        assert_eq!(
            metric_value(&metrics, "ferroserve_events_emitted_total", &labels),
            Some(n),
            "{ty}"
        );
    }
    assert!(server.stop().success());

    // One audit row per change: the registry's, not a second from the bus.
    let conn = rusqlite::Connection::open(repo.join("registry.db")).unwrap();
    for (action, n) in [
        ("io.ferroserve.model.registered", 2),
        ("io.ferroserve.alias.moved", 1),
        ("io.ferroserve.version.deleted", 1),
    ] {
        let count: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = ?1 AND subject LIKE 'mlp%'",
                [action],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, n, "{action}");
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_written_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_example("mlp", &repo);
    let server = Server::start(&repo, &["--max-upload-bytes", "200000"]);
    let before = tree(dir.path());
    let abs = dir.path().join("abs-evil");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "parent",
            raw_archive("../evil", tar::EntryType::Regular, None, b"x"),
            400,
            "../evil",
        ),
        (
            "nested parent",
            raw_archive("mlp/../../evil", tar::EntryType::Regular, None, b"x"),
            400,
            "..",
        ),
        (
            "absolute",
            raw_archive(abs.to_str().unwrap(), tar::EntryType::Regular, None, b"x"),
            400,
            "absolute",
        ),
        (
            "symlink",
            raw_archive(
                "mlp/link",
                tar::EntryType::Symlink,
                Some("/etc/passwd"),
                b"",
            ),
            400,
            "symlink",
        ),
        (
            "hardlink",
            raw_archive("mlp/hard", tar::EntryType::Link, Some("/etc/passwd"), b""),
            400,
            "hardlink",
        ),
        (
            "fifo",
            raw_archive("mlp/pipe", tar::EntryType::Fifo, None, b""),
            400,
            "fifo",
        ),
        (
            "zip bomb",
            raw_archive(
                "mlp/zeros",
                tar::EntryType::Regular,
                None,
                &vec![0; 1 << 20],
            ),
            413,
            "uncompressed",
        ),
        ("not gzip", b"plain text".to_vec(), 400, "tar.gz"),
        (
            "no manifest",
            raw_archive("readme.txt", tar::EntryType::Regular, None, b"hi"),
            400,
            "bundle.toml",
        ),
    ];
    for (what, body, status, needle) in cases {
        let r = upload(&server, "", &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(error_of(&r).contains(needle), "{what}: {}", r.text());
    }
    // A body over the limit, by Content-Length.
    let r = upload(&server, "", &vec![7u8; 300_000]);
    assert_eq!(r.status, 413, "{}", r.text());
    // Not gzip at all by its content type.
    let r = server.request(
        "POST",
        "/v2/admin/models/mlp/versions",
        &[("Content-Type", "application/json".to_string())],
        b"{}",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(error_of(&r).contains("application/gzip"), "{}", r.text());

    assert_eq!(tree(dir.path()), before, "files appeared or vanished");
    assert!(!dir.path().join("evil").exists() && !abs.exists());
    let r = server.request("GET", "/v2/admin/models/mlp/versions/2", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(server.stop().success());
}

#[test]
fn the_management_token_guards_the_registry_routes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_example("mlp", &repo);
    let tokens = dir.path().join("management.tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let server = Server::start(
        &repo,
        &["--management-token-file", tokens.to_str().unwrap()],
    );
    for (method, path, body) in [
        ("GET", "/v2/admin/models", b"".as_slice()),
        ("GET", "/v2/admin/models/mlp", b""),
        ("POST", "/v2/admin/models/mlp/versions", b"x"),
        (
            "PUT",
            "/v2/admin/models/mlp/aliases/prod",
            br#"{"version": 1}"#,
        ),
        ("DELETE", "/v2/admin/models/mlp/versions/1", b""),
    ] {
        let r = server.request(method, path, &[], body);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
    }
    assert!(!repo.join("mlp/2").exists());
    let auth = ("Authorization", format!("Bearer {TOKEN}"));
    let r = server.request("GET", "/v2/admin/models", std::slice::from_ref(&auth), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.request(
        "POST",
        "/v2/admin/models/mlp/versions",
        &[auth, gz()],
        &bundle_archive("mlp/"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(server.stop().success());
}
