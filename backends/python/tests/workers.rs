//! Real worker processes on the machine's `python3` (raw style needs no
//! numpy): answers, exceptions, crashes, hangs, init failures, and the
//! environments built for requirements files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferroserve_backend_core::{Backend, Health, Tensor};
use ferroserve_backend_python::{
    configure, env, load, raw_signature, LoadSpec, PipOptions, PythonConfig, Style,
};

const SCRIPT: &str = r#"
import json, os, sys, time
def init():
    global DIR
    DIR = os.environ["AZUREML_MODEL_DIR"]
    print("hello from init")          # goes to the log, not the protocol
    sys.stdout.write("x" * 70000)     # a big write to fd 1 must not corrupt it either
def run(raw):
    d = json.loads(raw)
    if d.get("raise"):
        raise KeyError("no such thing")
    if d.get("exit"):
        os._exit(7)
    if d.get("hang"):
        time.sleep(3600)
    return {"echo": d, "dir": DIR}
"#;

fn bundle(dir: &Path, script: &str) -> PathBuf {
    std::fs::write(dir.join("score.py"), script).unwrap();
    dir.join("score.py")
}

fn spec(dir: &Path, script: PathBuf, timeout: Duration) -> LoadSpec {
    LoadSpec {
        script,
        bundle_dir: dir.to_path_buf(),
        style: Style::Raw,
        requirements: None,
        label: "test:1".into(),
        instances: 1,
        signature: raw_signature(true),
        run_timeout: timeout,
    }
}

fn call(b: &mut dyn Backend, bodies: &[&str]) -> Result<Vec<String>, String> {
    let t = Tensor::from_strings(vec![bodies.len() as i64], bodies).unwrap();
    b.run(vec![t])
        .map(|out| {
            out[0]
                .string_elements()
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// Whether `python3` runs here; also points the harness at a scratch
/// folder rather than the user's cache.
fn python_available() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        configure(PythonConfig {
            python: "python3".into(),
            envs_root: std::env::temp_dir().join(format!("ferroserve-test-{}", std::process::id())),
            ..PythonConfig::default()
        })
        .unwrap();
    }
    ok
}

#[test]
fn answers_raises_crashes_and_hangs_and_the_worker_comes_back() {
    if !python_available() {
        eprintln!("skipped: no python3 on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = bundle(dir.path(), SCRIPT);
    let (mut workers, status) =
        load(&spec(dir.path(), script, Duration::from_millis(1500))).unwrap();
    assert_eq!(status.failure(), None);
    let w = &mut workers[0];

    // A batch of two bodies is two calls, answered in order, as JSON.
    let out = call(w, &[r#"{"a": 1}"#, r#"{"a": 2}"#]).unwrap();
    assert!(out[0].contains(r#""echo": {"a": 1}"#), "{out:?}");
    assert!(out[1].contains(r#""echo": {"a": 2}"#), "{out:?}");
    assert!(
        out[0].contains(&dir.path().display().to_string()),
        "{out:?}"
    );

    let e = call(w, &[r#"{"raise": true}"#]).unwrap_err();
    assert!(e.contains("KeyError") && e.contains("no such thing"), "{e}");
    assert!(
        call(w, &[r#"{"a": 3}"#]).is_ok(),
        "the worker goes on after an exception"
    );

    let e = call(w, &[r#"{"exit": true}"#]).unwrap_err();
    assert!(e.contains("exit code 7"), "{e}");
    assert!(
        call(w, &[r#"{"a": 4}"#]).is_ok(),
        "a new worker after the crash"
    );

    let e = call(w, &[r#"{"hang": true}"#]).unwrap_err();
    assert!(e.contains("did not answer within 1500 ms"), "{e}");
    assert!(
        call(w, &[r#"{"a": 5}"#]).is_ok(),
        "a new worker after the hang"
    );
}

#[test]
fn an_init_failure_is_the_models_status_with_its_traceback() {
    if !python_available() {
        eprintln!("skipped: no python3 on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = bundle(
        dir.path(),
        "def init():\n    raise RuntimeError('weights missing')\ndef run(raw):\n    return raw\n",
    );
    let (mut workers, status) = load(&spec(dir.path(), script, Duration::from_secs(5))).unwrap();
    let why = status.failure().expect("not ready");
    assert!(why.contains("RuntimeError: weights missing"), "{why}");
    assert!(why.contains("Traceback"), "{why}");
    let e = call(&mut workers[0], &["{}"]).unwrap_err();
    assert!(
        e.contains("not ready") && e.contains("weights missing"),
        "{e}"
    );
}

#[test]
fn environments_are_shared_by_content_and_rebuilt_when_broken() {
    if !python_available() {
        eprintln!("skipped: no python3 on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("envs");
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    let c = dir.path().join("c.txt");
    // Comments only: pip installs nothing, so this needs no network.
    std::fs::write(&a, "# nothing to install\n").unwrap();
    std::fs::write(&b, "# nothing to install\n").unwrap();
    std::fs::write(&c, "# nothing to install, differently\n").unwrap();
    let py = Path::new("python3");
    let pip = PipOptions {
        offline: true,
        ..PipOptions::default()
    };
    let ea = env::ensure(&a, py, &root, &pip).unwrap();
    let eb = env::ensure(&b, py, &root, &pip).unwrap();
    assert_eq!(ea, eb, "same requirements, same environment");
    let ec = env::ensure(&c, py, &root, &pip).unwrap();
    assert_ne!(ea, ec, "other requirements, another environment");
    assert!(ea.is_file() && ec.is_file());
    // Break it: the next use rebuilds it in place.
    let env_dir = ea.parent().unwrap().parent().unwrap().to_path_buf();
    std::fs::remove_file(env_dir.join(".ferroserve-ready")).unwrap();
    let again = env::ensure(&a, py, &root, &pip).unwrap();
    assert_eq!(again, ea);
    assert!(env_dir.join(".ferroserve-ready").is_file());
    let dirs = std::fs::read_dir(&root)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(dirs, 2, "two environments, no leftovers");
    // A requirement that cannot be installed is an error naming pip.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "this-package-does-not-exist-ferroserve==0.0.1\n").unwrap();
    let e = env::ensure(&bad, py, &root, &pip).unwrap_err().to_string();
    assert!(e.contains("pip install"), "{e}");
}
