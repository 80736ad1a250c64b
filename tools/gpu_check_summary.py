"""The summary table of a tools/gpu_check.sh run, from its logs.

    python3 tools/gpu_check_summary.py LOG_DIR STEPS_TSV DRY > summary.md

Reads the step logs gpu_check.sh wrote (test and sanitizer logs, `quorum
bench` tables, the criterion benches, PyTorch's rows from
tools/reference/bench_torch_cuda.py, ncu) and prints one Markdown page: the
steps and their outcome, the tests and sanitizers, then each figure beside
its PyTorch peer and the issue's target, with a verdict. A figure that is
missing says so instead of being left out.
"""

from __future__ import annotations

import os
import re
import sys

UNITS_US = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def read(logs: str, name: str) -> str | None:
    path = os.path.join(logs, name)
    if not os.path.exists(path):
        return None
    with open(path, errors="replace") as f:
        return f.read()


def quorum_table(text: str | None) -> dict:
    """`quorum bench` rows: {(model, batch): (median, p90, p99)} and the ensemble stages."""
    rows, ensemble = {}, {}
    if not text:
        return {"rows": rows, "ensemble": ensemble}
    in_ensemble = False
    for line in text.splitlines():
        if line.startswith("ensemble tick"):
            in_ensemble = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if in_ensemble and len(cells) == 4 and re.match(r"^[\d.]+$", cells[1]):
            ensemble[cells[0]] = tuple(float(c) for c in cells[1:])
        elif not in_ensemble and len(cells) == 6 and cells[1].isdigit():
            rows[(cells[0], int(cells[1]))] = (float(cells[2]), float(cells[3]), float(cells[4]))
    return {"rows": rows, "ensemble": ensemble}


def torch_rows(text: str | None) -> dict:
    out = {}
    if not text:
        return out
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) == 8 and f[0] != "what" and not f[0].startswith("#"):
            out[(f[0], f[1], f[2], f[3], int(f[4]))] = (float(f[5]), float(f[6]), int(f[7]))
    return out


def criterion(text: str | None) -> dict:
    """{bench id: median µs} from criterion's `time: [low median high]` lines."""
    out = {}
    if not text:
        return out
    pat = re.compile(r"(\S+)\s+time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]")
    for m in pat.finditer(text):
        out[m.group(1)] = float(m.group(4)) * UNITS_US.get(m.group(5), float("nan"))
    return out


def fmt(v) -> str:
    if v is None:
        return "—"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.1f} µs"


def ratio(a, b) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def verdict(ok) -> str:
    return "—" if ok is None else ("met" if ok else "NOT met")


