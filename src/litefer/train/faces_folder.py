"""A user's ``ROOT/<class>/*`` folder made into face crops for fine-tuning: class names mapped onto
the model's, whole photos framed the way ``predict`` frames them, crops taken as they are, and
every skipped file reported with its reason (so a user can see what the model was fitted to)."""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..card import Card
from ..data.folder import canonical_class, discover
from ..data.images import IMAGE_SUFFIXES, read_face
from ..inference.align import CropSpec, crop_face
from ..inference.inputs import read_image, walk_folder
from ..utils import printable, sha256_file

FACE_MODES = ("auto", "photo", "crop")
PICKS = ("none", "largest")
# --faces auto: an image whose longer side is at most this is a pre-cut face crop (FER2013 48 px,
# RAF-DB's aligned 100 px, ...); larger images are photos in which a face is searched for
AUTO_CROP_MAX_SIDE = 128
VALID_CLASS = re.compile(r"^[A-Za-z][A-Za-z0-9_\- ]*$")


@dataclass
class FaceFolder:
    """Crops (N, S, S, C uint8) with labels into ``class_names``, their files, and what was skipped."""

    root: Path
    class_names: list[str]
    crops: np.ndarray
    labels: np.ndarray
    files: list[Path]
    skipped: list[dict] = field(default_factory=list)
    decisions: dict = field(default_factory=dict)
    listing_sha256: str = ""
    duplicates: list[dict] = field(default_factory=list)

    def counts(self) -> dict:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}

    def subset(self, index: np.ndarray, name: str, info: dict | None = None):
        """The crops at ``index`` as a :class:`litefer.data.FaceDataset`, to train on or score."""
        import torch

        from ..data import FaceDataset

        return FaceDataset(torch.from_numpy(self.crops[index]), torch.from_numpy(self.labels[index]),
                           tuple(self.class_names), name=name, info=info or {})


def map_classes(folder_names: list[str], model_classes: list[str], root: Path,
                must_exist: bool = False) -> list[str]:
    """The fine-tuned model's class per folder: the model's name for a name or synonym of one of
    its classes, else the folder's own name (lower case), which becomes a new class. A name that
    is not a plain word, two folders naming one class, or (``must_exist``) a new name is an error."""
    bad = [n for n in folder_names if not VALID_CLASS.match(n)]
    if bad:
        raise ValueError(f"{root}: class folder name(s) {bad} map to no class (use letters, digits, _ - or space)")
    known = {c.lower(): c for c in model_classes}
    mapped = [known.get(canonical_class(n), canonical_class(n)) for n in folder_names]
    new = sorted({n for n, m in zip(folder_names, mapped) if m not in model_classes})
    if must_exist and new:
        raise ValueError(f"{root}: class folder(s) {new} map to none of the model's classes {model_classes}")
    seen: dict[str, str] = {}
    for n, m in zip(folder_names, mapped):
        if seen.setdefault(m, n) != n:
            raise ValueError(f"{root}: class folders {seen[m]!r} and {n!r} both mean {m!r}; merge them")
    return mapped


