"""RAF-DB (basic) from its official layout.

``root/EmoLabel/list_patition_label.txt`` holds lines ``train_00001.jpg 5`` (labels 1..7 in the order
surprise, fear, disgust, happiness, sadness, anger, neutral) and images live at
``root/Image/aligned/train_00001_aligned.jpg``. RAF-DB has no validation split, so one is carved from
train, stratified and seeded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .base import RAFDB_CLASSES, DataError, FaceDataset, stratified_split
from .images import read_faces

log = logging.getLogger(__name__)

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"


def read_label_file(root: Path) -> list[tuple[str, int, int]]:
    """Parse the label list into (file name, 0-based label, line number)."""
    path = root / LABEL_FILE
    if not path.is_file():
        raise DataError(f"RAF-DB: missing label file {path}")
    entries = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}, line {line_no}: expected '<image> <label>', found {line!r}")
        name, raw = parts
        try:
            label = int(raw)
        except ValueError:
            raise DataError(f"{path}, line {line_no}: label {raw!r} is not an integer") from None
        if not 1 <= label <= len(RAFDB_CLASSES):
            raise DataError(f"{path}, line {line_no}: label {label} out of range 1..{len(RAFDB_CLASSES)}")
        if not (name.startswith("train_") or name.startswith("test_")):
            raise DataError(f"{path}, line {line_no}: image name {name!r} does not start with train_ or test_")
        entries.append((name, label - 1, line_no))
    if not entries:
        raise DataError(f"{path}: no entries")
    return entries


def aligned_path(root: Path, name: str) -> Path:
    stem, ext = os.path.splitext(name)
    return root / IMAGE_DIR / f"{stem}_aligned{ext}"


def load_rafdb(root: str | os.PathLike, split: str, image_size: int = 100, channels: int = 3,
               val_fraction: float = 0.1, split_seed: int = 0) -> FaceDataset:
    """``train`` and ``val`` come from the official train list (val carved out), ``test`` is official."""
    root = Path(root)
    entries = read_label_file(root)
    part = "test" if split == "test" else "train"
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    chosen = [(n, y) for n, y, _ in entries if n.startswith(part + "_")]
    if not chosen:
        raise DataError(f"RAF-DB at {root}: no {part} entries in {root / LABEL_FILE}")
    labels = np.array([y for _, y in chosen])
    if part == "train":
        keep, held = stratified_split(labels, val_fraction, split_seed)
        index = held if split == "val" else keep
        chosen = [chosen[i] for i in index]
    paths = [aligned_path(root, n) for n, _ in chosen]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        log.warning("RAF-DB %s: %d listed image(s) missing, first %s", split, len(missing), missing[0])
    images, kept, errors = read_faces(paths, image_size, channels, f"RAF-DB {split}")
    y = torch.tensor([chosen[i][1] for i in kept], dtype=torch.long)
    ds = FaceDataset(torch.from_numpy(images), y, RAFDB_CLASSES, name=f"rafdb/{split}",
                     info={"skipped": errors})
    empty = [RAFDB_CLASSES[c] for c, n in enumerate(ds.class_counts()) if n == 0]
    if empty and split == "train":
        log.warning("RAF-DB train: no images for class(es) %s", empty)
    return ds
