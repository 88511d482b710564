"""In-memory face data sets: every loader returns the same small structure.

Face-expression data sets are small (FERPlus is 58 MB as uint8), so images are held as one uint8
tensor and augmented in batches on the training device, instead of per-image PIL pipelines that
leave two CPU cores input-bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and row."""


@dataclass
class FaceDataset:
    """Images (N,H,W,C uint8), hard labels (N,) and optional soft targets (N,K)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str = ""
    soft_targets: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 N,H,W,C, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataError(f"{self.name}: label out of range 0..{len(self.class_names) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index, name: str | None = None) -> "FaceDataset":
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return FaceDataset(self.images[index], self.labels[index], self.class_names, name or self.name,
                           None if self.soft_targets is None else self.soft_targets[index], dict(self.info))


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified split of indices into (kept, held_out); each class gives ``fraction``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        held.append(idx[:n])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx
