#!/usr/bin/env bash
# How long `quorum evaluate` takes over an hour of 100 ms data with the
# default model configs on this machine's CPU, in f32 and in bf16 (issue #18:
# it must take less than the hour itself). The weights are the built-in
# untrained ones (`--demo-weights`): the time does not depend on what the
# weights say.
#
#   tools/evaluate_bench.sh [MINUTES_EVALUATED (60)] [WORK_DIR]
#
# Prints, per precision: wall time, decisions, and the ratio of wall time to
# the evaluated period (below 1: faster than the market it replays).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
work=${2:-$(mktemp -d)}
mkdir -p "$work"
fit=5
# A copy, so a rebuild while it runs does not swap the binary under it.
cargo build --release --quiet
bin="$work/quorum"
cp target/release/quorum "$bin"
rm -rf "$work/store"
$bin simulate --out "$work/store" --duration "$((minutes + fit))m" --seed 9 >/dev/null
for precision in f32 bf16; do
    start=$(date +%s.%N)
    $bin evaluate --data "$work/store" --symbol SIMUSDT --demo-weights --from "+${fit}m" \
        --precision "$precision" --resamples 200 --out "$work/$precision" >/dev/null 2>"$work/$precision.log"
    end=$(date +%s.%N)
    python3 - "$precision" "$start" "$end" "$minutes" "$work/$precision/report.json" <<'PY'
import json, sys
precision, start, end, minutes, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(path))
wall = end - start
lat = r["latency_us"]
print(f"{precision:5} evaluated {minutes:.0f} min ({r['decisions']} decisions) in {wall:.0f} s: "
      f"{wall / (minutes * 60):.2f} of real time; engine p50 {lat['engine']['p50']:.0f} µs, p99 {lat['engine']['p99']:.0f} µs")
PY
done
nproc | xargs echo "cores:"
