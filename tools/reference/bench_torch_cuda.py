"""PyTorch on the GPU, the peer of `quorum bench --backend cuda` and of the
CUDA training bench, with the same models, configs and generated weights
(quorum_ref.fill_generated), measured the same way: each timed call starts
from inputs in host memory and ends with every output back in host memory
(quorum's forward uploads its inputs and reads its outputs back).

    python3 tools/reference/bench_torch_cuda.py [--out results.tsv] [--device cuda] [--quick]

Measures, at batch 1 and 32, in f32 and bf16 (weights and inputs converted):
- `eager`: `model(**inputs)` under no_grad / eval;
- `graph`: the same forward captured once into a `torch.cuda.CUDAGraph` and
  replayed (inputs copied into the captured input tensors first);
- the ensemble tick: the three models at batch 1 one after the other, eager
  and replayed, which is what `quorum bench --ensemble` times (less the
  consensus, which is not PyTorch's);
- one training step at batch 32 (forward, quorum's multi-task loss, backward,
  gradient clipping at 1.0, AdamW), in f32 and under `torch.autocast` bf16.

Writes one tab-separated row per figure (what, model, dtype, mode, batch,
median_us, p99_us, runs) to --out and to stdout. `--device cpu --quick` is
the dry run tools/gpu_check.sh makes on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from quorum_ref import (  # noqa: E402
    CnnLstm,
    CnnLstmConfig,
    MPDConfig,
    MPDTransformer,
    TLOBConfig,
    TLOBTransformer,
    fill_generated,
    multitask_loss,
)

MODELS = ("mpd_transformer", "tlob", "cnn_lstm")


def build(name: str):
    model = {
        "mpd_transformer": lambda: MPDTransformer(MPDConfig()),
        "tlob": lambda: TLOBTransformer(TLOBConfig()),
        "cnn_lstm": lambda: CnnLstm(CnnLstmConfig()),
    }[name]()
    fill_generated(model)
    return model


def host_inputs(name: str, batch: int, dtype) -> dict:
    g = torch.Generator().manual_seed(1)
    if name == "tlob":
        shapes = {"lob": (batch, 100, 20, 4), "aux": (batch, 112)}
    else:
        shapes = {"features": (batch, 60, 112)}
    return {k: (torch.rand(s, generator=g) * 2 - 1).to(dtype) for k, s in shapes.items()}


class Timer:
    """Wall-clock per call, each call ending in a device synchronization."""

    def __init__(self, device: str, warmup: int, reps: int):
        self.device, self.warmup, self.reps = device, warmup, reps

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def run(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        return statistics.median(times), times[round((len(times) - 1) * 0.99)], len(times)


def to_host(out: dict) -> None:
    for v in out.values():
        v.cpu()


class Forward:
    """One model's forward, eager or replayed from a CUDA graph."""

    def __init__(self, name: str, batch: int, dtype, device: str):
        self.model = build(name).eval().to(device=device, dtype=dtype)
        self.host = host_inputs(name, batch, dtype)
        self.device = device
        self.graph = None

    def eager(self):
        with torch.no_grad():
            to_host(self.model(**{k: v.to(self.device) for k, v in self.host.items()}))

    def capture(self):
        self.static_in = {k: v.to(self.device) for k, v in self.host.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as PyTorch's docs ask
                self.model(**self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.static_out = self.model(**self.static_in)

    def replay(self):
        for k, v in self.host.items():
            self.static_in[k].copy_(v)
        self.graph.replay()
        to_host(self.static_out)


def train_step_fn(name: str, device: str, amp: bool):
    model = build(name).train().to(device)
    batch = 32
    inputs = {k: v.to(device) for k, v in host_inputs(name, batch, torch.float32).items()}
    heads = len(model.cfg.horizons) if name == "tlob" else 1
    targets = [
        (torch.arange(batch, device=device) % 3, torch.linspace(-1.5, 1.6, batch, device=device)) for _ in range(heads)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            out = model(**inputs)
        # The loss in f32 (binary cross-entropy refuses autocast's bf16).
        out = {k: v.float() for k, v in out.items()}
        loss = multitask_loss(model, out, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="a few runs of each (the dry run)")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_torch_cuda: torch sees no CUDA device")
    reps = (3, 1) if args.quick else (500, 50)
    rows = []

    def emit(what, model, dtype, mode, batch, stats):
        med, p99, n = stats
        row = f"{what}\t{model}\t{dtype}\t{mode}\t{batch}\t{med:.1f}\t{p99:.1f}\t{n}"
        rows.append(row)
        print(row, flush=True)

    name_of = {torch.float32: "f32", torch.bfloat16: "bf16"}
    print(f"# torch {torch.__version__}, device {dev}" + (f" ({torch.cuda.get_device_name(0)})" if dev == "cuda" else ""))
    print("what\tmodel\tdtype\tmode\tbatch\tmedian_us\tp99_us\truns")
    for dtype in (torch.float32, torch.bfloat16):
        for batch in (1, 32):
            n = reps[0] if batch == 1 else reps[0] // 5
            timer = Timer(dev, warmup=max(2, n // 10), reps=max(1, n))
            for name in MODELS:
                f = Forward(name, batch, dtype, dev)
                emit("forward", name, name_of[dtype], "eager", batch, timer.run(f.eager))
                if dev == "cuda":
                    f.capture()
                    emit("forward", name, name_of[dtype], "graph", batch, timer.run(f.replay))
        # The ensemble tick: three models at batch 1, one after the other.
        fs = [Forward(name, 1, dtype, dev) for name in MODELS]
        timer = Timer(dev, warmup=max(2, reps[0] // 10), reps=reps[0])
        emit("ensemble", "3_models", name_of[dtype], "eager", 1, timer.run(lambda: [f.eager() for f in fs]))
        if dev == "cuda":
            for f in fs:
                f.capture()
            emit("ensemble", "3_models", name_of[dtype], "graph", 1, timer.run(lambda: [f.replay() for f in fs]))
    for name in MODELS:
        for amp in (False, True):
            timer = Timer(dev, warmup=3 if not args.quick else 1, reps=reps[1])
            emit("train_step", name, "bf16_autocast" if amp else "f32", "eager", 32, timer.run(train_step_fn(name, dev, amp)))
    if args.out:
        with open(args.out, "w") as f:
            f.write("what\tmodel\tdtype\tmode\tbatch\tmedian_us\tp99_us\truns\n")
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
