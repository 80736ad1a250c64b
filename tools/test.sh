#!/usr/bin/env bash
# The full test suite: what CI runs (.ci/run calls this) and what the README
# tells a developer to run. Everything it needs is installed from here.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== NVIDIA's NVRTC and ptxas (PyPI wheels, into ~/.cache/quorum/cuda-wheels)"
tools/install_cuda_wheels.sh

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --release --all-targets -- -D warnings

echo "== tests"
cargo test --release

echo "== demo (short)"
cargo run --release --quiet -- demo --quick --bind 127.0.0.1:0
