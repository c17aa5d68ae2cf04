#!/usr/bin/env bash
# Runs the OpenCL backend benchmark (server/benches/opencl.rs):
# 1. the real ferroserve binary serving mlp and conv on ONNX Runtime (CPU) and
#    the same model.onnx files on the OpenCL backend (mlp_opencl, conv_opencl,
#    device opencl:0), the same load on both: 32-row requests at concurrency 4
#    and 1-row requests at concurrency 32 (dynamic batching). Prints rows/s,
#    p50 and p99 per backend, the OpenCL/ORT ratios, and each OpenCL run's
#    device time per kernel from /metrics;
# 2. the OpenCL GEMM kernel in-process (one-node ONNX Gemm, M=N=K=1024 and
#    256): GFLOP/s over its device time and over wall time, against numpy's
#    np.matmul (OpenBLAS, all cores) and the theoretical FP32 peak from
#    /proc/cpuinfo, with the fractions of both.
# Then a table and a final JSON line. No targets: honest numbers (on PoCL the
# OpenCL device is the CPU). Exits successfully, saying why, without OpenCL.
# FERROSERVE_BENCH_SECS sets the length of each measurement (default 10 s);
# FERROSERVE_PYTHON the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FERROSERVE_PYTHON:-}" ] && ! .venv/bin/python -c 'import numpy, onnx' >/dev/null 2>&1; then
  if [ -x scripts/setup-env.sh ]; then
    scripts/setup-env.sh
  else
    echo "error: .venv with numpy and onnx is missing; create it with:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt" >&2
    exit 1
  fi
fi

# PoCL, the CPU OpenCL device, when no OpenCL platform is registered yet; a
# machine that has none and cannot get one still runs the benchmark, which
# then says why it measured nothing.
scripts/setup-opencl.sh || echo "warning: no OpenCL device set up; the benchmark will skip" >&2

if [ ! -f examples/bundles/conv-opencl/bundle.toml ] || [ ! -f examples/bundles/mlp-opencl/bundle.toml ] \
  || ! ls examples/models/mlp/*/bundle.toml examples/models/conv/*/bundle.toml >/dev/null 2>&1; then
  "${FERROSERVE_PYTHON:-.venv/bin/python}" examples/generate.py
fi

exec cargo bench -p ferroserve --bench opencl "$@"
