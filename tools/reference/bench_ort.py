"""Time ONNX Runtime on the CPU with the reference models, f32 and int8, for
comparison with `quorum bench --backend cpu [--precision bf16|int8]` (issue
#19's peer: what a user would serve these models with instead of quorum).

    python3 -m venv ~/.cache/quorum/ref-venv
    ~/.cache/quorum/ref-venv/bin/pip install torch numpy safetensors onnx onnxruntime onnxscript
    ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_ort.py [--threads 2] [--batch 1] [--reps 200]

Each model (docs/models.md's default sizes, `fill_generated` weights, eval
mode) is exported to ONNX (opset 17, a fixed batch), then run by an
InferenceSession with `--threads` intra-op threads, one inter-op thread,
every graph optimization on. int8 is `onnxruntime.quantization.
quantize_dynamic` of that graph (QInt8 weights per output channel where ORT
supports it, activations quantized per tensor at run time: ORT's usual CPU
int8 recipe), and `int8+pre` the same after ORT's recommended
`quant_pre_process` (shape inference and graph optimization first); the
faster of the two is ORT's int8 figure. Beside them, the same module run by
PyTorch eager in f32 (`torch.no_grad()`, `--threads` threads), so the
issue's table gets its PyTorch column from the same run. Prints the median
of `--reps` timed runs after 20 warm-ups.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(__file__))
from bench_torch import median_ms  # noqa: E402
from quorum_ref import CnnLstm, CnnLstmConfig, MPDConfig, MPDTransformer, TLOBConfig, TLOBTransformer, fill_generated  # noqa: E402

OUTPUTS = ["direction_logits", "confidence", "expected_return"]


class Flat(torch.nn.Module):
    """The model with its three primary outputs as a tuple (ONNX graphs
    return a list of tensors, not a dict)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        out = self.model(*args)
        return tuple(out[k] for k in OUTPUTS)


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    b = args.batch
    cases = [
        ("mpd_transformer", MPDTransformer(MPDConfig()), {"features": torch.randn(b, 60, 112)}),
        ("tlob", TLOBTransformer(TLOBConfig()), {"lob": torch.randn(b, 100, 20, 4), "aux": torch.randn(b, 112)}),
        ("cnn_lstm", CnnLstm(CnnLstmConfig()), {"features": torch.randn(b, 60, 112)}),
    ]
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} threads, batch {b}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, inputs in cases:
            model.eval()
            fill_generated(model)
            with torch.no_grad():
                ms = median_ms(lambda: model(**inputs), reps=args.reps)
            print(f"{name:16s} torch eager    batch {b:2d}: {ms:8.3f} ms median", flush=True)
            f32_path = os.path.join(tmp, f"{name}.onnx")
            int8_path = os.path.join(tmp, f"{name}.int8.onnx")
            with torch.no_grad():
                torch.onnx.export(
                    Flat(model),
                    tuple(inputs.values()),
                    f32_path,
                    input_names=list(inputs),
                    output_names=OUTPUTS,
                    opset_version=17,
                    dynamo=False,
                )
            quantize_dynamic(f32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
            pre_path = os.path.join(tmp, f"{name}.pre.onnx")
            pre_int8_path = os.path.join(tmp, f"{name}.pre.int8.onnx")
            quant_pre_process(f32_path, pre_path)
            quantize_dynamic(pre_path, pre_int8_path, weight_type=QuantType.QInt8, per_channel=True)
            feeds = {k: v.numpy().astype(np.float32) for k, v in inputs.items()}
            for precision, path in (("f32", f32_path), ("int8", int8_path), ("int8+pre", pre_int8_path)):
                sess = session(path, args.threads)
                ms = median_ms(lambda: sess.run(None, feeds), reps=args.reps)
                print(f"{name:16s} ort {precision:8s} batch {b:2d}: {ms:8.3f} ms median", flush=True)


if __name__ == "__main__":
    main()
