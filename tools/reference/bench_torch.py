"""Time PyTorch eager CPU forward of the reference models, for comparison with
`cargo bench --bench models` (same configs, batch 1 and 32).

    ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch.py [--threads 2] [--dtype bf16]

Prints the median over repeated runs of `model(**inputs)` under no_grad/eval.
`--dtype bf16` converts the models and inputs to bfloat16 (PyTorch's own
bf16 CPU kernels), the counterpart of `quorum bench --precision bf16`.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from quorum_ref import CnnLstm, CnnLstmConfig, MPDConfig, MPDTransformer, TLOBConfig, TLOBTransformer, fill_generated  # noqa: E402


def median_ms(fn, warmup=20, reps=200):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}")
    for batch in (1, 32):
        cases = [
            ("mpd_transformer", MPDTransformer(MPDConfig()), lambda b: {"features": torch.randn(b, 60, 112)}),
            ("tlob", TLOBTransformer(TLOBConfig()), lambda b: {"lob": torch.randn(b, 100, 20, 4), "aux": torch.randn(b, 112)}),
            ("cnn_lstm", CnnLstm(CnnLstmConfig()), lambda b: {"features": torch.randn(b, 60, 112)}),
        ]
        for name, model, make in cases:
            model.eval()
            fill_generated(model)
            model.to(dtype)
            inputs = {k: v.to(dtype) for k, v in make(batch).items()}
            with torch.no_grad():
                reps = 200 if batch == 1 else 30
                ms = median_ms(lambda: model(**inputs), reps=reps)
            print(f"{name:16s} batch {batch:2d}: {ms:8.3f} ms median")


if __name__ == "__main__":
    main()
