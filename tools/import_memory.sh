#!/usr/bin/env bash
# Peak memory and time of `quorum import` against the recording's length:
# simulated recordings of 15 min, 1 h, 4 h and 12 h (examples/simulate_recording.rs),
# then the real BTCUSDT files if ../shared/data/binance is here.
#
#   tools/import_memory.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cargo build --release --quiet --bin quorum --example simulate_recording
target=${CARGO_TARGET_DIR:-target}
q=$target/release/quorum
echo "length  peak RSS (kB)  wall (s)"
for d in 15m 1h 4h 12h; do
    "$target/release/examples/simulate_recording" "$work/sim_$d.gz" "$d" >/dev/null
    rm -rf "$work/out"
    /usr/bin/time -f "$d %M %e" "$q" import --format hftbacktest --symbol SIMUSDT --out "$work/out" "$work/sim_$d.gz" \
        2>&1 >/dev/null | grep -v '^\[import\]'
done
real=../shared/data/binance
if [ -f "$real/spot_btcusdt_20240808.gz" ]; then
    rm -rf "$work/out"
    /usr/bin/time -f "BTCUSDT-11min %M %e" "$q" import --format hftbacktest --symbol BTCUSDT --out "$work/out" \
        "$real/spot_btcusdt_20240808.gz" "$real/spot_btcusdt_20240809.gz" 2>&1 >/dev/null | grep -v '^\[import\]'
fi
rm -rf "$work/out"
