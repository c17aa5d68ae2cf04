#!/usr/bin/env bash
# Makes an OpenCL device available for the OpenCL backend's tests: PoCL, the
# CPU OpenCL implementation in Debian (pocl-opencl-icd), and the ICD loader
# (ocl-icd-opencl-dev brings libOpenCL.so.1 and the headers). Installs them
# with apt-get when no OpenCL platform is registered yet. Safe to run again.
set -euo pipefail

have_icd() {
  ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libOpenCL.so.1'
}

if have_icd && ls /etc/OpenCL/vendors/ | grep -qi pocl; then
  echo "OpenCL ready: $(ls /etc/OpenCL/vendors/ | tr '\n' ' ')"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no OpenCL platform and no apt-get; install PoCL (pocl-opencl-icd) or another OpenCL driver" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq pocl-opencl-icd ocl-icd-opencl-dev >/dev/null 2>&1 || {
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq pocl-opencl-icd ocl-icd-opencl-dev >/dev/null
}
have_icd || { echo "error: PoCL installed but no OpenCL platform is registered" >&2; exit 1; }
echo "OpenCL ready: installed PoCL ($(ls /etc/OpenCL/vendors/ | tr '\n' ' '))"
