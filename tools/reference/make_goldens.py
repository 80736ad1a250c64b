"""Write the model golden files into tests/fixtures/models/.

Usage (from the repository root; needs torch, numpy and safetensors):

    python3 -m venv ~/.cache/quorum/ref-venv
    ~/.cache/quorum/ref-venv/bin/pip install torch numpy safetensors
    ~/.cache/quorum/ref-venv/bin/python tools/reference/make_goldens.py

Each case is `<case>.safetensors` with the inputs (`input.features`, `input.lob`,
`input.aux`) and the reference outputs (`output.<name>`), and a `__metadata__`
naming the model kind, its config JSON and where the weights come from:
- `weights = file`: `<case>.weights.safetensors`, written by
  `safetensors.torch.save_file(model.state_dict() + normalizer, path, metadata)`
  exactly as a user exporting from PyTorch would (small configs);
- `weights = generated`: the deterministic generator of quorum_ref.py, which the
  Rust tests implement too (default configs: their weights are megabytes, their
  inputs and outputs are not).
The Rust tests never need Python: they read these files.
"""

from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from quorum_ref import (  # noqa: E402
    CnnLstm,
    CnnLstmConfig,
    MPDConfig,
    MPDTransformer,
    Normalized,
    TLOBConfig,
    TLOBTransformer,
    config_json,
    fill_generated,
    metadata,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models")


def random_init(model: torch.nn.Module, seed: int) -> None:
    """PyTorch's default init, then non-trivial LayerNorm affines and embeddings."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("cls_token") or name.endswith("pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name and p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))


def normalizer(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, generator=g) * 0.3
    std = 0.5 + torch.rand(n, generator=g)
    std[1] = 0.0  # std 0 counts as 1
    return mean, std


def inputs_for(model, batch: int, seed: int, with_aux: bool):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    if isinstance(model, TLOBTransformer):
        lob = torch.randn(batch, cfg.sequence_length, cfg.num_levels, cfg.lob_features, generator=g)
        out = {"lob": lob}
        if with_aux:
            a = cfg.aux_features if cfg.aux_features > 0 else 7
            out["aux"] = torch.randn(batch, a, generator=g)
        return out
    return {"features": torch.randn(batch, cfg.sequence_length, cfg.input_features, generator=g)}


def write_case(name, model, batch, seed, generated, with_aux=True, input_norm=None, aux_norm=None):
    model.eval()
    if generated:
        fill_generated(model)
    else:
        random_init(model, seed)
    inputs = inputs_for(model, batch, seed + 1, with_aux)
    wrapped = Normalized(model, input_norm, aux_norm)
    with torch.no_grad():
        outputs = wrapped(**inputs)
    tensors = {f"input.{k}": v.contiguous() for k, v in inputs.items()}
    tensors.update({f"output.{k}": v.clone().contiguous() for k, v in outputs.items()})
    md = {"model": model.kind, "config": config_json(model.cfg), "weights": "generated" if generated else "file"}
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"), md)
    if not generated:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if input_norm is not None:
            state["input_norm.mean"], state["input_norm.std"] = input_norm
        if aux_norm is not None:
            state["aux_norm.mean"], state["aux_norm.std"] = aux_norm
        save_file(state, os.path.join(OUT, f"{name}.weights.safetensors"), metadata(model, return_scale=10))
    print(f"{name}: {model.kind}, batch {batch}, {sum(p.numel() for p in model.parameters())} parameters")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # Default configs: generated weights, batch 2.
    write_case("mpd_default", MPDTransformer(MPDConfig()), 2, 100, generated=True)
    write_case("tlob_default", TLOBTransformer(TLOBConfig()), 2, 200, generated=True)
    write_case("cnn_lstm_default", CnnLstm(CnnLstmConfig()), 2, 300, generated=True)

    # Small, non-default configs: weights saved by PyTorch, awkward batch 3.
    small_mpd = dict(input_features=24, sequence_length=20, patch_size=(5, 6), embed_dim=32, num_layers=2, num_heads=4)
    write_case("mpd_small_cls", MPDTransformer(MPDConfig(**small_mpd, mlp_ratio=2.0)), 3, 110, generated=False)
    write_case(
        "mpd_small_nocls_norm",
        MPDTransformer(MPDConfig(**small_mpd, mlp_ratio=1.5, use_cls_token=False)),
        3,
        120,
        generated=False,
        input_norm=normalizer(24, 121),
    )

    small_tlob = dict(num_levels=10, sequence_length=30, spatial_channels=[8, 16], temporal_hidden=32, num_temporal_layers=2)
    write_case(
        "tlob_small_noaux_2h",
        TLOBTransformer(TLOBConfig(**small_tlob, temporal_kernels=[3, 5], horizons=[10, 50], primary_horizon=50, aux_features=0, num_heads=2)),
        3,
        210,
        generated=False,
        with_aux=False,
    )
    write_case(
        "tlob_small_aux_norm",
        TLOBTransformer(TLOBConfig(**small_tlob, spatial_kernel=5, aux_features=16, horizons=[5, 10, 20], primary_horizon=10)),
        3,
        220,
        generated=False,
        aux_norm=normalizer(16, 221),
    )
    write_case(
        "tlob_small_aux_unused",
        TLOBTransformer(TLOBConfig(**small_tlob, aux_features=16, horizons=[10], primary_horizon=10)),
        3,
        230,
        generated=False,
        with_aux=False,
    )

    small_lstm = dict(input_features=24, sequence_length=15, conv_channels=[16, 12], lstm_hidden=20)
    write_case("cnn_lstm_small_1layer", CnnLstm(CnnLstmConfig(**small_lstm, lstm_layers=1)), 3, 310, generated=False)
    write_case(
        "cnn_lstm_small_3layer_norm",
        CnnLstm(CnnLstmConfig(**small_lstm, lstm_layers=3, conv_kernel=5)),
        3,
        320,
        generated=False,
        input_norm=normalizer(24, 321),
    )


if __name__ == "__main__":
    main()
