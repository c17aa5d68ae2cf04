#!/usr/bin/env bash
# Builds ferroserve in release mode, generates the example models and serves
# them on http://127.0.0.1:8000 (override with HOST and PORT).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-env.sh
.venv/bin/python examples/generate.py
cargo build --release --locked -p ferroserve
exec target/release/ferroserve serve --repo examples/models --host "${HOST:-127.0.0.1}" --http-port "${PORT:-8000}"
