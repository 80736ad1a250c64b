"""PyTorch reference modules for quorum's three models.

Written from docs/models.md (the contract), not from the Rust
code: these are the modules users train with before exporting weights, and the
source of the golden files in tests/fixtures/models/. Parameter names and
shapes are exactly docs/models.md's, so `safetensors.torch.save_file(model.state_dict(),
path, metadata)` produces a file the engine loads unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- configs


@dataclass
class MPDConfig:
    input_features: int = 112
    sequence_length: int = 60
    patch_size: tuple = (10, 14)
    embed_dim: int = 256
    num_layers: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    num_classes: int = 3
    use_cls_token: bool = True


@dataclass
class TLOBConfig:
    num_levels: int = 20
    lob_features: int = 4
    sequence_length: int = 100
    spatial_channels: list = field(default_factory=lambda: [32, 64, 128])
    spatial_kernel: int = 3
    temporal_kernels: list = field(default_factory=lambda: [3, 5, 7])
    temporal_hidden: int = 128
    num_temporal_layers: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    num_classes: int = 3
    horizons: list = field(default_factory=lambda: [10, 30, 50])
    primary_horizon: int = 30
    aux_features: int = 112


@dataclass
class CnnLstmConfig:
    input_features: int = 112
    sequence_length: int = 60
    conv_channels: list = field(default_factory=lambda: [128, 128])
    conv_kernel: int = 3
    lstm_hidden: int = 256
    lstm_layers: int = 2
    dropout: float = 0.1
    num_classes: int = 3


def config_json(cfg) -> str:
    d = asdict(cfg)
    if "patch_size" in d:
        d["patch_size"] = list(d["patch_size"])
    return json.dumps(d)


# ---------------------------------------------------------------- common pieces


class Attention(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        dh = d // self.h
        qkv = self.qkv(x).reshape(b, n, 3, self.h, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, h, n, dh)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
        att = att.softmax(dim=-1)
        out = (att @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d: int, h: int, r: float, dropout: float):
        super().__init__()
        hidden = int(round(r * d))
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, h)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = Mlp(d, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x


class Heads(nn.Module):
    def __init__(self, d: int, num_classes: int = 3):
        super().__init__()
        self.direction = nn.Linear(d, num_classes)
        self.confidence = nn.Linear(d, 1)
        self.expected_return = nn.Linear(d, 1)

    def forward(self, z):
        return {
            "direction_logits": self.direction(z),
            "confidence": torch.sigmoid(self.confidence(z)),
            "expected_return": self.expected_return(z),
        }


# ---------------------------------------------------------------- MPDTransformer


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MPDConfig):
        super().__init__()
        pt, pf = cfg.patch_size
        self.proj = nn.Conv2d(1, cfg.embed_dim, kernel_size=(pt, pf), stride=(pt, pf))

    def forward(self, x):  # (B, T, F)
        y = self.proj(x.unsqueeze(1))  # (B, D, nT, nF)
        return y.flatten(2).transpose(1, 2)  # (B, P, D), p = i*nF + j


class MPDTransformer(nn.Module):
    kind = "mpd_transformer"

    def __init__(self, cfg: MPDConfig):
        super().__init__()
        self.cfg = cfg
        pt, pf = cfg.patch_size
        n_patches = (cfg.sequence_length // pt) * (cfg.input_features // pf)
        n_tokens = n_patches + (1 if cfg.use_cls_token else 0)
        self.patch_embed = PatchEmbed(cfg)
        if cfg.use_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            [Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.num_layers)]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-5)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.heads = Heads(cfg.embed_dim, cfg.num_classes)

    def forward(self, features):
        x = self.patch_embed(features)
        if self.cfg.use_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        z = x[:, 0] if self.cfg.use_cls_token else x.mean(dim=1)
        return self.heads(self.head_drop(z))


# ---------------------------------------------------------------- TLOB


def sinusoidal_pe(t: int, d: int) -> torch.Tensor:
    """pe[t, 2i] = sin(t / 10000^(2i/D)), pe[t, 2i+1] = cos(...); computed in f64."""
    pe = torch.zeros(t, d, dtype=torch.float64)
    for i in range(0, d, 2):
        denom = 10000.0 ** (i / d)
        for pos in range(t):
            pe[pos, i] = math.sin(pos / denom)
            if i + 1 < d:
                pe[pos, i + 1] = math.cos(pos / denom)
    return pe.to(torch.float32)


class SpatialEncoder(nn.Module):
    def __init__(self, cfg: TLOBConfig):
        super().__init__()
        chans = [cfg.lob_features] + list(cfg.spatial_channels)
        k = cfg.spatial_kernel
        self.convs = nn.ModuleList([nn.Conv1d(chans[i], chans[i + 1], k, padding=k // 2) for i in range(len(chans) - 1)])
        self.proj = nn.Linear(chans[-1] * cfg.num_levels, cfg.temporal_hidden)

    def forward(self, lob):  # (B, T, L, C)
        b, t, l, c = lob.shape
        s = lob.reshape(b * t, l, c).permute(0, 2, 1)  # (BT, C, L)
        for conv in self.convs:
            s = F.gelu(conv(s))
        return self.proj(s.flatten(1)).reshape(b, t, -1)  # index c*L + l


class MultiScale(nn.Module):
    def __init__(self, cfg: TLOBConfig):
        super().__init__()
        d = cfg.temporal_hidden
        self.branches = nn.ModuleList([nn.Conv1d(d, d, k, padding=k // 2) for k in cfg.temporal_kernels])
        self.proj = nn.Linear(len(cfg.temporal_kernels) * d, d)

    def forward(self, x):  # (B, T, D)
        xc = x.transpose(1, 2)
        cat = torch.cat([F.gelu(br(xc)) for br in self.branches], dim=1).transpose(1, 2)
        return self.proj(cat)


class AuxEncoder(nn.Module):
    def __init__(self, a: int, d: int):
        super().__init__()
        self.fc1 = nn.Linear(a, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, aux):
        return self.fc2(F.gelu(self.fc1(aux)))


class TLOBTransformer(nn.Module):
    kind = "tlob"

    def __init__(self, cfg: TLOBConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.temporal_hidden
        self.spatial = SpatialEncoder(cfg)
        self.multiscale = MultiScale(cfg)
        if cfg.aux_features > 0:
            self.aux = AuxEncoder(cfg.aux_features, d)
        self.register_buffer("pe", sinusoidal_pe(cfg.sequence_length, d), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.temporal = nn.ModuleList(
            [Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.num_temporal_layers)]
        )
        self.norm = nn.LayerNorm(d, eps=1e-5)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({f"h{h}": Heads(d, cfg.num_classes) for h in cfg.horizons})

    def forward(self, lob, aux=None):
        x = self.spatial(lob)
        x = x + self.drop(self.multiscale(x))
        if aux is not None:
            if self.cfg.aux_features == 0:
                raise ValueError("this model has no auxiliary encoder")
            x = x + self.aux(aux)[:, None, :]
        x = self.drop(x + self.pe[: x.shape[1]])
        for blk in self.temporal:
            x = blk(x)
        z = self.head_drop(self.norm(x).mean(dim=1))
        out = {}
        for h in self.cfg.horizons:
            o = self.heads[f"h{h}"](z)
            out[f"direction_{h}"] = o["direction_logits"]
            out[f"confidence_{h}"] = o["confidence"]
            out[f"expected_return_{h}"] = o["expected_return"]
        p = self.cfg.primary_horizon
        out["direction_logits"] = out[f"direction_{p}"]
        out["confidence"] = out[f"confidence_{p}"]
        out["expected_return"] = out[f"expected_return_{p}"]
        return out


# ---------------------------------------------------------------- CNN-LSTM v2


class CnnLstm(nn.Module):
    kind = "cnn_lstm"

    def __init__(self, cfg: CnnLstmConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.input_features] + list(cfg.conv_channels)
        k = cfg.conv_kernel
        self.conv = nn.ModuleList([nn.Conv1d(chans[i], chans[i + 1], k, padding=k // 2) for i in range(len(chans) - 1)])
        self.lstm = nn.LSTM(
            chans[-1],
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(cfg.lstm_hidden, eps=1e-5)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.heads = Heads(cfg.lstm_hidden, cfg.num_classes)

    def forward(self, features):
        x = features.transpose(1, 2)
        for conv in self.conv:
            x = F.gelu(conv(x))
        out, _ = self.lstm(x.transpose(1, 2))
        return self.heads(self.head_drop(self.norm(out[:, -1])))


# ---------------------------------------------------------------- normalizer


class Normalized(nn.Module):
    """Applies a stored normalizer `(x - mean) / std` (std 0 counts as 1) before the model."""

    def __init__(self, model, input_norm=None, aux_norm=None):
        super().__init__()
        self.model = model
        self.input_norm = input_norm
        self.aux_norm = aux_norm

    @staticmethod
    def _apply(x, norm):
        if norm is None or x is None:
            return x
        mean, std = norm
        std = torch.where(std == 0, torch.ones_like(std), std)
        return (x - mean) / std

    def forward(self, **inputs):
        if "features" in inputs:
            return self.model(self._apply(inputs["features"], self.input_norm))
        return self.model(inputs["lob"], self._apply(inputs.get("aux"), self.aux_norm))


# ---------------------------------------------------------------- deterministic weights


MASK64 = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h ^= byte
        h = (h * 0x100000001B3) & MASK64
    return h


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """In [0, 1) with 53 random bits."""
        return (self.next() >> 11) * (1.0 / (1 << 53))


def generated_tensor(name: str, shape) -> torch.Tensor:
    """The tiny deterministic weight generator shared with the Rust tests.

    Each tensor draws from SplitMix64 seeded with the FNV-1a hash of its name,
    element by element in row-major order: `x = c + (2u - 1) * a` in f64, then
    rounded to f32, where (c, a) is
      (1, 0.1)                 for a 1-D `*norm*.weight` (LayerNorm gains),
      (0, 0.5)                 for `cls_token` and `pos_embed`,
      (0, 1 / sqrt(fan_in))    for any other tensor with 2+ dimensions,
                               fan_in = numel / shape[0],
      (0, 0.1)                 for every other 1-D tensor (biases).
    """
    numel = 1
    for s in shape:
        numel *= s
    if len(shape) == 1 and "norm" in name and name.endswith(".weight"):
        c, a = 1.0, 0.1
    elif name.endswith("cls_token") or name.endswith("pos_embed"):
        c, a = 0.0, 0.5
    elif len(shape) >= 2:
        c, a = 0.0, 1.0 / math.sqrt(numel // shape[0])
    else:
        c, a = 0.0, 0.1
    rng = SplitMix64(fnv1a64(name))
    vals = [c + (2.0 * rng.uniform() - 1.0) * a for _ in range(numel)]
    return torch.tensor(vals, dtype=torch.float64).to(torch.float32).reshape(shape)


def fill_generated(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(generated_tensor(name, tuple(p.shape)))


def metadata(model, return_scale: float | None = None) -> dict:
    md = {
        "format": "quorum-model",
        "format_version": "1",
        "model": model.kind,
        "config": config_json(model.cfg),
    }
    if return_scale is not None:
        md["return_scale"] = str(return_scale)
    return md


# ---------------------------------------------------------------- training loss (docs/training.md)


def heads_loss(logits, confidence, expected_return, label, ret_target, w_dir=1.0, w_conf=0.5, w_ret=0.3):
    """One set of heads' multi-task loss, averaged over the batch.

    `label` holds class ids (long), `ret_target` the return in bps / return_scale.
    The confidence head's target is whether the direction head is right, taken
    without gradient.
    """
    ce = F.cross_entropy(logits, label)
    right = (logits.detach().argmax(dim=-1) == label).to(confidence.dtype)
    bce = F.binary_cross_entropy(confidence.squeeze(-1), right)
    huber = F.huber_loss(expected_return.squeeze(-1), ret_target, delta=1.0)
    return w_dir * ce + w_conf * bce + w_ret * huber


def multitask_loss(model, outputs, targets, w_dir=1.0, w_conf=0.5, w_ret=0.3):
    """docs/training.md's total: TLOB sums over its horizons, each weighted 1/len(horizons).

    `targets` is a list of (label, ret_target), one per set of heads: the
    primary heads, or each TLOB horizon in config order.
    """
    if isinstance(model, TLOBTransformer):
        names = [(f"direction_{h}", f"confidence_{h}", f"expected_return_{h}") for h in model.cfg.horizons]
    else:
        names = [("direction_logits", "confidence", "expected_return")]
    assert len(names) == len(targets)
    total = 0.0
    for (d, c, r), (label, ret) in zip(names, targets):
        total = total + heads_loss(outputs[d], outputs[c], outputs[r], label, ret, w_dir, w_conf, w_ret)
    return total / len(names)
