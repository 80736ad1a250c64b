#!/usr/bin/env bash
# One CPU training step (batch 32, default configs, f32, 2 threads) of
# quorum (`cargo bench --bench train`, criterion) against PyTorch eager
# doing the same (tools/reference/bench_torch_train.py), interleaved round
# by round so the machine's noise falls on both alike. Both sides are
# medians: criterion's median of its samples (target/criterion/…/new/
# estimates.json) and PyTorch's median of 20 steps. Needs the reference
# venv (see bench_torch_train.py's header).
#
#     tools/bench_train.sh [rounds, default 3] [amp | all]
#
# `amp`: our bf16 CPU backend's step (`train_step_cpu_amp`) against
# PyTorch under bf16 autocast (`bench_torch_train.py --amp`).
# `all`: each round runs all four (our f32 and bf16 steps, PyTorch's f32
# and autocast ones) and prints them side by side with the ratios of
# PyTorch's f32 step to each of ours and of its autocast step to our bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
mode=${2:-f32}
case $mode in
    f32 | amp | all) ;;
    *) echo "the second argument can only be amp or all (got $2)" >&2; exit 2 ;;
esac
py=${QUORUM_REF_PYTHON:-$HOME/.cache/quorum/ref-venv/bin/python}
[[ -x $py ]] || { echo "no reference venv at $py: see tools/reference/bench_torch_train.py" >&2; exit 1; }
cargo bench --bench train --no-run 2>/dev/null
# Criterion's median of model $2 in group $1, in ms.
median_ms() {
    "$py" -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6))' \
        "target/criterion/$1/$2_32/new/estimates.json"
}
# PyTorch's medians, one "model batch ms" line per model; $1: "" or --amp.
torch_ms() {
    "$py" tools/reference/bench_torch_train.py --threads 2 --reps 20 $1 2>/dev/null
}
pick() { awk -v m="$1" '$1 == m { print $3 }' <<<"$2"; }
for r in $(seq 1 "$rounds"); do
    echo "== round $r ($(date -u +%H:%M:%S) UTC)"
    case $mode in
        f32 | amp)
            group=train_step_cpu flag=
            [[ $mode == amp ]] && group=train_step_cpu_amp flag=--amp
            cargo bench --bench train -- "$group/" >/dev/null 2>&1
            torch=$(torch_ms "$flag")
            for m in mpd_transformer tlob cnn_lstm; do
                ours=$(median_ms "$group" "$m")
                theirs=$(pick "$m" "$torch")
                awk -v m="$m" -v q="$ours" -v t="$theirs" \
                    'BEGIN { printf "%-16s quorum %7.1f ms   pytorch %7.1f ms   pytorch/quorum %.2f\n", m, q, t, t / q }'
            done
            ;;
        all)
            cargo bench --bench train -- "train_step_cpu/" >/dev/null 2>&1
            torch32=$(torch_ms "")
            cargo bench --bench train -- "train_step_cpu_amp/" >/dev/null 2>&1
            torch16=$(torch_ms --amp)
            for m in mpd_transformer tlob cnn_lstm; do
                q32=$(median_ms train_step_cpu "$m") q16=$(median_ms train_step_cpu_amp "$m")
                t32=$(pick "$m" "$torch32") t16=$(pick "$m" "$torch16")
                awk -v m="$m" -v q32="$q32" -v q16="$q16" -v t32="$t32" -v t16="$t16" 'BEGIN {
                    printf "%-16s quorum f32 %7.1f bf16 %7.1f ms   pytorch f32 %7.1f autocast %7.1f ms   ", m, q32, q16, t32, t16
                    printf "pytorch f32/quorum f32 %.2f, /quorum bf16 %.2f   autocast/quorum bf16 %.2f\n", t32 / q32, t32 / q16, t16 / q16
                }'
            done
            ;;
    esac
done
