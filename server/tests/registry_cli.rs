//! `ferroserve models ...` and `ferroserve repo check`, run as the real
//! binary against real repositories and a real SQLite database.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use rusqlite::Connection;
use serde_json::Value;
use support::copy_example;

fn ferroserve(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(args)
        .arg("--repo")
        .arg(repo)
        .env("USER", "tester")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run ferroserve")
}

fn ok(args: &[&str], repo: &Path) -> String {
    let out = ferroserve(args, repo);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str], repo: &Path) -> Value {
    let text = ok(args, repo);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// Fails with stderr returned, checking the exit status is non-zero.
fn fails(args: &[&str], repo: &Path) -> (Output, String) {
    let out = ferroserve(args, repo);
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

fn register(src: &Path, repo: &Path, name: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["register", src.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    ok(&args, repo).trim().parse().unwrap()
}

fn db(repo: &Path) -> Connection {
    Connection::open(repo.join("registry.db")).unwrap()
}

fn audit(repo: &Path, action: &str) -> Vec<(String, String, Value)> {
    let c = db(repo);
    let mut stmt = c
        .prepare("SELECT actor, subject, detail FROM audit_log WHERE action = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([action], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            serde_json::from_str(&r.get::<_, String>(2)?).unwrap(),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// mlp versions 1 and 2 (2 tagged stage=prod), conv version 1.
fn repo_with_three_versions() -> (tempfile::TempDir, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    let mlp = copy_example("mlp", src.path());
    let conv = copy_example("conv", src.path());
    let repo = tempfile::tempdir().unwrap();
    assert_eq!(
        register(&mlp, repo.path(), "mlp", &["--tag", "stage=dev"]),
        1
    );
    assert_eq!(
        register(
            &mlp,
            repo.path(),
            "mlp",
            &[
                "--tag",
                "stage=prod",
                "--tag",
                "owner=alice",
                "--message",
                "better"
            ]
        ),
        2
    );
    assert_eq!(
        register(
            &conv,
            repo.path(),
            "conv",
            &["--tag", "stage=prod", "--tag", "owner=bob"]
        ),
        1
    );
    (src, repo)
}

#[test]
fn aliases_are_set_moved_audited_and_resolved_and_list_show_search_report_them() {
    let (_src, repo) = repo_with_three_versions();
    let r = repo.path();

    let out = ok(
        &["models", "alias", "mlp", "production", "1", "--user", "bob"],
        r,
    );
    assert_eq!(out.trim(), "mlp@production: set to 1");
    let out = ok(&["models", "alias", "mlp", "production", "2"], r);
    assert_eq!(out.trim(), "mlp@production: moved from 1 to 2");
    ok(&["models", "alias", "mlp", "canary", "1"], r);

    let moved = audit(r, "io.ferroserve.alias.moved");
    assert_eq!(moved.len(), 3, "{moved:?}");
    assert_eq!(
        (moved[0].0.as_str(), moved[0].1.as_str()),
        ("bob", "mlp@production")
    );
    assert_eq!(moved[0].2["from"], Value::Null);
    assert_eq!(moved[0].2["to"], 1);
    assert_eq!(
        (moved[1].0.as_str(), moved[1].1.as_str()),
        ("tester", "mlp@production")
    );
    assert_eq!(moved[1].2["from"], 1);
    assert_eq!(moved[1].2["to"], 2);
    let (by, at): (String, String) = db(r)
        .query_row(
            "SELECT updated_by, updated_at FROM aliases WHERE model = 'mlp' AND alias = 'production'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(by, "tester");
    assert!(at.ends_with('Z'), "{at}");

    // Refusals: unknown version, bad alias name, unknown alias.
    let (_, e) = fails(&["models", "alias", "mlp", "production", "9"], r);
    assert!(e.contains("mlp:9"), "{e}");
    let (_, e) = fails(&["models", "alias", "mlp", "Prod", "1"], r);
    assert!(e.contains("\"Prod\""), "{e}");
    let (_, e) = fails(&["models", "show", "mlp@staging"], r);
    assert!(e.contains("no alias \"staging\""), "{e}");
    assert_eq!(
        audit(r, "io.ferroserve.alias.moved").len(),
        3,
        "refusals are not audited"
    );

    // list
    let list = json(&["models", "list", "--json"], r);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["name"], "conv");
    assert_eq!(list[0]["latest_version"], 1);
    assert_eq!(list[0]["versions"], 1);
    assert_eq!(list[0]["aliases"], serde_json::json!({}));
    assert_eq!(list[1]["name"], "mlp");
    assert_eq!(list[1]["latest_version"], 2);
    assert_eq!(list[1]["versions"], 2);
    assert_eq!(
        list[1]["aliases"],
        serde_json::json!({"canary": 1, "production": 2})
    );
    let table = ok(&["models", "list"], r);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["mlp", "2", "2", "canary=1,production=2"]),
        "{table}"
    );

    // show, by alias, number and name alone (the newest)
    let show = json(&["models", "show", "mlp@production", "--json"], r);
    assert_eq!(show["model"], "mlp");
    assert_eq!(show["version"], 2);
    assert_eq!(show["aliases"], serde_json::json!(["production"]));
    assert_eq!(show["tags"]["stage"], "prod");
    assert_eq!(show["tags"]["task"], "classification");
    assert_eq!(show["registered_by"], "tester");
    assert_eq!(show["message"], "better");
    assert!(show["source_dir"].as_str().unwrap().ends_with("mlp/1"));
    assert_eq!(show["git"]["commit"], Value::Null);
    let files = show["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"bundle.toml") && paths.contains(&"model.onnx"),
        "{paths:?}"
    );
    for f in files {
        let on_disk = r.join("mlp/2").join(f["path"].as_str().unwrap());
        assert_eq!(f["size"], std::fs::metadata(&on_disk).unwrap().len());
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
    }
    let by_number = json(&["models", "show", "mlp:1", "--json"], r);
    assert_eq!(by_number["version"], 1);
    assert_eq!(by_number["aliases"], serde_json::json!(["canary"]));
    assert_eq!(json(&["models", "show", "mlp", "--json"], r)["version"], 2);
    let human = ok(&["models", "show", "mlp@canary"], r);
    assert!(human.contains("version:        1"), "{human}");

    // search
    let versions = |v: &Value| -> Vec<(String, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["model"].as_str().unwrap().to_string(),
                    x["version"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let prod = json(&["models", "search", "--tag", "stage=prod", "--json"], r);
    assert_eq!(versions(&prod), [("conv".into(), 1), ("mlp".into(), 2)]);
    assert_eq!(prod[1]["aliases"], serde_json::json!(["production"]));
    assert_eq!(prod[1]["tags"]["stage"], "prod");
    assert!(prod[1].get("files").is_none(), "{prod}");
    let both = json(
        &[
            "models",
            "search",
            "--tag",
            "stage=prod",
            "--tag",
            "owner=alice",
            "--json",
        ],
        r,
    );
    assert_eq!(versions(&both), [("mlp".into(), 2)]);
    let named = json(&["models", "search", "--name", "m?p", "--json"], r);
    assert_eq!(versions(&named), [("mlp".into(), 1), ("mlp".into(), 2)]);
    let named = json(&["models", "search", "--name", "c*", "--json"], r);
    assert_eq!(versions(&named), [("conv".into(), 1)]);
    let aliased = json(&["models", "search", "--alias", "canary", "--json"], r);
    assert_eq!(versions(&aliased), [("mlp".into(), 1)]);
    let none = json(
        &[
            "models",
            "search",
            "--alias",
            "production",
            "--tag",
            "stage=dev",
            "--json",
        ],
        r,
    );
    assert_eq!(versions(&none), []);
}

#[test]
fn delete_is_refused_while_aliased_and_never_reuses_the_number() {
    let (src, repo) = repo_with_three_versions();
    let r = repo.path();
    ok(&["models", "alias", "mlp", "production", "2"], r);

    for args in [
        &["models", "delete", "mlp:2"][..],
        &["models", "delete", "mlp:2", "--force"][..],
        &["models", "delete", "mlp@production", "--force"][..],
    ] {
        let (_, e) = fails(args, r);
        assert!(e.contains("mlp@production") && e.contains("mlp:2"), "{e}");
    }
    assert!(r.join("mlp/2/bundle.toml").is_file());
    assert!(audit(r, "io.ferroserve.version.deleted").is_empty());

    ok(&["models", "alias", "mlp", "production", "1"], r);
    let out = ok(&["models", "delete", "mlp:2", "--user", "carol"], r);
    assert!(out.contains("deleted mlp:2"), "{out}");
    assert!(!r.join("mlp/2").exists());
    let leftovers: Vec<_> = std::fs::read_dir(r.join("mlp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["1"], "no .deleted-* left behind");
    let c = db(r);
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM versions WHERE model = 'mlp' AND version = 2",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let files: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM files WHERE version_id NOT IN (SELECT id FROM versions)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(files, 0, "file rows cascade");
    let deleted = audit(r, "io.ferroserve.version.deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].0.as_str(), deleted[0].1.as_str()),
        ("carol", "mlp:2")
    );
    assert_eq!(deleted[0].2["version"], 2);

    let (_, e) = fails(&["models", "show", "mlp:2"], r);
    assert!(e.contains("mlp:2"), "{e}");
    let list = json(&["models", "list", "--json"], r);
    assert_eq!(list[1]["latest_version"], 1);
    assert_eq!(list[1]["versions"], 1);

    // The next registration gets 3, not 2 again.
    let mlp = src.path().join("mlp/1");
    assert_eq!(register(&mlp, r, "mlp", &[]), 3);
    ok(&["repo", "check"], r);

    // Deleting the newest leaves the high-water mark too.
    ok(&["models", "delete", "mlp:3"], r);
    assert_eq!(register(&mlp, r, "mlp", &[]), 4);

    // A bare name is not enough to delete.
    let (_, e) = fails(&["models", "delete", "conv"], r);
    assert!(e.contains("NAME:VERSION"), "{e}");
    assert!(r.join("conv/1").is_dir());
}

#[test]
fn repo_check_passes_clean_and_reports_every_difference() {
    let (_src, repo) = repo_with_three_versions();
    let r = repo.path();
    let out = ok(&["repo", "check"], r);
    assert!(out.starts_with("ok: 3 versions"), "{out}");
    let report = json(&["repo", "check", "--json"], r);
    assert_eq!(report["ok"], true);
    assert_eq!(report["versions_checked"], 3);
    assert_eq!(report["problems"], serde_json::json!([]));

    // Tamper with a file, remove a version folder, add an unrecorded one,
    // an extra file, and the folders of a registration and a deletion in
    // progress (pid 1 is always running): those are not problems.
    let sample = r.join("mlp/1/labels.txt");
    let mut bytes = std::fs::read(&sample).unwrap();
    bytes[0] ^= 1; // same size, different content
    std::fs::write(&sample, bytes).unwrap();
    std::fs::remove_dir_all(r.join("conv/1")).unwrap();
    std::fs::create_dir_all(r.join("mlp/7")).unwrap();
    std::fs::write(r.join("mlp/7/bundle.toml"), "name = 'mlp'\n").unwrap();
    std::fs::write(r.join("mlp/2/extra.bin"), b"x").unwrap();
    std::fs::remove_file(r.join("mlp/2/labels.txt")).unwrap();
    std::fs::create_dir_all(r.join("mlp/.tmp-1-2")).unwrap();
    std::fs::create_dir_all(r.join("mlp/.deleted-5-1-2")).unwrap();
    let db_before = std::fs::read(r.join("registry.db")).unwrap();

    let (out, _) = fails(&["repo", "check", "--json"], r);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("missing_folder", "conv/1"),
        ("hash_mismatch", "mlp/1/labels.txt"),
        ("extra_file", "mlp/2/extra.bin"),
        ("missing_file", "mlp/2/labels.txt"),
        ("unrecorded_folder", "mlp/7"),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), p.to_string()))
    .collect();
    assert_eq!(problems, expected, "{report:#}");
    let hash = &report["problems"][1];
    assert_eq!(hash["model"], "mlp");
    assert_eq!(hash["version"], 1);

    // The human form lists them too, with a non-zero exit.
    let (out, _) = fails(&["repo", "check"], r);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hash_mismatch") && text.contains("mlp/1/labels.txt"),
        "{text}"
    );
    assert!(text.lines().last().unwrap().starts_with("FAILED"), "{text}");

    // Nothing was repaired.
    assert!(r.join("mlp/7").is_dir() && r.join("mlp/.tmp-1-2").is_dir());
    assert!(r.join("mlp/.deleted-5-1-2").is_dir());
    assert!(!r.join("conv/1").exists());
    assert_eq!(std::fs::read(r.join("registry.db")).unwrap(), db_before);
}

#[test]
fn a_version_1_registry_is_migrated_on_first_use() {
    let (_src, repo) = repo_with_three_versions();
    let r = repo.path();
    // Turn the database back into schema version 1.
    {
        let c = db(r);
        c.execute_batch(
            "BEGIN;
             DROP TABLE aliases;
             DROP TABLE baselines;
             DROP TABLE pending_registrations;
             DROP TABLE deployments;
             DROP TABLE endpoints;
             ALTER TABLE models DROP COLUMN last_version;
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }
    ok(&["models", "alias", "mlp", "production", "2"], r);
    let c = db(r);
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(v, 5);
    let hw: i64 = c
        .query_row(
            "SELECT last_version FROM models WHERE name = 'mlp'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(hw, 2);
    let show = json(&["models", "show", "mlp@production", "--json"], r);
    assert_eq!(show["version"], 2);
    // Rows and audit entries from before survive.
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'io.ferroserve.model.registered'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn serve_by_alias_serves_the_aliased_version_and_the_newest_elsewhere() {
    let (_src, repo) = repo_with_three_versions();
    let r = repo.path();
    ok(&["models", "alias", "mlp", "production", "1"], r);
    let versions = |server: &support::Server, model: &str| {
        let resp = server.request("GET", &format!("/v2/models/{model}"), &[], b"");
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()["versions"].clone()
    };
    let server = support::Server::start(r, &["--alias", "production"]);
    assert_eq!(versions(&server, "mlp"), serde_json::json!(["1"]));
    assert_eq!(versions(&server, "conv"), serde_json::json!(["1"]));
    assert!(server.stop().success());
    // Without --alias: the newest, as before.
    let server = support::Server::start(r, &[]);
    assert_eq!(versions(&server, "mlp"), serde_json::json!(["2"]));
    assert!(server.stop().success());
}
