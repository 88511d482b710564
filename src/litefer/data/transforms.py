"""Batched preprocessing and augmentation on tensors, on whatever device the model trains on.

One affine warp per batch (``affine_grid`` + ``grid_sample``) does flip, translation, rotation and
the resize to the model's input size at once; contrast and Gaussian noise are elementwise. The
evaluation path (``preprocess``) is the same resize and normalisation with no randomness. Both take
their parameters from :class:`litefer.preprocess.Preprocess`, the object the weights' card carries,
whose NumPy form the recognizer runs; tests hold the two paths together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..preprocess import GREY_WEIGHTS, IMAGENET_MEAN, IMAGENET_STD, Preprocess  # noqa: F401 (public here too)


def to_float(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """uint8 N,H,W,C -> float N,C,H,W in [0, 1], grey replicated to 3 channels or RGB averaged to 1."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    c = x.shape[1]
    if c == in_chans:
        return x
    if c == 1 and in_chans == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and in_chans == 1:
        return (x * x.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot map {c}-channel images to a {in_chans}-channel model")


def normalize(x: torch.Tensor, cfg: Preprocess) -> torch.Tensor:
    mean, std = cfg.channel_stats(x.shape[1])
    return (x - x.new_tensor(mean).view(1, -1, 1, 1)) / x.new_tensor(std).view(1, -1, 1, 1)


def preprocess(images: torch.Tensor, cfg: Preprocess, device=None) -> torch.Tensor:
    """Deterministic path: uint8 N,H,W,C faces -> normalised N,C,S,S model input."""
    x = to_float(images.to(device) if device is not None else images, cfg.in_chans)
    if x.shape[-2:] != (cfg.input_size, cfg.input_size):
        x = F.interpolate(x, size=(cfg.input_size, cfg.input_size), mode="bilinear", align_corners=False)
    return normalize(x, cfg)


@dataclass
class AugmentConfig:
    """The paper's online augmentation (§4.1); probabilities and ranges are per image."""

    flip: float = 0.5
    translate: float = 0.1          # fraction of the image size, each axis
    rotate: float = 10.0            # degrees, uniform in [-rotate, rotate]
    scale: float = 0.0              # uniform zoom in [1 - scale, 1 + scale]
    contrast: float = 0.3           # contrast factor uniform in [1 - c, 1 + c]
    contrast_p: float = 0.5
    noise_std: float = 0.03         # Gaussian noise std on the [0, 1] scale
    noise_p: float = 0.5
    erase_p: float = 0.0            # random erasing (the authors' code); 0 = off


def augment(images: torch.Tensor, cfg: Preprocess, aug: AugmentConfig, generator: torch.Generator | None = None,
            device=None) -> torch.Tensor:
    """Random flip/translate/rotate/zoom (one warp), contrast, noise, erasing; then normalise."""
    x = to_float(images.to(device) if device is not None else images, cfg.in_chans)
    n, dev = x.shape[0], x.device
    # numbers are drawn where the generator lives: a CUDA generator never makes the host wait
    gen_dev = generator.device if generator is not None else torch.device("cpu")

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=gen_dev).to(dev)

    angle = (rand(n) * 2 - 1) * math.radians(aug.rotate)
    scale = 1 + (rand(n) * 2 - 1) * aug.scale
    flip = torch.where(rand(n) < aug.flip, -1.0, 1.0)
    tx, ty = [(rand(n) * 2 - 1) * aug.translate * 2 for _ in range(2)]  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], cfg.input_size, cfg.input_size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if aug.contrast > 0 and aug.contrast_p > 0:
        factor = 1 + (rand(n) * 2 - 1) * aug.contrast
        factor = torch.where(rand(n) < aug.contrast_p, factor, torch.ones_like(factor)).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factor + mean).clamp_(0, 1)
    if aug.noise_std > 0 and aug.noise_p > 0:
        on = (rand(n) < aug.noise_p).float().view(n, 1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, device=gen_dev).to(dev) * aug.noise_std
        x = (x + on * noise).clamp_(0, 1)
    if aug.erase_p > 0:
        x = _random_erase(x, aug.erase_p, rand)
    return normalize(x, cfg)


def _random_erase(x: torch.Tensor, p: float, rand) -> torch.Tensor:
    """Zero a random rectangle (2-20 % of the area, aspect 0.3-3.3) in a fraction p of the images."""
    n, _, h, w = x.shape
    area = (0.02 + rand(n) * 0.18) * h * w
    aspect = torch.exp(math.log(0.3) + rand(n) * (math.log(3.3) - math.log(0.3)))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = rand(n) * (h - eh)
    x0 = rand(n) * (w - ew)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    box = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) &
           (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)))
    box &= (rand(n) < p).view(n, 1, 1)
    return x.masked_fill(box.unsqueeze(1), 0.0)
