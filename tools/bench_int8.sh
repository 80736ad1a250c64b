#!/usr/bin/env bash
# quorum's CPU forward in f32, bf16 and int8 against ONNX Runtime's f32 and
# int8 (tools/reference/bench_ort.py) on the same models and weights, batch 1
# by default, interleaved round by round so the machine's noise falls on
# every column alike. Needs the reference venv (see bench_ort.py's header)
# and a release build (`cargo build --release`).
#
#     tools/bench_int8.sh [rounds, default 2] [batch, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
batch=${2:-1}
py=${QUORUM_REF_PYTHON:-$HOME/.cache/quorum/ref-venv/bin/python}
quorum=target/release/quorum
[[ -x $quorum ]] || { echo "build first: cargo build --release" >&2; exit 1; }
[[ -x $py ]] || { echo "no reference venv at $py: see tools/reference/bench_ort.py" >&2; exit 1; }
iters=$((batch == 1 ? 300 : 40))
for r in $(seq 1 "$rounds"); do
    echo "== round $r"
    for p in f32 bf16 int8; do
        echo "-- quorum $p"
        "$quorum" bench --backend cpu --precision "$p" --batch "$batch" --iters "$iters" | grep -E '^\| (mpd|tlob|cnn)'
    done
    echo "-- onnxruntime"
    "$py" tools/reference/bench_ort.py --batch "$batch" --reps "$iters" 2>/dev/null | grep median
done
