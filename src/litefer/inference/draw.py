"""Boxes and labels drawn on images and video frames."""
from __future__ import annotations

import zlib

import cv2
import numpy as np

# BGR colour per expression (other class names get a colour from their hash)
COLOURS = {"neutral": (200, 200, 200), "happiness": (0, 215, 255), "surprise": (255, 200, 0),
           "sadness": (255, 90, 30), "anger": (0, 0, 230), "disgust": (0, 140, 70), "fear": (180, 60, 160),
           "contempt": (40, 120, 200)}


def colour(label: str) -> tuple[int, int, int]:
    if label in COLOURS:
        return COLOURS[label]
    h = zlib.crc32(label.encode())
    return (h % 200 + 40, (h // 200) % 200 + 40, (h // 40000) % 200 + 40)


def annotate(bgr: np.ndarray, faces) -> np.ndarray:
    """A copy of ``bgr`` with each face's box and ``label score`` drawn (``#track label score`` for a
    tracked video face); sizes follow the image."""
    out = np.ascontiguousarray(bgr.copy())
    scale = max(out.shape[:2]) / 800.0
    thick = max(1, int(round(2 * scale)))
    font = 0.5 * max(scale, 0.6)
    for f in faces:
        x, y, w, h = (int(v) for v in f.box)
        c = colour(f.label)
        cv2.rectangle(out, (x, y), (x + w, y + h), c, thick, cv2.LINE_AA)
        text = f"{f.label} {f.score:.2f}" if getattr(f, "track", None) is None else f"#{f.track} {f.label} {f.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick // 2))
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base), c, -1)
        cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), max(1, thick // 2), cv2.LINE_AA)
    return out


def heat_rgba(values: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """RGBA uint8 of a map in [0, 1]: heat colours (blue, low, to red, high; OpenCV's JET) with
    opacity rising from 0 to ``alpha`` with the value."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgb = cv2.cvtColor(cv2.applyColorMap(np.round(v * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.dstack([rgb, np.round(v * alpha * 255).astype(np.uint8)])


def overlay_explanations(bgr: np.ndarray, faces, alpha: float = 0.6) -> np.ndarray:
    """A copy of ``bgr`` with each explained face's map blended over it (:func:`heat_rgba`), then
    its box and label drawn as :func:`annotate` draws them."""
    out = np.ascontiguousarray(bgr.copy())
    height, width = out.shape[:2]
    for f in faces:
        if f.explanation is None:
            continue
        (x, y, w, h), values = f.explanation.on_photo(width, height)
        if not (w and h):
            continue
        heat = heat_rgba(values, alpha)
        a = heat[..., 3:].astype(np.float32) / 255.0
        region = out[y:y + h, x:x + w].astype(np.float32)
        out[y:y + h, x:x + w] = np.round(region * (1 - a) + heat[..., 2::-1].astype(np.float32) * a).astype(np.uint8)
    return annotate(out, faces)
