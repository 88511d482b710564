"""Data sets (FERPlus, RAF-DB, image folders) held in memory, and batched tensor augmentation."""
from __future__ import annotations

import logging

from .base import FERPLUS_CLASSES, RAFDB_CLASSES, DataError, FaceDataset, stratified_split
from .loader import BatchSampler
from .transforms import AugmentConfig, Preprocess, augment, preprocess

log = logging.getLogger(__name__)

__all__ = ["AugmentConfig", "BatchSampler", "DataError", "FERPLUS_CLASSES", "FaceDataset", "Preprocess",
           "RAFDB_CLASSES", "augment", "build_datasets", "folder_split_root", "load_split", "preprocess", "stratified_split"]


def load_split(data_cfg: dict, split: str, channels: int = 3) -> FaceDataset:
    """Load one split described by a config's ``data`` section."""
    kind, root = data_cfg["dataset"], data_cfg["root"]
    if kind == "ferplus":
        from .ferplus import load_ferplus
        return load_ferplus(root, split, data_cfg.get("label_mode", "majority"),
                            majority_rows=bool(data_cfg.get("majority_rows", False)))
    if kind == "rafdb":
        from .rafdb import load_rafdb
        return load_rafdb(root, split, data_cfg["image_size"], channels, data_cfg["val_fraction"],
                          data_cfg["split_seed"])
    if kind == "folder":
        from .folder import load_folder
        root, carve = folder_split_root(data_cfg, split)
        if not carve:
            return load_folder(root, split, data_cfg["image_size"], channels, carve_val=False)
        return load_folder(root, split, data_cfg["image_size"], channels, data_cfg["val_fraction"],
                           data_cfg["split_seed"], carve_val=True)
    raise ValueError(f"unknown data set kind {kind!r}")


def folder_split_root(data_cfg: dict, split: str) -> tuple[str, bool]:
    """Where a class folder's ``split`` lives, and whether train and val are carved from it: its own
    ``<split>_root`` for val and test when set, else the ``root`` (no test split without ``test_root``)."""
    other = data_cfg.get(f"{split}_root") if split in ("val", "test") else None
    if split == "test" and not other:
        raise DataError(f"image folder {data_cfg['root']}: no test split (set data.test_root)")
    if other:
        return other, False
    return data_cfg["root"], not data_cfg.get("val_root")


def build_datasets(data_cfg: dict, channels: int = 3, splits=("train", "val", "test")) -> dict:
    """Every available split; a missing split is logged and returned as None, not fatal."""
    out = {}
    for split in splits:
        try:
            out[split] = load_split(data_cfg, split, channels)
        except DataError as e:
            if split == "train":
                raise
            log.warning("split %r unavailable: %s", split, e)
            out[split] = None
    return out
