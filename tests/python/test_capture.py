"""Capture ([capture] in bundle.toml): sampled requests and answers written
to Parquet by a real server under concurrent load, read back with pyarrow
and pandas as they are; the sampling rule; the counters against the files;
a kill -9 mid-write; a sink that cannot be written."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import ferro

RATE = 0.5


def with_capture(repo: Path, model: str, sink: Path, **extra) -> Path:
    """Appends a [capture] section to REPO/MODEL/1/bundle.toml."""
    lines = ["", "[capture]", f"sink = {json.dumps(str(sink))}"]
    lines += [f"{k} = {ferro.toml_value(v)}" for k, v in extra.items()]
    manifest = repo / model / "1" / "bundle.toml"
    manifest.write_text(manifest.read_text() + "\n".join(lines) + "\n")
    return repo


def sampled(request_id: str, rate: float) -> bool:
    """The server's rule: the id's SHA-256, first 8 bytes big-endian, over 2^64."""
    head = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return head / 2**64 < rate


def final_files(sink: Path) -> list[Path]:
    return sorted(p for p in sink.rglob("*.parquet") if not p.name.startswith("."))


def infer_body(request_id: str, x: np.ndarray) -> dict:
    return {
        "id": request_id,
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
    }


def test_captured_rows_match_the_requests_sent_under_concurrent_load(make_repo, start_server, tmp_path):
    sink = tmp_path / "capture"
    repo = with_capture(make_repo({"mlp": None}), "mlp", sink, sample_rate=RATE, max_file_age_s=1)
    srv = start_server(repo)
    sent: dict[str, np.ndarray] = {}
    answers: dict[str, np.ndarray] = {}
    failed: set[str] = set()
    lock = threading.Lock()

    def client(t: int):
        local = np.random.default_rng(t)
        for i in range(60):
            rid = f"t{t}-{i}"
            if i % 20 == 7:
                # A wrong shape: a 400, captured whatever the rate.
                r = ferro.post_json(srv.addr, "/v2/models/mlp/infer", infer_body(rid, np.zeros((1, 3), np.float32)))
                assert r.status == 400, r.body
                with lock:
                    failed.add(rid)
                continue
            x = local.standard_normal((1 + i % 3, 64)).astype(np.float32)
            r = ferro.post_json(srv.addr, "/v2/models/mlp/infer", infer_body(rid, x))
            assert r.status == 200, r.body
            out = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(x.shape[0], 10)
            with lock:
                sent[rid] = x
                answers[rid] = out

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    expected = {rid for rid in sent if sampled(rid, RATE)} | failed
    # Files close after a second open: wait for the counters to account for
    # every sample offered, then compare them with the files.
    deadline = time.monotonic() + 30
    while True:
        m = ferro.scrape(srv.addr)
        labels = {"endpoint": "mlp", "deployment": "default"}
        written = m.value("ferroserve_capture_samples_total", **labels)
        dropped = sum(m.value("ferroserve_capture_dropped_total", reason=r, **labels)
                      for r in ("queue_full", "write_error"))
        if written + dropped == len(expected):
            break
        assert time.monotonic() < deadline, f"written {written} + dropped {dropped} != offered {len(expected)}"
        time.sleep(0.2)
    assert dropped == 0
    assert m.value("ferroserve_capture_files_total", **labels) == len(final_files(sink))
    assert m.value("ferroserve_capture_bytes_total", **labels) == sum(p.stat().st_size for p in final_files(sink))
    assert srv.stop() == 0

    files = final_files(sink)
    assert files, f"no capture files under {sink}"
    for f in files:
        rel = f.relative_to(sink).parts
        assert rel[:2] == ("mlp", "default") and len(rel) == 7, rel
    assert not list(sink.rglob(".*.tmp")), "temporary files left after a graceful shutdown"
    # pandas reads the whole partitioned folder as it is.
    df = pd.read_parquet(sink)
    assert set(df["request_id"]) == expected
    assert len(df) == sum(len(sent[r]) for r in expected if r in sent) + len(failed)
    feature_cols = [f"input_{j}" for j in range(64)]
    out_cols = [f"probabilities_{j}" for j in range(10)]
    for row in df.itertuples(index=False):
        rid, r = row.request_id, row.row
        d = row._asdict()
        if rid in failed:
            assert d["status"] == 400 and "expected shape" in d["error"]
            assert all(pd.isna(d[c]) for c in out_cols)
            continue
        assert d["status"] == 200 and d["endpoint"] == "mlp" and d["model_version"] == "1"
        np.testing.assert_array_equal(np.array([d[c] for c in feature_cols], np.float32), sent[rid][r])
        np.testing.assert_allclose(np.array([d[c] for c in out_cols], np.float32), answers[rid][r], rtol=1e-6)
    # pyarrow reads each file on its own too, with the declared types.
    table = pq.read_table(files[0])
    assert str(table.schema.field("input_0").type) == "float"
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"


def test_a_kill_9_while_writing_leaves_every_closed_file_readable(make_repo, tmp_path):
    sink = tmp_path / "capture"
    repo = with_capture(make_repo({"mlp": None}), "mlp", sink, max_file_age_s=1)
    srv = ferro.Server(repo)
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            x = np.full((2, 64), i % 7, np.float32)
            try:
                ferro.post_json(srv.addr, "/v2/models/mlp/infer", infer_body(f"k{i}", x), timeout=5)
            except OSError:
                return  # the server is gone
            i += 1

    t = threading.Thread(target=load)
    t.start()
    deadline = time.monotonic() + 60
    while len(final_files(sink)) < 2:
        assert time.monotonic() < deadline, "no capture files were closed"
        time.sleep(0.1)
    srv.kill()  # SIGKILL
    stop.set()
    t.join()
    files = final_files(sink)
    assert len(files) >= 2
    for f in files:
        table = pq.read_table(f)
        assert table.num_rows > 0, f
        assert set(table.column("row").to_pylist()) <= {0, 1}


def test_a_sink_that_cannot_be_written_stops_the_server_naming_it(make_repo, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sink = blocker / "capture"
    repo = with_capture(make_repo({"mlp": None}), "mlp", sink)
    p = ferro.cli("serve", "--repo", repo, "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
                  check=False, timeout=120)
    assert p.returncode != 0
    assert str(sink) in p.stderr + p.stdout, p.stderr


@pytest.mark.parametrize("edit, key", [("sample_rate = 2", "capture.sample_rate"), ("keep = [\"body\"]", "capture.keep[0]")])
def test_a_bad_capture_section_names_the_key(make_repo, tmp_path, edit, key):
    repo = make_repo({"mlp": None})
    manifest = repo / "mlp" / "1" / "bundle.toml"
    manifest.write_text(manifest.read_text() + f"\n[capture]\nsink = \"{tmp_path}\"\n{edit}\n")
    p = ferro.cli("serve", "--repo", repo, "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
                  check=False, timeout=120)
    assert p.returncode != 0
    assert key in p.stderr + p.stdout, p.stderr
