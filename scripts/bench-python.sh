#!/usr/bin/env bash
# Runs the python entry-script benchmark (server/benches/python.rs): the real
# ferroserve binary serving the python examples (text_stats, tensor style;
# iris, raw style) against the same scripts' run() called in a plain Python
# loop, in as many processes as the bundles' worker instances. Prints rows/s
# and requests/s with their ratios, latency and batch sizes; then a table and
# a final JSON line.
# FERROSERVE_BENCH_SECS sets the length of each measurement (default 10 s);
# FERROSERVE_PYTHON the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FERROSERVE_PYTHON:-}" ] && ! .venv/bin/python -c 'import numpy' >/dev/null 2>&1; then
  if [ -x scripts/setup-env.sh ]; then
    scripts/setup-env.sh
  else
    echo "error: .venv with numpy is missing; create it with:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt" >&2
    exit 1
  fi
fi

for model in text_stats iris; do
  if ! ls examples/models/"$model"/*/bundle.toml >/dev/null 2>&1; then
    "${FERROSERVE_PYTHON:-.venv/bin/python}" examples/generate.py
    break
  fi
done

exec cargo bench -p ferroserve --bench python "$@"
