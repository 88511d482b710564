"""A video's report, built from running summaries as the frames go by (memory flat in the video's length).

``VideoReport.add(result)`` takes each analysed frame (an ImageResult with tracked faces, smoothed or
not); ``write(folder)`` writes, each file atomically:

* ``tracks.csv``: one row per track: first and last frame and second, seconds from first to last
  (``seconds``) and seen (``seen_s``: frames times the frame step), frames, the
  dominant expression, the share of time in each expression (its frames whose label is that
  expression, over the track's frames) and the mean valence (:func:`litefer.inference.signals.valence`);
* ``segments.csv``: per track, the stretches of time with one dominant expression (the top class of
  the mean probabilities in each timeline bin, consecutive bins with the same one merged);
* ``timeline.png``: one band per track, its class probabilities over time stacked in each bin, with
  its valence as a white line (the band's middle is 0), drawn with OpenCV (no matplotlib needed);
* ``report.html``: the page to read first: what was analysed, the picture, the tables, the formulas.

The timeline keeps at most ``max_bins`` bins per track: when the video outgrows them, neighbouring
bins are merged and the bin width doubles (so a long video's picture is a downsampled one).
"""
from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..utils import atomic_write_bytes, atomic_write_text
from .draw import colour
from .signals import NEGATIVE, POSITIVE

FIRST_BIN_S = 0.1


@dataclass
class _TrackSummary:
    first_frame: int
    first_t: float
    last_frame: int = 0
    last_t: float = 0.0
    frames: int = 0
    labels: Counter = field(default_factory=Counter)
    valence_sum: float = 0.0
    valence_n: int = 0
    sums: np.ndarray | None = None          # (bins, K) summed probabilities
    counts: np.ndarray | None = None        # (bins,) frames per bin
    valence_bins: np.ndarray | None = None  # (bins,) summed valence


