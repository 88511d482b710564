"""Face detection behind one small interface.

* ``YuNetDetector``: OpenCV's YuNet CNN (``cv2.FaceDetectorYN``), more robust to pose and light, with
  five landmarks per face. Its model file is not ours to ship: ``litefer fetch yunet`` caches it, or
  ``$LITEFER_YUNET`` names one.
* ``HaarDetector``: OpenCV's frontal-face Haar cascade, whose model files ship inside the opencv
  wheel, plus the eye cascade inside each face to find the eye line. FER2013 itself was cut out by
  this kind of detector: on FER2013 training images the cascade's box is the whole 48 x 48 frame
  (median box x, y, w, h = 0.5, 0.25, 47, 47; see ``benchmarks/framing.py``).

``create_detector("auto")``, the default everywhere, picks YuNet when its model is on disk and
Haar otherwise (saying once, in one line, how to get YuNet); every output names the detector that ran.

Both return boxes in the input image's pixel coordinates, every face of at least ``min_size`` pixels
whatever the image's size. ``max_side`` is the largest side searched at once: a larger image is
searched whole on a copy downscaled to ``max_side`` for its large faces, and in overlapping tiles of at
most ``max_side`` at the scale ``min_size`` needs for the small ones, so the time grows with the image's
area: a 12-MP photo took 3.6x the single copy's time with Haar (``results/detect_scale.md``).

Faces turned in the image plane (issue 25, ``results/hard_photos.md``): ``turned="empty"`` searches
copies of the image turned by ``TURN_ANGLES`` when the upright search finds no face (``"always"``: on
every image; ``"none"``, the default: never), and maps their boxes and landmarks back; a face whose landmarks tilt more than
``LEVEL_LANDMARKS_ABOVE`` degrees is found again on upright copies of its neighbourhood, where YuNet places its landmarks better than on the tilted face.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Detection:
    """One face: box ``(x, y, w, h)`` in image pixels, a detector score, and landmarks when known.

    ``landmarks`` is a (5, 2) array (YuNet order: right eye, left eye, nose tip, right and left
    mouth corners; "right" is the subject's right, on the image's left) or None; ``eyes`` is a
    (2, 2) array (subject's right eye first) or None.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    eyes: np.ndarray | None = field(default=None)

    def scaled(self, s: float) -> "Detection":
        return Detection(tuple(float(v) * s for v in self.box), self.score,
                         None if self.landmarks is None else self.landmarks * s,
                         None if self.eyes is None else self.eyes * s)

    def mapped(self, sx: float, sy: float, dx: float, dy: float) -> "Detection":
        """This detection from a tile resized by (1 / sx, 1 / sy) whose corner is (dx, dy) in the image."""
        k, d = np.float32([sx, sy]), np.float32([dx, dy])
        x, y, w, h = self.box
        return Detection((float(x) * sx + dx, float(y) * sy + dy, float(w) * sx, float(h) * sy), self.score,
                         None if self.landmarks is None else self.landmarks * k + d,
                         None if self.eyes is None else self.eyes * k + d)


def positive_int(name: str, value) -> int:
    """``value`` as an int, or a one-line ValueError naming ``name`` when it is not a whole number
    >= 1: a size or count of 0 or less would be accepted and then silently find nothing."""
    try:
        ok = not isinstance(value, bool) and value >= 1 and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TileLevel:
    """Tiles of a large image searched at ``scale`` for faces up to ``top`` image pixels; each tile is
    (x0, y0, x1, y1) in image pixels, at most ``max_side`` once resized, and overlaps its neighbours
    by 1.5 ``top``."""

    scale: float
    top: float
    tiles: list[tuple[int, int, int, int]]


# The least max_side: a tile must hold the overlap that keeps each face it searches whole in one tile.
MIN_MAX_SIDE = 256


def valid_max_side(value) -> int:
    """``value`` as a detector's ``max_side``, or a one-line ValueError naming it."""
    value = positive_int("max_side", value)
    if value < MIN_MAX_SIDE:
        raise ValueError(f"max_side must be at least {MIN_MAX_SIDE} (large images are searched in tiles of "
                         f"that side), got {value}")
    return value


# The turns of the copies searched for turned faces: the upright search finds faces up to about 15
# degrees (Haar) or 30 (YuNet), so copies at +-30 cover +-45 (results/hard_photos.md).
TURN_ANGLES = (30.0, -30.0)
TURNED_SEARCHES = ("none", "empty", "always")
# Landmarks that tilt more than this (``_face_tilt``) are placed again on upright copies of the face
# (``FaceDetector._level``), at most LEVEL_STEPS copies, the last ones until the face tilts within
# LEVEL_DONE degrees there; the copies show the face LEVEL_FACE px wide.
LEVEL_LANDMARKS_ABOVE = 10.0
LEVEL_STEPS, LEVEL_DONE, LEVEL_FACE = 5, 5.0, 112


def valid_turned(value) -> str:
    """``value`` as a detector's ``turned``, or a one-line ValueError naming it."""
    if value not in TURNED_SEARCHES:
        raise ValueError(f"turned must be one of {TURNED_SEARCHES}, got {value!r}")
    return value


def turn_matrix(h: int, w: int, angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2 x 3 map of an h x w image onto the canvas (returned as (width, height)) that holds it
    whole once turned by ``angle`` degrees counter-clockwise."""
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    cw, ch = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    M = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    M[:, 2] += ((cw - w) / 2.0, (ch - h) / 2.0)
    return M, (cw, ch)


def turned_back(d: Detection, M: np.ndarray) -> Detection:
    """A detection on a copy warped by the similarity ``M`` in the original image's coordinates: the
    landmarks and eyes mapped exactly; the box the axis-aligned one around the ellipse inscribed in the
    copy's box (a face is oval: the box's turned corners hold background), centred where its centre maps."""
    inv = cv2.invertAffineTransform(M)
    A, t = inv[:, :2], inv[:, 2]
    x, y, w, h = d.box
    cx, cy = A @ np.array([x + w / 2.0, y + h / 2.0]) + t
    k = float(np.sqrt(abs(np.linalg.det(A))))
    cos, sin = A[0, 0] / k, A[1, 0] / k
    hw = k * np.hypot(w / 2.0 * cos, h / 2.0 * sin)
    hh = k * np.hypot(w / 2.0 * sin, h / 2.0 * cos)
    back = (lambda p: None if p is None else (np.asarray(p, np.float64) @ A.T + t).astype(np.float32))
    return Detection((float(cx - hw), float(cy - hh), float(2 * hw), float(2 * hh)), d.score,
                     back(d.landmarks), back(d.eyes))


class FaceDetector:
    """Base class: subclasses implement ``_detect(bgr, min_size, max_size)`` on an image of at most
    ``max_side``; ``detect`` decides which copies and tiles of the image they search."""

    name = "detector"
    # The smallest face the detector can see, in pixels (None: no fixed window): images are searched
    # at the scale where the face size ``search_size()`` becomes this, which costs nothing in recall
    # and saves time.
    smallest_window: int | None = None
    # The smallest face, in pixels of a searched copy, that a copy is trusted to find: the whole-image
    # copy of a large image (at ``max_side``) leaves the faces under this / its scale to the tiles,
    # which are searched at the scale where ``search_size()`` becomes this (Haar: its window, the
    # scale of a small image's search).
    smallest_reliable: int = 24
    # The tiles search faces up to this factor above the whole-image copy's smallest, so that a face
    # near that size is found by at least one of them (duplicates are merged).
    handover = 1.5
    # The smallest face found when ``min_size`` is None, in image pixels.
    default_min_size = 32
    # None: the search copy is scaled for ``min_size`` itself. A size: for that size times the power
    # of 2 that comes closest to ``min_size`` from below, so that the copy (and every box) stays the
    # same while ``min_size`` moves within an octave; a larger ``min_size`` then only skips sizes.
    search_base: int | None = None
    # When copies turned by TURN_ANGLES are searched: "none", "empty" (when the upright search finds
    # no face) or "always".
    default_turned = "none"
    # Whether tilted faces' landmarks are placed again on upright copies (detectors with landmarks).
    level_landmarks = False

    def __init__(self, min_size: int | None = None, max_side: int = 1280, turned: str | None = None):
        self.min_size = positive_int("min_size", self.default_min_size if min_size is None else min_size)
        self.max_side = valid_max_side(max_side)
        self.turned = valid_turned(self.default_turned if turned is None else turned)

    def detect(self, bgr: np.ndarray, scale: float = 1.0) -> list[Detection]:
        """Faces in a BGR uint8 image, largest first; boxes in this image's coordinates.

        ``scale`` < 1 searches copies downscaled at least that much (faster; a face then needs
        ``smallest_window / scale`` pixels to be found, 48 px for Haar at 0.5).
        """
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"detect expects a BGR uint8 H x W x 3 image, got {bgr.dtype} {bgr.shape}")
        whole, levels = self.search_plan(*bgr.shape[:2], scale)
        found = self._search(bgr, whole)
        if levels:
            ranked = [(0, d) for d in found]
            for level in levels:
                ranked += self._search_tiles(bgr, level)
            found = merge_duplicates(ranked)
        if self.turned == "always" or (self.turned == "empty" and not found):
            found = merge_duplicates([(0, d) for d in found] + [(1, d) for d in self._search_turned(bgr, scale)])
        if self.level_landmarks:
            found = [self._level(bgr, d) for d in found]
        found = [d for d in found if min(d.box[2], d.box[3]) >= self.min_size * 0.95]
        return sorted(found, key=lambda d: -d.box[2] * d.box[3])

    def _search_turned(self, bgr: np.ndarray, scale: float) -> list[Detection]:
        """Faces on copies of the image turned by ``TURN_ANGLES``, in the image's coordinates. Each copy
        is made from the whole-image search's copy (at most ``max_side``), untiled: a turned face needs
        the size that copy shows (in a 12-MP photo, ``smallest_reliable`` x 3.15 px)."""
        h, w = bgr.shape[:2]
        s = self.search_plan(h, w, scale)[0]
        small = bgr if s == 1.0 else cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                                                 interpolation=cv2.INTER_AREA)
        grey = tuple(float(v) for v in small.reshape(-1, 3).mean(0))
        out = []
        for angle in TURN_ANGLES:
            M, size = turn_matrix(*small.shape[:2], angle)
            copy = cv2.warpAffine(small, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=grey)
            for d in self._detect(copy, self.min_size * s):
                out.append(turned_back(d, M).scaled(1.0 / s) if s != 1.0 else turned_back(d, M))
        return out

    def _level(self, bgr: np.ndarray, det: Detection) -> Detection:
        """``det`` with its landmarks placed again on upright copies of the face where they tilt over
        ``LEVEL_LANDMARKS_ABOVE`` degrees (upright faces cost nothing more). A turned face's landmarks
        are pulled towards upright (at 45 degrees JAFFE faces read 15 to 36), so copies turned by the
        tilt read and by 30 degrees more either way are searched, the surest face of the three kept, and
        its copy turned by what its landmarks still tilt, up to ``LEVEL_STEPS`` copies in all. The box and score stay; so do the landmarks when the
        face comes out upright (within ``LEVEL_LANDMARKS_ABOVE``) or no copy shows it."""
        if det.landmarks is None:
            return det
        tilt = _face_tilt(det.landmarks)
        if abs(tilt) <= LEVEL_LANDMARKS_ABOVE:
            return det
        looks = [(a, self._upright_look(bgr, det, a)) for a in (tilt, tilt + TURN_ANGLES[0], tilt - TURN_ANGLES[0])]
        looks = [(a, got) for a, got in looks if got is not None]
        if not looks:
            return det
        angle, (score, landmarks, residual) = max(looks, key=lambda x: x[1][0])
        for _ in range(LEVEL_STEPS - 3):
            if abs(residual) <= LEVEL_DONE:
                break
            got = self._upright_look(bgr, det, angle + residual)
            if got is None or got[0] < score - 0.02:
                break
            angle += residual
            score, landmarks, residual = got
        if abs(angle) <= LEVEL_LANDMARKS_ABOVE:
            return det
        return Detection(det.box, det.score, landmarks, landmarks[:2].copy())

    def _upright_look(self, bgr: np.ndarray, det: Detection, angle: float):
        """(score, landmarks in the image, their remaining tilt) of the face ``det`` on a copy of its
        neighbourhood turned by ``angle`` degrees (counter-clockwise) and scaled to show it
        ``LEVEL_FACE`` px wide; None when that copy shows no face near its centre."""
        x, y, w, h = det.box
        side = 2 * LEVEL_FACE
        centre = np.array([x + w / 2.0, y + h / 2.0])
        M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), LEVEL_FACE / max(w, h))
        M[:, 2] += side / 2.0 - centre
        faces = [g for g in self._detect(upright_patch(bgr, M, side), 0) if g.landmarks is not None]
        off = [np.hypot(g.box[0] + g.box[2] / 2 - side / 2, g.box[1] + g.box[3] / 2 - side / 2) for g in faces]
        if not faces or min(off) >= LEVEL_FACE / 2:
            return None
        g = faces[int(np.argmin(off))]
        return g.score, turned_back(g, M).landmarks, _face_tilt(g.landmarks)

    def search_plan(self, h: int, w: int, scale: float = 1.0) -> tuple[float, list[TileLevel]]:
        """The scale of the whole-image search of an h x w image, and the tile levels after it.

        When the copy ``min_size`` needs is at most ``max_side``, it is the one search. Otherwise the
        whole-image copy is downscaled to ``max_side`` and finds the large faces; the faces under
        ``handover * smallest_reliable`` in its pixels are searched in tiles, at scales growing by up
        to ``tile_step()`` until the one ``min_size`` needs (``smallest_reliable / search_size()``).
        """
        whole = min(scale, self.smallest_window / self.search_size()) if self.smallest_window else scale
        s = self.max_side / max(h, w)
        if s >= whole:
            return whole, []
        fine, levels = min(scale, self.smallest_reliable / self.search_size()), []
        while s < fine:
            top = self.handover * self.smallest_reliable / s
            s = min(fine, s * self.tile_step())
            overlap, most = int(np.ceil(1.5 * top)), self.max_side / s
            levels.append(TileLevel(s, top, [(x0, y0, x1, y1) for x0, x1 in tile_spans(w, most, overlap)
                                              for y0, y1 in tile_spans(h, most, overlap)]))
        return self.max_side / max(h, w), levels

    def tile_step(self) -> float:
        """How much finer each tile level may be than the last: as far as keeps the tiles' overlap
        within half a tile, and at least 2."""
        return max(2.0, self.max_side / (3 * self.handover * self.smallest_reliable))

    def _search(self, bgr: np.ndarray, scale: float) -> list[Detection]:
        """Faces of ``min_size`` and more on the whole image searched at ``scale``."""
        h, w = bgr.shape[:2]
        small = bgr if scale == 1.0 else cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                     interpolation=cv2.INTER_AREA)
        found = self._detect(small, self.min_size * scale)
        return found if scale == 1.0 else [d.scaled(1.0 / scale) for d in found]

    def _search_tiles(self, bgr: np.ndarray, level: TileLevel) -> list[tuple[int, Detection]]:
        """Faces from ``min_size`` to ``level.top`` px in each tile, cropped and resized one at a time
        (the whole copy at that scale could be many times the image). Each such face lies at least a
        quarter of ``top`` inside some tile; a box closer than that to an inner tile edge may be a cut
        face and is ranked 2 for ``merge_duplicates``, the others 1."""
        h, w = bgr.shape[:2]
        edge, out = level.top / 4, []
        for x0, y0, x1, y1 in level.tiles:
            tw, th = max(1, round((x1 - x0) * level.scale)), max(1, round((y1 - y0) * level.scale))
            tile = cv2.resize(bgr[y0:y1, x0:x1], (tw, th), interpolation=cv2.INTER_AREA)
            for d in self._detect(tile, self.min_size * level.scale, level.top * level.scale):
                d = d.mapped((x1 - x0) / tw, (y1 - y0) / th, x0, y0)
                bx, by, bw, bh = d.box
                cut = (x0 > 0 and bx < x0 + edge) or (x1 < w and bx + bw > x1 - edge) or \
                      (y0 > 0 and by < y0 + edge) or (y1 < h and by + bh > y1 - edge)
                out.append((2 if cut else 1, d))
        return out

    def search_size(self) -> float:
        """The face size, in image pixels, that the search copy maps onto ``smallest_window``."""
        base = self.search_base
        if not base or self.min_size <= base:
            return float(self.min_size)
        return float(base * 2 ** int(np.log2(self.min_size / base)))

    def _detect(self, bgr: np.ndarray, min_size: float, max_size: float | None = None) -> list[Detection]:
        """Faces from ``min_size`` to ``max_size`` (None: any larger) px in an image of at most ``max_side``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.min_size}, max_side={self.max_side})"


