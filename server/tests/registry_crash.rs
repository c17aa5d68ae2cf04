//! `kill -9` of a real `ferroserve register` at many points in time: no
//! version folder is ever half-written, no row is without its folder, the
//! next open of the registry finishes or undoes the interrupted
//! registration so that `repo check` passes, and the next registration
//! gets a higher number.
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

        // (d) The next open of the registry (here `repo check`'s) finishes
        // or undoes the interrupted registration, so the check passes and
        // every version folder has its row.
        let problems = check(repo);
        assert!(problems.is_empty(), "after kill #{i}: {problems:?}");
        let recovered = observe(repo, &source);
        assert!(recovered.tmps.is_empty(), "{:?}", recovered.tmps);
        assert_eq!(recovered.folders, recovered.rows, "after kill #{i}");
        assert!(before.rows.iter().all(|v| recovered.rows.contains(v)));
        assert!(recovered.rows.len() <= before.rows.len() + 1);
        let outcome = if finished && status.success() {
            "finished before the kill"
        } else if !new_rows.is_empty() {
            "recorded (killed after commit)"
        } else if !new_folders.is_empty() {
            "rolled forward on the next open (killed between rename and commit)"
        } else if !after.tmps.is_empty() {
            "a .tmp-* leftover (killed while copying)"
        } else {
            "nothing written (killed while validating)"
        };
        *outcomes.entry(outcome).or_default() += 1;
        eprintln!("kill #{i} after {delay:?}: {outcome}; check: {problems:?}");

        // (c) The next registration succeeds with the next number.
        let highest = recovered.rows.iter().max().copied().unwrap();
        let v = register(&src, repo);
        assert_eq!(v, highest + 1, "after kill #{i}");
        let st = observe(repo, &source);
        assert!(st.tmps.is_empty(), "leftovers not removed: {:?}", st.tmps);
        assert!(st.rows.contains(&v));
        assert_eq!(st.folders, st.rows);
        assert!(check(repo).is_empty(), "after kill #{i}");
    }
    eprintln!("normal registration: {normal:?}; outcomes: {outcomes:#?}");
}

/// Starts `args` with `FERROSERVE_PAUSE_AT=point`, waits until the process
/// says it stopped there, and kills it with SIGKILL.
fn kill_at(point: &str, args: &[&str], repo: &Path) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd(args, repo)
        .env("FERROSERVE_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let marker = format!("ferroserve: paused at {point}");
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains(&marker) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return;
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    panic!("{args:?} never reached {point} ({status}): {seen:#?}");
}

fn rows(repo: &Path) -> Vec<u64> {
    let c = Connection::open(repo.join("registry.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT version FROM versions WHERE model = 'mlp' ORDER BY version")
        .unwrap();
    let v = stmt
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect();
    v
}

/// No leftovers, and exactly `versions` have both a folder and a row.
fn assert_settled(repo: &Path, source: &BTreeMap<String, Vec<u8>>, versions: &[u64]) {
    let st = observe(repo, source);
    assert!(st.tmps.is_empty(), "{:?}", st.tmps);
    assert_eq!(st.folders, versions);
    assert_eq!(st.rows, versions);
}

/// The crash windows that timing alone hardly ever hits, each hit exactly:
/// the process is stopped between two steps and killed with SIGKILL.
#[test]
fn kill_9_between_each_step_is_finished_or_undone_on_the_next_open() {
    let src_root = tempfile::tempdir().unwrap();
    let src = support::copy_example("mlp", src_root.path());
    let source = files_of(&src);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let reg = ["register", src.to_str().unwrap(), "--name", "mlp"];
    assert_eq!(register(&src, repo), 1);

    // Copied, nothing recorded: the `.tmp-*` folder is removed.
    kill_at("copied", &reg, repo);
    assert_eq!(observe(repo, &source).tmps.len(), 1);
    assert!(check(repo).is_empty());
    assert_settled(repo, &source, &[1]);

    // Number reserved, folder not renamed: rolled back, the number free.
    kill_at("reserved", &reg, repo);
    assert!(check(repo).is_empty());
    assert_settled(repo, &source, &[1]);

    // Renamed, not committed: a complete folder without a row, which the
    // next open rolls forward with the metadata the registration recorded.
    kill_at("renamed", &reg, repo);
    let st = observe(repo, &source);
    assert_eq!(
        (st.folders.as_slice(), st.rows.as_slice()),
        (&[1, 2][..], &[1][..])
    );
    assert!(check(repo).is_empty());
    assert_eq!(rows(repo), [1, 2]);
    let c = Connection::open(repo.join("registry.db")).unwrap();
    let (by, detail): (String, String) = c
        .query_row(
            "SELECT actor, detail FROM audit_log WHERE subject = 'mlp:2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(by, "tester");
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["recovered"], true);
    assert_eq!(register(&src, repo), 3);

    // Deletion: renamed away but not committed, the folder comes back.
    let del = ["models", "delete", "mlp:2"];
    kill_at("trashed", &del, repo);
    assert!(!repo.join("mlp/2").exists());
    assert!(check(repo).is_empty());
    assert_eq!(observe(repo, &source).folders, [1, 2, 3]);
    assert_eq!(rows(repo), [1, 2, 3]);
    // Committed but not cleaned up: the renamed folder goes.
    kill_at("deleted", &del, repo);
    assert!(check(repo).is_empty());
    assert_settled(repo, &source, &[1, 3]);
    // The deleted number is not given out again.
    assert_eq!(register(&src, repo), 4);
}
