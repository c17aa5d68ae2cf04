"""A deployment's own [capture] and [drift] over its bundle's (issue 17):
`ferroserve deploy --capture KEY=VALUE --drift KEY=VALUE` and a deployment's
`capture`/`drift` tables in `serve --config`, against a real server: one
deployment of a capturing bundle turns capture off, another writes to its
own sink, keeps less and cuts smaller drift windows of every request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ferro

HEADER = "x-ferroserve-deployment"


def capturing_bundle(tmp_path: Path, sink: Path) -> Path:
    """The example MLP with [capture] (every request) and [drift] windows of 1000 rows."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ferro.EXAMPLES / "mlp" / "1", bundle)
    manifest = bundle / "bundle.toml"
    manifest.write_text(manifest.read_text()
                        + f"\n[capture]\nsink = {json.dumps(str(sink))}\nsample_rate = 1.0\n"
                        + "\n[drift]\nwindow_rows = 1000\n")
    return bundle


def infer(srv, deployment: str, rid: str, x: np.ndarray):
    body = json.dumps({"id": rid, "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                               "data": x.ravel().tolist()}]}).encode()
    r = ferro.request(srv.addr, "POST", "/v2/models/ep/infer", body,
                      {"content-type": "application/json", HEADER: deployment})
    assert r.status == 200, r.body
    assert r.headers.get(HEADER) == deployment, r.headers


def final_files(sink: Path) -> list[Path]:
    return sorted(p for p in sink.rglob("*.parquet") if not p.name.startswith("."))


def test_each_deployment_captures_and_watches_drift_as_it_is_told(tmp_path, start_server):
    sink_a, sink_b = tmp_path / "bundle-sink", tmp_path / "green-sink"
    repo = tmp_path / "repo"
    assert ferro.register(repo, capturing_bundle(tmp_path, sink_a), "mlp") == 1
    rng = np.random.default_rng(0)
    train = rng.standard_normal((500, 64)).astype(np.float32)
    data = tmp_path / "train.parquet"
    pq.write_table(pa.table({f"input_{j}": train[:, j] for j in range(64)}), data)
    ferro.cli("baseline", "--data", data, "--repo", repo, "--model", "mlp:1")

    ferro.cli("deploy", "ep", "blue", "--repo", repo, "--model", "mlp", "--version", "1",
              "--capture", "enabled=false")
    ferro.cli("deploy", "ep", "green", "--repo", repo, "--model", "mlp", "--version", "1",
              "--capture", f"sink={sink_b}", "--capture", "keep=inputs,request_id",
              "--drift", "window_rows=7", "--drift", "observe=all", "--drift", "thresholds.psi=0.5",
              "--drift", "features.input_3.method=ks")
    ferro.cli("traffic", "ep", "blue=50", "green=50", "--repo", repo)
    shown = json.loads(ferro.cli("endpoints", "show", "ep", "--repo", repo, "--json").stdout)[0]
    settings = {d["name"]: d.get("settings", {}) for d in shown["deployments"]}
    assert settings["blue"] == {"capture": {"enabled": False}}, settings
    assert settings["green"] == {
        "capture": {"sink": str(sink_b), "keep": ["inputs", "request_id"]},
        "drift": {"window_rows": 7, "observe": "all", "thresholds": {"psi": 0.5},
                  "features": {"input_3": {"method": "ks"}}},
    }, settings

    srv = start_server(repo)
    sent: dict[str, np.ndarray] = {}
    for i in range(20):
        for d in ("blue", "green"):
            x = rng.standard_normal((1, 64)).astype(np.float32)
            infer(srv, d, f"{d}-{i}", x)
            sent[f"{d}-{i}"] = x
    r = ferro.request(srv.addr, "GET", "/v2/models/ep/drift")
    assert r.status == 200, r.body
    reports = {d["deployment"]: d for d in r.json()["deployments"]}
    # green: windows of 7 rows of every request (drift sees them on the
    # request path, so 20 rows have closed two windows when the answers
    # are in); blue keeps the bundle's 1000 rows, of every request since it
    # captures nothing.
    green, blue = reports["green"], reports["blue"]
    assert green["observed"] == "all" and green["open_window"]["closes_at_rows"] == 7, green
    assert green["windows_closed"] == 2 and green["open_window"]["rows"] == 6, green
    assert blue["observed"] == "all" and blue["open_window"]["closes_at_rows"] == 1000, blue
    assert blue["windows_closed"] == 0 and blue["open_window"]["rows"] == 20, blue
    # The per-method threshold and the per-feature method are green's own.
    f3 = next(f for f in green["features"] if f["name"] == "input_3")
    assert f3["method"] == "ks", f3
    f5 = next(f for f in green["features"] if f["name"] == "input_5")
    psi = next(s for s in f5["scores"] if s["method"] == "psi")
    assert psi["threshold"] == 0.5, f5
    assert srv.stop() == 0

    assert final_files(sink_a) == [], "blue turned capture off, yet the bundle's sink has files"
    files = final_files(sink_b)
    assert files, f"no capture files under {sink_b}"
    assert all(f.relative_to(sink_b).parts[:2] == ("ep", "green") for f in files), files
    df = pd.read_parquet(sink_b)
    assert set(df["request_id"]) == {f"green-{i}" for i in range(20)}
    assert set(df.columns) == {"request_id", "row"} | {f"input_{j}" for j in range(64)}, df.columns
    for row in df.itertuples(index=False):
        d = row._asdict()
        np.testing.assert_array_equal(np.array([d[f"input_{j}"] for j in range(64)], np.float32),
                                      sent[d["request_id"]][0])


def test_a_deployment_file_overrides_capture_too(tmp_path, start_server):
    sink_a, sink_b = tmp_path / "bundle-sink", tmp_path / "file-sink"
    repo = tmp_path / "repo"
    assert ferro.register(repo, capturing_bundle(tmp_path, sink_a), "mlp") == 1
    config = tmp_path / "deploy.toml"
    config.write_text(f"""
[[endpoint]]
name = "ep"

[[endpoint.deployment]]
name = "blue"
model = "mlp"
version = 1
capture = {{ sink = {json.dumps(str(sink_b))}, keep = ["request_id", "status"] }}
""")
    srv = start_server(repo, "--config", config)
    for i in range(5):
        infer(srv, "blue", f"f-{i}", np.zeros((1, 64), np.float32))
    assert srv.stop() == 0
    assert final_files(sink_a) == []
    df = pd.read_parquet(sink_b)
    assert sorted(df["request_id"]) == [f"f-{i}" for i in range(5)]
    assert set(df.columns) == {"request_id", "row", "status", "error"}, df.columns


def test_a_bad_override_is_one_error_naming_the_key(tmp_path):
    repo = tmp_path / "repo"
    assert ferro.register(repo, capturing_bundle(tmp_path, tmp_path / "sink"), "mlp") == 1
    cases = [
        (["--capture", "sample_rate=2"], ["capture.sample_rate", "from 0 to 1", "got 2"]),
        (["--capture", "rate=1"], ["--capture", "unknown field `rate`"]),
        (["--capture", "keep=inputs,latency_ms"], ["capture.keep[1]", "latency_ms"]),
        (["--capture", "queue=0"], ["capture.queue", "at least 1"]),
        (["--capture", "oops"], ["--capture", "expected KEY=VALUE"]),
        (["--drift", "window_rows=0"], ["drift.window_rows", "at least 1"]),
        (["--drift", "thresholds.psi=-1"], ["drift.thresholds.psi", "got -1"]),
        (["--drift", "features.x.method=median"], ["drift.features.x.method", "median"]),
        (["--drift", "observe=sometimes"], ["drift.observe", "sometimes"]),
    ]
    for flags, words in cases:
        p = ferro.cli("deploy", "ep", "blue", "--repo", repo, "--model", "mlp", *flags, check=False)
        assert p.returncode != 0, (flags, p.stdout)
        err = p.stderr.strip()
        assert "panicked" not in err and "Backtrace" not in err, err
        assert len(err.splitlines()) == 1, (flags, err)
        for w in words:
            assert w in err, (flags, w, err)
    # Nothing of the refused changes reached the registry.
    assert ferro.cli("endpoints", "list", "--repo", repo, "--json").stdout.strip() == "[]"
