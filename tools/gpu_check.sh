#!/usr/bin/env bash
# The GPU check: everything quorum needs a real GPU to prove, in one prepared
# run on a machine that has one and no Rust toolchain.
#
#   tools/gpu_check.sh prepare   here: build the gpu-tests test binaries, the
#                                CUDA benches and the CLI, strip them, and put
#                                them with the fixtures and the ptxas report
#                                into target/gpu-check/ (the folder to carry)
#   tools/gpu_check.sh run       there, from the repository root: the checks
#                                below, logs into $OUT (or target/gpu-check/out),
#                                a summary table at the end
#   QUORUM_GPU_CHECK_DRY=1 tools/gpu_check.sh run
#                                here: walks the same steps without a GPU (test
#                                binaries listed, benches on the emulator,
#                                PyTorch on the CPU if it is installed) and
#                                says what it skipped
#
# With the device tool: `run` with carry ["target/gpu-check"] and the command
# `tools/gpu_check.sh run` (timeout_s 600; the steps stop starting at 8 min).
#
# The steps of `run`, each with its own time limit, logged to <step>.log:
#   env        nvidia-smi, the driver, nvcc, torch, the NVRTC quorum loads
#   tests      every gpu-tests binary with one test thread (a kernel that
#              traps poisons the CUDA context for every test after it)
#   sanitizer  compute-sanitizer memcheck, racecheck and synccheck on the
#              kernel tests
#   bench      quorum bench (batch 1 and 32, f32, bf16 and int8, graphs and not, the
#              ensemble tick), the criterion CUDA benches with short settings
#   torch      tools/reference/bench_torch_cuda.py on the same GPU
#   ncu        the heaviest kernels' achieved rates, if ncu reads counters
#   summary    summary.md: one table of every figure and verdict
# $OUT gets summary.md, steps.tsv and logs.tar.gz (every log): the device
# tool brings back at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=target/gpu-check
# The tests that need a GPU, and the benches built with them.
TEST_BINS=(kernels_cuda models_cuda train_kernels_cuda)
BENCH_BINS=(models_cuda train)

