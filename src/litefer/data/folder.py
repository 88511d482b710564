"""A generic ``root/<class>/*.png|jpg|...`` data set; class folders named like FERPlus classes
(or common synonyms) map onto the 8 FERPlus classes so that models and labels stay compatible."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .base import FERPLUS_CLASSES, DataError, FaceDataset, stratified_split
from .images import IMAGE_SUFFIXES, read_faces

log = logging.getLogger(__name__)

SYNONYMS = {
    "happy": "happiness", "joy": "happiness", "sad": "sadness", "angry": "anger", "surprised": "surprise",
    "fearful": "fear", "afraid": "fear", "disgusted": "disgust", "contemptuous": "contempt", "calm": "neutral",
}


def canonical_class(name: str) -> str:
    n = name.strip().lower()
    return SYNONYMS.get(n, n)


def discover(root: Path) -> tuple[list[Path], list[str]]:
    if not root.is_dir():
        raise DataError(f"image folder {root} is not a directory")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"image folder {root} has no class sub-folders (expected root/<class>/*.jpg)")
    paths, names = [], []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"class folder {d} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        names += [d.name] * len(files)
    return paths, names


def class_list(folder_names: list[str]) -> tuple[str, ...]:
    """FERPlus order when every folder maps onto a FERPlus class, else the sorted folder names."""
    canon = {canonical_class(n) for n in folder_names}
    if canon <= set(FERPLUS_CLASSES):
        return FERPLUS_CLASSES
    return tuple(sorted(set(folder_names)))


def load_folder(root: str | os.PathLike, split: str = "train", image_size: int = 100, channels: int = 3,
                val_fraction: float = 0.1, split_seed: int = 0, carve_val: bool = True,
                class_names: tuple[str, ...] | None = None) -> FaceDataset:
    """Load a class-folder tree. With ``carve_val`` the train/val splits share one folder."""
    root = Path(root)
    paths, names = discover(root)
    classes = class_names or class_list(names)
    lookup = {canonical_class(c) if classes == FERPLUS_CLASSES else c: i for i, c in enumerate(classes)}
    key = (lambda n: canonical_class(n)) if classes == FERPLUS_CLASSES else (lambda n: n)
    unknown = sorted({n for n in names if key(n) not in lookup})
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown} are not among the classes {list(classes)}")
    labels = np.array([lookup[key(n)] for n in names])
    if carve_val and split in ("train", "val"):
        keep, held = stratified_split(labels, val_fraction, split_seed)
        index = held if split == "val" else keep
        paths, labels = [paths[i] for i in index], labels[index]
    images, kept, errors = read_faces(paths, image_size, channels, f"{root} ({split})")
    return FaceDataset(torch.from_numpy(images), torch.from_numpy(labels[kept].astype(np.int64)), classes,
                       name=f"folder/{split}", info={"skipped": errors})
