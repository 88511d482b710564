"""Signals over time from a video's per-frame class probabilities: smoothing per track, and valence.

Smoothing averages each track's class probabilities (not its labels) over a window of ``seconds``
around each frame: the frames of the same track whose times lie in ``[t - seconds, t]`` (causal, for
live video: no look-ahead, and the label lags a change by about ``seconds / 2``) or in
``[t - seconds / 2, t + seconds / 2]`` (centred, for files: no lag, a change shows up where it happens).
The label is the top class of the mean. The stream stays a stream: a centred window holds back only the
results of the last ``seconds / 2``, so memory does not grow with the video.

Valence is FaceReader's (Noldus): the probability of happiness minus that of the strongest negative
expression among sadness, anger, fear and disgust, from -1 (negative) to +1 (positive). Contempt,
surprise and neutral count on neither side, as in FaceReader. Models whose classes lack happiness or
all four negative ones have no valence (None).
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

import numpy as np

from ..utils import finished_after

DEFAULT_SMOOTH = 0.5       # seconds; chosen in results/video_tracks.md
POSITIVE = "happiness"
NEGATIVE = ("sadness", "anger", "fear", "disgust")


def valence(scores: dict[str, float]) -> float | None:
    """FaceReader's valence of one face's class probabilities; None when the classes do not allow it."""
    negative = [scores[n] for n in NEGATIVE if n in scores]
    if POSITIVE not in scores or not negative:
        return None
    return float(scores[POSITIVE] - max(negative))


def smooth_results(results: Iterable, seconds: float, centred: bool = True) -> Iterator:
    """Yield ``results`` (ImageResults of consecutive video frames, with ``time`` and tracked faces) in
    order, each face's ``scores``, ``label`` and ``score`` replaced by their mean over its track's
    window (see the module), the frame's own values kept in ``face.raw``. ``seconds <= 0`` yields
    them unchanged."""
    if seconds <= 0:
        yield from results
        return
    windows = _Windows(*((seconds / 2, seconds / 2) if centred else (seconds, 0.0)))
    pending: deque = deque()           # results not yet yielded
    results = iter(results)

    def add(r) -> None:
        windows.add(r)
        pending.append(r)

    try:
        for r in results:
            add(r)
            while pending and _time(pending[0]) + windows.after <= _time(r):
                try:
                    yield windows.smoothed(pending.popleft())
                except KeyboardInterrupt as stop:      # thrown in by litefer predict's consume()
                    for late in finished_after(results, stop):
                        add(late)
                    raise
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the frames read so far are still yielded, as the recognizer's pipeline does
        while pending:
            yield windows.smoothed(pending.popleft())
        raise
    while pending:
        yield windows.smoothed(pending.popleft())


def _time(r) -> float:
    return 0.0 if r.time is None else float(r.time)


class _Windows:
    """Per track, the (time, probabilities) of its frames still inside some window, and their sum: a
    frame's mean is that sum less the frames beyond its window's end (the few read ahead of it)."""

    def __init__(self, before: float, after: float):
        self.before, self.after = before, after
        self.tracks: dict[int, list] = {}          # track -> [deque of (t, vector), running sum]

    def add(self, r) -> None:
        t = _time(r)
        for f in r.faces:
            if f.track is not None and f.raw is None:
                v = np.fromiter(f.scores.values(), np.float64, len(f.scores))
                entry = self.tracks.setdefault(f.track, [deque(), np.zeros_like(v)])
                entry[0].append((t, v))
                entry[1] = entry[1] + v

    def smoothed(self, r):
        t = _time(r)
        self._forget(t - self.before - 1e-9)
        for face in r.faces:
            if face.track is None or face.raw is not None:
                continue
            frames, total = self.tracks[face.track]
            n, late = len(frames), []
            for when, v in reversed(frames):                # read ahead of this frame's window
                if when <= t + self.after + 1e-9:
                    break
                late.append(v)
            mean = (total - sum(late)) / (n - len(late)) if late else total / n
            names, top = list(face.scores), int(np.argmax(mean))
            face.raw = {"label": face.label, "score": face.score, "scores": face.scores}
            face.scores = dict(zip(names, mean.tolist()))
            face.label, face.score = names[top], float(mean[top])
        return r

    def _forget(self, start: float) -> None:
        for k in list(self.tracks):
            frames, total = self.tracks[k]
            while frames and frames[0][0] < start:
                total = total - frames.popleft()[1]
            if frames:
                self.tracks[k][1] = total
            else:
                del self.tracks[k]                          # a track that ended: nothing left to hold
