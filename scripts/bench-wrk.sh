#!/usr/bin/env bash
# Measures ferroserve from outside with wrk: 1-row JSON requests (1 x 64 FP32)
# to examples/models/mlp, alternating with the serving benchmark's minimal
# hyper server answering as many bytes as ferroserve does, ROUNDS times
# (default 3), WRK_SECS each (default 5). Prints req/s of both and the ratio
# per round. Needs wrk (Debian's wrk; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/listening.sh

rounds="${ROUNDS:-3}"
secs="${WRK_SECS:-5}"
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null
fi
for model in conv mlp; do
  if ! ls examples/models/"$model"/*/bundle.toml >/dev/null 2>&1; then
    .venv/bin/python examples/generate.py
    break
  fi
done
# The bench executable doubles as the minimal server (FERROSERVE_BENCH_ROLE).
bench=$(cargo bench --locked -p ferroserve --bench serving --no-run 2>&1 |
  grep -o 'target/release/deps/serving-[0-9a-f]*' | tail -1)
bin=target/release/ferroserve
[ -x "$bench" ] && [ -x "$bin" ] || { echo "error: the benchmark did not build" >&2; exit 1; }

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

# Starts a server in the background logging to $work/$1.log (in this shell,
# so that the trap knows its pid).
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

python3 - "$work" <<'EOF'
import json, random, sys
random.seed(1)
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                               "data": [random.uniform(-1, 1) for _ in range(64)]}]})
open(f"{sys.argv[1]}/body.json", "w").write(body)
open(f"{sys.argv[1]}/post.lua", "w").write(
    'wrk.method = "POST"\n'
    f'wrk.body = {json.dumps(body)}\n'
    'wrk.headers["Content-Type"] = "application/json"\n')
EOF

start ferroserve "$bin" serve --repo examples/models --host 127.0.0.1 --http-port 0 --grpc-port 0
ferro=$(listening_addr "$work/ferroserve.log" HTTP)
answer=$(curl -sf -X POST -H 'content-type: application/json' --data-binary @"$work/body.json" "http://$ferro/v2/models/mlp/infer")
bytes=${#answer}
FERROSERVE_BENCH_ROLE=minimal-server FERROSERVE_BENCH_RESPONSE_BYTES=$bytes \
  FERROSERVE_BENCH_HEADER_LEN=0 start minimal "$bench"
minimal=$(listening_addr "$work/minimal.log" HTTP)
echo "wrk -t1 -c16 -d${secs}s, POST $(wc -c <"$work/body.json")-byte JSON body; answers $bytes bytes"
echo "ferroserve http://$ferro/v2/models/mlp/infer, minimal hyper http://$minimal/"

rate() {
  wrk -t1 -c16 -d"${secs}s" -s "$work/post.lua" "$1" | awk '/^Requests\/sec/ {print $2}'
}
rate "http://$ferro/v2/models/mlp/infer" >/dev/null # warm-up
printf '%-6s %14s %14s %7s\n' round ferroserve minimal ratio
for round in $(seq "$rounds"); do
  f=$(rate "http://$ferro/v2/models/mlp/infer")
  m=$(rate "http://$minimal/")
  printf '%-6s %14s %14s %7.3f\n' "$round" "$f" "$m" "$(echo "$f / $m" | bc -l)"
done
