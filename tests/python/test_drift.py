"""Drift: `ferroserve baseline` over real training data stored in the
registry, a real server scoring windows of production traffic against it,
every statistic checked against scipy on the same data, the events of a
stream that shifts and comes back, and `ferroserve drift` over the
capture files offline."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats as sps
from scipy.spatial import distance

import ferro

FEATURES = [f"f{i}" for i in range(64)]
TRAIN_ROWS = 20000


def training_data(path: Path, seed: int = 0) -> np.ndarray:
    """64 float32 features; f1 takes 5 values (a categorical feature)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((TRAIN_ROWS, 64)).astype(np.float32)
    x[:, 1] = rng.choice([0, 1, 2, 3, 4], size=TRAIN_ROWS, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(FEATURES)}), path)
    return x


def ferroserve(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(ferro.server_binary()), *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"ferroserve {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def append(repo: Path, text: str):
    manifest = repo / "mlp" / "1" / "bundle.toml"
    manifest.write_text(manifest.read_text() + "\n" + text + "\n")


def send(srv, x: np.ndarray, rows_per_request: int = 25, prefix: str = "r"):
    for i, start in enumerate(range(0, len(x), rows_per_request)):
        part = x[start:start + rows_per_request]
        body = {"id": f"{prefix}{i}", "inputs": [{"name": "input", "shape": list(part.shape), "datatype": "FP32",
                                               "data": part.ravel().tolist()}]}
        r = ferro.post_json(srv.addr, "/v2/models/mlp/infer", body)
        assert r.status == 200, r.body


def drift_report(srv, windows: int, deadline_s: float = 60.0) -> dict:
    """The report once `windows` windows have closed (the capture writer
    may still be feeding the last one)."""
    end = time.monotonic() + deadline_s
    while True:
        r = ferro.request(srv.addr, "GET", "/v2/models/mlp/drift")
        assert r.status == 200, r.body
        doc = r.json()
        if doc["windows_closed"] >= windows or time.monotonic() > end:
            assert doc["windows_closed"] >= windows, doc
            return doc
        time.sleep(0.1)


def bins_of(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The server's slots: 0 below, k for [e[k-1], e[k]), last bin closed, len(e) above."""
    k = np.searchsorted(edges, x, side="right")
    k[(k == len(edges)) & (x == edges[-1])] = len(edges) - 1
    return k


def by_name(report: dict, name: str) -> dict:
    return next(f for f in report["features"] if f["name"] == name)


def score(feature: dict, method: str) -> dict:
    return next(s for s in feature["scores"] if s["method"] == method)


def test_window_scores_agree_with_scipy(make_repo, start_server, tmp_path):
    repo = make_repo({"mlp": None})
    append(repo, "[drift]\nwindow_rows = 2000\nobserve = \"all\"")
    train = training_data(tmp_path / "train.parquet")
    out = ferroserve("baseline", "--data", str(tmp_path / "train.parquet"), "--repo", str(repo),
                     "--model", "mlp:1", "--json")
    baseline = json.loads(out.stdout)["baseline"]
    # The registry keeps it with the file's name, rows and SHA-256.
    db = sqlite3.connect(repo / "registry.db")
    row = db.execute("SELECT data_name, data_rows, data_sha256 FROM baselines WHERE model='mlp' AND version=1").fetchone()
    assert row == ("train.parquet", TRAIN_ROWS, hashlib.sha256((tmp_path / "train.parquet").read_bytes()).hexdigest())
    assert [f["name"] for f in baseline["features"]] == FEATURES
    assert [f["name"] for f in baseline["outputs"]] == [f"probabilities_{j}" for j in range(10)]
    f0 = baseline["features"][0]["stats"]
    assert f0["kind"] == "numeric" and len(f0["counts"]) == int(np.ceil(np.log2(TRAIN_ROWS))) + 1
    assert np.isclose(f0["mean"], train[:, 0].astype(np.float64).mean(), atol=1e-9)
    assert np.isclose(f0["std"], train[:, 0].astype(np.float64).std(), atol=1e-9)
    assert baseline["features"][1]["stats"]["kind"] == "categorical"

    srv = start_server(repo)
    rng = np.random.default_rng(1)
    cur = rng.standard_normal((2000, 64)).astype(np.float32)
    cur[:, 0] += 0.5
    cur[:, 1] = rng.choice([0, 1, 2, 3, 4, 7], size=2000, p=[0.2, 0.2, 0.2, 0.2, 0.1, 0.1])
    send(srv, cur)
    report = drift_report(srv, 1)
    assert report["window"]["rows"] == 2000
    assert report["baseline"]["data"] == "train.parquet"

    # Numeric f0: PSI and Jensen-Shannon exact on the baseline's bins.
    ref, now = train[:, 0].astype(np.float64), cur[:, 0].astype(np.float64)
    edges = np.array(f0["edges"])
    slots = np.bincount(bins_of(edges, now), minlength=len(edges) + 1)
    coarse = slots[1:len(edges)].copy()
    coarse[0] += slots[0]
    coarse[-1] += slots[len(edges)]
    p, q = np.array(f0["counts"]) / TRAIN_ROWS, coarse / coarse.sum()
    pe, qe = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    psi = float(np.sum((qe - pe) * np.log(qe / pe)))
    got = by_name(report, "f0")
    assert abs(score(got, "psi")["value"] - psi) < 1e-6
    assert abs(score(got, "jensenshannon")["value"] - distance.jensenshannon(p, q)) < 1e-6
    chi = sps.chisquare(coarse, p * coarse.sum())
    assert abs(score(got, "chisquare")["statistic"] - chi.statistic) < 1e-6 * max(1, chi.statistic)
    assert abs(score(got, "chisquare")["value"] - chi.pvalue) < 1e-6
    # KS and Wasserstein on the fine bins: within the stated binning error.
    ks = score(got, "ks")
    exact = sps.ks_2samp(ref, now)
    assert ks["statistic"] <= exact.statistic + 1e-12
    assert exact.statistic - ks["statistic"] <= ks["error_bound"] + 1e-12, (exact.statistic, ks)
    en = TRAIN_ROWS * 2000 / (TRAIN_ROWS + 2000)
    assert abs(ks["value"] - sps.kstwobign.sf(ks["statistic"] * np.sqrt(en))) < 1e-6
    w = score(got, "wasserstein")
    w_exact = sps.wasserstein_distance(ref, now) / ref.std()
    assert abs(w["value"] - w_exact) <= w["error_bound"] + 1e-12, (w, w_exact)
    assert w["error_bound"] < 0.02, w  # 1000 fine bins keep the error small
    assert got["method"] == "wasserstein" and got["threshold"] == 0.1 and got["drifted"] is True

    # Categorical f1: PSI, Jensen-Shannon, chi-square on its categories
    # (and an "unseen" slot for the 7 it never saw).
    cats = baseline["features"][1]["stats"]["values"]
    keys = [c["value"] for c in cats]
    ref_counts = np.array([c["count"] for c in cats] + [0])
    cur_counts = np.array([np.sum(cur[:, 1] == k) for k in keys] + [np.sum(~np.isin(cur[:, 1], keys))])
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    got = by_name(report, "f1")
    assert got["kind"] == "categorical" and got["method"] == "jensenshannon"
    assert abs(score(got, "jensenshannon")["value"] - distance.jensenshannon(p, q)) < 1e-6
    pe, qe = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    assert abs(score(got, "psi")["value"] - float(np.sum((qe - pe) * np.log(qe / pe)))) < 1e-6
    seen = cur_counts[:-1]
    chi = sps.chisquare(seen, p[:-1] * seen.sum())
    assert abs(score(got, "chisquare")["value"] - chi.pvalue) < 1e-6
    assert got["drifted"] is True
    assert abs(got["quality"]["unseen_rate"] - 0.1) < 0.03

    # The others did not drift; outputs are scored too.
    drifted = sorted(f["name"] for f in report["features"] if f["drifted"])
    assert drifted == ["f0", "f1"], drifted
    assert [f["name"] for f in report["outputs"]] == [f"probabilities_{j}" for j in range(10)]
    # The gauges say the same.
    metrics = ferro.request(srv.addr, "GET", "/metrics").body.decode()
    line = next(l for l in metrics.splitlines()
                if l.startswith("ferroserve_drift_score{") and 'feature="f0"' in l and 'method="wasserstein"' in l
                and 'side="input"' in l)
    assert abs(float(line.rsplit(" ", 1)[1]) - w["value"]) < 1e-9
    assert 'ferroserve_drift_detected{deployment="default",endpoint="mlp",feature="f0",side="input"} 1' in metrics


def events(repo: Path, kind: str) -> list[dict]:
    db = sqlite3.connect(repo / "registry.db")
    rows = db.execute("SELECT detail FROM audit_log WHERE action = ? ORDER BY id", (kind,)).fetchall()
    docs = [json.loads(r[0]) for r in rows]
    # Each audit row is the whole CloudEvent.
    assert all(d["type"] == kind and d["subject"] == "mlp/default" for d in docs), docs
    return [d["data"] for d in docs]


def test_a_shift_halfway_fires_one_detected_and_one_resolved(make_repo, start_server, tmp_path):
    """Captured requests feed the window (off the request path); f3 shifts
    in windows 3 and 4 and comes back in 5 and 6."""
    sink = tmp_path / "capture"
    repo = make_repo({"mlp": None})
    append(repo, f"[capture]\nsink = {json.dumps(str(sink))}\nmax_file_age_s = 1\n\n[drift]\nwindow_rows = 2000")
    training_data(tmp_path / "train.parquet")
    ferroserve("baseline", "--data", str(tmp_path / "train.parquet"), "--repo", str(repo), "--model", "mlp",
               "--no-outputs")
    srv = start_server(repo)
    rng = np.random.default_rng(7)
    for w in range(6):
        x = rng.standard_normal((2000, 64)).astype(np.float32)
        x[:, 1] = rng.choice([0, 1, 2, 3, 4], size=2000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
        if w in (2, 3):
            x[:, 3] += 1.0
        send(srv, x, prefix=f"w{w}-")
        doc = drift_report(srv, w + 1)
        assert by_name(doc, "f3")["drifted"] is (w in (2, 3)), (w, by_name(doc, "f3"))
        assert doc["observed"] == "captured"
        others = [f["name"] for f in doc["features"] if f["drifted"] and f["name"] != "f3"]
        assert others == [], (w, others, [(f["name"], f["score"], f["quality"]) for f in doc["features"] if f["name"] in others], doc["window"])
    # The audit log receives every event through the bus's writer thread.
    end = time.monotonic() + 30
    while len(events(repo, "io.ferroserve.drift.resolved")) < 1 and time.monotonic() < end:
        time.sleep(0.1)
    detected = events(repo, "io.ferroserve.drift.detected")
    resolved = events(repo, "io.ferroserve.drift.resolved")
    assert [(e["feature"], e["side"]) for e in detected] == [("f3", "input")], detected
    assert [(e["feature"], e["side"]) for e in resolved] == [("f3", "input")], resolved
    assert detected[0]["method"] == "wasserstein" and detected[0]["score"] >= 0.1
    assert resolved[0]["score"] < 0.1
    assert srv.stop() == 0

    # Offline over the capture files: 12000 rows, a third of them shifted.
    html = tmp_path / "drift.html"
    r = ferroserve("drift", "--repo", str(repo), "--model", "mlp:1", "--capture", str(sink), "--json",
                   "--html", str(html), check=False)
    assert r.returncode == 1, r.stderr  # a feature drifted
    offline = json.loads(r.stdout)
    assert offline["window"]["rows"] == 12000
    assert [f["name"] for f in offline["features"] if f["drifted"]] == ["f3"]
    page = html.read_text()
    assert page.count("<svg") == 64 and "f3 (numeric): <span class=\"drift\">drift</span>" in page
    # A time range before any capture has no rows: a clear error.
    r = ferroserve("drift", "--repo", str(repo), "--model", "mlp", "--capture", str(sink),
                   "--to", "2000-01-01T00:00:00Z", check=False)
    assert r.returncode == 1 and "no captured rows" in r.stderr, r.stderr
    table = ferroserve("drift", "--repo", str(repo), "--model", "mlp", "--capture", str(sink), check=False)
    assert "DRIFT" in table.stdout and "1 of 64 features drifted" in table.stdout, table.stdout


def test_a_time_window_closes_on_time_without_another_request(make_repo, start_server, tmp_path):
    """window_s = 1 and a window of rows the traffic never fills: the 75 rows
    sent make one window, closed by the server's clock (no later request
    closes it), and the next window counts from its own first row."""
    repo = make_repo({"mlp": None})
    append(repo, "[drift]\nwindow_rows = 1000000\nwindow_s = 1\nobserve = \"all\"")
    training_data(tmp_path / "train.parquet")
    ferroserve("baseline", "--data", str(tmp_path / "train.parquet"), "--repo", str(repo), "--model", "mlp",
               "--no-outputs")
    srv = start_server(repo)
    rng = np.random.default_rng(3)
    send(srv, rng.standard_normal((75, 64)).astype(np.float32))
    doc = drift_report(srv, 1, deadline_s=30)
    assert doc["window"]["rows"] == 75, doc["window"]
    assert doc["open_window"]["rows"] == 0 and doc["open_window"]["closes_after_seconds"] == 1.0
    # Quiet for longer than a window: nothing closes without rows.
    time.sleep(2.5)
    assert ferro.request(srv.addr, "GET", "/v2/models/mlp/drift").json()["windows_closed"] == 1
    send(srv, rng.standard_normal((10, 64)).astype(np.float32), prefix="again")
    doc = drift_report(srv, 2, deadline_s=30)
    assert doc["window"]["rows"] == 10, doc["window"]
    assert srv.stop() == 0


def test_baseline_errors_name_what_is_wrong(make_repo, tmp_path):
    repo = make_repo({"mlp": None})
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]}), tmp_path / "few.parquet")
    r = ferroserve("baseline", "--data", str(tmp_path / "few.parquet"), "--repo", str(repo), "--model", "mlp",
                   check=False)
    assert r.returncode == 1
    assert "takes 64 values per row, but the data has 2 feature columns" in r.stderr and '["a", "b"]' in r.stderr, r.stderr
    assert "panicked" not in r.stderr
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    r = ferroserve("baseline", "--data", str(tmp_path / "x.txt"), "--repo", str(repo), "--model", "mlp", check=False)
    assert r.returncode == 1 and "expected a .parquet or .csv file" in r.stderr, r.stderr
    r = ferroserve("baseline", "--data", str(tmp_path / "few.parquet"), "--repo", str(repo), "--model", "mlp:9",
                   check=False)
    assert r.returncode == 1 and "mlp:9" in r.stderr, r.stderr
    # A CSV with the feature names of the bundle works, and names them.
    names = [f"px{i}" for i in range(64)]
    manifest = repo / "mlp" / "1" / "bundle.toml"
    manifest.write_text(manifest.read_text().replace('shape = [-1, 64]\n', f'shape = [-1, 64]\nfeature_names = {json.dumps(names)}\n', 1))
    x = np.random.default_rng(3).standard_normal((300, 64))
    (tmp_path / "t.csv").write_text(",".join(names) + "\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in x))
    r = ferroserve("baseline", "--data", str(tmp_path / "t.csv"), "--repo", str(repo), "--model", "mlp", "--json")
    b = json.loads(r.stdout)["baseline"]
    assert [f["name"] for f in b["features"]] == names and b["data"]["rows"] == 300
