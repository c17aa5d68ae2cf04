//! `kill -9` of a real `ferroserve register` at many points in time: no
//! version folder is ever half-written, no row is without its folder, the
//! next registration gets a higher number, and `repo check` reports only
//! what the documented crash windows allow.
//!
//! Version numbering under concurrent registrations from several processes
//! is covered by `registry.rs` (`concurrent_registrations_get_distinct_consecutive_versions`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn cmd(args: &[&str], repo: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.args(args)
        .arg("--repo")
        .arg(repo)
        .env("USER", "tester")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

fn register(src: &Path, repo: &Path) -> u64 {
    let out: Output = cmd(&["register", src.to_str().unwrap(), "--name", "mlp"], repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `(kind, path)` of every problem `repo check --json` reports.
fn check(repo: &Path) -> Vec<(String, String)> {
    let out = cmd(&["repo", "check", "--json"], repo).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("repo check: {e}: {}", String::from_utf8_lossy(&out.stderr)));
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
    assert_eq!(out.status.success(), problems.is_empty(), "{report:#}");
    problems
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// File name -> contents of a flat folder.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "{}", e.path().display());
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[derive(Debug, Default)]
struct State {
    /// Numeric folders under `repo/mlp`.
    folders: Vec<u64>,
    /// `.tmp-*` folders under `repo/mlp`.
    tmps: Vec<String>,
    /// Version rows of `mlp`.
    rows: Vec<u64>,
}

/// Checks the invariants that hold whatever the kill point and returns what
/// is there.
fn observe(repo: &Path, source: &BTreeMap<String, Vec<u8>>) -> State {
    let expected: BTreeMap<String, (String, u64)> = source
        .iter()
        .map(|(k, b)| (k.clone(), (sha256_hex(b), b.len() as u64)))
        .collect();
    let mut st = State::default();
    for e in std::fs::read_dir(repo.join("mlp")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Ok(v) = name.parse::<u64>() {
            st.folders.push(v);
        } else if name.starts_with(".tmp-") {
            st.tmps.push(name);
        } else {
            panic!("unexpected entry mlp/{name}");
        }
    }
    st.folders.sort_unstable();
    // (a) A visible version folder is never half-written.
    for v in &st.folders {
        let dir = repo.join("mlp").join(v.to_string());
        assert_eq!(&files_of(&dir), source, "mlp/{v} differs from the bundle");
    }
    let c = Connection::open(repo.join("registry.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT version FROM versions WHERE model = 'mlp' ORDER BY version")
        .unwrap();
    st.rows = stmt
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect();
    // (b) A row always has its folder, with the recorded hashes.
    for v in &st.rows {
        assert!(st.folders.contains(v), "row mlp:{v} without its folder");
        let mut stmt = c
            .prepare(
                "SELECT f.path, f.sha256, f.size FROM files f JOIN versions v ON v.id = f.version_id
                 WHERE v.model = 'mlp' AND v.version = ?1 ORDER BY f.path",
            )
            .unwrap();
        let recorded: BTreeMap<String, (String, u64)> = stmt
            .query_map([*v as i64], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get::<_, i64>(2)? as u64)))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(recorded, expected, "recorded files of mlp:{v}");
    }
    st
}

#[test]
fn kill_9_at_any_point_leaves_no_half_visible_version() {
    let src_root = tempfile::tempdir().unwrap();
    let src = support::copy_example("mlp", src_root.path());
    // An extra file (bundles may carry any file) so that copying, fsyncing
    // and hashing take long enough for some kills to land in them.
    let padding: Vec<u8> = (0..256u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("padding.bin"), padding).unwrap();
    let source = files_of(&src);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();

    // One normal registration to create the registry and measure how long
    // it takes; the kill delays are spread over that duration (they are not
    // timing assertions: a kill that lands after the process is done is
    // just counted as such).
    let t0 = Instant::now();
    assert_eq!(register(&src, repo), 1);
    let normal = t0.elapsed().max(Duration::from_millis(20));
    let st = observe(repo, &source);
    assert_eq!(
        (st.folders.as_slice(), st.rows.as_slice()),
        (&[1][..], &[1][..])
    );

    const KILLS: u32 = 24;
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    for i in 0..KILLS {
        // Up to 1.2x the normal duration, so the last points land late.
        let delay = normal * (i * 6) / (KILLS * 5);
        let before = observe(repo, &source);
        let mut child = cmd(&["register", src.to_str().unwrap(), "--name", "mlp"], repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let after = observe(repo, &source);
        let new_rows: Vec<u64> = after
            .rows
            .iter()
            .filter(|v| !before.rows.contains(v))
            .copied()
            .collect();
        let new_folders: Vec<u64> = after
            .folders
            .iter()
            .filter(|v| !before.folders.contains(v))
            .copied()
            .collect();
        // Nothing disappears; at most one new version folder.
        assert!(before.rows.iter().all(|v| after.rows.contains(v)));
        assert!(before.folders.iter().all(|v| after.folders.contains(v)));
        assert!(new_folders.len() <= 1, "{new_folders:?}");
        assert!(new_rows.iter().all(|v| new_folders.contains(v)));

        // (d) `repo check` reports only the documented crash windows:
        // `.tmp-*` leftovers and complete folders without a row.
        let problems = check(repo);
        for (kind, path) in &problems {
            match kind.as_str() {
                "leftover" => assert!(
                    after.tmps.iter().any(|t| path == &format!("mlp/{t}")),
                    "{kind} {path}"
                ),
                "unrecorded_folder" => {
                    let v: u64 = path.strip_prefix("mlp/").unwrap().parse().unwrap();
                    assert!(!after.rows.contains(&v) && after.folders.contains(&v));
                }
                _ => panic!("unexpected problem after kill #{i}: {kind} {path}"),
            }
        }
        let outcome = if finished && status.success() {
            "finished before the kill"
        } else if !new_rows.is_empty() {
            "recorded (killed after commit)"
        } else if !new_folders.is_empty() {
            "complete folder without a row (killed between rename and commit)"
        } else if !after.tmps.is_empty() {
            "a .tmp-* leftover (killed while copying)"
        } else {
            "nothing written (killed while validating)"
        };
        *outcomes.entry(outcome).or_default() += 1;
        eprintln!("kill #{i} after {delay:?}: {outcome}; check: {problems:?}");

        // (c) The next registration succeeds with a higher number, and
        // removes the `.tmp-*` leftovers.
        let highest = after
            .folders
            .iter()
            .chain(&after.rows)
            .max()
            .copied()
            .unwrap();
        let v = register(&src, repo);
        assert_eq!(v, highest + 1, "after kill #{i}");
        let st = observe(repo, &source);
        assert!(st.tmps.is_empty(), "leftovers not removed: {:?}", st.tmps);
        assert!(st.rows.contains(&v));
        for (kind, path) in check(repo) {
            assert_eq!(kind, "unrecorded_folder", "after kill #{i}: {kind} {path}");
            let v: u64 = path.strip_prefix("mlp/").unwrap().parse().unwrap();
            assert!(!st.rows.contains(&v) && st.folders.contains(&v));
        }
    }
    eprintln!("normal registration: {normal:?}; outcomes: {outcomes:#?}");
}
