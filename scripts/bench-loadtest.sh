#!/usr/bin/env bash
# The load tester against wrk on the same server, model and load: requests/s
# and p50/p99 of both (closed loop, same connections, same request body), and
# the CPU each load generator spends per request. Installs wrk with apt-get
# if it is missing. FERROSERVE_BENCH_SECS sets each run's length (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-env.sh
[ -f examples/models/mlp/1/sample.json ] || .venv/bin/python examples/generate.py
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
cargo build --release --locked -p ferroserve
BIN=target/release/ferroserve
SECS="${FERROSERVE_BENCH_SECS:-10}"
CONNS="${FERROSERVE_BENCH_CONNECTIONS:-32}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

mkdir -p "$WORK/repo/mlp" && cp -r examples/models/mlp/1 "$WORK/repo/mlp/1"
"$BIN" serve --repo "$WORK/repo" --host 127.0.0.1 --http-port 0 --grpc-port 0 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 1 300); do
  ADDR=$(grep -o 'HTTP server listening on [0-9.:]*' "$WORK/server.log" | awk '{print $5}' || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/server.log"; exit 1; }
BODY=examples/models/mlp/1/sample.json
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$BODY", "rb"); wrk.body = f:read("*a"); f:close()
LUA

cpu_of() { # user+sys seconds of a finished command, from /usr/bin/time's output file
  awk '{print $1 + $2}' "$1"
}

echo "server $ADDR, model mlp, $CONNS connections, ${SECS} s per run"
# Warm both paths up once.
wrk -t1 -c"$CONNS" -d2s -s "$WORK/post.lua" "http://$ADDR/v2/models/mlp/infer" >/dev/null
/usr/bin/time -f "%U %S" -o "$WORK/wrk.cpu" \
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/post.lua" "http://$ADDR/v2/models/mlp/infer" > "$WORK/wrk.out"
/usr/bin/time -f "%U %S" -o "$WORK/lt.cpu" \
  "$BIN" loadtest --url "http://$ADDR" --model mlp --input "$BODY" --concurrency "$CONNS" \
  --duration "${SECS}s" --warmup 0s --json > "$WORK/lt.json"

.venv/bin/python - "$WORK" <<'PY'
import json, re, sys
work = sys.argv[1]
wrk = open(f"{work}/wrk.out").read()
lt = json.load(open(f"{work}/lt.json"))
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
lat = dict((p, ms(v, u)) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", wrk, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
reqs = int(re.search(r"(\d+) requests in", wrk).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
wrk_cpu = sum(map(float, open(f"{work}/wrk.cpu").read().split()))
lt_cpu = sum(map(float, open(f"{work}/lt.cpu").read().split()))
rows = [
    ("req/s", rps, lt["ok_per_second"]),
    ("p50 ms", lat["50"], lt["latency_ms"]["p50"]),
    ("p99 ms", lat["99"], lt["latency_ms"]["p99"]),
    ("CPU us per request", wrk_cpu / reqs * 1e6, lt_cpu / max(lt["requests"], 1) * 1e6),
]
print(f"{'':24}{'wrk':>12}{'ferroserve loadtest':>22}{'loadtest/wrk':>14}")
for name, a, b in rows:
    print(f"{name:24}{a:12.3f}{b:22.3f}{b / a:14.3f}")
print(f"errors: wrk {errors.group(1) if errors else 0}, loadtest {sum(lt['errors'].values())}")
print(json.dumps({"bench": "loadtest-vs-wrk", "wrk": {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "cpu_us_per_req": wrk_cpu / reqs * 1e6},
                  "loadtest": {"rps": lt["ok_per_second"], "p50_ms": lt["latency_ms"]["p50"], "p99_ms": lt["latency_ms"]["p99"],
                               "cpu_us_per_req": lt_cpu / max(lt["requests"], 1) * 1e6}}))
PY
