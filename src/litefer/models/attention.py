"""Attention modules used inside inverted-residual blocks.

* ``SqueezeExcite``: MobileNetV3's channel attention (global average pool, ReLU, hard-sigmoid gate).
* ``CoordAttention``: coordinate attention (Hou et al., CVPR 2021) generalised over how the two
  directional descriptors are pooled. CA, MAXCA and the paper's CPSCA are three pooling plans of
  the same module, so the ablation of Table 5 changes one argument and nothing else.

Gates default to the paper's sigmoid; ``gate="hardsigmoid"`` trades a little accuracy risk for
kernels that quantize and run well on mobile runtimes.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import BN_EPS, BN_MOMENTUM, make_divisible

GATES = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}

# A pooling plan is a tuple of groups; each group is (pool over W -> H descriptor,
# pool over H -> W descriptor). Groups share conv1 and are summed before BatchNorm.
POOLING_PLANS: dict[str, tuple[tuple[str, str], ...]] = {
    "ca": (("avg", "avg"),),
    "maxca": (("max", "max"),),
    "cpsca": (("max", "avg"), ("avg", "max")),
}


def _make_gate(name: str) -> nn.Module:
    try:
        return GATES[name]()
    except KeyError:
        raise ValueError(f"unknown gate {name!r}; expected one of {sorted(GATES)}") from None


def _pool(x: torch.Tensor, how: str, dim: int) -> torch.Tensor:
    if how == "avg":
        return x.mean(dim=dim, keepdim=True)
    if how == "max":
        return x.amax(dim=dim, keepdim=True)
    raise ValueError(f"unknown pooling {how!r}; expected 'avg' or 'max'")


class SqueezeExcite(nn.Module):
    """Channel attention as in MobileNetV3: squeeze to make_divisible(C/4, 8), ReLU, expand, gate."""

    def __init__(self, channels: int, gate: str = "hardsigmoid"):
        super().__init__()
        squeeze = make_divisible(channels // 4, 8)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = _make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(self.relu(self.fc1(scale)))
        return x * self.gate(scale)


class CoordAttention(nn.Module):
    """Coordinate attention with a configurable pooling plan (``ca``, ``maxca`` or ``cpsca``).

    For each group: the H descriptor (N,C,H,1) pools over W, the W descriptor (N,C,W,1) pools over
    H; both are concatenated along the spatial axis and go through the shared 1x1 ``conv1``. The
    groups' conv outputs are summed, then BatchNorm, h-swish, split, ``conv_h``/``conv_w`` and gates.
    """

    def __init__(self, channels: int, pooling: str = "ca", reduction: int = 32, gate: str = "sigmoid"):
        super().__init__()
        if pooling not in POOLING_PLANS:
            raise ValueError(f"unknown coordinate-attention pooling {pooling!r}; "
                             f"expected one of {sorted(POOLING_PLANS)}")
        self.pooling = pooling
        self.plan = POOLING_PLANS[pooling]
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.Hardswish(inplace=True)
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)
        self.gate = _make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h, a_w = self.gates(x)
        return x * a_h * a_w

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The height gate (N,C,H,1) and width gate (N,C,1,W) this block multiplies ``x`` by."""
        h, w = x.shape[-2:]
        y = None
        for pool_w, pool_h in self.plan:
            x_h = _pool(x, pool_w, dim=3)                                  # N,C,H,1
            x_w = _pool(x, pool_h, dim=2).transpose(2, 3)                  # N,C,W,1
            z = self.conv1(torch.cat([x_h, x_w], dim=2))                   # N,mip,H+W,1
            y = z if y is None else y + z
        y = self.act(self.bn1(y))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.gate(self.conv_h(y_h))                                  # N,C,H,1
        a_w = self.gate(self.conv_w(y_w.transpose(2, 3)))                  # N,C,1,W
        return a_h, a_w

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


def make_attention(kind: str | None, channels: int, gate: str | None = None) -> nn.Module | None:
    """Build the attention named in a block-table row (None, ``se``, ``ca``, ``maxca``, ``cpsca``)."""
    if kind is None:
        return None
    if kind == "se":
        return SqueezeExcite(channels, gate=gate or "hardsigmoid")
    if kind in POOLING_PLANS:
        return CoordAttention(channels, pooling=kind, gate=gate or "sigmoid")
    raise ValueError(f"unknown attention {kind!r}; expected None, 'se' or one of {sorted(POOLING_PLANS)}")
