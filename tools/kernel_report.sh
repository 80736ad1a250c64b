#!/usr/bin/env bash
# Registers, spills and shared memory per kernel from ptxas -v (default sm_90).
# Usage: tools/kernel_report.sh [sm_80|sm_90]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_cuda_wheels.sh
exec cargo run --quiet --release --example kernel_report -- "${1:-sm_90}"
