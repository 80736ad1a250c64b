#!/usr/bin/env bash
# The soak: `quorum serve` with predict load, the live stream, training jobs
# and hot reloads all at once for N minutes, on loopback, with the server's
# RSS sampled throughout; before it, the connection-flood probe.
#
#   tools/soak.sh [MINUTES]        (default 30)
#
# Output folder: $SOAK_OUT (default target/soak/<time>): flood.jsonl (the
# flood probe's phases), samples.csv (RSS and counts every 30 s), report.json
# and report.md (throughput, p50/p99, outcomes, RSS plateau), server.log.
# Exit status 0 only when the server survived, no request had an outcome
# other than success or a documented 503, and every flood probe was answered
# within 100 ms.
#
# Knobs (environment): QUORUM_BIN (a built binary; default: build release),
# SOAK_PREDICT_WORKERS (2), SOAK_PREDICT_RATE (20 per worker per s),
# SOAK_SIM_TICK_MS (50: the market at twice real time).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-30}
out=${SOAK_OUT:-target/soak/$(date +%Y%m%dT%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/work"
rm -rf "$work"
mkdir -p "$work/weights"

if [[ -z "${QUORUM_BIN:-}" ]]; then
    cargo build --release --quiet
    QUORUM_BIN=target/release/quorum
fi
bin=$(realpath "$QUORUM_BIN")

echo "soak: preparing data and small trained models (quorum demo --quick) in $work"
"$bin" demo --quick --data "$work/data" --bind 127.0.0.1:0 --decisions 20 >"$out/demo.log" 2>&1
for kind in mpd_transformer tlob cnn_lstm; do
    cp "$work/data/weights/$kind/1/model.safetensors" "$work/weights/$kind.safetensors"
done
# Each model's config, as its weights file records it (training jobs reuse them).
python3 - "$bin" "$work" <<'EOF'
import json, subprocess, sys
bin, work = sys.argv[1], sys.argv[2]
configs = {}
for kind in ("mpd_transformer", "tlob", "cnn_lstm"):
    info = subprocess.run([bin, "info", f"{work}/weights/{kind}.safetensors"], capture_output=True, text=True, check=True).stdout
    configs[kind] = json.loads(info.split("config:", 1)[1])
json.dump(configs, open(f"{work}/model_configs.json", "w"), indent=2)
EOF

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --simulate --sim-tick-ms "${SOAK_SIM_TICK_MS:-50}" --weights "$work/weights" --data "$work/data" \
    --bind "127.0.0.1:$port" --duration $((minutes * 60 + 300)) >"$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && break
    sleep 0.2
done
echo "soak: server pid $server on 127.0.0.1:$port"

status=0
echo "soak: connection flood probe"
python3 tools/flood_probe.py --port "$port" | tee "$out/flood.jsonl" || status=1

echo "soak: $minutes min of mixed load"
python3 tools/soak.py --port "$port" --pid "$server" --data "$work/data" --weights "$work/weights" \
    --model-configs "$work/model_configs.json" --minutes "$minutes" \
    --predict-workers "${SOAK_PREDICT_WORKERS:-2}" --predict-rate "${SOAK_PREDICT_RATE:-20}" \
    --plateau-minutes $((minutes * 2 / 3)) --out "$out" || status=1

kill -INT "$server" 2>/dev/null || true
if ! wait "$server"; then
    echo "soak: the server did not exit cleanly (see $out/server.log)"
    status=1
fi
trap - EXIT
rm -rf "$work/data/raw_lob"
echo "soak: report in $out/report.md (exit $status)"
exit $status
