#!/usr/bin/env bash
# One-command GPU check, for a machine with a GPU (the lent device machine):
# builds in release mode, lists the OpenCL devices, picks the first one that
# is not PoCL (NVIDIA's, AMD's or Intel's driver exposes the GPU as an
# OpenCL device), runs the ONNX node test cases on it (every supported
# operator against ONNX's expected outputs), and measures the GEMM kernel's
# GFLOP/s there. Prints why and exits 0 where there is no GPU. Meant to
# finish within 5 minutes on 16 cores.
#
# There is no CUDA backend yet: when one lands, its tests and benchmark go
# here too.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
scripts/setup-env.sh >/dev/null
cargo build --release --locked -p ferroserve
BIN=target/release/ferroserve
if ! devices=$("$BIN" opencl devices 2>&1); then
  echo "gpu-check: no OpenCL runtime: $devices"
  echo "gpu-check: the NVIDIA driver's OpenCL ICD (/etc/OpenCL/vendors/nvidia.icd) is needed; nothing checked"
  exit 0
fi
echo "$devices"
# FERROSERVE_GPU_CHECK_DEVICE=opencl:N overrides the choice (opencl:0 runs
# the whole check on PoCL, which is how the script itself is tested).
gpu=${FERROSERVE_GPU_CHECK_DEVICE:-$( (echo "$devices" | grep -iv "portable computing language" || true) \
  | head -n1 | sed -n 's/^\(opencl:[0-9]*\) .*/\1/p')}
if [ -z "$gpu" ]; then
  echo "gpu-check: only PoCL (CPU) OpenCL devices here; nothing to check on a GPU"
  exit 0
fi
echo "gpu-check: using $gpu"
export FERROSERVE_OPENCL_DEVICE="$gpu" FERROSERVE_REQUIRE_OPENCL=1
cargo test --release --locked -p ferroserve-backend-opencl --test onnx_node_cases -- --nocapture 2>&1 \
  | grep -E "onnx node cases:|FAILED|panicked|test result" 
# The serving part of the benchmark uses the example bundles' opencl:0; the
# GEMM part follows FERROSERVE_OPENCL_DEVICE.
FERROSERVE_BENCH_SECS=${FERROSERVE_BENCH_SECS:-3} scripts/bench-opencl.sh 2>&1 | sed -n '/^=====/,/^=====/p'
