"""Reading face images from disk into fixed-size uint8 arrays, reporting unreadable files."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def read_face(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode, convert to grey (1) or RGB (3), resize to size x size; raises OSError/ValueError."""
    with Image.open(path) as im:
        im.load()
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def read_faces(paths: list[Path], size: int, channels: int, what: str) -> tuple[np.ndarray, list[int], list[str]]:
    """Read many images; unreadable ones are skipped and reported. Returns (images, kept idx, errors)."""
    out, kept, errors = [], [], []
    for i, p in enumerate(paths):
        try:
            out.append(read_face(p, size, channels))
            kept.append(i)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            errors.append(f"{p}: {type(e).__name__}: {e}")
    for message in errors:         # each file named, so a data set does not shrink without a word
        log.warning("%s: skipped unreadable image %s", what, message)
    shape = (0, size, size, channels)
    return (np.stack(out) if out else np.zeros(shape, np.uint8)), kept, errors
