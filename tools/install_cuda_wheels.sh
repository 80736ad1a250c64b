#!/usr/bin/env bash
# Installs NVIDIA's CUDA compiler pieces from PyPI into a cache folder, for the
# kernel compile checks (tests/kernels_nvrtc.rs, tools/kernel_report.sh):
#   nvidia-cuda-nvrtc-cu12    libnvrtc.so (the run-time compiler)
#   nvidia-cuda-nvcc-cu12     ptxas (and crt/ headers; no nvcc driver)
#   nvidia-cuda-runtime-cu12  the toolkit headers, for kernels that include them
# Idempotent and quiet: does nothing when the pinned versions are there.
# QUORUM_CUDA_WHEELS overrides the folder (default ~/.cache/quorum/cuda-wheels).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore
dir="${QUORUM_CUDA_WHEELS:-$HOME/.cache/quorum/cuda-wheels}"
version="12.9.*"
stamp="$dir/.quorum-installed-$version"
if [[ -f "$stamp" ]]; then
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir" \
    "nvidia-cuda-nvrtc-cu12==$version" \
    "nvidia-cuda-nvcc-cu12==$version" \
    "nvidia-cuda-runtime-cu12==$version"
chmod +x "$dir"/nvidia/cuda_nvcc/bin/* 2>/dev/null || true
touch "$stamp"
