"""Write the gradient golden files into tests/fixtures/grads/.

Usage (from the repository root, with the venv of make_goldens.py):

    ~/.cache/quorum/ref-venv/bin/python tools/reference/make_grad_goldens.py

Each case is `<case>.safetensors` holding everything one training step needs
and what it must give, for a small config with dropout 0 and batch 3:
- `param.<name>`: the weights (PyTorch layout, docs/models.md names);
- `input.features` / `input.lob` / `input.aux`: the (already normalized) inputs;
- `target.<i>.class` (f32 holding 0, 1, 2) and `target.<i>.ret` (bps /
  return_scale), one pair per set of heads: the primary heads, or each TLOB
  horizon in config order;
- `output.loss` (shape [1]): docs/training.md's total loss, mean over the batch;
- `grad.<name>`: the gradient of that loss for every parameter.
`__metadata__`: `model`, `config` (JSON), `direction_weight`,
`confidence_weight`, `return_weight`.

The step is computed in float64 from the float32 weights and inputs, so the
goldens carry no float32 rounding of their own.
"""

from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_goldens import inputs_for, random_init  # noqa: E402
from quorum_ref import (  # noqa: E402
    CnnLstm,
    CnnLstmConfig,
    MPDConfig,
    MPDTransformer,
    TLOBConfig,
    TLOBTransformer,
    config_json,
    multitask_loss,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "grads")
WEIGHTS = (1.0, 0.5, 0.3)


def targets_for(model, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sets = len(model.cfg.horizons) if isinstance(model, TLOBTransformer) else 1
    out = []
    for _ in range(sets):
        label = torch.randint(0, 3, (batch,), generator=g)
        # Spread wide enough that Huber's linear part (|err| > 1) is exercised too.
        ret = torch.randn(batch, generator=g) * 1.5
        out.append((label, ret))
    return out


def write_case(name, model, batch, seed, with_aux=True):
    random_init(model, seed)
    model.train()  # dropout is 0 in every case: train mode changes nothing but is what training runs
    inputs = inputs_for(model, batch, seed + 1, with_aux)
    targets = targets_for(model, batch, seed + 2)

    params32 = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
    model64 = model.double()
    outputs = model64(**{k: v.double() for k, v in inputs.items()})
    loss = multitask_loss(model64, outputs, [(lab, ret.double()) for lab, ret in targets], *WEIGHTS)
    loss.backward()

    tensors = {f"param.{k}": v for k, v in params32.items()}
    tensors.update({f"input.{k}": v.contiguous() for k, v in inputs.items()})
    for i, (lab, ret) in enumerate(targets):
        tensors[f"target.{i}.class"] = lab.to(torch.float32)
        tensors[f"target.{i}.ret"] = ret.to(torch.float32)
    tensors["output.loss"] = loss.detach().reshape(1).to(torch.float32)
    for k, p in model64.named_parameters():
        tensors[f"grad.{k}"] = p.grad.to(torch.float32).contiguous()
    md = {
        "model": model.kind,
        "config": config_json(model.cfg),
        "direction_weight": str(WEIGHTS[0]),
        "confidence_weight": str(WEIGHTS[1]),
        "return_weight": str(WEIGHTS[2]),
    }
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"), md)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {model.kind}, batch {batch}, {n} parameters, loss {loss.item():.6f}")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)  # the modules' own default init draws from the global generator
    small_mpd = dict(
        input_features=24, sequence_length=20, patch_size=(5, 6), embed_dim=32, num_layers=2, num_heads=4, dropout=0.0
    )
    write_case("mpd_cls", MPDTransformer(MPDConfig(**small_mpd, mlp_ratio=2.0)), 3, 410)
    write_case("mpd_nocls", MPDTransformer(MPDConfig(**small_mpd, mlp_ratio=1.5, use_cls_token=False)), 3, 420)

    small_tlob = dict(
        num_levels=10, sequence_length=30, spatial_channels=[8, 16], temporal_hidden=32, num_temporal_layers=2, dropout=0.0
    )
    write_case(
        "tlob_aux_3h",
        TLOBTransformer(TLOBConfig(**small_tlob, spatial_kernel=5, aux_features=16, horizons=[5, 10, 20], primary_horizon=10)),
        3,
        430,
    )
    write_case(
        "tlob_noaux_2h",
        TLOBTransformer(
            TLOBConfig(**small_tlob, temporal_kernels=[3, 5], horizons=[10, 50], primary_horizon=50, aux_features=0, num_heads=2)
        ),
        3,
        440,
        with_aux=False,
    )

    small_lstm = dict(input_features=24, sequence_length=15, conv_channels=[16, 12], lstm_hidden=20, dropout=0.0)
    write_case("cnn_lstm_1layer", CnnLstm(CnnLstmConfig(**small_lstm, lstm_layers=1)), 3, 450)
    write_case("cnn_lstm_3layer", CnnLstm(CnnLstmConfig(**small_lstm, lstm_layers=3, conv_kernel=5)), 3, 460)


if __name__ == "__main__":
    main()
