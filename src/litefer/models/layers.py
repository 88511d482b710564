"""Small building blocks shared by every network in the package."""
from __future__ import annotations

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %.

    MobileNet channel counts follow this rule so that width multipliers keep SIMD-friendly sizes.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


ACTIVATIONS = {
    "RE": nn.ReLU,
    "HS": nn.Hardswish,
}


def make_activation(name: str | None) -> nn.Module:
    """Build an activation from its table code (``RE`` = ReLU, ``HS`` = h-swish, None = identity)."""
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name](inplace=True)
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


# MobileNetV3's BatchNorm settings (torchvision uses the same): they matter for small batches.
BN_EPS = 0.001
BN_MOMENTUM = 0.01


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> activation; children named 0/1/2 like torchvision's."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "HS"):
        layers = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act is not None:
            layers.append(make_activation(act))
        super().__init__(*layers)
