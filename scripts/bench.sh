#!/usr/bin/env bash
# Runs the end-to-end serving benchmark (server/benches/serving.rs): the real
# ferroserve binary over HTTP against ONNX Runtime in-process and a minimal
# hyper server, on this machine. Prints a table and a final JSON line.
# FERROSERVE_BENCH_SECS sets the length of each measurement (default 10 s).
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

for model in conv mlp; do
  if ! ls examples/models/"$model"/*/bundle.toml >/dev/null 2>&1; then
    .venv/bin/python examples/generate.py
    break
  fi
done

exec cargo bench -p ferroserve --bench serving "$@"
