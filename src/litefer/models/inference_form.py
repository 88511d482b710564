"""The inference form of coordinate attention: the same function as ``CoordAttention`` (CA, MAXCA,
CPSCA) in eval mode, written with the operations CPU runtimes keep fast.

The training form pools with reductions, concatenates the two directional descriptors, runs the
shared ``conv1`` once per pooling group, sums, normalises, splits and transposes back. In eval mode
that is, exactly (``conv1`` is linear, BatchNorm is affine per channel and both act per position):

* the H descriptor is a pooling with an (1, W) window and the W descriptor one with an (H, 1)
  window (no transposes: a 1x1 convolution runs on an N,C,1,W tensor as well as on N,C,W,1);
* the groups' descriptors of one direction are summed before ``conv1`` (whose bias then counts once
  per group), and BatchNorm is folded into ``conv1``, so each direction costs one tiny convolution
  and there is no concat or split;
* the two gates are expanded to full size first (nearest-neighbour Resize of the H gate, Tile of
  the W gate: both copy whole rows), multiplied with each other and then with the feature map, all
  without broadcasting: ONNX Runtime's broadcasting Mul walks spans of W (or 1) elements and was
  6 to 7 times slower per element than a same-shape Mul on 7x7 maps (``results/ort_profile.md``).

``inference_form(model)`` returns an eval-mode copy of any network with every ``CoordAttention``
replaced; ``litefer export`` and the ONNX Runtime backend use it, and the tests hold it to the
training form (the reference) for every attention kind.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from .attention import CoordAttention

_POOLS = {"avg": F.avg_pool2d, "max": F.max_pool2d}


# Width the middle channels are padded to: ONNX Runtime keeps a convolution in its blocked NCHWc
# layout only when its input channels are a multiple of the SIMD block (8 on AVX2, 16 on AVX-512).
CHANNEL_BLOCK = 16


def _padded(n: int, block: int = CHANNEL_BLOCK) -> int:
    return -(-n // block) * block


def _folded_conv1(m: CoordAttention, out_channels: int) -> nn.Conv2d:
    """``conv1`` with the groups' bias sum and ``bn1`` (running statistics) folded in, widened to
    ``out_channels`` with all-zero filters (h-swish(0) = 0, so the extra channels stay zero)."""
    bn, conv = m.bn1, m.conv1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, out_channels, 1, dtype=conv.weight.dtype, device=conv.weight.device)
    mip = conv.out_channels
    with torch.no_grad():
        fused.weight.zero_()
        fused.bias.zero_()
        fused.weight[:mip].copy_(conv.weight * scale[:, None, None, None])
        fused.bias[:mip].copy_((len(m.plan) * bias - bn.running_mean) * scale + bn.bias)
    return fused


def _widened(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A 1x1 ``conv`` reading ``in_channels`` inputs, the extra ones with zero weights."""
    out = nn.Conv2d(in_channels, conv.out_channels, 1, bias=conv.bias is not None, dtype=conv.weight.dtype,
                    device=conv.weight.device)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[:, :conv.in_channels].copy_(conv.weight)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


class CoordAttentionInference(nn.Module):
    """Eval-mode ``CoordAttention`` rebuilt from pooling windows, per-direction convolutions and one
    product of the gates; build it with ``CoordAttentionInference(trained_module)``."""

    def __init__(self, m: CoordAttention):
        super().__init__()
        self.pooling = m.pooling
        self.pools_over_w = tuple(g[0] for g in m.plan)      # give the H descriptor (N,C,H,1)
        self.pools_over_h = tuple(g[1] for g in m.plan)      # give the W descriptor (N,C,1,W)
        width = _padded(m.conv1.out_channels)
        self.conv1 = _folded_conv1(m, width)
        self.act = nn.Hardswish()
        self.conv_h = _widened(m.conv_h, width)
        self.conv_w = _widened(m.conv_w, width)
        self.gate = copy.deepcopy(m.gate)

    @staticmethod
    def _pooled(x: torch.Tensor, kinds: tuple[str, ...], window: tuple[int, int]) -> torch.Tensor:
        out = None
        for kind in kinds:
            p = _POOLS[kind](x, window)
            out = p if out is None else out + p
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        d_h = self._pooled(x, self.pools_over_w, (1, w))                  # N,C,H,1
        d_w = self._pooled(x, self.pools_over_h, (h, 1))                  # N,C,1,W
        a_h = self.gate(self.conv_h(self.act(self.conv1(d_h))))
        a_w = self.gate(self.conv_w(self.act(self.conv1(d_w))))
        # the gates' outer product from full-size tensors: Resize (nearest) and Tile copy whole rows,
        # where a broadcasting Mul would walk spans of W (or 1) elements
        g = F.interpolate(a_h, scale_factor=(1.0, float(w)), mode="nearest") * a_w.repeat(1, 1, h, 1)
        return x * g

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


def inference_form(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every ``CoordAttention`` in its inference form.

    Models without coordinate attention (MobileNetV3-Large's SE) come back as an eval-mode copy.
    """
    out = copy.deepcopy(model).eval()
    if isinstance(out, CoordAttention):
        return CoordAttentionInference(out).eval()
    for child in list(out.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, CoordAttention):
                setattr(child, attr, CoordAttentionInference(sub).eval())
    return out
