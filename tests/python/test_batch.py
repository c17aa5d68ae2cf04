"""`ferroserve batch` (issue 18): the real binary over real Parquet, CSV,
JSON Lines and NumPy files, its outputs read back with pyarrow and compared with ONNX
Runtime run in-process on the same rows; bad rows, a backend that rejects
rows, a kill -9 and a restart, shards, and bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ferro

PYTHON = ferro.python_interpreter()
PROBS = [f"probabilities_{j}" for j in range(10)]


def batch(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(ferro.server_binary()), "batch", *map(str, args)], capture_output=True, text=True,
                       timeout=600)
    if check:
        assert r.returncode == 0, f"batch {' '.join(map(str, args))} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def summary(*args, check: bool = True) -> tuple[dict, subprocess.CompletedProcess]:
    r = batch(*args, "--json", check=check)
    return json.loads(r.stdout), r


def mlp_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)


def frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({f"input_{j}": x[:, j] for j in range(x.shape[1])})


def mlp_reference(repo: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)


def test_every_format_scores_as_onnxruntime_does(make_repo, tmp_path):
    repo = make_repo({"mlp": None})
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    x = {name: mlp_rows(n, seed) for seed, (name, n) in enumerate([("a", 700), ("b", 333), ("c", 95), ("d", 41)])}
    pq.write_table(pa.Table.from_pandas(frame(x["a"]).assign(key=[f"k{i}" for i in range(700)])),
                   data / "a.parquet", row_group_size=256)
    frame(x["b"]).to_csv(data / "b.csv", index=False, float_format="%.9g")
    frame(x["c"]).to_json(data / "sub" / "c.jsonl", orient="records", lines=True, double_precision=15)
    np.save(data / "d.npy", x["d"])  # a 2-D array: one column per value, in order
    for fmt in ["parquet", "csv", "jsonl"]:
        out = tmp_path / f"out-{fmt}"
        doc, _ = summary("--repo", repo, "--model", "mlp:1", "--input", data / "*.*", "--input",
                         data / "sub" / "*.jsonl", "--output", out, "--format", fmt)
        assert doc["files"] == 4 and doc["files_scored"] == 4 and doc["rows_scored"] == 700 + 333 + 95 + 41, doc
        assert doc["rows_in_error"] == 0 and doc["files_failed"] == 0
        for name, rel in [("a", f"a.{fmt}"), ("b", f"b.{fmt}"), ("c", f"c.{fmt}"), ("d", f"d.{fmt}")]:
            got = read_output(out / rel)
            assert got["row"].tolist() == list(range(len(x[name]))), (fmt, name)  # input order
            want = mlp_reference(repo, x[name])
            # Parquet and JSON Lines keep FP32 exactly; CSV prints it with
            # enough digits to read it back.
            np.testing.assert_allclose(got[PROBS].to_numpy(np.float32), want, rtol=1e-6, atol=1e-7,
                                       err_msg=f"{fmt} {name}")
        assert not list(out.glob(".*.tmp")), list(out.iterdir())
    # --id-column copies the file's own ids, and --map names the columns.
    cols = [f"input_{j}" for j in range(64)]
    out = tmp_path / "out-ids"
    summary("--repo", repo, "--model", "mlp", "--input", data / "a.parquet", "--output", out,
            "--id-column", "key", "--map", "input=" + ",".join(cols))
    got = pq.read_table(out / "a.parquet").to_pandas()
    assert got["key"].tolist() == [f"k{i}" for i in range(700)]
    np.testing.assert_array_equal(got[PROBS].to_numpy(np.float32), mlp_reference(repo, x["a"]))


def test_an_image_array_feeds_a_non_tabular_input(make_repo, tmp_path):
    """A 4-D .npy (rows, 3, 32, 32) is one list column `x`, named for conv's
    input by --map; a Parquet list column named as the input needs no map."""
    repo = make_repo({"conv": None})
    img = np.random.default_rng(8).uniform(-1, 1, (70, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    pq.write_table(pa.table({"image": pa.array(list(img.reshape(70, -1)), type=pa.list_(pa.float32()))}),
                   tmp_path / "img.parquet")
    s = ort.InferenceSession(str(repo / "conv" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    want = s.run(None, {"image": img})[0]
    for name, extra in [("img.npy", ["--map", "image=x"]), ("img.parquet", [])]:
        out = tmp_path / f"out-{name}"
        summary("--repo", repo, "--model", "conv", "--input", tmp_path / name, "--output", out, *extra)
        got = pq.read_table(out / "img.parquet").to_pandas()
        np.testing.assert_allclose(got[[f"logits_{j}" for j in range(10)]].to_numpy(np.float32), want, rtol=1e-5,
                                   atol=1e-5, err_msg=name)


def test_an_entry_script_bundle_scores_through_its_worker(tmp_path):
    repo = tmp_path / "repo"
    ferro.cli("register", ferro.BUNDLES / "faulty", "--repo", repo, "--name", "faulty", "--python", PYTHON)
    rng = np.random.default_rng(5)
    v = rng.standard_normal((200, 16)).astype(np.float32)
    pq.write_table(pa.table({"values": pa.array(list(v), type=pa.list_(pa.float32()))}), tmp_path / "v.parquet")
    doc, _ = summary("--repo", repo, "--model", "faulty", "--input", tmp_path / "v.parquet", "--output",
                     tmp_path / "out")
    assert doc["rows_scored"] == 200
    got = pq.read_table(tmp_path / "out" / "v.parquet").to_pandas()
    x = v.astype(np.float64)
    mean, std = x.mean(axis=1), x.std(axis=1)
    np.testing.assert_allclose(got["summary_0"], mean.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(got["summary_1"], std.astype(np.float32), rtol=1e-6)
    norm = ((x - mean[:, None]) / std[:, None]).astype(np.float32)
    np.testing.assert_allclose(got[[f"normalized_{j}" for j in range(16)]].to_numpy(np.float32), norm, rtol=1e-5,
                               atol=1e-6)


def test_a_raw_style_script_gets_each_line_as_its_request_body(tmp_path):
    """iris is raw style (Azure ML's run(raw_data)): each JSON Lines line is
    one call's body, its answer the row's `result`; a body run() refuses is
    an error row."""
    repo = tmp_path / "repo"
    ferro.cli("register", ferro.EXAMPLES / "iris" / "1", "--repo", repo, "--name", "iris", "--python", PYTHON)
    x = np.random.default_rng(9).uniform(0, 7, (30, 4)).round(2)
    lines = [json.dumps({"data": [row.tolist()]}) for row in x]
    lines.insert(12, json.dumps({"data": "nope"}))
    (tmp_path / "bodies.jsonl").write_text("\n".join(lines) + "\n")
    doc, _ = summary("--repo", repo, "--model", "iris", "--input", tmp_path / "bodies.jsonl", "--output",
                     tmp_path / "out", "--max-retries", "0", "--python", PYTHON)
    assert doc["rows"] == 31 and doc["rows_scored"] == 30 and doc["rows_in_error"] == 1, doc
    got = pq.read_table(tmp_path / "out" / "bodies.parquet").to_pandas()
    assert got["row"].tolist() == [i for i in range(31) if i != 12]
    m = json.loads((ferro.EXAMPLES / "iris" / "1" / "model.json").read_text())
    z = x @ np.array(m["coef"]).T + np.array(m["intercept"])
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    answers = [json.loads(r) for r in got["result"]]
    np.testing.assert_allclose([a["probabilities"][0] for a in answers], p, rtol=1e-9)
    assert [a["labels"][0] for a in answers] == [m["labels"][k] for k in p.argmax(axis=1)]
    error = json.loads((tmp_path / "out" / "bodies.errors.jsonl").read_text())
    assert error["row"] == 12 and "nope" in error["reason"], error


def test_bad_rows_go_to_the_errors_file_and_the_rest_is_scored(tmp_path):
    """Rows that cannot be converted (null, text, NaN) and rows the backend
    rejects (the faulty bundle raises on values[0] = 666, failing the
    whole batch, which is split until the row is found)."""
    repo = tmp_path / "repo"
    ferro.cli("register", ferro.BUNDLES / "faulty", "--repo", repo, "--name", "faulty", "--python", PYTHON)
    rng = np.random.default_rng(6)
    v = rng.standard_normal((100, 16))
    df = pd.DataFrame({f"v{j}": v[:, j] for j in range(16)}).astype(object)
    df.loc[10, "v3"] = None
    df.loc[20, "v4"] = "oops"
    df.loc[30, "v5"] = "NaN"  # written as the text NaN (an empty cell is a null)
    df.loc[41, "v0"] = 666.0
    df.loc[77, "v0"] = 666.0
    df.to_csv(tmp_path / "bad.csv", index=False)
    cols = ",".join(f"v{j}" for j in range(16))
    doc, r = summary("--repo", repo, "--model", "faulty", "--input", tmp_path / "bad.csv", "--output",
                     tmp_path / "out", "--map", f"values={cols}", "--max-retries", "1")
    assert doc["rows"] == 100 and doc["rows_scored"] == 95 and doc["rows_in_error"] == 5, doc
    assert doc["rows_scored"] + doc["rows_in_error"] == doc["rows"]
    errors = [json.loads(line) for line in (tmp_path / "out" / "bad.errors.jsonl").read_text().splitlines()]
    by_row = {e["row"]: e["reason"] for e in errors}
    assert sorted(by_row) == [10, 20, 30, 41, 77], errors
    assert "v3" in by_row[10] and "null" in by_row[10]
    assert "v4" in by_row[20] and "oops" in by_row[20]
    assert "v5" in by_row[30] and "NaN" in by_row[30]
    assert "666" in by_row[41] and "666" in by_row[77]
    got = pq.read_table(tmp_path / "out" / "bad.parquet").to_pandas()
    assert got["row"].tolist() == [i for i in range(100) if i not in by_row]
    # --error-threshold stops the run, exit 1 with the reason, and leaves no
    # output under a final name for the file it stopped in.
    doc, r = summary("--repo", repo, "--model", "faulty", "--input", tmp_path / "bad.csv", "--output",
                     tmp_path / "out2", "--map", f"values={cols}", "--error-threshold", "2", check=False)
    assert r.returncode == 1 and "error-threshold 2" in doc["stopped"], (r.stdout, r.stderr)
    assert not (tmp_path / "out2" / "bad.parquet").exists()
    assert not list((tmp_path / "out2").glob(".*.tmp"))


def test_bad_numbers_in_parquet_are_error_rows_too(make_repo, tmp_path):
    """Numeric Parquet columns and list columns take the direct path (no
    per-value table): a null, a NaN and a list of the wrong length are
    error rows there as well, with the same reasons."""
    repo = make_repo({"mlp": None, "conv": None})
    x = mlp_rows(50, 11).astype(np.float64)
    cols = {f"input_{j}": pa.array(x[:, j]) for j in range(64)}
    cols["input_7"] = pa.array([None if i == 4 else v for i, v in enumerate(x[:, 7])], type=pa.float64())
    x[9, 2] = np.nan
    cols["input_2"] = pa.array(x[:, 2])
    pq.write_table(pa.table(cols), tmp_path / "m.parquet")
    doc, _ = summary("--repo", repo, "--model", "mlp", "--input", tmp_path / "m.parquet", "--output", tmp_path / "o")
    assert doc["rows_scored"] == 48 and doc["rows_in_error"] == 2, doc
    errors = {e["row"]: e["reason"] for e in map(json.loads, (tmp_path / "o" / "m.errors.jsonl").read_text().splitlines())}
    assert "input_7" in errors[4] and "null" in errors[4], errors
    assert "input_2" in errors[9] and "NaN" in errors[9], errors
    got = pq.read_table(tmp_path / "o" / "m.parquet").to_pandas()
    good = [i for i in range(50) if i not in (4, 9)]
    assert got["row"].tolist() == good
    np.testing.assert_array_equal(got[PROBS].to_numpy(np.float32),
                                  mlp_reference(repo, x[good].astype(np.float32)))
    # --allow-nan lets the NaN row through.
    doc, _ = summary("--repo", repo, "--model", "mlp", "--input", tmp_path / "m.parquet", "--output", tmp_path / "o2",
                     "--allow-nan")
    assert doc["rows_in_error"] == 1, doc
    img = np.random.default_rng(12).uniform(-1, 1, (6, 3072)).astype(np.float32)
    rows = [list(r) for r in img]
    rows[1] = None
    rows[3] = rows[3][:100]
    pq.write_table(pa.table({"image": pa.array(rows, type=pa.list_(pa.float32()))}), tmp_path / "c.parquet")
    doc, _ = summary("--repo", repo, "--model", "conv", "--input", tmp_path / "c.parquet", "--output", tmp_path / "o3")
    errors = {e["row"]: e["reason"] for e in map(json.loads, (tmp_path / "o3" / "c.errors.jsonl").read_text().splitlines())}
    assert sorted(errors) == [1, 3] and "null" in errors[1] and "100 values, expected 3072" in errors[3], errors


def write_parts(data: Path, files: int, rows: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        pq.write_table(pa.Table.from_pandas(frame(mlp_rows(rows, 100 + i))), data / f"part-{i:02d}.parquet")


def test_a_killed_run_restarted_gives_the_same_bytes(make_repo, tmp_path):
    repo = make_repo({"mlp": None})
    data = tmp_path / "data"
    write_parts(data, 12, 20000)
    whole = tmp_path / "whole"
    summary("--repo", repo, "--model", "mlp", "--input", data / "*.parquet", "--output", whole)
    out = tmp_path / "killed"
    p = subprocess.Popen([str(ferro.server_binary()), "batch", "--repo", str(repo), "--model", "mlp", "--input",
                          str(data / "*.parquet"), "--output", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ledger = out / "_ferroserve_batch.json"
    end = time.monotonic() + 120
    while time.monotonic() < end and p.poll() is None:
        if ledger.exists() and len(json.loads(ledger.read_text())["files"]) >= 3:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be killed: give it more rows"
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = len(json.loads(ledger.read_text())["files"])
    assert 3 <= done_before < 12
    # Only whole files under final names.
    for f in out.glob("part-*.parquet"):
        pq.read_table(f)
    doc, _ = summary("--repo", repo, "--model", "mlp", "--input", data / "*.parquet", "--output", out)
    assert doc["files_skipped"] == done_before and doc["files_scored"] == 12 - done_before, doc
    for i in range(12):
        name = f"part-{i:02d}.parquet"
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
        rows = pq.read_table(out / name).column("row").to_pylist()
        assert rows == list(range(20000)), name
    assert not list(out.glob(".*.tmp"))


def test_shards_cover_every_file_once(make_repo, tmp_path):
    repo = make_repo({"mlp": None})
    data = tmp_path / "data"
    write_parts(data, 30, 10)
    seen = []
    by_shard = {}
    for k in range(3):
        doc, _ = summary("--repo", repo, "--model", "mlp", "--input", data / "*.parquet", "--output",
                         tmp_path / "out", "--shard", f"{k}/3")
        by_shard[k] = sorted(d["input"] for d in doc["details"] if d["status"] == "scored")
        assert by_shard[k], f"shard {k}/3 got no files of 30"
        seen += by_shard[k]
    assert sorted(seen) == sorted(f"part-{i:02d}.parquet" for i in range(30))
    assert len(set(seen)) == 30
    # A Kubernetes Indexed Job's pod takes its share from the environment.
    env = dict(os.environ, JOB_COMPLETION_INDEX="1", FERROSERVE_SHARDS="3")
    r = subprocess.run([str(ferro.server_binary()), "batch", "--repo", str(repo), "--model", "mlp", "--input",
                        str(data / "*.parquet"), "--summary-only", "--json", "--output", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(d["input"] for d in doc["details"]) == by_shard[1]
    assert all(d["status"] == "scored" and "output" not in d for d in doc["details"])
    assert not (tmp_path / "none").exists()  # --summary-only writes nothing


def test_bad_arguments_fail_at_once_naming_the_argument(make_repo, tmp_path):
    repo = make_repo({"mlp": None})
    data = tmp_path / "data"
    write_parts(data, 1, 5)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--input", tmp_path / "nothing-*.parquet", "--output", tmp_path / "o"], ["--input", "matches no files"]),
        (["--input", data / "*.parquet", "--output", tmp_path / "afile"], ["--output", "is a file"]),
        (["--input", data / "*.parquet", "--output", tmp_path / "o", "--map", "input=nope"],
         ["--map", "nope"]),
        (["--input", data / "*.parquet", "--output", tmp_path / "o", "--map", "wrong=input_0"],
         ["--map", "no input \"wrong\""]),
        (["--input", data / "*.parquet", "--output", tmp_path / "o", "--shard", "3/3"], ["--shard", "K/N"]),
        (["--input", data / "*.parquet", "--output", tmp_path / "o", "--id-column", "nope"],
         ["--id-column", "nope"]),
    ]
    for args, words in cases:
        r = batch("--repo", repo, "--model", "mlp", *args, check=False)
        assert r.returncode != 0, (args, r.stdout)
        err = r.stderr.strip().splitlines()
        assert err and err[-1].startswith("error:") or "error:" in r.stderr, (args, r.stderr)
        assert "panicked" not in r.stderr and "RUST_BACKTRACE" not in r.stderr, r.stderr
        for w in words:
            assert w in r.stderr, (args, w, r.stderr)
