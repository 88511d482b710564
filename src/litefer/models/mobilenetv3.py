"""MobileNetV3 built from one block table; the paper's variants are edits of that table.

The architecture is data: ``LARGE`` below is MobileNetV3-Large row by row, and each variant in the
paper (reduced tail, h-swish everywhere, CA / MAXCA / CPSCA in the middle blocks) is produced by
the small table transforms ``reduce_tail``, ``with_activation`` and ``with_attention``. One block
class builds any row. Module names follow torchvision's (``features``, ``block``, ``classifier``)
so that ImageNet weights can be loaded by name where shapes agree.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

import torch
from torch import nn

from .attention import make_attention
from .layers import ConvBNAct


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual row: kernel, expanded channels, output channels, attention, act, stride."""

    kernel: int
    expanded: int
    out: int
    attention: str | None
    act: str
    stride: int


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: stem width, block rows, last 1x1 conv width and the head's hidden width."""

    blocks: tuple[BlockSpec, ...]
    stem: int = 16
    last_conv: int = 960
    head: int = 1280

    def describe(self) -> str:
        """The spec as a text table, in the paper's Table 1 column order."""
        lines = ["#   k  exp  out  attention  act  s"]
        for i, b in enumerate(self.blocks, 1):
            lines.append(f"{i:<3} {b.kernel}  {b.expanded:<4} {b.out:<4} {str(b.attention or '-'):<10} "
                         f"{b.act:<4} {b.stride}")
        lines.append(f"last conv {self.last_conv}, head {self.head}")
        return "\n".join(lines)


def _rows(table: Iterable[tuple]) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(*row) for row in table)


# MobileNetV3-Large (Howard et al., ICCV 2019, Table 1); rows are numbered 1..15 in the docs.
LARGE = NetworkSpec(
    blocks=_rows([
        # k, exp, out, attention, act, s
        (3, 16, 16, None, "RE", 1),
        (3, 64, 24, None, "RE", 2),
        (3, 72, 24, None, "RE", 1),
        (5, 72, 40, "se", "RE", 2),
        (5, 120, 40, "se", "RE", 1),
        (5, 120, 40, "se", "RE", 1),
        (3, 240, 80, None, "HS", 2),
        (3, 200, 80, None, "HS", 1),
        (3, 184, 80, None, "HS", 1),
        (3, 184, 80, None, "HS", 1),
        (3, 480, 112, "se", "HS", 1),
        (3, 672, 112, "se", "HS", 1),
        (5, 672, 160, "se", "HS", 2),
        (5, 960, 160, "se", "HS", 1),
        (5, 960, 160, "se", "HS", 1),
    ]),
    last_conv=960,
    head=1280,
)


def reduce_tail(spec: NetworkSpec, divider: int = 2) -> NetworkSpec:
    """Halve the last three blocks, the last conv and the head (torchvision's ``reduced_tail``)."""
    blocks = list(spec.blocks)
    blocks[12] = replace(blocks[12], out=blocks[12].out // divider)
    for i in (13, 14):
        blocks[i] = replace(blocks[i], expanded=blocks[i].expanded // divider, out=blocks[i].out // divider)
    last_out = blocks[-1].out
    return replace(spec, blocks=tuple(blocks), last_conv=6 * last_out, head=spec.head // divider)


def with_activation(spec: NetworkSpec, act: str) -> NetworkSpec:
    """Use one activation in every block (the paper: h-swish everywhere)."""
    return replace(spec, blocks=tuple(replace(b, act=act) for b in spec.blocks))


def with_attention(spec: NetworkSpec, rows: Iterable[int], attention: str | None) -> NetworkSpec:
    """Set the attention of the given 1-based block rows."""
    blocks = list(spec.blocks)
    for row in rows:
        if not 1 <= row <= len(blocks):
            raise ValueError(f"block row {row} out of range 1..{len(blocks)}")
        blocks[row - 1] = replace(blocks[row - 1], attention=attention)
    return replace(spec, blocks=tuple(blocks))


class InvertedResidual(nn.Module):
    """1x1 expand -> kxk depthwise -> attention -> 1x1 linear projection, residual when shapes allow."""

    def __init__(self, in_ch: int, spec: BlockSpec, gate: str | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        if spec.expanded != in_ch:
            layers.append(ConvBNAct(in_ch, spec.expanded, 1, act=spec.act))
        layers.append(ConvBNAct(spec.expanded, spec.expanded, spec.kernel, spec.stride,
                                groups=spec.expanded, act=spec.act))
        attention = make_attention(spec.attention, spec.expanded, gate=gate if spec.attention != "se" else None)
        if attention is not None:
            layers.append(attention)
        layers.append(ConvBNAct(spec.expanded, spec.out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = spec.stride == 1 and in_ch == spec.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(nn.Module):
    """MobileNetV3 from a ``NetworkSpec``.

    ``forward(x)`` gives logits; ``forward_features(x)`` gives the head's hidden embedding (640-d in
    the reduced networks: Linear + h-swish, before dropout), which is where the centre loss acts.
    ``forward(x, return_embedding=True)`` gives both in one pass (and works through DDP wrappers).
    """

    def __init__(self, spec: NetworkSpec, num_classes: int = 8, in_chans: int = 3, dropout: float = 0.2,
                 attention_gate: str | None = None):
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embedding_dim = spec.head
        layers: list[nn.Module] = [ConvBNAct(in_chans, spec.stem, 3, 2, act="HS")]
        channels = spec.stem
        for row in spec.blocks:
            layers.append(InvertedResidual(channels, row, gate=attention_gate))
            channels = row.out
        layers.append(ConvBNAct(channels, spec.last_conv, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(spec.last_conv, spec.head),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=float(dropout), inplace=True),
            nn.Linear(spec.head, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the centre loss acts on: pooled features -> Linear -> h-swish."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[1](self.classifier[0](x))

    def forward_head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits from an embedding: dropout -> Linear."""
        return self.classifier[3](self.classifier[2](embedding))

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        embedding = self.forward_features(x)
        logits = self.forward_head(embedding)
        return (logits, embedding) if return_embedding else logits
