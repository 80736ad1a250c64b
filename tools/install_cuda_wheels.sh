#!/usr/bin/env bash
# Installs NVIDIA's CUDA compiler pieces from PyPI into a cache folder, for the
# kernel compile checks (tests/kernels_nvrtc.rs, tools/kernel_report.sh):
#   nvidia-cuda-nvrtc-cu12    libnvrtc.so (the run-time compiler)
#   nvidia-cuda-nvcc-cu12     ptxas (and crt/ headers; no nvcc driver)
#   nvidia-cuda-runtime-cu12  the toolkit headers, for kernels that include them
# and, into a folder of its own, CUDA 13's NVRTC (nvidia-cuda-nvrtc 13.0, the
# nvidia/cu13/lib layout a CUDA 13 machine's PyTorch has), so the tests prove
# that NVRTC 13 is found by path and its builtins beside it load
# (tests/kernels_nvrtc.rs).
# Idempotent and quiet: does nothing when the pinned versions are there.
# QUORUM_CUDA_WHEELS overrides the folder (default ~/.cache/quorum/cuda-wheels),
# QUORUM_CUDA13_WHEELS the CUDA 13 one (default ~/.cache/quorum/cuda13-wheels).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore
dir="${QUORUM_CUDA_WHEELS:-$HOME/.cache/quorum/cuda-wheels}"
version="12.9.*"
stamp="$dir/.quorum-installed-$version"
if [[ ! -f "$stamp" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir" \
        "nvidia-cuda-nvrtc-cu12==$version" \
        "nvidia-cuda-nvcc-cu12==$version" \
        "nvidia-cuda-runtime-cu12==$version"
    chmod +x "$dir"/nvidia/cuda_nvcc/bin/* 2>/dev/null || true
    touch "$stamp"
fi

dir13="${QUORUM_CUDA13_WHEELS:-$HOME/.cache/quorum/cuda13-wheels}"
version13="13.0.88"
stamp13="$dir13/.quorum-installed-$version13"
if [[ ! -f "$stamp13" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir13" \
        "nvidia-cuda-nvrtc==$version13"
    touch "$stamp13"
fi
