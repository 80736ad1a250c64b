#!/usr/bin/env bash
# `quorum evaluate` on real data: the 11 minutes of Binance BTCUSDT recorded
# by hftbacktest (../shared/data/binance or $QUORUM_BINANCE_DATA), imported,
# then evaluated with the models the demo trains on the simulator (no model
# here has seen BTCUSDT: 11 minutes are too short to train on and evaluate).
#
#   tools/evaluate_real.sh [WORK_DIR]
#
# The first 5 minutes are the fit period (the features' 200 s of warm-up,
# α, the baselines); the last ~6 are evaluated. README, "Does the ensemble pay?".
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
data=${QUORUM_BINANCE_DATA:-../shared/data/binance}
files=("$data/spot_btcusdt_20240808.gz" "$data/spot_btcusdt_20240809.gz")
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "missing $f (set QUORUM_BINANCE_DATA)" >&2; exit 2; }
done
cargo build --release --quiet
bin=target/release/quorum
rm -rf "$work/raw_lob" "$work/report"
$bin import --format hftbacktest --symbol BTCUSDT --out "$work/raw_lob" "${files[@]}" >/dev/null
if [ ! -d "$work/demo/weights/cnn_lstm" ]; then
    $bin demo --data "$work/demo" --bind 127.0.0.1:0 --decisions 50 --report "$work/demo-report" >/dev/null
fi
$bin evaluate --data "$work" --symbol BTCUSDT --weights "$work/demo/weights" --from +5m \
    --horizons 30,100 --out "$work/report"
