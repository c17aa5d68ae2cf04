#!/usr/bin/env bash
# Runs the hot-swap benchmark (server/benches/swap.rs): the real ferroserve
# binary serving endpoint "ep" whose deployment is swapped between mlp v1 and
# v2 about once a second under open-loop load. Prints latency in steady state
# and during swaps, PUT latency and the time until all traffic is on the new
# version; then a table and a final JSON line.
# FERROSERVE_BENCH_SECS sets the length of each phase (default 10 s);
# FERROSERVE_BENCH_SWAP_RATE fixes the offered load in requests/s (default:
# half of a quick closed-loop peak).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* >/dev/null 2>&1; then
  if [ -x scripts/setup-env.sh ]; then
    scripts/setup-env.sh
  else
    echo "error: .venv with onnxruntime is missing; create it with:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt" >&2
    exit 1
  fi
fi

if ! ls examples/models/mlp/*/bundle.toml >/dev/null 2>&1 \
  || [ ! -f examples/bundles/mlp-v2/bundle.toml ]; then
  .venv/bin/python examples/generate.py
fi

exec cargo bench -p ferroserve --bench swap "$@"
