#!/usr/bin/env bash
# What batch scoring achieves (issue 18): `ferroserve batch` over Parquet
# files of conv (compute-bound) and of the MLP (reading, conversion and
# writing dominate) against ONNX Runtime in-process (the onnxruntime wheel,
# the same library) on the same rows, at the same batch size and threads,
# measured in the same run; then peak memory (max RSS) scoring the MLP over
# a file and over one ten times larger. CONV_ROWS and MLP_ROWS set the sizes,
# ROUNDS (default 2) the rounds per model.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-env.sh >/dev/null
if ! ls examples/models/conv/*/bundle.toml examples/models/mlp/*/bundle.toml >/dev/null 2>&1; then
  .venv/bin/python examples/generate.py
fi
cargo build --release --locked -p ferroserve 2>&1 | tail -1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo"
cp -r examples/models/conv examples/models/mlp "$work/repo/"
FERROSERVE_BIN="$PWD/target/release/ferroserve" .venv/bin/python - "$work" <<'PY'
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, onnxruntime as ort

work = Path(sys.argv[1]); repo = work / "repo"; binary = os.environ["FERROSERVE_BIN"]
conv_rows = int(os.environ.get("CONV_ROWS", "6000")); mlp_rows = int(os.environ.get("MLP_ROWS", "200000"))
rng = np.random.default_rng(0)

def write(name, table):
    # Row groups of 64 Ki rows, as a dataset's files would have: a reader
    # holds a row group's column chunks, so memory follows the row group, and
    # both sizes below have the same.
    d = work / name; d.mkdir(); pq.write_table(table, d / "part-0.parquet", row_group_size=65536); return d

def batch(data, model, out):
    """Runs ferroserve batch; returns its summary and its peak RSS in MiB (the
    summary's VmHWM: getrusage would count this Python's pages from before
    the exec)."""
    r = subprocess.run([binary, "batch", "--repo", str(repo), "--model", model, "--input", str(data / "*.parquet"),
                        "--output", str(out), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc, doc["peak_rss_mib"]

def reference(model, x, batch_size, threads):
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    s = ort.InferenceSession(str(repo / model / "1" / "model.onnx"), o, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: x[:batch_size]})
    t = time.perf_counter()
    for i in range(0, len(x), batch_size):
        s.run(None, {name: x[i:i + batch_size]})
    return len(x) / (time.perf_counter() - t)

img = rng.uniform(-1, 1, (conv_rows, 3 * 32 * 32)).astype(np.float32)
conv = write("conv", pa.table({"image": pa.array(list(img), type=pa.list_(pa.float32()))}))
x = rng.standard_normal((mlp_rows, 64)).astype(np.float32)
mlp = write("mlp", pa.table({f"input_{j}": x[:, j] for j in range(64)}))
print(f"ferroserve batch over Parquet (release build) against ONNX Runtime in-process on the same rows, same batch and threads")
print("(ORT measured just before and just after each batch run; the ratio is against their mean)")
print(f"{'model':<6} {'rows':>8} {'batch rows/s':>13} {'ORT before':>11} {'ORT after':>10} {'ratio':>6}  (batch size, intra-op threads)")
for model, data, arr, bs, threads in [("conv", conv, img.reshape(-1, 3, 32, 32), 32, 2), ("mlp", mlp, x, 32, 1)]:
    for round in range(int(os.environ.get("ROUNDS", "2"))):
        before = reference(model, arr, bs, threads)
        doc, _ = batch(data, model, work / f"out-{model}-{round}")  # a fresh folder: no ledger to skip by
        after = reference(model, arr, bs, threads)
        got, ref = doc["rows_per_second"], (before + after) / 2
        print(f"{model:<6} {doc['rows_scored']:>8} {got:>13.0f} {before:>11.0f} {after:>10.0f} {got / ref:>6.3f}  ({bs}, {threads})")

big = rng.standard_normal((mlp_rows * 10, 64)).astype(np.float32)
mlp10 = write("mlp10", pa.table({f"input_{j}": big[:, j] for j in range(64)}))
del big
doc1, peak1 = batch(mlp, "mlp", work / "mem-1")
doc10, peak10 = batch(mlp10, "mlp", work / "mem-10")
size = lambda d: sum(f.stat().st_size for f in d.glob("*.parquet")) / 2**20
print(f"peak memory (max RSS): {doc1['rows_scored']} rows ({size(mlp):.0f} MiB of Parquet) {peak1:.0f} MiB; "
      f"{doc10['rows_scored']} rows ({size(mlp10):.0f} MiB) {peak10:.0f} MiB; ratio {peak10 / peak1:.2f}")
PY
