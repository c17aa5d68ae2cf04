#!/usr/bin/env bash
# What capture and drift cost a request (issue 17): the MLP with 1-row
# requests and conv with 1-row requests (dynamic batching), each against
# two servers on the same machine, one serving the bundles as they are
# (capture off) and one with [capture] sample_rate = 1 and drift on (a
# training baseline recorded with `ferroserve baseline`, windows of 1000
# rows of the captured requests). The two are measured alternately,
# ROUNDS times (default 2), BENCH_SECS each (default 10): req/s, p99 and
# the ratios. SAMPLE_RATE (default 1.0) sets the capture's sample_rate.
# Then drift's own cost per request (benches/drift.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/listening.sh

rounds="${ROUNDS:-2}"
secs="${BENCH_SECS:-10}"
rate="${SAMPLE_RATE:-1.0}"
scripts/setup-env.sh >/dev/null
for model in conv mlp; do
  if ! ls examples/models/"$model"/*/bundle.toml >/dev/null 2>&1; then
    .venv/bin/python examples/generate.py
    break
  fi
done
cargo build --release --locked -p ferroserve 2>&1 | tail -1
bin=target/release/ferroserve

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

for repo in off on; do
  for model in mlp conv; do
    mkdir -p "$work/$repo/$model"
    cp -r examples/models/$model/1 "$work/$repo/$model/1"
  done
done
for model in mlp conv; do
  printf '\n[capture]\nsink = "%s"\nsample_rate = %s\n\n[drift]\nwindow_rows = 1000\n' \
    "$work/capture" "$rate" >>"$work/on/$model/1/bundle.toml"
done
.venv/bin/python - "$work" <<'PY'
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
w = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (20000, 64)).astype(np.float32)
pq.write_table(pa.table({f"input_{j}": x[:, j] for j in range(64)}), f"{w}/mlp.parquet")
img = rng.uniform(-1, 1, (500, 3 * 32 * 32)).astype(np.float32)
pq.write_table(pa.table({"image": pa.array(list(img), type=pa.list_(pa.float32()))}), f"{w}/conv.parquet")
PY
for model in mlp conv; do
  "$bin" baseline --data "$work/$model.parquet" --repo "$work/on" --model $model >/dev/null 2>"$work/baseline-$model.log" ||
    { cat "$work/baseline-$model.log" >&2; exit 1; }
done

start off "$bin" serve --repo "$work/off" --host 127.0.0.1 --http-port 0 --grpc-port 0
start on "$bin" serve --repo "$work/on" --host 127.0.0.1 --http-port 0 --grpc-port 0
off=$(listening_addr "$work/off.log" HTTP)
on=$(listening_addr "$work/on.log" HTTP)
grep -q "drift monitor on" "$work/on.log" || { echo "error: drift is not on" >&2; cat "$work/on.log" >&2; exit 1; }

load() { # addr model concurrency
  "$bin" loadtest --url "http://$1" --model "$2" --binary --concurrency "$3" --duration "${secs}s" --warmup 1s --json 2>/dev/null
}
echo "closed loop, HTTP binary, 1-row requests, ${secs} s each; capture on = sample_rate $rate + drift on captured requests"
printf '%-5s %-6s %12s %10s %12s %10s %8s %8s\n' model round "off req/s" "off p99" "on req/s" "on p99" "thr" "p99"
for spec in "mlp 16" "conv 32"; do
  set -- $spec
  load "$off" "$1" "$2" >/dev/null
  load "$on" "$1" "$2" >/dev/null
  for round in $(seq "$rounds"); do
    a=$(load "$off" "$1" "$2")
    b=$(load "$on" "$1" "$2")
    python3 - "$1" "$round" "$a" "$b" <<'PY'
import json, sys
m, r, a, b = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
ta, tb = a["ok_per_second"], b["ok_per_second"]
pa, pb = a["latency_ms"]["p99"], b["latency_ms"]["p99"]
print(f"{m:<5} {r:<6} {ta:>12.0f} {pa:>8.3f}ms {tb:>12.0f} {pb:>8.3f}ms {tb/ta:>8.3f} {pb/pa:>8.3f}")
PY
  done
done
metrics=$(curl -sf "http://$on/metrics")
echo
echo "$metrics" | grep -E '^ferroserve_(capture_(samples|dropped)_total|drift_windows_total)' || true
cargo bench --locked -q -p ferroserve-monitoring --bench drift 2>/dev/null | grep -v '^$'