die() {
    echo "gpu_check: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- prepare

# The executables cargo built for targets of kind $1 named $2.. (cargo's JSON
# messages on stdin; the CLI built for the tests' CARGO_BIN_EXE is left out).
executables() {
    python3 -c '
import json, sys
kind, names = sys.argv[1], set(sys.argv[2:])
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and kind in t.get("kind", []) and t.get("name") in names:
        print(t["name"], m["executable"])
' "$@"
}

prepare() {
    set -e
    command -v cargo >/dev/null || die "prepare needs cargo (run it where the project builds)"
    rm -rf "$CARRY"
    mkdir -p "$CARRY/bin" "$CARRY/fixtures"
    echo "== building the gpu-tests test binaries"
    local args=()
    for t in "${TEST_BINS[@]}"; do args+=(--test "$t"); done
    cargo test --release --features gpu-tests --no-run --message-format=json "${args[@]}" |
        executables test "${TEST_BINS[@]}" >"$CARRY/tests.txt"
    echo "== building the CUDA benches"
    args=()
    for b in "${BENCH_BINS[@]}"; do args+=(--bench "$b"); done
    cargo bench --features gpu-tests --no-run --message-format=json "${args[@]}" |
        executables bench "${BENCH_BINS[@]}" >"$CARRY/benches.txt"
    echo "== building the CLI"
    # With the same features as the tests, so the library is built once.
    cargo build --release --features gpu-tests --bin quorum
    cp target/release/quorum "$CARRY/bin/quorum"
    while read -r name exe; do cp "$exe" "$CARRY/bin/test_$name"; done <"$CARRY/tests.txt"
    while read -r name exe; do cp "$exe" "$CARRY/bin/bench_$name"; done <"$CARRY/benches.txt"
    for t in "${TEST_BINS[@]}"; do [[ -x $CARRY/bin/test_$t ]] || die "test binary $t was not built"; done
    for b in "${BENCH_BINS[@]}"; do [[ -x $CARRY/bin/bench_$b ]] || die "bench binary $b was not built"; done
    rm "$CARRY/tests.txt" "$CARRY/benches.txt"
    # Line tables and symbols are most of a binary's size; the device needs neither.
    strip "$CARRY"/bin/*
    # Only the fixtures the GPU tests read (the model goldens).
    cp -r tests/fixtures/models "$CARRY/fixtures/models"
    echo "== ptxas report (sm_90), for the run's logs"
    tools/kernel_report.sh sm_90 >"$CARRY/kernel_report.txt" 2>&1 || echo "(kernel_report failed; see the file)"
    git rev-parse HEAD >"$CARRY/commit.txt" 2>/dev/null || true
    git status --porcelain >>"$CARRY/commit.txt" 2>/dev/null || true
    local mib
    mib=$(du -sm "$CARRY" | cut -f1)
    du -sh "$CARRY"/bin/* "$CARRY/fixtures"
    echo "== $CARRY: ${mib} MiB (the device tool carries 64 MiB at most, the tree included)"
    ((mib < 60)) || die "$CARRY is ${mib} MiB, over the 60 MiB budget"
}

# ---------------------------------------------------------------- run

DRY=${QUORUM_GPU_CHECK_DRY:-0}
BUDGET_S=${QUORUM_GPU_CHECK_BUDGET_S:-480}
START=$(date +%s)
OUTDIR=""
LOGS=""

now() { date +%s; }

# step NAME LIMIT_S CMD...: runs CMD with a time limit, logged to NAME.log;
# records the outcome in steps.tsv. A step that would start past the budget
# is skipped, and says so.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - ($(now) - START)))
    if ((left < 15)); then
        printf '%s\tskipped\t0\tout of time (budget %s s)\n' "$name" "$BUDGET_S" >>"$OUTDIR/steps.tsv"
        echo "-- $name: skipped, out of time"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "-- $name (limit ${limit} s): $*"
    local t0 rc
    t0=$(now)
    timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    local status=ok
    ((rc == 124 || rc == 137)) && status=timeout
    ((rc != 0 && rc != 124 && rc != 137)) && status="failed(rc=$rc)"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(now) - t0))" "$*" >>"$OUTDIR/steps.tsv"
    tail -n 3 "$LOGS/$name.log" | sed 's/^/     /'
    return 0
}

# skip NAME WHY: a step not run here, and why.
skip() {
    printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$OUTDIR/steps.tsv"
    echo "-- $1: skipped ($2)"
}

run() {
    [[ -d $CARRY/bin ]] || die "$CARRY/bin is missing: run 'tools/gpu_check.sh prepare' first and carry $CARRY"
    OUTDIR=${OUT:-$CARRY/out}
    mkdir -p "$OUTDIR"
    OUTDIR=$(cd "$OUTDIR" && pwd)
    LOGS=$(mktemp -d)
    : >"$OUTDIR/steps.tsv"
    local bin=$ROOT/$CARRY/bin
    export QUORUM_FIXTURES=$ROOT/$CARRY/fixtures
    export QUORUM_KERNEL_CACHE=${QUORUM_KERNEL_CACHE:-/tmp/quorum-kernels}
    export RUST_BACKTRACE=1
    echo "== gpu_check run$([[ $DRY == 1 ]] && echo ' (dry: no GPU)'), logs in $OUTDIR, budget ${BUDGET_S} s"
    cp "$CARRY/kernel_report.txt" "$CARRY/commit.txt" "$LOGS/" 2>/dev/null || true

    # env
    # Each with a limit: nothing here may hang the run. The quorum call also
    # compiles every kernel once with NVRTC into the cache the steps share.
    {
        date -u
        uname -a
        timeout 30 nvidia-smi 2>&1 || echo "nvidia-smi: not available"
        timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
        timeout 30 nvcc --version 2>&1 || echo "nvcc: not available"
        timeout 60 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 || echo "torch: not importable"
        timeout 150 "$bin/quorum" bench --backend cuda --iters 1 --batch 1 --model cnn_lstm 2>&1 || echo "quorum: no CUDA device"
    } >"$LOGS/env.log" 2>&1
    printf 'env\tok\t0\tnvidia-smi, nvcc, torch, quorum bench --backend cuda\n' >>"$OUTDIR/steps.tsv"

    # tests
    for t in "${TEST_BINS[@]}"; do
        if [[ $DRY == 1 ]]; then
            step "test_$t" 60 "$bin/test_$t" --list
        else
            step "test_$t" 150 "$bin/test_$t" --test-threads=1
        fi
    done

    # sanitizer
    if [[ $DRY == 1 ]] || ! command -v compute-sanitizer >/dev/null; then
        for tool in memcheck racecheck synccheck; do
            skip "sanitizer_$tool" "$([[ $DRY == 1 ]] && echo dry run || echo no compute-sanitizer): compute-sanitizer --tool $tool --error-exitcode 1 test_kernels_cuda --test-threads=1"
        done
    else
        for tool in memcheck racecheck synccheck; do
            step "sanitizer_$tool" 120 compute-sanitizer --tool "$tool" --error-exitcode 1 \
                "$bin/test_kernels_cuda" --test-threads=1
        done
        step sanitizer_memcheck_train 120 compute-sanitizer --tool memcheck --error-exitcode 1 \
            "$bin/test_train_kernels_cuda" --test-threads=1
    fi

    # bench
    if [[ $DRY == 1 ]]; then
        # The emulator runs each kernel on the CPU (seconds a forward; its
        # bf16 tensor-core emulation slower still): one model in bf16.
        step bench_f32 90 "$bin/quorum" bench --backend emu --iters 2 --batch 1 --ensemble
        step bench_bf16 90 "$bin/quorum" bench --backend emu --iters 1 --batch 1 --precision bf16 --model cnn_lstm
        step bench_int8 90 "$bin/quorum" bench --backend emu --iters 1 --batch 1 --precision int8 --model cnn_lstm
        step bench_f32_no_graphs 60 "$bin/quorum" bench --backend emu --iters 1 --batch 1 --no-graphs
        # Both benches open the CUDA device before criterion would list them:
        # here, only that the binaries start and are criterion's.
        step criterion_models_cuda 30 "$bin/bench_models_cuda" --help
        step criterion_train 30 "$bin/bench_train" --help
    else
        step bench_f32 90 "$bin/quorum" bench --backend cuda --iters 2000 --batch 1,32 --ensemble
        step bench_bf16 90 "$bin/quorum" bench --backend cuda --iters 2000 --batch 1,32 --precision bf16 --ensemble
        step bench_int8 90 "$bin/quorum" bench --backend cuda --iters 2000 --batch 1,32 --precision int8 --ensemble
        step bench_f32_no_graphs 60 "$bin/quorum" bench --backend cuda --iters 2000 --batch 1 --no-graphs
        step criterion_models_cuda 120 "$bin/bench_models_cuda" --bench --noplot \
            --warm-up-time 0.5 --measurement-time 1 --sample-size 20
        step criterion_train 90 "$bin/bench_train" --bench --noplot train_step_cuda \
            --warm-up-time 1 --measurement-time 3 --sample-size 10
    fi

    # torch
    if ! python3 -c 'import torch' 2>/dev/null; then
        skip torch "python3 cannot import torch: tools/reference/bench_torch_cuda.py not run"
    elif [[ $DRY == 1 ]]; then
        step torch 120 python3 tools/reference/bench_torch_cuda.py --device cpu --quick --out "$LOGS/torch.tsv"
    else
        step torch 150 python3 tools/reference/bench_torch_cuda.py --out "$LOGS/torch.tsv"
    fi

    # ncu
    if [[ $DRY == 1 ]] || ! command -v ncu >/dev/null; then
        skip ncu "$([[ $DRY == 1 ]] && echo dry run || echo no ncu): the heaviest kernels' speed of light"
    else
        step ncu 90 ncu --clock-control none --target-processes all --section SpeedOfLight \
            -k 'regex:quorum_(linear|conv1d|attention|lstm|patch_embed)' -c 12 \
            "$bin/quorum" bench --backend cuda --iters 2 --batch 32 --no-graphs
    fi

    # summary
    python3 tools/gpu_check_summary.py "$LOGS" "$OUTDIR/steps.tsv" "$DRY" >"$OUTDIR/summary.md" 2>"$LOGS/summary.err" ||
        echo "(the summary failed: see summary.err in logs.tar.gz)" >>"$OUTDIR/summary.md"
    cp "$OUTDIR/summary.md" "$OUTDIR/steps.tsv" "$LOGS/"
    tar -czf "$OUTDIR/logs.tar.gz" -C "$LOGS" .
    rm -rf "$LOGS"
    echo
    cat "$OUTDIR/summary.md"
    echo
    echo "== done in $(($(now) - START)) s: $OUTDIR/summary.md, steps.tsv, logs.tar.gz"
    # The run fails when a step failed (a skipped step is not a failure).
    ! grep -qP '\t(failed|timeout)' "$OUTDIR/steps.tsv"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