def upright_patch(bgr: np.ndarray, M: np.ndarray, side: int) -> np.ndarray:
    """``bgr`` warped by the similarity ``M`` onto a ``side``-px square (edges replicated); a face shrunk
    more than 2x is area-averaged first, so the patch is not aliased."""
    k = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if k >= 0.5:
        return cv2.warpAffine(bgr, M, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inv = cv2.invertAffineTransform(M)
    corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = bgr.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 2, [x0 + 1, y0 + 1], [w, h])
    f = max(1, int(1.0 / k / 1.5))                    # shrink to at most 1.5x the patch's scale first
    roi = bgr[y0:y1, x0:x1]
    small = cv2.resize(roi, (max(1, round(roi.shape[1] / f)), max(1, round(roi.shape[0] / f))),
                       interpolation=cv2.INTER_AREA)
    fx, fy = roi.shape[1] / small.shape[1], roi.shape[0] / small.shape[0]
    # small pixel (u, v) centre = roi pixel ((u + 0.5) fx - 0.5, ...) + (x0, y0)
    S = np.array([[fx, 0, x0 + 0.5 * fx - 0.5], [0, fy, y0 + 0.5 * fy - 0.5]])
    Ms = M[:, :2] @ S[:, :2]
    Ms = np.hstack([Ms, (M[:, :2] @ S[:, 2] + M[:, 2])[:, None]])
    return cv2.warpAffine(small, Ms, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def tile_spans(length: int, most: float, overlap: int) -> list[tuple[int, int]]:
    """Equal spans of at most ``most`` pixels covering ``length`` pixels, neighbours sharing at least
    ``overlap`` (so that anything of up to ``overlap`` pixels lies whole in one)."""
    most = int(most)
    if length <= most:
        return [(0, length)]
    n = int(np.ceil((length - overlap) / max(1, most - overlap)))
    side = min(most, int(np.ceil((length + (n - 1) * overlap) / n)))
    starts = np.linspace(0, length - side, n).round().astype(int)
    return [(int(a), int(a) + side) for a in starts]


def merge_duplicates(ranked: list[tuple[int, Detection]], iou: float = 0.3, inside: float = 0.6) -> list[Detection]:
    """One detection per face from the copies and tiles that saw it: by rank (0: the whole-image copy,
    1: a tile, 2: a tile that may cut the face), then size, each kept unless it overlaps a kept one by
    ``iou`` or lies ``inside`` it (that share of the smaller box)."""
    kept: list[Detection] = []
    for _, d in sorted(ranked, key=lambda r: (r[0], -r[1].box[2] * r[1].box[3])):
        x, y, w, h = d.box
        for k in kept:
            kx, ky, kw, kh = k.box
            inter = max(0.0, min(x + w, kx + kw) - max(x, kx)) * max(0.0, min(y + h, ky + kh) - max(y, ky))
            if inter >= iou * (w * h + kw * kh - inter) or inter >= inside * min(w * h, kw * kh):
                break
        else:
            kept.append(d)
    return kept


class PerThread:
    """One OpenCV object per thread, made on first use: cascades and YuNet nets keep the search's
    working state inside the object, so threads sharing one mix up their images' faces."""

    def __init__(self, make):
        self._make = make
        self._local = threading.local()
        self.get()                     # the creating thread's copy now: a bad model file fails here

    def get(self):
        obj = getattr(self._local, "obj", None)
        if obj is None:
            obj = self._local.obj = self._make()
        return obj


def _cascade(filename: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, filename)
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise RuntimeError(f"cannot load OpenCV cascade {path}; is opencv-python(-headless) 4.x installed?")
    return clf


@dataclass(frozen=True)
class EyeSearch:
    """Where and how finely eyes are searched: a band of the face box (fractions of its height),
    resized to ``width`` pixels, for eye boxes of ``sizes`` pixels at that width, with the eye
    cascade's scale step and neighbour count."""

    width: int
    band: tuple[float, float]
    sizes: tuple[int, int]
    scale_factor: float = 1.1
    min_neighbors: int = 3


# The search that finds the eye line (the browser page's twin in serve/static/pipeline.js).
FULL_EYES = EyeSearch(120, (0.12, 0.58), (14, 60))
# A quick look: 70 % of that width, a narrower band, coarser steps (the eyes the full search finds
# on JAFFE and FER2013 faces are 25-46 px at 120 wide, 18-32 here, and lie within the band). It
# costs about a sixth of the full search and finds a pair within QUICK_LEVEL_DEGREES on 190 of
# JAFFE's 213 faces (results/detection_figures.md).
QUICK_EYES = EyeSearch(84, (0.18, 0.56), (18, 36), scale_factor=1.2, min_neighbors=2)
# A quick pair this level means a face upright enough that the full search would not make the crop
# rotate (it levels tilts over 10 degrees; the crop changed on 1 of the 2,654 faces found on the FER2013
# validation images, results/detection_figures.md): its eyes are kept.
QUICK_LEVEL_DEGREES = 4.0


class HaarDetector(FaceDetector):
    """OpenCV Haar cascade faces; eyes searched in the upper half of each face to level the eye line.

    ``score`` is the number of overlapping raw detections merged into the box (higher = surer).
    A box in which no eye pair is found needs ``min_score_without_eyes`` of them: that drops most
    of the cascade's false positives on large, smooth images and about 2 % of real (FER2013) faces.
    ``quick_eyes`` first looks for the eyes with ``QUICK_EYES`` and keeps a level pair found on a box
    kept anyway; False runs the full search on every face.
    """

    name = "haar"
    smallest_window = 24      # the cascade's window
    # Every face from 32 px is searched by default. A larger min_size searches the same copy (by
    # octaves of 32 px) and skips the smaller sizes: min_size=48, FER2013's crop side and about
    # fer's 50 px, keeps the boxes of 48 px and more (all but 2 of 2,653 on FER2013) and saves 15-24 %
    # of the search's time (results/detection_figures.md).
    default_min_size = 32
    search_base = 32

    def __init__(self, min_size: int | None = None, max_side: int = 1280, scale_factor: float = 1.1, min_neighbors: int = 5,
                 find_eyes: bool = True, min_score_without_eyes: int = 8,
                 cascade: str = "haarcascade_frontalface_default.xml", quick_eyes: bool = True,
                 turned: str | None = None):
        super().__init__(min_size, max_side, turned)
        self.scale_factor, self.min_neighbors, self.find_eyes = scale_factor, min_neighbors, find_eyes
        self.min_score_without_eyes = min_score_without_eyes if find_eyes else 0
        self.quick_eyes = bool(quick_eyes and find_eyes)
        self._face = PerThread(lambda: _cascade(cascade))
        self._eye = PerThread(lambda: _cascade("haarcascade_eye.xml")) if find_eyes else None

    @property
    def face(self) -> cv2.CascadeClassifier:
        """This thread's face cascade."""
        return self._face.get()

    @property
    def eye(self) -> cv2.CascadeClassifier | None:
        """This thread's eye cascade (None without ``find_eyes``)."""
        return None if self._eye is None else self._eye.get()

    def _detect(self, bgr, min_size, max_size=None):
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        m = max(24, int(round(min_size)))          # the cascade's own window is 24 x 24
        top = (0, 0) if max_size is None else (int(np.ceil(max_size)),) * 2
        boxes, neighbours = self.face.detectMultiScale2(gray, scaleFactor=self.scale_factor,
                                                        minNeighbors=self.min_neighbors, minSize=(m, m), maxSize=top)
        out = []
        for (x, y, w, h), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(neighbours).reshape(-1)):
            eyes = self._eyes(gray, (x, y, w, h), n >= self.min_score_without_eyes) if self.find_eyes else None
            if eyes is None and n < self.min_score_without_eyes:
                continue
            out.append(Detection((float(x), float(y), float(w), float(h)), float(n), None, eyes))
        return out

    def _eyes(self, gray, box, kept_anyway: bool) -> np.ndarray | None:
        """The eye pair of a face box, or None: the quick look's when it finds a level pair on a face
        kept with or without eyes (neither the crop nor the face list can then change), else the
        full search's."""
        if self.quick_eyes and kept_anyway:
            eyes = self._search_eyes(gray, box, QUICK_EYES)
            if eyes is not None and abs(_tilt(eyes)) < QUICK_LEVEL_DEGREES:
                return eyes
        return self._search_eyes(gray, box, FULL_EYES)

    def _search_eyes(self, gray, box, how: EyeSearch) -> np.ndarray | None:
        """The most plausible eye pair in a band of the face box, or None."""
        x, y, w, h = box
        oy = y + int(how.band[0] * h)
        top = gray[oy: y + int(how.band[1] * h), x: x + w]
        if top.size == 0:
            return None
        s = how.width / w                               # search at a fixed face width: same cost, same scale
        roi = cv2.resize(top, (how.width, max(1, round(top.shape[0] * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        lo, hi = how.sizes
        found = self.eye.detectMultiScale(roi, scaleFactor=how.scale_factor, minNeighbors=how.min_neighbors,
                                          minSize=(lo, lo), maxSize=(hi, hi))
        best = _eye_pair(np.asarray(found, np.float64).reshape(-1, 4) / how.width)
        if best is None:
            return None
        return np.array([[x + best[0][0] * w, oy + best[0][1] * w],
                         [x + best[1][0] * w, oy + best[1][1] * w]], dtype=np.float32)


def _tilt(eyes: np.ndarray) -> float:
    """Degrees of the eye line from level."""
    (rx, ry), (lx, ly) = eyes
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def _face_tilt(landmarks: np.ndarray) -> float:
    """Degrees of a face from upright by its five landmarks: the mean of the eye line's tilt and the
    eyes-to-mouth line's from vertical (YuNet reads both short on a turned face, the eye line more)."""
    lm = np.asarray(landmarks, np.float64)
    dx, dy = (lm[3] + lm[4] - lm[0] - lm[1]) / 2
    return (_tilt(lm[:2]) - float(np.degrees(np.arctan2(dx, dy)))) / 2


def _eye_pair(found: np.ndarray):
    """The pair of eye boxes (in face widths) most like two eyes: one per half, level within ~27 degrees,
    spaced like FER2013's, alike in size; centres (x, y, size) as (left, right), or None."""
    centres = [(ex + ew / 2.0, ey + eh / 2.0, ew) for ex, ey, ew, eh in found]
    best, best_cost = None, np.inf
    for i, a in enumerate(centres):
        for b in centres[i + 1:]:
            left, right = (a, b) if a[0] < b[0] else (b, a)
            dx, dy = right[0] - left[0], right[1] - left[1]
            if not (0.25 <= dx <= 0.62) or abs(dy) > 0.5 * dx or left[0] > 0.5 or right[0] < 0.5:
                continue
            cost = abs((left[0] + right[0]) / 2 - 0.5) / 0.5 + abs(dx - 0.38) + abs(left[2] - right[2]) / 0.5
            if cost < best_cost:
                best, best_cost = (left, right), cost
    return best


def _cv_reason(e: Exception) -> str:
    """One line of an OpenCV error: the line naming the error, not the trailing assertion detail."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__]
    return next((x.split("error: ", 1)[1] for x in lines if "error: (" in x), lines[-1])


def _probe_yunet(net) -> None:
    """Run a freshly loaded YuNet once on a blank image: OpenCV loads any ONNX file, and a foreign
    model only fails (or answers in the wrong shape) on the first detect, i.e. on every request later."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # its failure is our one-line error
    try:
        net.setInputSize((64, 64))
        _, faces = net.detect(np.zeros((64, 64, 3), np.uint8))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if faces is not None and (faces.ndim != 2 or faces.shape[1] != 15):
        raise ValueError(f"its output has shape {faces.shape}, not (faces, 15)")


class YuNetDetector(FaceDetector):
    """OpenCV YuNet (``cv2.FaceDetectorYN``) from a user-supplied ONNX model file."""

    name = "yunet"
    # It finds faces of 16 px (tests/test_detect.py::test_yunet_finds_every_face_of_its_smallest_reliable_size),
    # so its tiles are searched at half the scale min_size would need at full size.
    smallest_reliable = 16
    # No turned copies by default: YuNet finds faces turned by up to 45 degrees without them (all 36 of
    # results/hard_photos.md), and "empty" costs a faceless photo 2-7x its search. Its landmarks on
    # them are placed again instead (only on faces whose landmarks tilt over LEVEL_LANDMARKS_ABOVE).
    level_landmarks = True

    def __init__(self, model_path: str | os.PathLike, min_size: int | None = None, max_side: int = 1280,
                 score_threshold: float = 0.7, nms_threshold: float = 0.3, top_k: int = 5000,
                 turned: str | None = None):
        super().__init__(min_size, max_side, turned)
        # what the net is built with (the page's on-device twin reads them from here, through /v1/model)
        self.score_threshold, self.nms_threshold, self.top_k = float(score_threshold), float(nms_threshold), int(top_k)
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model {path} not found (give the path of face_detection_yunet*.onnx "
                                    "from the OpenCV Zoo)")
        args = (str(path), "", (320, 320), score_threshold, nms_threshold, top_k)
        try:
            self._net = PerThread(lambda: cv2.FaceDetectorYN.create(*args))
            _probe_yunet(self._net.get())
        except (cv2.error, ValueError) as e:
            raise ValueError(f"{path}: cannot load as a YuNet model ({_cv_reason(e)})") from None
        self.model_path = path

    @property
    def net(self):
        """This thread's YuNet net (its input size is set per image)."""
        return self._net.get()

    def _detect(self, bgr, min_size, max_size=None):
        h, w = bgr.shape[:2]
        net = self.net
        net.setInputSize((w, h))
        _, faces = net.detect(bgr)
        out = []
        for f in (faces if faces is not None else []):
            x, y, bw, bh = (float(v) for v in f[:4])
            if min(bw, bh) < min_size or (max_size is not None and max(bw, bh) > max_size):
                continue
            lm = np.asarray(f[4:14], dtype=np.float32).reshape(5, 2)
            out.append(Detection((x, y, bw, bh), float(f[14]), lm, lm[:2].copy()))
        return out


DETECTORS = ("auto", "haar", "yunet")
# A YuNet model file to use instead of the one ``litefer fetch yunet`` caches (``auto`` and ``yunet``).
YUNET_ENV = "LITEFER_YUNET"
FETCH_HINT = ("face detector: Haar, as no YuNet model is on disk; `litefer fetch yunet` (once, online) gives the "
              "better one, YuNet, which finds more faces and runs faster")
_hinted = threading.Event()


def yunet_model_path() -> Path | None:
    """The YuNet model ``auto`` and ``yunet`` use: ``$LITEFER_YUNET`` when set (it must exist), else the
    file ``litefer fetch yunet`` cached, else None."""
    from ..utils import YUNET_FILENAME, models_dir

    env = os.environ.get(YUNET_ENV, "").strip()
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"{YUNET_ENV}={env}: no such YuNet model file")
        return Path(env)
    cached = models_dir() / YUNET_FILENAME
    return cached if cached.is_file() else None


def hint_fetch_once() -> None:
    """Say, once per process and in one line, that ``auto`` fell back to Haar and how to get YuNet."""
    if not _hinted.is_set():
        _hinted.set()
        logging.getLogger("litefer").warning(FETCH_HINT)


def resolve_detector(spec="auto", model_path=None) -> tuple[str, Path | None]:
    """(detector name, YuNet model path or None) that ``create_detector(spec, model_path=...)`` builds,
    without building it: ``auto`` is ``yunet`` when a model is given or on disk, else ``haar``."""
    s = str(spec)
    if s in ("auto", "yunet"):
        path = Path(model_path) if model_path is not None else yunet_model_path()
        if path is not None or s == "auto":
            return ("yunet", path) if path is not None else ("haar", None)
        raise ValueError("the yunet detector needs a model file: pass model_path= (CLI: --yunet-model PATH) or "
                         f"set {YUNET_ENV}=PATH, e.g. face_detection_yunet_2023mar.onnx from the OpenCV Zoo, or "
                         "download it once with `litefer fetch yunet`")
    if s == "haar":
        return "haar", None
    if s.lower().endswith(".onnx"):
        return "yunet", Path(s)
    raise ValueError(f"unknown detector {s!r}; expected one of {DETECTORS} or a YuNet .onnx path")


def create_detector(spec: "str | FaceDetector" = "auto", min_size: int | None = None, model_path=None,
                    **kwargs) -> FaceDetector:
    """``"auto"`` (YuNet when its model is on disk, see :func:`yunet_model_path`, else Haar with a
    one-line hint); ``"haar"``; ``"yunet"`` with ``model_path`` (default: as ``auto`` finds it); a path
    to a YuNet ``.onnx``; or a detector instance."""
    if isinstance(spec, FaceDetector):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"detector must be a name, a YuNet model path or a FaceDetector, got {type(spec).__name__}")
    name, path = resolve_detector(spec, model_path)
    if name == "yunet":
        return YuNetDetector(path, min_size=min_size, **kwargs)
    if str(spec) == "auto":
        hint_fetch_once()
    return HaarDetector(min_size=min_size, **kwargs)
