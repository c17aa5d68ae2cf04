#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: Python env, OpenCL (PoCL), example models,
# formatting and lints, Rust unit and integration tests, and the Python
# protocol tests that drive the real server with tritonclient.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-env.sh
scripts/setup-opencl.sh
# The OpenCL tests skip where no device exists; here PoCL was just made
# available, so a missing device is a failure, not a skip.
export FERROSERVE_REQUIRE_OPENCL=1
.venv/bin/python examples/generate.py

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked

FERROSERVE_BIN="$PWD/target/debug/ferroserve" .venv/bin/python -m pytest tests/python -q -p no:cacheprovider
