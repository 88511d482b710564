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

from .predict import _finished_after

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
    before, after = (seconds / 2, seconds / 2) if centred else (seconds, 0.0)
    window: deque = deque()            # results in [oldest pending - before, newest]
    pending: deque = deque()           # results not yet yielded
    results = iter(results)

    def add(r) -> None:
        window.append(r)
        pending.append(r)

    try:
        for r in results:
            add(r)
            while pending and _time(pending[0]) + after <= _time(r):
                try:
                    yield _smoothed(pending.popleft(), window, before, after)
                except KeyboardInterrupt as stop:      # thrown in by litefer predict's consume()
                    for late in _finished_after(results, stop):
                        add(late)
                    raise
            _forget(window, _time(pending[0]) if pending else _time(r), before)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the frames read so far are still yielded, as the recognizer's pipeline does
        while pending:
            yield _smoothed(pending.popleft(), window, before, after)
        raise
    while pending:
        yield _smoothed(pending.popleft(), window, before, after)


def _time(r) -> float:
    return 0.0 if r.time is None else float(r.time)


def _forget(window: deque, oldest: float, before: float) -> None:
    """Drop the results no window can reach: those before ``before`` seconds ahead of the oldest
    result still to come out (``oldest``)."""
    while window and _time(window[0]) < oldest - before - 1e-9:
        window.popleft()


def _smoothed(r, window: deque, before: float, after: float):
    t = _time(r)
    for face in r.faces:
        if face.track is None or face.raw is not None:
            continue
        names = list(face.scores)
        same = [f.raw_scores for w in window if t - before - 1e-9 <= _time(w) <= t + after + 1e-9
                for f in w.faces if f.track == face.track]
        mean = np.mean([[s[n] for n in names] for s in same], axis=0)
        top = int(np.argmax(mean))
        face.raw = {"label": face.label, "score": face.score, "scores": dict(face.scores)}
        face.scores = {n: float(v) for n, v in zip(names, mean)}
        face.label, face.score = names[top], float(mean[top])
    return r
