"""Faces in a video: where they are between detections, and who is who from frame to frame.

``FaceTracker`` finds the faces without running the detector on every frame; ``TrackLinker`` gives
each face a ``track`` id that lasts through the video. Both work frame after frame, on the results
of the frames before only (live video can use them), in memory that does not grow with the video.

``FaceTracker`` runs the face detector on a downscaled copy of every k-th frame (``detect_scale``)
and follows each face in the frames between by template matching: the face's grey patch, taken when
it was detected, is searched for in a window around its last position (normalised cross-correlation,
``cv2.matchTemplate``), on the same downscaled grey frame. A track whose best match scores below
``min_match`` is lost; a lost track, or k frames since the last detection, makes the tracker detect
again on that frame. Boxes move with the face (translation); their size and the eye positions used
for alignment follow the last detection, shifted by the same amount. A face that enters the frame
between detections is found at the next one (at most k - 1 frames later).

``TrackLinker`` links the faces of each frame to the tracks of the frames before, by motion and
appearance: each track predicts where its face is now from a constant velocity (the smoothed motion of
its centre), and each face is compared with each prediction by the distance between the centres, in
face widths, and by how alike the faces look (the correlation of their aligned crops at 16 x 16 px,
against the track's running mean). The cheapest pairs are linked first (greedy assignment on
``distance + look_weight * (1 - correlation)``), only within a gate that widens with the time the
track has gone unseen; faces left over start new tracks. A track unseen for more than ``max_gap``
seconds ends, so a face hidden for a moment (another face crossing in front, a missed detection) keeps
its id, while a person who leaves the picture and comes back later gets a new one: the linker does
not re-identify people.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import count

import cv2
import numpy as np

from .detect import Detection, FaceDetector


@dataclass
class _Track:
    detection: Detection           # when detected, in full-frame pixels
    template: np.ndarray           # grey patch of the face on the downscaled frame, when detected
    origin: tuple[int, int]        # top-left of the template on the downscaled frame
    current: Detection             # where the face is now


class FaceTracker:
    """Stateful ``detect(frame)`` for consecutive frames of one video: detection every ``detect_every``
    frames on a frame downscaled by ``detect_scale``, template tracking between detections.

    ``detect_every=1`` and ``detect_scale=1`` detect on every full frame (no tracking).
    ``detections`` and ``frames`` count the detector calls and the frames seen.
    """

    def __init__(self, detector: FaceDetector, detect_every: int = 5, detect_scale: float = 0.5,
                 min_match: float = 0.6, search: float = 0.5):
        if int(detect_every) < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every!r}")
        if not 0.0 < float(detect_scale) <= 1.0:
            raise ValueError(f"detect_scale must be in (0, 1], got {detect_scale!r}")
        self.detector, self.detect_every, self.detect_scale = detector, int(detect_every), float(detect_scale)
        self.min_match, self.search = float(min_match), float(search)
        self.tracks: list[_Track] = []
        self.since_detection = 0
        self.detections = self.frames = 0

    def reset(self) -> None:
        """Forget the faces (a new video): the next frame is detected."""
        self.tracks, self.since_detection = [], 0

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """Faces in the next frame, largest first; boxes in this frame's pixels."""
        self.frames += 1
        grey = self._small_grey(bgr)
        due = self.since_detection >= self.detect_every or not self.tracks
        followed = None if due else self._follow(grey)
        if followed is None:
            return self._redetect(bgr, grey)
        self.since_detection += 1
        return followed

    # ------------------------------------------------------------------ internals

    def _small_grey(self, bgr: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if self.detect_scale == 1.0:
            return grey
        h, w = grey.shape
        size = (max(1, round(w * self.detect_scale)), max(1, round(h * self.detect_scale)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    def _redetect(self, bgr: np.ndarray, grey: np.ndarray) -> list[Detection]:
        found = self.detector.detect(bgr) if self.detect_scale == 1.0 else \
            self.detector.detect(bgr, scale=self.detect_scale)
        self.detections += 1
        self.since_detection = 1
        self.tracks = [t for t in (self._start(d, grey) for d in found) if t is not None]
        return found

    def _start(self, d: Detection, grey: np.ndarray) -> _Track | None:
        s = self.detect_scale
        x0, y0 = max(0, int(round(d.box[0] * s))), max(0, int(round(d.box[1] * s)))
        x1 = min(grey.shape[1], int(round((d.box[0] + d.box[2]) * s)))
        y1 = min(grey.shape[0], int(round((d.box[1] + d.box[3]) * s)))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        return _Track(d, grey[y0:y1, x0:x1].copy(), (x0, y0), d)

    def _follow(self, grey: np.ndarray) -> list[Detection] | None:
        """Every track moved to its best match in this frame, or None when one is lost."""
        moved = []
        for t in self.tracks:
            found = self._match(t, grey)
            if found is None:
                return None
            moved.append(found)
        return sorted(moved, key=lambda d: -d.box[2] * d.box[3])

    def _match(self, t: _Track, grey: np.ndarray) -> Detection | None:
        th, tw = t.template.shape
        s, d = self.detect_scale, t.current
        cx, cy = (d.box[0] + d.box[2] / 2) * s, (d.box[1] + d.box[3] / 2) * s     # last known centre
        mx, my = int(self.search * tw) + 1, int(self.search * th) + 1
        x0, y0 = max(0, int(cx - tw / 2) - mx), max(0, int(cy - th / 2) - my)
        x1, y1 = min(grey.shape[1], int(cx + tw / 2) + mx + 1), min(grey.shape[0], int(cy + th / 2) + my + 1)
        window = grey[y0:y1, x0:x1]
        if window.shape[0] < th or window.shape[1] < tw:
            return None
        scores = cv2.matchTemplate(window, t.template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if not np.isfinite(best) or best < self.min_match:
            return None
        dx, dy = (x0 + bx - t.origin[0]) / s, (y0 + by - t.origin[1]) / s        # shift since detection
        base = t.detection
        shift = np.float32([dx, dy])
        t.current = Detection((base.box[0] + dx, base.box[1] + dy, base.box[2], base.box[3]), base.score,
                              None if base.landmarks is None else base.landmarks + shift,
                              None if base.eyes is None else base.eyes + shift)
        return t.current


# ---------------------------------------------------------------------------- identities

LOOK_SIDE = 16          # appearance: the aligned crop downscaled to this side


def appearance(crop: np.ndarray) -> np.ndarray:
    """A face's look for linking: its aligned crop, grey, 16 x 16, zero mean and unit length."""
    if crop.ndim == 3:
        crop = crop.reshape(crop.shape[:2]) if crop.shape[2] == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    v = cv2.resize(crop, (LOOK_SIDE, LOOK_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    mean, sd = cv2.meanStdDev(v)
    return (v - float(mean[0, 0])) / max(float(sd[0, 0]) * LOOK_SIDE, 1e-6)     # |v| = sd * sqrt(256)


@dataclass
class _Identity:
    id: int
    centre: tuple[float, float]       # x, y of the box centre when last seen
    width: float                      # box width (smoothed)
    velocity: tuple[float, float]     # centre pixels per second (smoothed)
    seen: float                       # time last seen, s
    look: np.ndarray                  # running mean of appearance()


class TrackLinker:
    """Stateful ``link(t, boxes, crops)`` for consecutive frames of one video: a track id per face.

    ``max_gap``: seconds a track may go unseen and still be continued; ``gate``: the largest distance
    (in face widths) between a face and a track's prediction that may link them, widened by
    ``gate_per_s`` per second unseen; ``look_weight``: the weight of appearance against distance;
    ``min_look``: the least correlation of looks that may link; ``motion``: the weight of the newest
    step in the smoothed velocity.
    """

    def __init__(self, max_gap: float = 2.0, gate: float = 0.8, gate_per_s: float = 1.5,
                 look_weight: float = 2.0, min_look: float = 0.3, motion: float = 0.5):
        if not float(max_gap) >= 0:
            raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap!r}")
        self.max_gap, self.gate, self.gate_per_s = float(max_gap), float(gate), float(gate_per_s)
        self.look_weight, self.min_look, self.motion = float(look_weight), float(min_look), float(motion)
        self.tracks: list[_Identity] = []
        self._ids = count()

    def reset(self) -> None:
        """Forget the tracks (a new video); ids start again at 0."""
        self.tracks, self._ids = [], count()

    def link(self, t: float, boxes, crops) -> list[int]:
        """The track id of each face (boxes ``(x, y, w, h)``, aligned crops) in the frame at ``t`` seconds."""
        self.tracks = [k for k in self.tracks if t - k.seen <= self.max_gap]
        centres = [(float(b[0]) + float(b[2]) / 2, float(b[1]) + float(b[3]) / 2) for b in boxes]
        looks = [appearance(c) for c in crops]
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for _, i, j in sorted(self._candidates(t, boxes, centres, looks)):
            if ids[i] is None and j not in used:
                ids[i] = self.tracks[j].id
                used.add(j)
                self._update(self.tracks[j], t, float(boxes[i][2]), centres[i], looks[i])
        for i, b in enumerate(boxes):
            if ids[i] is None:
                k = _Identity(next(self._ids), centres[i], float(b[2]), (0.0, 0.0), t, looks[i])
                self.tracks.append(k)
                ids[i] = k.id
        return ids

    def _candidates(self, t: float, boxes, centres, looks) -> list[tuple[float, int, int]]:
        """(cost, face, track) of every pair inside the gate and alike enough."""
        pairs = []
        for j, k in enumerate(self.tracks):
            gap = max(0.0, t - k.seen)
            gate = self.gate + self.gate_per_s * gap
            gx, gy = k.centre[0] + k.velocity[0] * gap, k.centre[1] + k.velocity[1] * gap    # where it should be
            for i, (cx, cy) in enumerate(centres):
                distance = math.hypot(cx - gx, cy - gy) / max(float(boxes[i][2]), k.width, 1.0)
                if distance > gate:
                    continue
                alike = float(looks[i] @ k.look)
                if alike >= self.min_look:
                    pairs.append((distance + self.look_weight * (1.0 - alike), i, j))
        return pairs

    def _update(self, k: _Identity, t: float, width: float, centre: tuple[float, float], look: np.ndarray) -> None:
        dt, a = t - k.seen, self.motion
        if dt > 0:
            k.velocity = tuple((1 - a) * v + a * (c - old) / dt for v, c, old in zip(k.velocity, centre, k.centre))
        k.centre, k.seen, k.width = centre, t, 0.5 * k.width + 0.5 * width
        mean = 0.8 * k.look + 0.2 * look
        k.look = mean / max(float(np.linalg.norm(mean)), 1e-6)
