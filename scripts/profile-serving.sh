#!/usr/bin/env bash
# Profiles the server under the serving benchmark's loads with perf and draws
# a flame graph per load (inferno), so the cost per request can be read off:
#   conv-batched  32-row binary requests, concurrency 2
#   conv-single   1-row binary requests, concurrency 64
#   mlp-http      1-row binary requests, concurrency 32
#   mlp-json      1-row JSON requests, concurrency 32
#   mlp-grpc      1-row gRPC requests, concurrency 32
# Writes target/profile/<load>.{folded,svg} and a per-load summary of where
# the server's samples went (target/profile/<load>.txt). Needs perf (Debian's
# linux-perf) and inferno (`cargo install inferno`); installs them if missing.
# PROFILE_SECS sets how long each load is recorded (default 8 s); the
# arguments, if any, pick loads by name.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/listening.sh

secs="${PROFILE_SECS:-8}"
out=target/profile
mkdir -p "$out"

if ! command -v perf >/dev/null; then
  apt-get install -y linux-perf >/dev/null
fi
if ! command -v inferno-collapse-perf >/dev/null; then
  cargo install --locked inferno >/dev/null
fi
for model in conv mlp; do
  if ! ls examples/models/"$model"/*/bundle.toml >/dev/null 2>&1; then
    .venv/bin/python examples/generate.py
    break
  fi
done
# The bench profile keeps symbols (debuginfo) in an optimised build.
cargo build --profile bench --locked -p ferroserve
bin=target/release/ferroserve

log=$(mktemp)
"$bin" serve --repo examples/models --host 127.0.0.1 --http-port 0 --grpc-port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
http=$(listening_addr "$log" HTTP)
grpc=$(listening_addr "$log" gRPC)

loads=("$@")
[ ${#loads[@]} -gt 0 ] || loads=(conv-batched conv-single mlp-http mlp-json mlp-grpc)

for load in "${loads[@]}"; do
  case "$load" in
    conv-batched) args=(--url "http://$http" --model conv --binary --concurrency 2 --input "$out/conv32.json") ;;
    conv-single)  args=(--url "http://$http" --model conv --binary --concurrency 64) ;;
    mlp-http)     args=(--url "http://$http" --model mlp --binary --concurrency 32) ;;
    mlp-json)     args=(--url "http://$http" --model mlp --concurrency 32) ;;
    mlp-grpc)     args=(--url "http://$grpc" --model mlp --protocol grpc --concurrency 32 --input "$out/mlp1.json") ;;
    *) echo "error: unknown load '$load'" >&2; exit 2 ;;
  esac
  if [ ! -f "$out/mlp1.json" ]; then
    # Fixed inputs: a 32-row conv batch, and one MLP row for gRPC (whose
    # load generator does not shape random inputs from metadata).
    .venv/bin/python - "$out" <<'EOF'
import json, random, sys
random.seed(1)
def request(name, shape):
    n = 1
    for d in shape:
        n *= d
    data = [round(random.uniform(-1, 1), 4) for _ in range(n)]
    return {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}
json.dump(request("image", [32, 3, 32, 32]), open(f"{sys.argv[1]}/conv32.json", "w"))
json.dump(request("input", [1, 64]), open(f"{sys.argv[1]}/mlp1.json", "w"))
EOF
  fi
  echo "== $load"
  "$bin" loadtest "${args[@]}" --warmup 2s --duration "$((secs + 3))s" --json >"$out/$load.load.json" &
  client=$!
  sleep 2.5
  perf record -F 997 -g --call-graph dwarf,16384 -p "$server" -o "$out/$load.data" -- sleep "$secs" 2>/dev/null
  wait $client
  perf script -i "$out/$load.data" 2>/dev/null | inferno-collapse-perf --all >"$out/$load.folded"
  inferno-flamegraph --title "ferroserve: $load" <"$out/$load.folded" >"$out/$load.svg"
  python3 scripts/profile_summary.py "$out/$load.folded" "$out/$load.load.json" | tee "$out/$load.txt"
  rm -f "$out/$load.data"
done
