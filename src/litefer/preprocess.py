"""How raw uint8 faces become model input: one object that travels with the weights.

A weights file's card holds a :class:`Preprocess` (``card.preprocess``), the way torchvision's
``weights.transforms()`` and timm's ``resolve_data_config`` tie preprocessing to the weights. Every
consumer takes it from there: the NumPy path is the object itself (``pp(crops)``, used by ONNX
Runtime, export calibration and checks), torch training and evaluation apply the same fields in
``litefer.data.transforms.preprocess`` (tested against this one), and the page reads them from
``/v1/model``. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_WEIGHTS = (0.299, 0.587, 0.114)       # RGB -> grey (ITU-R 601 luma), as in training
INPUT_SIZES = (8, 1024)                    # model input sides accepted, in pixels


@dataclass(frozen=True)
class Preprocess:
    """Input side, channels, and normalisation of a model; call it on uint8 N,H,W,C crops."""

    input_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        """Every way of making one is checked here: a std of 0 gave NaN scores with a label, and an
        input_size of 100000 tried to allocate 120 GB."""
        lo, hi = INPUT_SIZES
        if not lo <= self.input_size <= hi:
            raise ValueError(f"preprocess.input_size must be {lo}..{hi} pixels, got {self.input_size}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"preprocess.in_chans must be 1 or 3, got {self.in_chans}")
        if not self.mean or not all(math.isfinite(v) for v in self.mean):
            raise ValueError(f"preprocess.mean must be finite numbers, got {list(self.mean)}")
        if len(self.std) != len(self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"preprocess.std must be finite numbers > 0, one per mean, got {list(self.std)}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: "dict | Preprocess") -> "Preprocess":
        """From a card's or weights file's ``preprocess`` entry (mean and std default to ImageNet's);
        ValueError names a missing or malformed field."""
        if isinstance(d, Preprocess):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"preprocess must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("input_size", "in_chans") if d.get(k) is None]
        if missing:
            raise ValueError(f"preprocess has no {' or '.join(missing)}")
        try:
            fields = dict(input_size=int(d["input_size"]), in_chans=int(d["in_chans"]),
                          mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN)),
                          std=tuple(float(v) for v in d.get("std", IMAGENET_STD)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"preprocess: input_size and in_chans must be numbers, mean and std lists of "
                             f"numbers ({type(e).__name__}: {e})") from None
        return cls(**fields)

    def channel_stats(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std for ``channels`` input channels: per channel, or their averages for grey."""
        if channels == len(self.mean):
            return self.mean[:channels], self.std[:channels]
        return (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) crops -> float32 (N, in_chans, S, S) model input."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4:
            raise ValueError(f"crops must be uint8 N,H,W,C, got {crops.dtype} {crops.shape}")
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        c = x.shape[1]
        if c == 3 and self.in_chans == 1:
            x = np.tensordot(x, np.array(GREY_WEIGHTS, np.float32), axes=([1], [0]))[:, None]
        elif c != self.in_chans and not (c == 1 and self.in_chans == 3):
            raise ValueError(f"cannot map {c}-channel crops to a {self.in_chans}-channel model")
        x = _resize_bilinear(x, self.input_size)
        if x.shape[1] == 1 and self.in_chans == 3:
            x = np.repeat(x, 3, axis=1)
        mean, std = self.channel_stats(x.shape[1])
        m = np.array(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.array(std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of PyTorch's bilinear resize (align_corners=False, no antialias)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def _resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """N,C,H,W float -> N,C,size,size, as ``torch.nn.functional.interpolate(mode="bilinear")``."""
    h, w = x.shape[2:]
    if (h, w) == (size, size):
        return x
    r0, r1, rw = _bilinear_weights(h, size)
    c0, c1, cw = _bilinear_weights(w, size)
    x = x[:, :, r0, :] * (1 - rw)[:, None] + x[:, :, r1, :] * rw[:, None]
    return x[:, :, :, c0] * (1 - cw) + x[:, :, :, c1] * cw
