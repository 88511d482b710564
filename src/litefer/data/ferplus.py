"""FERPlus from the official files: FER2013 pixels (``fer2013.csv[.gz]``) + FERPlus votes (``fer2013new.csv``).

Rows of the two files correspond by order. The parsed pixels and votes are cached as one ``.npz``
keyed by both files' SHA-256, so the 85 MB CSV is parsed once per machine.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..utils import atomic_write_bytes, cache_dir, sha256_file
from .base import FERPLUS_CLASSES, DataError, FaceDataset

log = logging.getLogger(__name__)

FER_COLUMNS = ["emotion", "pixels", "Usage"]
VOTE_COLUMNS = ["Usage", "Image name", *FERPLUS_CLASSES, "unknown", "NF"]
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
LABEL_MODES = ("majority", "probability", "crossentropy")
PIXELS = 48 * 48


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def find_files(root: str | os.PathLike) -> tuple[Path, Path]:
    """Locate ``fer2013.csv(.gz)`` and ``fer2013new.csv`` in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"FERPlus root {root} is not a directory")
    pixels = next((root / n for n in ("fer2013.csv", "fer2013.csv.gz") if (root / n).is_file()), None)
    if pixels is None:
        raise DataError(f"{root}: missing fer2013.csv or fer2013.csv.gz (FER2013 pixels)")
    votes = root / "fer2013new.csv"
    if not votes.is_file():
        raise DataError(f"{root}: missing fer2013new.csv (FERPlus labels)")
    return pixels, votes


# what reading a damaged file raises: a cut gzip stream (EOFError), bad gzip data (OSError,
# zlib.error), bytes that are not UTF-8 text, a malformed CSV line (csv.Error)
READ_ERRORS = (EOFError, OSError, zlib.error, UnicodeDecodeError, csv.Error)


def _csv_rows(path: Path, columns: list[str]):
    """(line number, fields) of each data row after checking the header; a truncated or corrupt
    file is a DataError naming it and the line where reading broke off."""
    row_no = 1
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != columns:
                raise DataError(f"{path}: expected columns {columns}, found {header}")
            for row_no, row in enumerate(reader, start=2):
                yield row_no, row
    except READ_ERRORS as e:
        raise DataError(f"{path}: truncated or corrupt after line {row_no} ({type(e).__name__}: "
                        f"{str(e).strip()[:200] or 'no detail'})") from None


def _parse_pixels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, usages = [], []
    for row_no, row in _csv_rows(path, FER_COLUMNS):
        if len(row) != 3:
            raise DataError(f"{path}, line {row_no}: expected 3 fields, found {len(row)}")
        try:
            px = np.array(row[1].split(), dtype=np.int32)
        except ValueError:
            raise DataError(f"{path}, line {row_no}: pixels are not integers") from None
        if px.size != PIXELS:
            raise DataError(f"{path}, line {row_no}: expected {PIXELS} pixel values, found {px.size}")
        outside = np.flatnonzero((px < 0) | (px > 255))
        if outside.size:
            raise DataError(f"{path}, line {row_no}: pixel values must be in 0..255, found {px[outside[0]]} "
                            f"(pixel {outside[0] + 1} of {PIXELS}; {outside.size} outside the range)")
        images.append(px.astype(np.uint8))
        usages.append(row[2])
    if not images:
        raise DataError(f"{path}: no data rows")
    return np.stack(images).reshape(-1, 48, 48), np.array(usages)


def _parse_votes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    votes, usages = [], []
    for row_no, row in _csv_rows(path, VOTE_COLUMNS):
        if len(row) != len(VOTE_COLUMNS):
            raise DataError(f"{path}, line {row_no}: expected {len(VOTE_COLUMNS)} fields, found {len(row)}")
        try:
            v = [int(x) for x in row[2:]]
        except ValueError:
            raise DataError(f"{path}, line {row_no}: vote counts are not integers") from None
        if min(v) < 0:
            raise DataError(f"{path}, line {row_no}: negative vote count")
        votes.append(v)
        usages.append(row[0])
    return np.array(votes, dtype=np.int16).reshape(-1, len(VOTE_COLUMNS) - 2), np.array(usages)


