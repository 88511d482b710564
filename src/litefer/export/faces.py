"""Real face crops for calibration, parity and accuracy checks of an export.

* a FERPlus root (``fer2013.csv[.gz]`` + ``fer2013new.csv``): calibration samples the training
  split, parity samples the validation split, accuracy scores the whole validation split;
* a folder of images: small images (at most twice the crop side) are taken as face crops as they
  are, larger ones as photos whose faces are detected and cropped like the recognizer does;
* ``astronaut`` (the default parity source): the face of the public-domain astronaut photo that
  ships in the package (``litefer.inference.samples``) with a few deterministic variations (mirror,
  rotation, shift, light, blur).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..inference.align import CropSpec, crop_face
from ..inference.inputs import IMAGE_SUFFIXES, InputError, read_image

log = logging.getLogger(__name__)


def _is_ferplus_root(path: Path) -> bool:
    return path.is_dir() and (path / "fer2013new.csv").is_file() and any(
        (path / n).is_file() for n in ("fer2013.csv", "fer2013.csv.gz"))


def _to_spec(img_bgr: np.ndarray, spec: CropSpec) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY) if spec.grayscale else cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
    if g.shape[:2] != (spec.size, spec.size):
        shrink = max(g.shape[:2]) > spec.size
        g = cv2.resize(g, (spec.size, spec.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return g[..., None] if g.ndim == 2 else g


def astronaut_faces(spec: CropSpec, n: int = 32) -> np.ndarray:
    """``n`` crops of the astronaut photo's face under deterministic variations of pose and light."""
    import cv2

    from ..inference.detect import HaarDetector
    from ..inference.samples import sample_bgr

    photo = sample_bgr()
    det = HaarDetector().detect(photo)[0]
    rng = np.random.default_rng(0)
    out = []
    h, w = photo.shape[:2]
    for i in range(n):
        img = photo[:, ::-1] if i % 2 else photo
        d = det
        if i % 2:
            x, y, bw, bh = det.box
            d = type(det)((w - x - bw, y, bw, bh), det.score, None,
                          None if det.eyes is None else np.array([[w - 1 - det.eyes[1][0], det.eyes[1][1]],
                                                                  [w - 1 - det.eyes[0][0], det.eyes[0][1]]]))
        angle = float(rng.uniform(-12, 12)) if i >= 2 else 0.0
        if angle:
            cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
            img = cv2.warpAffine(img, cv2.getRotationMatrix2D((cx, cy), angle, 1.0), (w, h),
                                 borderMode=cv2.BORDER_REFLECT)
        dx, dy, ds = (rng.uniform(-0.06, 0.06, 3) * d.box[2]) if i >= 2 else (0, 0, 0)
        box = (d.box[0] + dx, d.box[1] + dy, d.box[2] + ds, d.box[3] + ds)
        crop, _ = crop_face(np.ascontiguousarray(img), type(det)(box, det.score), spec)
        if i >= 4:
            gain, bias = rng.uniform(0.6, 1.3), rng.uniform(-30, 30)
            crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        if i % 5 == 4:
            crop = cv2.GaussianBlur(crop, (3, 3), 0.8).reshape(crop.shape)
        out.append(crop)
    return np.stack(out)


def folder_faces(folder: Path, spec: CropSpec, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Face crops from a folder: small images are crops already, larger ones are photos to detect in."""
    from ..inference.detect import HaarDetector

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no image files to take faces from")
    if n is not None and len(files) > n:
        files = sorted(np.random.default_rng(seed).choice(files, n, replace=False).tolist())
    detector, out, skipped = None, [], []
    for p in files:
        try:
            img = read_image(p)
        except InputError as e:
            skipped.append(str(e))
            continue
        if max(img.shape[:2]) <= 2 * spec.size:
            out.append(_to_spec(img, spec))
            continue
        detector = detector or HaarDetector()
        for d in detector.detect(img):
            out.append(crop_face(img, d, spec)[0])
    if skipped:
        log.warning("%s: skipped %d unreadable image(s); first: %s", folder, len(skipped), skipped[0])
    if not out:
        raise InputError(f"{folder}: no faces found in {len(files)} image(s)")
    out = np.stack(out)
    return out[:n] if n is not None else out


def ferplus_faces(root: Path, split: str, spec: CropSpec, n: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(crops, labels) from a FERPlus split (majority labels); a seeded random sample of ``n``."""
    from ..data import load_split

    ds = load_split({"dataset": "ferplus", "root": str(root), "label_mode": "majority"}, split)
    idx = np.arange(len(ds))
    if n is not None and n < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    images = ds.images[idx].numpy()
    if images.shape[1:3] != (spec.size, spec.size) or (images.shape[3] == 1) != spec.grayscale:
        images = np.stack([_to_spec(im if im.shape[2] == 3 else np.repeat(im, 3, 2), spec) for im in images])
    return images, ds.labels[idx].numpy()


def load_faces(source: str, spec: CropSpec, split: str, n: int | None, seed: int = 0) -> np.ndarray:
    if source == "astronaut":
        return astronaut_faces(spec, min(n or 48, 48))
    path = Path(source)
    if _is_ferplus_root(path):
        return ferplus_faces(path, split, spec, n, seed)[0]
    if path.is_dir():
        return folder_faces(path, spec, n, seed)
    raise InputError(f"{source}: not a folder of face images, a FERPlus root or 'astronaut'")
