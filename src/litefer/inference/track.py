"""Faces in a video without running the detector on every frame.

``FaceTracker`` runs the face detector on a downscaled copy of every k-th frame (``detect_scale``)
and follows each face in the frames between by template matching: the face's grey patch, taken when
it was detected, is searched for in a window around its last position (normalised cross-correlation,
``cv2.matchTemplate``), on the same downscaled grey frame. A track whose best match scores below
``min_match`` is lost; a lost track, or k frames since the last detection, makes the tracker detect
again on that frame. Boxes move with the face (translation); their size and the eye positions used
for alignment follow the last detection, shifted by the same amount. A face that enters the frame
between detections is found at the next one (at most k - 1 frames later).
"""
from __future__ import annotations

from dataclasses import dataclass

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
