#!/usr/bin/env bash
# Profiles the compute-heavy example (conv), then applies the recommended
# settings by hand (a deploy.toml) and measures that configuration with the
# load tester at the recommended concurrency: the measured throughput
# against the profile's prediction. PROFILE_BUDGET (default 60s) and
# FERROSERVE_BENCH_SECS (default 10) set the lengths.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-env.sh
[ -f examples/models/conv/1/model.onnx ] || .venv/bin/python examples/generate.py
cargo build --release --locked -p ferroserve
BIN=target/release/ferroserve
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
SERVER=

mkdir -p "$WORK/repo/conv" && cp -r examples/models/conv/1 "$WORK/repo/conv/1"
"$BIN" profile --repo "$WORK/repo" --model conv --budget "${PROFILE_BUDGET:-60s}" --slo-p99 50ms \
  --out "$WORK/profile" 2> "$WORK/profile.log" | tee "$WORK/profile.out"

read -r INSTANCES BATCH DELAY CONC PREDICTED < <(.venv/bin/python - "$WORK/profile/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["recommendation"]
c = r["config"]
print(c["instances"], c["max_batch_size"], c["max_queue_delay_us"], r["concurrency"], r["expected_throughput"])
PY
)
cat > "$WORK/deploy.toml" <<TOML
[[endpoint]]
name = "conv"
[[endpoint.deployment]]
name = "tuned"
model = "conv"
instances = $INSTANCES
max_batch_size = $BATCH
max_queue_delay_us = $DELAY
TOML
"$BIN" serve --repo "$WORK/repo" --config "$WORK/deploy.toml" --host 127.0.0.1 --http-port 0 --grpc-port 0 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 1 300); do
  ADDR=$(grep -o 'HTTP server listening on [0-9.:]*' "$WORK/server.log" | awk '{print $5}' || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/server.log"; exit 1; }
"$BIN" loadtest --url "http://$ADDR" --model conv --concurrency "$CONC" \
  --duration "${FERROSERVE_BENCH_SECS:-10}s" --json > "$WORK/measured.json"
.venv/bin/python - "$WORK/measured.json" "$PREDICTED" "$INSTANCES" "$BATCH" "$DELAY" "$CONC" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
predicted = float(sys.argv[2])
got = m["ok_per_second"]
print(f"settings applied by hand: instances {sys.argv[3]}, max_batch_size {sys.argv[4]}, "
      f"max_queue_delay_us {sys.argv[5]}, concurrency {sys.argv[6]}")
print(f"predicted {predicted:.1f} req/s, measured {got:.1f} req/s (p99 {m['latency_ms']['p99']:.2f} ms): "
      f"ratio {got / predicted:.3f} (target within 15%: {'ok' if abs(got / predicted - 1) <= 0.15 else 'MISS'})")
print(json.dumps({"bench": "profile-reproduction", "predicted_rps": predicted, "measured_rps": got,
                  "ratio": got / predicted, "errors": sum(m["errors"].values())}))
PY
