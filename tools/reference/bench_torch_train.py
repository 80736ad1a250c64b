"""Time one PyTorch eager training step on the CPU, the peer of
`cargo bench --bench train` (benches/train.rs): default configs, batch 32,
dropout on, docs/training.md's multi-task loss, backward, the global L2
gradient clip at 1.0 and AdamW (lr 1e-4, weight decay 0.01 on matrices and
conv kernels except cls_token and pos_embed, as src/train/optim.rs).

    python3 -m venv ~/.cache/quorum/ref-venv
    ~/.cache/quorum/ref-venv/bin/pip install torch numpy safetensors
    ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch_train.py [--threads 2] [--reps 20] [--amp]

`--amp`: the forward and the loss under `torch.autocast("cpu",
dtype=torch.bfloat16)`, the peer of `train_step_cpu_amp` (a bf16 CPU
backend: bf16 products from f32 master weights).

Prints the median step time per model. The inputs and targets follow the
bench's fill pattern, so both sides run the same shapes and the same mix of
classes; the numbers themselves do not matter to the time.
"""

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

BATCH = 32
NO_DECAY = ("cls_token", "pos_embed")


def fill(*shape):
    """benches/train.rs's `fill`: ((i * 7919) % 1000) / 500 - 1 in row-major order."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 7919) % 1000).to(torch.float32) / 500.0 - 1.0).reshape(shape)


def targets(sets):
    label = torch.arange(BATCH) % 3
    ret = torch.arange(BATCH, dtype=torch.float32) * 0.1 - 1.5
    return [(label, ret) for _ in range(sets)]


def optimizer(model):
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.endswith(NO_DECAY) else rest).append(p)
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast over the forward and the loss")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precision = "bf16 autocast" if args.amp else "f32"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, {precision}")
    tlob = TLOBConfig()
    cases = [
        ("mpd_transformer", MPDTransformer(MPDConfig()), {"features": fill(BATCH, 60, 112)}, 1),
        ("tlob", TLOBTransformer(tlob), {"lob": fill(BATCH, 100, 20, 4), "aux": fill(BATCH, 112)}, len(tlob.horizons)),
        ("cnn_lstm", CnnLstm(CnnLstmConfig()), {"features": fill(BATCH, 60, 112)}, 1),
    ]
    for name, model, inputs, sets in cases:
        fill_generated(model)
        model.train()
        opt = optimizer(model)
        tgt = targets(sets)
        params = [p for p in model.parameters()]

        def step():
            opt.zero_grad(set_to_none=False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
                loss = multitask_loss(model, model(**inputs), tgt, 1.0, 0.5, 0.3)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        ms = sorted(times)
        print(
            f"{name:16s} step: {statistics.median(times) * 1e3:8.1f} ms median "
            f"(min {ms[0] * 1e3:.1f}, max {ms[-1] * 1e3:.1f}, {args.reps} steps)"
        )


if __name__ == "__main__":
    main()