def main():
    logs, steps_path, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    out = []
    p = out.append
    p("# gpu_check summary" + (" (DRY RUN: emulator and CPU, no GPU; figures are not GPU figures)" if dry else ""))
    p("")
    env = read(logs, "env.log") or ""
    gpu = re.search(r"^name, driver_version.*\n(.+)$", env, re.M)
    p(f"- GPU: {gpu.group(1).strip() if gpu else 'none found'}")
    torch_v = re.search(r"^torch (\S+) cuda (\S+)", env, re.M)
    p(f"- PyTorch: {torch_v.group(1) + ' (CUDA ' + torch_v.group(2) + ')' if torch_v else 'not importable'}")
    commit = (read(logs, "commit.txt") or "").splitlines()
    p(f"- quorum commit: {commit[0] if commit else 'unknown'}{' (tree had changes)' if len(commit) > 1 else ''}")
    nvrtc = re.search(r"NVRTC[^\n]*", env)
    p(f"- {nvrtc.group(0) if nvrtc else 'NVRTC: not reported'}")
    p("")

    p("## Steps")
    p("")
    p("| step | outcome | seconds | command or reason |")
    p("|---|---|---:|---|")
    with open(steps_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                p(f"| {parts[0]} | {parts[1]} | {parts[2]} | `{parts[3][:120]}` |")
    p("")

    p("## Tests and sanitizers")
    p("")
    p("| log | result |")
    p("|---|---|")
    for name in sorted(os.listdir(logs)):
        if not name.endswith(".log"):
            continue
        text = read(logs, name) or ""
        if name.startswith("test_"):
            res = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", text)
            listed = len(re.findall(r": test$", text, re.M))
            if res:
                passed = sum(int(r[1]) for r in res)
                failed = sum(int(r[2]) for r in res)
                p(f"| {name} | {passed} passed, {failed} failed |")
            elif listed:
                p(f"| {name} | {listed} tests listed (not run) |")
            else:
                p(f"| {name} | no result line (crashed or timed out: see the log) |")
        elif name.startswith("sanitizer_"):
            m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
            p(f"| {name} | {('errors: ' + ', '.join(m)) if m else 'no ERROR SUMMARY line'} |")
    p("")

    q = {d: quorum_table(read(logs, f"bench_{d}.log")) for d in ("f32", "bf16", "int8")}
    launches = quorum_table(read(logs, "bench_f32_no_graphs.log"))
    t = torch_rows(read(logs, "torch.tsv"))
    p("## Forward, end to end (inputs from host memory to outputs in host memory), median")
    p("")
    p("Target at batch 1: at least 3× faster than PyTorch eager and faster than PyTorch replaying a CUDA graph.")
    p("")
    p("| model | dtype | batch | quorum (graph) | quorum p99 | PyTorch eager | PyTorch graph | eager ÷ quorum | graph ÷ quorum | target |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for dtype in ("f32", "bf16", "int8"):
        for batch in (1, 32):
            for model in ("mpd_transformer", "tlob", "cnn_lstm"):
                row = q[dtype]["rows"].get((model, batch))
                qm, qp99 = (row[0], row[2]) if row else (None, None)
                te = t.get(("forward", model, dtype, "eager", batch))
                tg = t.get(("forward", model, dtype, "graph", batch))
                te, tg = (te[0] if te else None), (tg[0] if tg else None)
                ok = None
                if batch == 1 and None not in (qm, te, tg):
                    ok = te / qm >= 3.0 and tg / qm > 1.0
                p(
                    f"| {model} | {dtype} | {batch} | {fmt(qm)} | {fmt(qp99)} | {fmt(te)} | {fmt(tg)} "
                    f"| {ratio(te, qm)} | {ratio(tg, qm)} | {verdict(ok) if batch == 1 else ''} |"
                )
    p("")
    if launches["rows"]:
        p("Without graphs (every kernel launched), f32, batch 1: " + ", ".join(
            f"{m} {fmt(v[0])}" for (m, b), v in sorted(launches["rows"].items())))
        p("")

    p("## Ensemble tick and CNN-LSTM at batch 1 (p99)")
    p("")
    p("| figure | dtype | median | p99 | target | verdict |")
    p("|---|---|---:|---:|---|---|")
    for dtype in ("f32", "bf16", "int8"):
        tick = q[dtype]["ensemble"].get("whole tick")
        p(
            f"| ensemble tick (3 models + consensus) | {dtype} | {fmt(tick[0] if tick else None)} "
            f"| {fmt(tick[2] if tick else None)} | p99 < 150 µs | {verdict(None if not tick else tick[2] < 150)} |"
        )
        te = t.get(("ensemble", "3_models", dtype, "graph", 1))
        if te:
            p(f"| PyTorch, 3 models replayed (no consensus) | {dtype} | {fmt(te[0])} | {fmt(te[1])} | | |")
        cl = q[dtype]["rows"].get(("cnn_lstm", 1))
        p(
            f"| CNN-LSTM forward, batch 1 | {dtype} | {fmt(cl[0] if cl else None)} | {fmt(cl[2] if cl else None)} "
            f"| p99 < 40 µs | {verdict(None if not cl else cl[2] < 40)} |"
        )
    p("")

    c = criterion(read(logs, "criterion_train.log"))
    p("## Training step, batch 32, median")
    p("")
    p("Target: no slower than PyTorch's autocast bf16 step on the same GPU.")
    p("")
    p("| model | quorum f32 | quorum use_amp (bf16) | PyTorch f32 | PyTorch autocast bf16 | best quorum ÷ PyTorch bf16 | verdict |")
    p("|---|---:|---:|---:|---:|---:|---|")
    for model in ("mpd_transformer", "tlob", "cnn_lstm"):
        qf = c.get(f"train_step_cuda/{model}/32")
        qa = c.get(f"train_step_cuda_amp/{model}/32")
        pf = t.get(("train_step", model, "f32", "eager", 32))
        pa = t.get(("train_step", model, "bf16_autocast", "eager", 32))
        pf, pa = (pf[0] if pf else None), (pa[0] if pa else None)
        best = min([v for v in (qf, qa) if v is not None], default=None)
        ok = None if best is None or pa is None else best <= pa
        p(f"| {model} | {fmt(qf)} | {fmt(qa)} | {fmt(pf)} | {fmt(pa)} | {ratio(best, pa)} | {verdict(ok)} |")
    p("")

    ck = criterion(read(logs, "criterion_models_cuda.log"))
    if ck:
        p("## Criterion, models_cuda (short settings), median")
        p("")
        p("| bench | median |")
        p("|---|---:|")
        for k, v in sorted(ck.items()):
            p(f"| {k} | {fmt(v)} |")
        p("")

    ncu = read(logs, "ncu.log")
    if ncu:
        p("## ncu (SpeedOfLight), per kernel launch")
        p("")
        p("```")
        for line in ncu.splitlines():
            if re.search(r"quorum_\w+|Duration|Memory Throughput|Compute \(SM\) Throughput|DRAM Throughput", line):
                p(line.rstrip()[:160])
        p("```")
        p("")
    report = read(logs, "kernel_report.txt")
    if report:
        p("## ptxas, sm_90 (registers, spills, shared memory), from prepare")
        p("")
        p("```")
        p(report.rstrip()[-4000:])
        p("```")
    print("\n".join(out))


if __name__ == "__main__":
    main()
