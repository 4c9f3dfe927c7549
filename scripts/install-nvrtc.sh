#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (the CUDA runtime compiler) from PyPI into DIR, with
# no CUDA toolkit and no GPU, and prints the directory that holds
# libnvrtc.so.13 (put it on LD_LIBRARY_PATH for kernel-cuda).
#
# Usage: scripts/install-nvrtc.sh [DIR]    (default: target/nvrtc)
#
# The version is pinned to CUDA 13.0: PTX made by a newer NVRTC carries a newer
# PTX ISA version, which a CUDA 13.0 driver (the 580 series on the GPU
# machines) refuses with CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
set -euo pipefail

NVRTC_VERSION="13.0.88"
dir="${1:-target/nvrtc}"
libdir="$dir/nvidia/cu13/lib"

if [[ ! -e "$libdir/libnvrtc.so.13" ]]; then
    mkdir -p "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dir" "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
fi
if [[ ! -e "$libdir/libnvrtc.so.13" ]]; then
    echo "install-nvrtc: $libdir/libnvrtc.so.13 not found after installing nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
    ls -R "$dir" >&2 || true
    exit 1
fi
cd "$libdir" && pwd
