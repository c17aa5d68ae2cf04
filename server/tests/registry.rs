//! The model registry: `ferroserve register` and the import on first
//! `serve`, against real files, a real SQLite database and a real git
//! checkout in temporary folders.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use support::{copy_example, start_failure, Server};

/// Runs `ferroserve register SRC --repo REPO --name NAME EXTRA...` as user `tester`.
fn register(src: &Path, repo: &Path, name: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .arg("register")
        .arg(src)
        .arg("--repo")
        .arg(repo)
        .args(["--name", name])
        .args(extra)
        .env("USER", "tester")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run ferroserve register")
}

/// Registers and returns the printed version, failing with the log if it did not work.
fn register_ok(src: &Path, repo: &Path, name: &str, extra: &[&str]) -> u64 {
    let out = register(src, repo, name, extra);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "register failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().parse().expect("register prints the version")
}

/// A standalone copy of an example bundle, outside any git checkout: `DIR/NAME/1`.
fn bundle(name: &str, dir: &Path) -> PathBuf {
    copy_example(name, dir)
}

fn db(repo: &Path) -> Connection {
    Connection::open(repo.join("registry.db")).unwrap()
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `sha256sum FILE`, the independent check of the recorded hashes.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn version_folders(model_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(model_dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Checks every file row of `model:version` against the file on disk, and
/// that every file on disk has a row.
fn assert_hashes_match(repo: &Path, model: &str, version: u64) {
    let c = db(repo);
    let mut stmt = c
        .prepare(
            "SELECT f.path, f.sha256, f.size FROM files f JOIN versions v ON v.id = f.version_id
             WHERE v.model = ?1 AND v.version = ?2 ORDER BY f.path",
        )
        .unwrap();
    let rows: Vec<(String, String, i64)> = stmt
        .query_map(rusqlite::params![model, version as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let dir = repo.join(model).join(version.to_string());
    let on_disk = version_folders(&dir);
    assert_eq!(
        rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        on_disk,
        "file rows of {model}:{version}"
    );
    for (path, sha, size) in rows {
        let file = dir.join(&path);
        assert_eq!(sha, sha256sum(&file), "hash of {}", file.display());
        assert_eq!(size as u64, std::fs::metadata(&file).unwrap().len());
    }
}

#[test]
fn registering_twice_makes_versions_one_and_two_with_rows_hashes_and_audit() {
    let src = tempfile::tempdir().unwrap();
    let b = bundle("mlp", src.path());
    let repo = tempfile::tempdir().unwrap();
    let v1 = register_ok(
        &b,
        repo.path(),
        "mlp",
        &[
            "--tag",
            "stage=dev",
            "--tag",
            "owner=ml-team",
            "--message",
            "first cut",
            "--description",
            "the first one",
        ],
    );
    let v2 = register_ok(&b, repo.path(), "mlp", &["--user", "alice"]);
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(version_folders(&repo.path().join("mlp")), ["1", "2"]);
    for v in [1, 2] {
        assert_hashes_match(repo.path(), "mlp", v);
    }

    let c = db(repo.path());
    let row: (
        String,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
        Option<i64>,
    ) = c
        .query_row(
            "SELECT description, tags, registered_by, message, registered_at, git_repo, git_dirty
             FROM versions WHERE model = 'mlp' AND version = 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, "the first one");
    let tags: serde_json::Value = serde_json::from_str(&row.1).unwrap();
    assert_eq!(tags["stage"], "dev");
    assert_eq!(tags["owner"], "ml-team");
    // The manifest's own [tags] are kept under the command line's.
    assert_eq!(tags["task"], "classification", "{tags}");
    assert_eq!(row.2, "tester", "$USER is the default");
    assert_eq!(row.3.as_deref(), Some("first cut"));
    assert!(
        row.4.ends_with('Z') && row.4.contains('T'),
        "RFC 3339 UTC: {}",
        row.4
    );
    assert_eq!((row.5, row.6), (None, None), "not from a git checkout");
    let by: String = c
        .query_row(
            "SELECT registered_by FROM versions WHERE version = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by, "alice", "--user wins");

    let mut stmt = c
        .prepare("SELECT actor, action, subject, detail FROM audit_log ORDER BY id")
        .unwrap();
    let audit: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        (
            audit[0].0.as_str(),
            audit[0].1.as_str(),
            audit[0].2.as_str()
        ),
        ("tester", "io.ferroserve.model.registered", "mlp:1")
    );
    assert_eq!(
        (
            audit[1].0.as_str(),
            audit[1].1.as_str(),
            audit[1].2.as_str()
        ),
        ("alice", "io.ferroserve.model.registered", "mlp:2")
    );
    let detail: serde_json::Value = serde_json::from_str(&audit[0].3).unwrap();
    assert_eq!(detail["message"], "first cut");
    assert_eq!(detail["version"], 1);

    // The schema is versioned, the database in WAL mode.
    assert_eq!(count(&c, "PRAGMA user_version"), 5);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    // What was registered is what is served.
    let server = Server::start(repo.path(), &[]);
    let r = server.request("GET", "/v2/models/mlp", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["versions"], serde_json::json!(["2"]));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_fields(
    repo: &Path,
    version: u64,
) -> (Option<String>, Option<String>, Option<String>, Option<bool>) {
    db(repo)
        .query_row(
            "SELECT git_repo, git_branch, git_commit, git_dirty FROM versions
             WHERE model = 'mlp' AND version = ?1",
            [version as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

#[test]
fn git_provenance_is_recorded_from_a_real_checkout() {
    let checkout = tempfile::tempdir().unwrap();
    let top = checkout.path().canonicalize().unwrap();
    git(&top, &["init", "-q", "-b", "train"]);
    let b = copy_example("mlp", &top.join("models"));
    git(&top, &["add", "."]);
    git(&top, &["commit", "-q", "-m", "train mlp"]);
    let head = git(&top, &["rev-parse", "HEAD"]);
    let repo = tempfile::tempdir().unwrap();

    assert_eq!(register_ok(&b, repo.path(), "mlp", &[]), 1);
    let expected_top = Some(top.to_string_lossy().into_owned());
    assert_eq!(
        git_fields(repo.path(), 1),
        (
            expected_top.clone(),
            Some("train".into()),
            Some(head.clone()),
            Some(false)
        )
    );

    // A modified file makes the tree dirty.
    let sample = b.join("sample.json");
    let mut text = std::fs::read_to_string(&sample).unwrap();
    text.push('\n');
    std::fs::write(&sample, text).unwrap();
    assert_eq!(register_ok(&b, repo.path(), "mlp", &[]), 2);
    assert_eq!(
        git_fields(repo.path(), 2),
        (expected_top, Some("train".into()), Some(head), Some(true))
    );
    // The history does not travel with the bundle.
    assert!(!repo.path().join("mlp/2/.git").exists());
    assert_hashes_match(repo.path(), "mlp", 2);
}

#[test]
fn a_broken_bundle_is_refused_and_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let good = bundle("mlp", src.path());
    let repo = tempfile::tempdir().unwrap();
    assert_eq!(register_ok(&good, repo.path(), "mlp", &[]), 1);

    let broken_root = tempfile::tempdir().unwrap();
    let broken = bundle("mlp", broken_root.path());
    let manifest = broken.join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("colour = \"blue\"\n{text}")).unwrap();
    let out = register(&broken, repo.path(), "mlp", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("colour") && stderr.contains("bundle.toml"),
        "{stderr}"
    );

    // A name that is not the manifest's is refused, naming both.
    let out = register(&good, repo.path(), "other", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"mlp\"") && stderr.contains("\"other\""),
        "{stderr}"
    );

    // A model file that does not load is refused too.
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    std::fs::write(&manifest, text).unwrap();
    let out = register(&broken, repo.path(), "mlp", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not load"), "{stderr}");

    assert_eq!(version_folders(&repo.path().join("mlp")), ["1"]);
    assert!(!repo.path().join("other").exists());
    let c = db(repo.path());
    assert_eq!(count(&c, "SELECT COUNT(*) FROM versions"), 1);
    assert_eq!(count(&c, "SELECT COUNT(*) FROM audit_log"), 1);

    // Nothing at all in a fresh repository.
    let fresh = tempfile::tempdir().unwrap();
    let out = register(&broken, fresh.path(), "mlp", &[]);
    assert!(!out.status.success());
    assert!(version_folders(fresh.path()).is_empty());
}

#[test]
fn a_crashed_registration_breaks_neither_register_nor_serve() {
    let src = tempfile::tempdir().unwrap();
    let b = bundle("mlp", src.path());
    let repo = tempfile::tempdir().unwrap();
    assert_eq!(register_ok(&b, repo.path(), "mlp", &[]), 1);

    // What a registration killed mid-copy leaves: a temporary folder with a
    // complete-looking bundle in it (a process id that is not running).
    let leftover = |name: &str| {
        let dir = repo.path().join("mlp").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["bundle.toml", "model.onnx"] {
            std::fs::copy(b.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let x = leftover(".tmp-x");
    let dead = leftover(".tmp-4000000000-1");
    assert_eq!(register_ok(&b, repo.path(), "mlp", &[]), 2);
    assert!(!x.exists() && !dead.exists(), "stale temporaries removed");
    assert_eq!(version_folders(&repo.path().join("mlp")), ["1", "2"]);

    // A crash after that, and a model that only ever got a temporary folder.
    leftover(".tmp-y");
    let ghost = repo.path().join("ghost/.tmp-z");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::copy(b.join("model.onnx"), ghost.join("model.onnx")).unwrap();
    std::fs::write(
        ghost.join("bundle.toml"),
        std::fs::read_to_string(b.join("bundle.toml"))
            .unwrap()
            .replace("name = \"mlp\"", "name = \"ghost\""),
    )
    .unwrap();

    let server = Server::start(repo.path(), &[]);
    let r = server.request("GET", "/v2/models/mlp", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["versions"], serde_json::json!(["2"]));
    let r = server.request("GET", "/v2/models/ghost", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = server.request("GET", "/v2/models/mlp/versions/.tmp-y", &[], b"");
    assert_ne!(r.status, 200, "{}", r.text());
    drop(server);
    // The database was not touched by the leftovers.
    assert_eq!(count(&db(repo.path()), "SELECT COUNT(*) FROM versions"), 2);
}

#[test]
fn serve_imports_a_repository_without_a_database_once() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    copy_example("conv", repo.path());
    // A second version of mlp, laid out by hand as before the registry.
    let v2 = repo.path().join("mlp/2");
    std::fs::create_dir_all(&v2).unwrap();
    for e in std::fs::read_dir(repo.path().join("mlp/1")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), v2.join(e.file_name())).unwrap();
    }
    assert!(!repo.path().join("registry.db").exists());

    let served = |server: &Server| {
        let mlp = server.request("GET", "/v2/models/mlp", &[], b"");
        let conv = server.request("GET", "/v2/models/conv", &[], b"");
        assert_eq!((mlp.status, conv.status), (200, 200));
        (
            mlp.json()["versions"].clone(),
            conv.json()["versions"].clone(),
        )
    };
    let server = Server::start(repo.path(), &[]);
    assert_eq!(
        served(&server),
        (serde_json::json!(["2"]), serde_json::json!(["1"]))
    );
    assert!(server.stop().success());

    let c = db(repo.path());
    let mut stmt = c
        .prepare("SELECT model, version, registered_by FROM versions ORDER BY model, version")
        .unwrap();
    let rows: Vec<(String, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            ("conv".to_string(), 1, "import".to_string()),
            ("mlp".to_string(), 1, "import".to_string()),
            ("mlp".to_string(), 2, "import".to_string()),
        ]
    );
    assert_hashes_match(repo.path(), "mlp", 1);
    assert_hashes_match(repo.path(), "mlp", 2);
    assert_hashes_match(repo.path(), "conv", 1);
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM audit_log WHERE action = 'import'"),
        3
    );
    let files_before = count(&c, "SELECT COUNT(*) FROM files");
    drop(stmt);
    drop(c);

    // A second start imports nothing again and serves the same.
    let server = Server::start(repo.path(), &[]);
    assert_eq!(
        served(&server),
        (serde_json::json!(["2"]), serde_json::json!(["1"]))
    );
    assert!(server.stop().success());
    let c = db(repo.path());
    assert_eq!(count(&c, "SELECT COUNT(*) FROM versions"), 3);
    assert_eq!(count(&c, "SELECT COUNT(*) FROM files"), files_before);
    // Only the import entries: a running server also audits its lifecycle
    // events (the server's event bus), which are not what is counted here.
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM audit_log WHERE action = 'import'"),
        3
    );
    drop(c);

    // Registering continues the numbering after the imported versions.
    let src = tempfile::tempdir().unwrap();
    let b = bundle("mlp", src.path());
    assert_eq!(register_ok(&b, repo.path(), "mlp", &[]), 3);
}

#[test]
fn serve_without_bundles_creates_no_database() {
    let repo = tempfile::tempdir().unwrap();
    let (status, _) = start_failure(repo.path(), &[]);
    assert!(!status.success());
    assert!(!repo.path().join("registry.db").exists());
}

#[test]
fn the_audit_log_refuses_update_and_delete() {
    let src = tempfile::tempdir().unwrap();
    let b = bundle("mlp", src.path());
    let repo = tempfile::tempdir().unwrap();
    register_ok(&b, repo.path(), "mlp", &[]);
    let c = db(repo.path());
    let e = c
        .execute("UPDATE audit_log SET actor = 'mallory'", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = c.execute("DELETE FROM audit_log", []).unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let actor: String = c
        .query_row("SELECT actor FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(actor, "tester");
}

#[test]
fn concurrent_registrations_get_distinct_consecutive_versions() {
    let src = tempfile::tempdir().unwrap();
    let b = bundle("mlp", src.path());
    let repo = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_ferroserve"))
                .arg("register")
                .arg(&b)
                .arg("--repo")
                .arg(repo.path())
                .args(["--name", "mlp", "--user", &format!("user{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut versions: Vec<u64> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4], "no duplicate, no gap");
    assert_eq!(
        version_folders(&repo.path().join("mlp")),
        ["1", "2", "3", "4"]
    );
    let c = db(repo.path());
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(DISTINCT version) FROM versions WHERE model = 'mlp'"
        ),
        4
    );
    assert_eq!(count(&c, "SELECT COUNT(*) FROM audit_log"), 4);
    for v in 1..=4 {
        assert_hashes_match(repo.path(), "mlp", v);
    }
}

/// A version folder without a registry row (a registration killed between
/// its rename and its commit, or a folder copied in by hand) is never
/// served: the newest *registered* version is.
#[test]
fn unrecorded_version_folders_are_not_served() {
    let work = tempfile::tempdir().unwrap();
    let src = bundle("mlp", work.path());
    let repo = work.path().join("repo");
    assert_eq!(register_ok(&src, &repo, "mlp", &[]), 1);
    let stray = repo.join("mlp").join("2");
    std::fs::create_dir_all(&stray).unwrap();
    for entry in std::fs::read_dir(repo.join("mlp").join("1")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), stray.join(entry.file_name())).unwrap();
    }
    let server = Server::start(&repo, &[]);
    let meta = server.request("GET", "/v2/models/mlp", &[], b"").json();
    assert_eq!(meta["versions"], serde_json::json!(["1"]), "{meta}");
    assert_eq!(
        server
            .request("GET", "/v2/models/mlp/versions/2", &[], b"")
            .status,
        404
    );
    assert!(
        server.log.lock().unwrap().contains("has no registry row"),
        "{}",
        server.log.lock().unwrap()
    );
}
