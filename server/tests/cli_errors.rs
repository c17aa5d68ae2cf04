//! The binary's edge: a user error is one `error: ...` line (with its causes
//! when they add something), exit status 1, and never a backtrace, even with
//! `RUST_BACKTRACE=1`; a usage error is clap's message and exit status 2.

mod support;

use std::process::{Command, Output};

fn ferroserve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(args)
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LIB_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("ferroserve runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1, exactly one `error:` line containing every needle, nothing that
/// looks like a backtrace or a panic.
fn user_error(args: &[&str], needles: &[&str]) {
    let o = ferroserve(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one error line expected:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: no {n:?} in\n{err}");
    }
    for bad in [
        "backtrace",
        "Backtrace",
        "panicked",
        "RUST_BACKTRACE",
        "Error {",
    ] {
        assert!(!err.contains(bad), "{args:?}: {bad:?} in\n{err}");
    }
}

#[test]
fn a_missing_bundle_folder_is_one_error_line_and_exit_1() {
    let repo = tempfile::tempdir().unwrap();
    let missing = repo.path().join("no-such-bundle");
    user_error(
        &[
            "register",
            missing.to_str().unwrap(),
            "--repo",
            repo.path().join("r").to_str().unwrap(),
            "--name",
            "m",
        ],
        &["no-such-bundle"],
    );
}

#[test]
fn a_repository_with_nothing_to_serve_is_one_error_line_and_exit_1() {
    let repo = tempfile::tempdir().unwrap();
    user_error(
        &[
            "serve",
            "--repo",
            repo.path().to_str().unwrap(),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ],
        &[repo.path().to_str().unwrap()],
    );
}

#[test]
fn an_unreadable_config_names_the_file_and_its_cause() {
    let repo = tempfile::tempdir().unwrap();
    support::copy_example("mlp", repo.path());
    let config = repo.path().join("missing-deploy.toml");
    user_error(
        &[
            "serve",
            "--repo",
            repo.path().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ],
        &["missing-deploy.toml"],
    );
}

#[test]
fn a_models_command_on_a_missing_repository_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("nothing-here");
    user_error(
        &["models", "show", "mlp", "--repo", repo.to_str().unwrap()],
        &["nothing-here"],
    );
}

#[test]
fn usage_errors_are_clap_messages_and_exit_2() {
    for args in [
        &["serve", "--repo", "x", "--http-port", "many"][..],
        &["frobnicate"][..],
        &[
            "loadtest",
            "--url",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--concurrency",
            "1",
            "--duration",
            "99999999999999999999999h",
        ][..],
    ] {
        let o = ferroserve(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}:\n{err}");
        assert!(err.starts_with("error: "), "{args:?}:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}:\n{err}");
    }
}