def scan(root: str | Path, model_classes: list[str], must_exist: bool = False) -> tuple[list[Path], list[str], list[str]]:
    """Image files, the class of each, and the class list (model order first, then new names)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    paths, folders = discover(root)
    names = sorted(set(folders))
    mapping = dict(zip(names, map_classes(names, model_classes, root, must_exist)))
    labels = [mapping[f] for f in folders]
    present = set(labels)
    classes = [c for c in model_classes if c in present] + sorted(present - set(model_classes))
    return paths, labels, classes


def unlisted(root: Path) -> list[dict]:
    """What :func:`scan` leaves out that a user may have meant as faces, each with its reason, as
    ``predict`` reports them: broken links, link loops (a link to a folder above), special files
    (predict's :func:`~litefer.inference.inputs.walk_folder` finds those), and images lying in ROOT
    itself instead of a class folder."""
    _, problems = walk_folder(root)
    out = [dict(zip(("file", "reason"), p.rsplit(": ", 1))) for p in problems]
    out += [{"file": str(p), "reason": "not in a class folder (ROOT/<class>/" + p.name + ")"}
            for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()]
    return out


def listing_hash(root: Path, paths: list[Path]) -> str:
    """sha256 of the sorted relative file names and sizes: which folder contents a model was fitted to."""
    h = hashlib.sha256()
    for p in sorted(paths):
        # surrogateescape: a name that is not valid UTF-8 hashes as its bytes (os.fsencode)
        h.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def drop_duplicates(paths: list[Path], labels: list[str]) -> tuple[list[Path], list[str], list[dict]]:
    """Files with the same bytes (sha256): copies in two or more classes are left out of every class
    (the folder gives no one label for them), copies within one class keep the first file only (so
    the copies never land on both sides of the split). Returns the paths and labels kept, and one
    entry per set of copies: its files, their classes and what was done."""
    by_hash: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        try:
            by_hash.setdefault(sha256_file(p), []).append(i)
        except OSError:
            pass                                       # unreadable: read_image reports it
    drop, found = set(), []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        classes = sorted({labels[i] for i in group})
        left_out = group if len(classes) > 1 else group[1:]
        drop.update(left_out)
        found.append({"files": [str(paths[i]) for i in group], "classes": classes,
                      "action": "left out of every class (conflicting labels)" if len(classes) > 1
                      else f"kept {paths[group[0]].name} only"})
    keep = [i for i in range(len(paths)) if i not in drop]
    return [paths[i] for i in keep], [labels[i] for i in keep], sorted(found, key=lambda d: d["files"])


def decide(bgr: np.ndarray, faces: str) -> str:
    """photo or crop: ``faces`` unless auto, when the image's size decides."""
    if faces != "auto":
        return faces
    return "crop" if max(bgr.shape[:2]) <= AUTO_CROP_MAX_SIDE else "photo"


def face_of(path: Path, bgr: np.ndarray, mode: str, detector, spec: CropSpec, pick: str) -> np.ndarray:
    """The crop of one image, or ValueError saying why there is none."""
    channels = 1 if spec.grayscale else 3
    if mode == "crop":
        return read_face(path, spec.size, channels)
    dets = detector.detect(bgr)
    if not dets:
        raise ValueError("no face found")
    if len(dets) > 1 and pick != "largest":
        raise ValueError(f"{len(dets)} faces (--pick largest keeps the largest)")
    det = max(dets, key=lambda d: d.box[2] * d.box[3])
    crop = crop_face(bgr, det, spec)[0]
    return crop if crop.ndim == 3 else crop[..., None]


def frame_folder(root: str | Path, card: Card, detector, faces: str = "auto", pick: str = "none",
                 must_exist: bool = False, classes: list[str] | None = None, progress: bool = False) -> FaceFolder:
    """Read and frame every image under ``root``; ``classes`` fixes the class list (a validation
    folder takes the training folder's). ValueError when no image gives a face."""
    if faces not in FACE_MODES:
        raise ValueError(f"--faces must be one of {FACE_MODES}, got {faces!r}")
    if pick not in PICKS:
        raise ValueError(f"--pick must be one of {PICKS}, got {pick!r}")
    root = Path(root)
    listed, listed_labels, found = scan(root, list(classes or card.class_names), must_exist or classes is not None)
    if classes is None and len(found) < 2:      # a folder to train on; one to score may hold any classes
        raise ValueError(f"{root}: only one class ({found[0]}); fine-tuning needs at least two class folders")
    classes = list(classes or found)
    paths, labels, duplicates = drop_duplicates(listed, listed_labels)
    spec = CropSpec.from_card(card)
    crops, kept, skipped, decisions = [], [], unlisted(root), {"photo": 0, "crop": 0}
    for i, p in enumerate(_progress(paths, progress, f"framing {root.name}")):
        try:
            bgr = read_image(p)
            mode = decide(bgr, faces)
            decisions[mode] += 1
            crops.append(face_of(p, bgr, mode, detector, spec, pick))
            kept.append(i)
        except (OSError, ValueError) as e:
            skipped.append({"file": str(p), "reason": str(e).replace(f"{p}: ", "")})
    if not kept:
        first = (f"first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else
                 f"{len(listed)} images, all copies of one another in conflicting classes")
        raise ValueError(f"{root}: no usable face in any of its {len(paths)} images ({first})")
    lab = np.array([classes.index(labels[i]) for i in kept], np.int64)
    return FaceFolder(root, classes, np.stack(crops), lab, [paths[i] for i in kept], skipped, decisions,
                      listing_hash(root, listed), duplicates)


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="image")


def read_groups(folder: FaceFolder, group_by: str | None, groups_csv: str | None) -> list[str] | None:
    """The group (e.g. person) of each kept file: ``group_by`` is a regex searched in the file name
    (its first group, or the whole match), ``groups_csv`` a CSV of file,group rows; None without either."""
    if group_by and groups_csv:
        raise ValueError("give --group-by or --groups, not both")
    if group_by:
        try:
            pattern = re.compile(group_by)
        except re.error as e:
            raise ValueError(f"--group-by {group_by!r} is not a valid regular expression: {e}") from None
        out = []
        for p in folder.files:
            m = pattern.search(p.name)
            if not m:
                raise ValueError(f"{p}: its name does not match --group-by {group_by!r}")
            out.append(m.group(1) if m.groups() else m.group(0))
        return out
    return _csv_groups(folder, Path(groups_csv)) if groups_csv else None


def _csv_groups(folder: FaceFolder, path: Path) -> list[str]:
    """Rows ``file,group``; a file is named relative to the folder or by its name alone."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such groups file")
    # a name that is not valid UTF-8 matches as its bytes (surrogateescape) or as litefer's \xNN form
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    table = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    out = []
    for p in folder.files:
        rel = p.relative_to(folder.root).as_posix()
        g = next((table[k] for k in (rel, p.name, printable(rel), printable(p.name)) if k in table), None)
        if g is None:
            raise ValueError(f"{path}: no group for {printable(rel)}")
        out.append(g)
    return out