def load_arrays(root: str | os.PathLike, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Parse (or load from cache) pixels, votes and usage of every row."""
    pixels_path, votes_path = find_files(root)
    key = hashlib.sha256((sha256_file(pixels_path) + sha256_file(votes_path)).encode()).hexdigest()[:16]
    cache = cache_dir() / f"ferplus-{key}.npz"
    if use_cache and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    images, usage = _parse_pixels(pixels_path)
    votes, vote_usage = _parse_votes(votes_path)
    if len(images) != len(votes):
        raise DataError(f"{pixels_path} has {len(images)} rows but {votes_path} has {len(votes)}; "
                        "FERPlus labels join to pixels by row order, so the files must match")
    mismatch = np.flatnonzero(usage != vote_usage)
    if mismatch.size:
        raise DataError(f"{votes_path}, line {mismatch[0] + 2}: Usage {str(vote_usage[mismatch[0]])!r} differs from "
                        f"{pixels_path}'s {str(usage[mismatch[0]])!r}; the files are not row-aligned")
    arrays = {"images": images, "votes": votes, "usage": usage.astype("U16")}
    if use_cache:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(cache, buf.getvalue())
    return arrays


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The paper's labelling: drop votes <= 1, keep a class holding > half the rest; -1 = dropped."""
    v = np.where(votes <= 1, 0, votes).astype(np.int64)
    total = v.sum(1)
    top = v.argmax(1)
    keep = (v.max(1) * 2 > total) & (total > 0) & (top < len(FERPLUS_CLASSES))
    return np.where(keep, top, -1)


def soft_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FERPlus authors' distribution targets: votes <= 1 dropped, rows led by unknown/NF dropped."""
    v = np.where(votes <= 1, 0, votes).astype(np.float32)
    emo = v[:, : len(FERPLUS_CLASSES)]
    keep = (v.argmax(1) < len(FERPLUS_CLASSES)) & (emo.sum(1) > 0)
    dist = emo / np.maximum(emo.sum(1, keepdims=True), 1e-9)
    return dist, keep


def load_ferplus(root: str | os.PathLike, split: str, label_mode: str = "majority",
                 use_cache: bool = True, majority_rows: bool = False) -> FaceDataset:
    """One split (``train`` / ``val`` / ``test``) of FERPlus; raises DataError if the split is absent.

    ``majority_rows`` keeps only the rows that have a majority label (the paper's split: 25,060 /
    3,199 / 3,153) whatever ``label_mode`` trains on, e.g. soft targets on the paper's rows."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown FERPlus label mode {label_mode!r}; expected one of {LABEL_MODES}")
    arrays = load_arrays(root, use_cache)
    usage_name = {v: k for k, v in USAGE_TO_SPLIT.items()}.get(split)
    if usage_name is None:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(USAGE_TO_SPLIT.values())}")
    in_split = arrays["usage"] == usage_name
    if not in_split.any():
        present = sorted(set(arrays["usage"].tolist()))
        raise DataError(f"FERPlus at {root}: split {split!r} ({usage_name}) has no rows; present: {present}")
    votes = arrays["votes"]
    dist = None
    if label_mode == "majority":
        labels = majority_labels(votes)
        keep = in_split & (labels >= 0)
    else:
        dist, ok = soft_targets(votes)
        labels = dist.argmax(1)
        keep = in_split & ok
        if majority_rows:
            keep &= majority_labels(votes) >= 0
    idx = np.flatnonzero(keep)
    dropped = int(in_split.sum()) - len(idx)
    rule = f"{label_mode}{' + majority rows' if majority_rows and label_mode != 'majority' else ''}"
    log.info("FERPlus %s (%s): %d images kept, %d rows skipped by the %s labelling rule",
             split, usage_name, len(idx), dropped, rule)
    images = torch.from_numpy(arrays["images"][idx]).unsqueeze(-1)
    return FaceDataset(images, torch.from_numpy(labels[idx].astype(np.int64)), FERPLUS_CLASSES,
                       name=f"ferplus/{split}",
                       soft_targets=None if dist is None else torch.from_numpy(dist[idx]),
                       info={"skipped_rows": dropped, "label_mode": label_mode, "majority_rows": majority_rows,
                             "source_rows": idx.tolist()
                             if len(idx) < 50 else None})
