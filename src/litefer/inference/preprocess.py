"""Model input from face crops in NumPy: ``preprocess_numpy``, a transcription of
``litefer.data.transforms.preprocess`` tested against it, and ``softmax``. No torch, so that the ONNX
Runtime backend and the export checks run without it."""
from __future__ import annotations

import numpy as np


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of PyTorch's bilinear resize (align_corners=False, no antialias)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def preprocess_numpy(crops: np.ndarray, pp: dict) -> np.ndarray:
    """uint8 (N, H, W, C) crops -> float32 (N, C', S, S) model input, as ``litefer.data.transforms.preprocess``."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4:
        raise ValueError(f"crops must be uint8 N,H,W,C, got {crops.dtype} {crops.shape}")
    in_chans, size = int(pp["in_chans"]), int(pp["input_size"])
    x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    c = x.shape[1]
    if c == 3 and in_chans == 1:
        x = np.tensordot(x, np.array([0.299, 0.587, 0.114], np.float32), axes=([1], [0]))[:, None]
    elif c != in_chans and not (c == 1 and in_chans == 3):
        raise ValueError(f"cannot map {c}-channel crops to a {in_chans}-channel model")
    h, w = x.shape[2:]
    if (h, w) != (size, size):
        r0, r1, rw = _bilinear_weights(h, size)
        c0, c1, cw = _bilinear_weights(w, size)
        x = x[:, :, r0, :] * (1 - rw)[:, None] + x[:, :, r1, :] * rw[:, None]
        x = x[:, :, :, c0] * (1 - cw) + x[:, :, :, c1] * cw
    if x.shape[1] == 1 and in_chans == 3:
        x = np.repeat(x, 3, axis=1)
    mean, std = list(pp["mean"]), list(pp["std"])
    k = x.shape[1]
    m = np.array(mean[:k] if k == len(mean) else [sum(mean) / len(mean)], np.float32).reshape(1, -1, 1, 1)
    s = np.array(std[:k] if k == len(std) else [sum(std) / len(std)], np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