class VideoReport:
    """Running summaries of one video's tracks; see the module."""

    def __init__(self, source: str, class_names: list[str], settings: dict | None = None, max_bins: int = 480):
        self.source, self.class_names, self.settings = source, list(class_names), dict(settings or {})
        self.max_bins, self.bin_s = int(max_bins), FIRST_BIN_S
        self.tracks: dict[int, _TrackSummary] = {}
        self.frames, self.last_t, self.last_frame, self.step_s = 0, 0.0, 0, None

    def add(self, result) -> None:
        """One analysed frame, in order."""
        t = float(result.time or 0.0)
        if self.frames and t > self.last_t and self.step_s is None:
            self.step_s = t - self.last_t
        self.frames, self.last_t, self.last_frame = self.frames + 1, t, int(result.frame or 0)
        while self._bin(t) >= self.max_bins:
            self._halve()
        b = self._bin(t)
        for f in result.faces:
            if f.track is not None:
                self._add_face(f, t, b, int(result.frame or 0))

    def _add_face(self, f, t: float, b: int, frame: int) -> None:
        s = self.tracks.get(f.track)
        if s is None:
            k = len(self.class_names)
            s = self.tracks[f.track] = _TrackSummary(frame, t, sums=np.zeros((self.max_bins, k)),
                                                     counts=np.zeros(self.max_bins), valence_bins=np.zeros(self.max_bins))
        s.last_frame, s.last_t, s.frames = frame, t, s.frames + 1
        s.labels[f.label] += 1
        s.sums[b] += [f.scores.get(n, 0.0) for n in self.class_names]
        s.counts[b] += 1
        v = f.valence
        if v is not None:
            s.valence_sum, s.valence_n = s.valence_sum + v, s.valence_n + 1
            s.valence_bins[b] += v

    def _bin(self, t: float) -> int:
        return int(t / self.bin_s + 1e-6)

    def _spans(self, s: _TrackSummary):
        """(bin, start s, end s) of each bin holding frames; a bin reaches to the next one when no more
        than a frame step lies between them (frames sparser than the bins leave no holes)."""
        filled = np.flatnonzero(s.counts)
        reach = max(self.bin_s, 1.5 * (self.step_s or 0.0))
        for i, b in enumerate(filled):
            start, end = b * self.bin_s, (b + 1) * self.bin_s
            if i + 1 < len(filled) and filled[i + 1] * self.bin_s - start <= reach + 1e-9:
                end = filled[i + 1] * self.bin_s
            yield b, start, end

    def _halve(self) -> None:
        """Merge neighbouring bins of every track: half as many, twice as wide."""
        half = self.max_bins // 2
        for s in self.tracks.values():
            for name in ("sums", "counts", "valence_bins"):
                a = getattr(s, name)
                merged = a[:2 * half].reshape(half, 2, *a.shape[1:]).sum(1)
                setattr(s, name, np.concatenate([merged, np.zeros_like(a[:self.max_bins - half])]))
        self.bin_s *= 2

    # ------------------------------------------------------------------ derived tables

    def track_rows(self) -> list[dict]:
        """One row per track (the rows of tracks.csv), in track order."""
        step = self.step_s or 0.0
        rows = []
        for k, s in sorted(self.tracks.items()):
            row = {"track": k, "first_frame": s.first_frame, "last_frame": s.last_frame,
                   "first_s": round(s.first_t, 3), "last_s": round(s.last_t, 3),
                   "seconds": round(s.last_t - s.first_t + step, 3), "seen_s": round(s.frames * step, 3),
                   "frames": s.frames,
                   "dominant": s.labels.most_common(1)[0][0] if s.labels else ""}
            row.update({f"share_{n}": round(s.labels[n] / s.frames, 4) for n in self.class_names})
            row["mean_valence"] = round(s.valence_sum / s.valence_n, 4) if s.valence_n else None
            rows.append(row)
        return rows

    def segment_rows(self) -> list[dict]:
        """Per track, the stretches of consecutive timeline bins with one dominant expression."""
        rows = []
        for k, s in sorted(self.tracks.items()):
            current = None
            for b, start, end in self._spans(s):
                label = self.class_names[int(np.argmax(s.sums[b]))]
                if current and current["label"] == label and abs(current["end_s"] - start) < 1e-9:
                    current["end_s"], current["frames"] = end, current["frames"] + int(s.counts[b])
                else:
                    current = {"track": k, "start_s": start, "end_s": end, "label": label, "frames": int(s.counts[b])}
                    rows.append(current)
        for r in rows:
            r["start_s"], r["end_s"] = round(r["start_s"], 3), round(r["end_s"], 3)
        return rows

    # ------------------------------------------------------------------ files

    def write(self, folder: str | Path) -> Path:
        """tracks.csv, segments.csv, timeline.png and report.html in ``folder`` (made if needed); its path."""
        from .recognizer import _format_csv

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tracks, segments = self.track_rows(), self.segment_rows()
        track_columns = ["track", "first_frame", "last_frame", "first_s", "last_s", "seconds", "seen_s", "frames",
                         "dominant",
                         *[f"share_{n}" for n in self.class_names], "mean_valence"]
        atomic_write_text(folder / "tracks.csv", _format_csv(track_columns, tracks))
        atomic_write_text(folder / "segments.csv",
                          _format_csv(["track", "start_s", "end_s", "label", "frames"], segments))
        ok, png = cv2.imencode(".png", self.timeline_image())
        if not ok:
            raise OSError(f"{folder / 'timeline.png'}: OpenCV could not encode the timeline")
        atomic_write_bytes(folder / "timeline.png", png.tobytes())
        atomic_write_text(folder / "report.html", self.html(tracks, segments))
        return folder

    def timeline_image(self, width: int = 1000, band: int = 70) -> np.ndarray:
        """The timeline picture (BGR): a legend, one band per track, a time axis in seconds."""
        left, right, top, gap = 80, 12, 34, 10
        ids = sorted(self.tracks)
        height = top + max(1, len(ids)) * (band + gap) + 28
        img = np.full((height, width, 3), 255, np.uint8)
        duration = max(self.last_t + (self.step_s or 0.0), self.bin_s)
        scale = (width - left - right) / duration
        self._legend(img, left)
        for row, k in enumerate(ids):
            self._band(img, self.tracks[k], k, left, top + row * (band + gap), band, scale)
        if not ids:
            cv2.putText(img, "no face was tracked", (left, top + band // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (60, 60, 60), 1, cv2.LINE_AA)
        self._axis(img, left, height - 26, scale, duration)
        return img

    def _legend(self, img: np.ndarray, x: int) -> None:
        for name in self.class_names:
            cv2.rectangle(img, (x, 10), (x + 12, 22), colour(name), -1)
            cv2.putText(img, name, (x + 16, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
            x += 22 + cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0]
        cv2.putText(img, "white line: valence", (x + 6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1,
                    cv2.LINE_AA)

    def _band(self, img: np.ndarray, s: _TrackSummary, k: int, left: int, y0: int, band: int, scale: float) -> None:
        cv2.rectangle(img, (left, y0), (img.shape[1] - 12, y0 + band), (235, 235, 235), -1)
        cv2.putText(img, f"track {k}", (6, y0 + band // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (30, 30, 30), 1,
                    cv2.LINE_AA)
        lines, last_end = [], None
        for b, start, end in self._spans(s):
            x0 = left + int(start * scale)
            x1 = max(left + int(end * scale), x0 + 1)
            if last_end is None or start > last_end + 1e-9:          # a gap: the valence line breaks
                lines.append([])
            last_end = end
            mean, base = s.sums[b] / s.counts[b], float(y0 + band)
            for name, p in zip(self.class_names, mean):
                cv2.rectangle(img, (x0, int(round(base - p * band))), (x1 - 1, int(round(base))), colour(name), -1)
                base -= p * band
            if s.valence_n:
                lines[-1].append(((x0 + x1) // 2, int(round(y0 + band / 2 - s.valence_bins[b] / s.counts[b] * band / 2))))
        for line in (np.int32(p) for p in lines if len(p) > 1):
            cv2.polylines(img, [line], False, (255, 255, 255), 2, cv2.LINE_AA)
            cv2.polylines(img, [line], False, (30, 30, 30), 1, cv2.LINE_AA)

    @staticmethod
    def _axis(img: np.ndarray, left: int, y: int, scale: float, duration: float) -> None:
        step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
                    if duration / s <= 12 or s == 7200)
        cv2.line(img, (left, y), (img.shape[1] - 12, y), (80, 80, 80), 1)
        t = 0.0
        while t <= duration + 1e-9:
            x = left + int(t * scale)
            cv2.line(img, (x, y), (x, y + 4), (80, 80, 80), 1)
            text = f"{t:g} s" if t < 60 else f"{int(t // 60)}:{int(t % 60):02d}"
            cv2.putText(img, text, (x - 8, y + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
            t += step

    def html(self, tracks: list[dict], segments: list[dict]) -> str:
        """report.html: the summary a person reads first."""
        e = html.escape
        settings = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in self.settings.items())
        head = ["track", "from – to", "seen", "frames", "dominant", *self.class_names, "mean valence"]
        body = "".join(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in [
                r["track"], f"{r['first_s']:.1f}–{r['last_s']:.1f} s", f"{r['seen_s']:.1f} s", r["frames"], r["dominant"],
                *[f"{100 * r['share_' + n]:.0f} %" for n in self.class_names],
                "–" if r["mean_valence"] is None else f"{r['mean_valence']:+.2f}"]) + "</tr>" for r in tracks)
        shown = segments[:200]
        seg = "".join(f"<tr><td>{r['track']}</td><td>{r['start_s']:.1f}–{r['end_s']:.1f} s</td>"
                      f"<td>{e(r['label'])}</td></tr>" for r in shown)
        more = f"<p>… and {len(segments) - len(shown)} more in segments.csv.</p>" if len(segments) > len(shown) else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>litefer report: {e(Path(self.source).name)}</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:1.5rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:.5rem 0 1rem}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}}
th{{background:#f2f2f2}}img{{max-width:100%;border:1px solid #ddd}}code{{background:#f4f4f4}}</style></head>
<body>
<h1>Expressions in {e(self.source)}</h1>
<p>{self.frames} frames analysed over {self.last_t + (self.step_s or 0):.1f} s; {len(tracks)} track(s).
A track is one face followed from frame to frame; a person who leaves the picture for longer than the
linker's gap and comes back gets a new track.</p>
<ul>{settings}</ul>
<h2>Timeline</h2>
<p>One band per track: the class probabilities{' (smoothed)' if self.settings.get('smoothing') not in (None, 'off') else ''}
stacked in each {self.bin_s:g} s bin, and the valence (white line; the band's middle is 0, its top +1, its bottom -1).</p>
<img src="timeline.png" alt="expression probabilities over time, one band per track">
<h2>Tracks</h2>
<p>Seen: the time the face was found (its frames times the frame step; less than from – to when it was
hidden or missed). Share of time: the track's frames whose label is that expression. Also in <code>tracks.csv</code>.</p>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{body}</table>
<h2>Segments</h2>
<p>The dominant expression (top class of the mean probabilities) of each stretch of time; also in <code>segments.csv</code>.</p>
<table><tr><th>track</th><th>time</th><th>dominant</th></tr>{seg}</table>{more}
<h2>Formulas</h2>
<p>Valence = P({POSITIVE}) − max(P({'), P('.join(NEGATIVE)})), per frame, from −1 to +1: the definition of
Noldus FaceReader (happy minus the strongest negative expression); contempt, surprise and neutral count on neither side.
Mean valence is its mean over the track's frames.</p>
</body></html>
"""

