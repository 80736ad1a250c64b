#!/usr/bin/env bash
# One CPU training step (batch 32, default configs, f32, 2 threads) of
# quorum (`cargo bench --bench train`, criterion) against PyTorch eager
# doing the same (tools/reference/bench_torch_train.py), interleaved round
# by round so the machine's noise falls on both alike. Both sides are
# medians: criterion's median of its samples (target/criterion/…/new/
# estimates.json) and PyTorch's median of 20 steps. Needs the reference
# venv (see bench_torch_train.py's header).
#
#     tools/bench_train.sh [rounds, default 3] [amp]
#
# `amp`: our bf16 CPU backend's step (`train_step_cpu_amp`) against
# PyTorch under bf16 autocast (`bench_torch_train.py --amp`).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
group=train_step_cpu torch_flag=
case ${2:-} in
    "") ;;
    amp) group=train_step_cpu_amp torch_flag=--amp ;;
    *) echo "the second argument can only be amp (got $2)" >&2; exit 2 ;;
esac
py=${QUORUM_REF_PYTHON:-$HOME/.cache/quorum/ref-venv/bin/python}
[[ -x $py ]] || { echo "no reference venv at $py: see tools/reference/bench_torch_train.py" >&2; exit 1; }
cargo bench --bench train --no-run 2>/dev/null
median_ms() {
    "$py" -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6))' \
        "target/criterion/$group/$1_32/new/estimates.json"
}
for r in $(seq 1 "$rounds"); do
    echo "== round $r ($(date -u +%H:%M:%S) UTC)"
    cargo bench --bench train -- "$group/" >/dev/null 2>&1
    torch=$("$py" tools/reference/bench_torch_train.py --threads 2 --reps 20 $torch_flag 2>/dev/null)
    for m in mpd_transformer tlob cnn_lstm; do
        ours=$(median_ms "$m")
        theirs=$(awk -v m="$m" '$1 == m { print $3 }' <<<"$torch")
        awk -v m="$m" -v q="$ours" -v t="$theirs" \
            'BEGIN { printf "%-16s quorum %7.1f ms   pytorch %7.1f ms   pytorch/quorum %.2f\n", m, q, t, t / q }'
    done
done
