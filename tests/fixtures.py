"""Small data sets in the official file formats, generated for the tests."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FER_HEADER = "emotion,pixels,Usage"
VOTE_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def face_pattern(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A grey image whose bright bar position encodes the class, plus noise: learnable, not trivial."""
    img = rng.normal(110, 20, (size, size))
    row = int((label + 0.5) * size / 8)
    img[max(0, row - 3):row + 3, 6:-6] += 90
    return np.clip(img, 0, 255).astype(np.uint8)


def write_ferplus(root: Path, n_per_split: dict | None = None, seed: int = 0, gz: bool = False) -> dict:
    """Write fer2013.csv(.gz) + fer2013new.csv; returns the expected majority-label counts per split.

    Every fifth row gets a vote pattern the majority rule drops (a 5-5 tie), every seventh is NF.
    """
    n_per_split = n_per_split or {"Training": 96, "PublicTest": 40, "PrivateTest": 24}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fer_lines, vote_lines = [FER_HEADER], [VOTE_HEADER]
    expected = {}
    i = 0
    for usage, n in n_per_split.items():
        kept = 0
        for _ in range(n):
            label = int(rng.integers(0, 8))
            votes = [0] * 10
            if i % 7 == 3:
                votes[9] = 10                      # NF: not a face -> dropped
            elif i % 5 == 4:
                votes[label] = 5
                votes[(label + 1) % 8] = 5         # tie -> no majority -> dropped
            else:
                votes[label] = 8
                votes[(label + 2) % 8] = 1         # a single vote is treated as noise and removed
                votes[8] = 1
                kept += 1
            img = face_pattern(label, rng)
            fer_lines.append(f"{rng.integers(0, 7)},{' '.join(map(str, img.ravel()))},{usage}")
            vote_lines.append(f"{usage},fer{i:07d}.png," + ",".join(map(str, votes)))
            i += 1
        expected[usage] = kept
    fer_text = "\n".join(fer_lines) + "\n"
    if gz:
        with gzip.open(root / "fer2013.csv.gz", "wt") as f:
            f.write(fer_text)
    else:
        (root / "fer2013.csv").write_text(fer_text)
    (root / "fer2013new.csv").write_text("\n".join(vote_lines) + "\n")
    return expected


def write_rafdb(root: Path, n_train_per_class: int = 6, n_test_per_class: int = 2, seed: int = 0,
                corrupt: str | None = None) -> Path:
    """RAF-DB basic layout: EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg (100x100 RGB)."""
    rng = np.random.default_rng(seed)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    img_dir = root / "Image" / "aligned"
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for part, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        k = 1
        for label in range(1, 8):
            for _ in range(per_class):
                name = f"{part}_{k:05d}.jpg"
                grey = face_pattern(label - 1, rng, 100)
                rgb = np.stack([grey, grey, (grey * 0.9).astype(np.uint8)], -1)
                Image.fromarray(rgb).save(img_dir / f"{part}_{k:05d}_aligned.jpg", quality=90)
                lines.append(f"{name} {label}")
                k += 1
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    if corrupt:
        (img_dir / corrupt).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def write_image_folder(root: Path, classes=("happy", "sad", "neutral"), per_class: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.fromarray(face_pattern(c, rng, 64)).save(d / f"{j}.png")
    return root
