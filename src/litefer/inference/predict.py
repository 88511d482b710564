"""What ``litefer predict`` does with its inputs (the command line is :mod:`litefer.cli.predict`):
expressions of the faces in images, folders, globs, videos and webcams, as a table, JSON, CSV and
annotated copies.

Inputs that cannot be used (missing, unreadable, truncated, not an image, an unopenable video, a
broken symbolic link) are skipped with their reason and counted in the summary on stderr; the rest of
the batch goes on. A video that breaks off before its announced end is analysed up to the break and
reported as incomplete. Exit status: :data:`EXIT_CODES`.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from ..utils import atomic_write_bytes, atomic_write_text, finished_after, json_text, printable
from .inputs import InputError, TruncatedVideoWarning, expand_inputs, kind_of

log = logging.getLogger(__name__)

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
EXIT_CODES = {EXIT_OK: "every input processed", EXIT_NOTHING: "no input could be processed",
              EXIT_USAGE: "bad arguments or model (nothing run)",
              EXIT_PARTIAL: "some inputs skipped or videos incomplete, the rest processed",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C); results up to then written",
              EXIT_TERMINATED: "terminated (SIGTERM); results up to then written"}


class Terminated(KeyboardInterrupt):
    """Raised by ``litefer predict``'s SIGTERM handler (``timeout``, ``docker stop``, systemd) so that
    the run stops like a Ctrl-C, writing the results so far, but exits 128 + 15 = 143."""

ANNOTATED_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
REASONS = [("no such file", "missing file"), ("empty file", "empty file"), ("empty image", "empty image"),
           ("not an image file", "not an image"), ("truncated or corrupt", "truncated or corrupt image"),
           ("cannot decode image", "undecodable image"), ("MP limit", "image too large"),
           ("too large", "image too large"), ("cannot open as a video", "unopenable video"),
           ("cannot decode any frame", "undecodable video"), ("no image or video files", "empty folder"),
           ("pattern matches no files", "pattern without matches"), ("is a folder", "not a file"),
           ("broken symbolic link", "broken link"), ("symbolic link loop", "link loop"),
           ("cannot read folder", "unreadable folder"), ("HEIC/HEIF", "HEIC/HEIF image"),
           ("not a regular file", "special file")]


def reason_of(message: str) -> str:
    for needle, reason in REASONS:
        if needle in message:
            return reason
    return "other error"


class Output:
    """Collects results, prints the text table, writes JSON / CSV / annotated files."""

    def __init__(self, args, class_names, prior="dataset", detector: str | None = None):
        self.args, self.class_names, self.prior, self.detector = args, class_names, prior, detector
        self.entries: list[dict] = []          # JSON: one per input
        self.results = []                      # ImageResults for the CSV
        self.skipped: list[str] = []
        self.incomplete: list[str] = []        # videos analysed up to a break
        self.counts = Counter()
        self.table = args.json != "-" and args.csv != "-"
        self.used_names: dict[str, set[str]] = {}      # per output folder
        self.header_done = False

    # ---------------------------------------------------------------- table
    def _print(self, text: str):
        from tqdm.auto import tqdm
        tqdm.write(printable(text), file=sys.stdout)

    def row(self, r):
        if not self.table:
            return
        if not self.header_done:
            extra = "".join(f" {n[:9]:>9}" for n in self.class_names) if self.args.scores else ""
            self._print(f"{'source':<32} {'frame':>6} {'face':>4} {'x':>5} {'y':>5} {'w':>5} {'h':>5} "
                        f"{'label':<10} {'score':>6}{extra}  issues")
            self.header_done = True
        src = r.source if len(r.source) <= 32 else "..." + r.source[-29:]
        frame = "" if r.frame is None else str(r.frame)
        if r.error:
            self._print(f"{src:<32} {frame:>6} {'-':>4}  skipped: {r.error}")
            return
        if not r.faces:
            self._print(f"{src:<32} {frame:>6} {'-':>4}  no face found")
        for i, f in enumerate(r.faces):
            x, y, w, h = f.box
            extra = "".join(f" {f.scores[n]:>9.3f}" for n in self.class_names) if self.args.scores else ""
            self._print(f"{src:<32} {frame:>6} {i:>4} {x:>5} {y:>5} {w:>5} {h:>5} {f.label:<10} {f.score:>6.3f}"
                        f"{extra}  {','.join(f.issues) or '-'}")

    # ---------------------------------------------------------------- bookkeeping
    def skip(self, message: str, kind: str):
        self.skipped.append(message)
        self.counts[f"skipped_{kind}"] += 1

    def image(self, r):
        if r.error:
            self.skip(r.error, "image")
        else:
            self.counts["images"] += 1
            self.counts["faces"] += len(r.faces)
            self.counts["images_with_faces"] += bool(r.faces)
        if r.image is not None and not r.error:
            for folder, draw in drawings(self.args):
                self.save_image(r, folder, draw)
        self.results.append(_stripped(r))
        self.entries.append({"kind": "image", **r.to_dict()})
        self.row(r)              # last: a row on the screen is a row the CSV and JSON will hold, even if stopped now

    def frame(self, r, entry: dict):
        """One video frame: counted, shown, and kept for ``--json`` and ``--csv`` only when they are
        asked for (so that a long video with neither, a ``--report`` run say, holds no rows)."""
        self.counts["frames"] += 1
        self.counts["faces"] += len(r.faces)
        if self.args.json:
            entry["frames"].append({k: v for k, v in r.to_dict().items() if k != "source"})
        _stripped(r)
        if self.args.csv:
            self.results.append(r)
        self.row(r)

    def annotated_path(self, source: str, suffix: str, folder: str | None = None) -> Path:
        """A name in ``folder`` (``--save-annotated``'s by default) from the input's, unique in that folder."""
        folder = folder or self.args.save_annotated
        used = self.used_names.setdefault(folder, set())
        stem = Path(source).stem if source else "image"
        stem = re.sub(r"[^\w.-]+", "_", stem) or "image"
        name, k = stem + suffix, 1
        while name in used:
            name, k = f"{stem}-{k}{suffix}", k + 1
        used.add(name)
        return Path(folder) / name

    def save_image(self, r, folder: str | None = None, draw=None):
        import cv2

        from .draw import annotate

        suffix = Path(r.source).suffix.lower()
        suffix = suffix if suffix in ANNOTATED_IMAGE_SUFFIXES else ".png"
        path = self.annotated_path(r.source, suffix, folder)
        ok, buf = cv2.imencode(suffix, (draw or annotate)(r.image, r.faces))
        if ok:
            atomic_write_bytes(path, buf.tobytes())
        else:
            log.warning("%s: could not encode the annotated image", path)

    # ---------------------------------------------------------------- final files and summary
    def finish(self, interrupted: bool = False) -> int:
        from .recognizer import csv_text

        # names that are not valid UTF-8 are written with \xNN escapes (litefer.utils.printable), the same in both
        if self.args.json:
            text = json_text({"inputs": self.entries, "summary": self.summary_dict()}) + "\n"
            if self.args.json == "-":
                sys.stdout.write(text)
            else:
                atomic_write_text(self.args.json, text)
        if self.args.csv:
            text = csv_text(self.results, class_names=self.class_names)
            if self.args.csv == "-":
                sys.stdout.write(printable(text))
            else:
                atomic_write_text(self.args.csv, text)
        print(printable(self.summary_text(interrupted)), file=sys.stderr)
        processed = self.counts["images"] + self.counts["videos"] + self.counts["streams"]
        if interrupted:
            return EXIT_INTERRUPTED
        if self.skipped and not processed:
            return EXIT_NOTHING
        return EXIT_PARTIAL if self.skipped or self.incomplete else EXIT_OK

    def summary_dict(self) -> dict:
        return {"images": self.counts["images"], "images_with_faces": self.counts["images_with_faces"],
                "videos": self.counts["videos"] + self.counts["streams"], "frames": self.counts["frames"],
                "faces": self.counts["faces"], "skipped": len(self.skipped),
                "skipped_by_reason": dict(Counter(reason_of(m) for m in self.skipped)),
                "skipped_inputs": self.skipped, "incomplete_videos": self.incomplete, "prior": self.prior,
                "detector": self.detector}

    def summary_text(self, interrupted: bool) -> str:
        c = self.counts
        parts = [f"{c['images']} image(s) ({c['images_with_faces']} with faces)"]
        if c["videos"] or c["streams"]:
            parts.append(f"{c['videos'] + c['streams']} video(s)/stream(s), {c['frames']} frame(s) analysed")
        parts.append(f"{c['faces']} face(s)" + (f" found by {self.detector}" if self.detector else ""))
        line = "litefer predict: " + ", ".join(parts)
        if self.skipped:
            by = Counter(reason_of(m) for m in self.skipped)
            line += f"; skipped {len(self.skipped)}: " + ", ".join(f"{n} {r}" for r, n in by.most_common())
            shown = self.skipped[:20]
            line += "\n" + "\n".join(f"  skipped {m}" for m in shown)
            if len(self.skipped) > len(shown):
                line += f"\n  ... and {len(self.skipped) - len(shown)} more"
        if self.incomplete:
            line += f"\n{len(self.incomplete)} video(s) incomplete:\n" + "\n".join(f"  {m}" for m in self.incomplete)
        if interrupted:
            line += "\n(interrupted; results up to that point were written)"
        return line


def drawings(args) -> list[tuple[str, object]]:
    """(folder, draw function) of each drawn copy asked for: ``--save-annotated`` (boxes and labels)
    and ``--explain`` (the maps under them)."""
    from .draw import annotate, overlay_explanations

    out = [(args.save_annotated, annotate)] if args.save_annotated else []
    return out + ([(args.explain, overlay_explanations)] if args.explain else [])


def _stripped(r):
    """The result without its pixels (results are kept for the CSV; frames are not)."""
    r.image = None
    return r


class VideoSink:
    """Annotated video written to a temporary file and renamed into place when complete."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import cv2

        self.final = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        self.tmp = Path(tmp)
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, max(fps, 1.0), size)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise OSError(f"{path}: OpenCV cannot write this video format")

    def write(self, frame):
        self.writer.write(frame)

    def close(self, keep: bool = True):
        self.writer.release()
        if keep:
            os.replace(self.tmp, self.final)
        else:
            self.tmp.unlink(missing_ok=True)


def run_video(rec, source, out: Output, args, bar_factory, report_dir: Path | None = None) -> None:
    """One video file or webcam: per-frame results, optional annotated video and report (in ``report_dir``)."""
    from .inputs import VideoInfo, open_video

    is_cam = isinstance(source, int)
    name = f"webcam {source}" if is_cam else str(source)
    try:
        if is_cam:      # a camera is opened once, by the recognizer; its frame rate is not known up front
            info = VideoInfo(fps=0.0, frames=0, width=0, height=0)
        else:
            cap, info = open_video(source)
            cap.release()
        frames = rec.recognize_video(source, every=args.every, max_frames=args.max_frames,
                                     keep_images=bool(drawings(args)), detect_every=args.detect_every,
                                     detect_scale=args.detect_scale, explain=bool(args.explain),
                                     smooth=args.smooth)
    except InputError as e:
        out.skip(str(e), "video")
        out.entries.append({"kind": "video", "source": name, "error": str(e), "frames": []})
        out.row(_error_result(name, str(e)))
        return
    total = (info.frames + args.every - 1) // args.every if info.frames else None
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    entry = {"kind": "video", "source": name, "error": None, "warning": None, "fps": info.fps,
             "width": info.width, "height": info.height, "every": args.every, "frames": []}
    out.entries.append(entry)
    bar = bar_factory(total=total, unit="frame", desc=Path(name).name if not is_cam else name, leave=False)
    sinks = [_AnnotatedVideo(out, f"webcam{source}" if is_cam else name, (info.fps or 25.0) / args.every, folder, draw)
             for folder, draw in drawings(args)]
    report = _video_report(rec, name, is_cam, args) if report_dir is not None else None
    n = 0

    def handle(r):
        nonlocal n
        for sink in sinks:
            sink.add(r)
        if report is not None:
            report.add(r)
        n += 1
        out.frame(r, entry)
        bar.update(1)

    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", TruncatedVideoWarning)
            consume(frames, handle)
        _note_warnings(warned, out, entry)
    except InputError as e:
        entry["error"] = str(e)
        out.skip(str(e), "video")
        out.row(_error_result(name, str(e)))
    finally:
        bar.close()
        for sink in sinks:
            sink.close(keep=n > 0)
        if report is not None and n > 0:
            entry["report"] = str(report.write(report_dir))
        if n > 0 and entry["error"] is None:
            out.counts["streams" if is_cam else "videos"] += 1


def _video_report(rec, name: str, is_cam: bool, args):
    """The running report of one video, with the settings it states."""
    from .report import VideoReport
    from .signals import DEFAULT_SMOOTH

    seconds = DEFAULT_SMOOTH if args.smooth is None else args.smooth
    window = f"the last {seconds:g} s (live)" if is_cam else f"{seconds:g} s centred on each frame"
    every = "every frame" if args.every == 1 else f"every {args.every}th frame"
    detect = "on every analysed frame" if (args.detect_every, args.detect_scale) == (1, 1.0) else \
        f"on every {args.detect_every}th analysed frame at {args.detect_scale:g} of its size, followed between"
    return VideoReport(name, rec.class_names, {
        "model": rec.card.model_name, "frames analysed": every, "faces detected": f"by {rec.detector_name}, {detect}",
        "smoothing": "off" if seconds <= 0 else f"class probabilities averaged over {window}"})


def report_folders(files: list, webcam, folder: str | None) -> dict:
    """``--report DIR``'s folder per video (keys: the video paths, and the webcam index): DIR itself for
    one video, DIR/<name> for each of several."""
    if folder is None:
        return {}
    videos = [f for f in files if kind_of(f) == "video"] + ([webcam] if webcam is not None else [])
    if len(videos) == 1:
        return {videos[0]: Path(folder)}
    names: dict = {}
    for v in videos:
        stem = re.sub(r"[^\w.-]+", "_", f"webcam{v}" if isinstance(v, int) else Path(v).stem) or "video"
        name, k = stem, 1
        while name in names.values():
            name, k = f"{stem}-{k}", k + 1
        names[v] = name
    return {v: Path(folder) / name for v, name in names.items()}


def _note_warnings(warned, out: Output, entry: dict) -> None:
    """Record a truncated video as incomplete; pass any other warning on."""
    for w in warned:
        if issubclass(w.category, TruncatedVideoWarning):
            entry["warning"] = str(w.message)
            out.incomplete.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


class _AnnotatedVideo:
    """A drawn copy of a video in ``folder`` (``draw``: :func:`drawings`), opened at its first frame
    (whose size it takes)."""

    def __init__(self, out: Output, source_name: str, fps: float, folder: str, draw):
        self.out, self.source_name, self.fps, self.sink = out, source_name, fps, None
        self.folder, self.draw = folder, draw

    def add(self, r) -> None:
        if r.image is None:
            return
        if self.sink is None:
            path = self.out.annotated_path(self.source_name, ".mp4", self.folder)
            size = (r.image.shape[1], r.image.shape[0])
            try:
                self.sink = VideoSink(path, self.fps, size)
            except OSError:
                self.sink = VideoSink(path.with_suffix(".avi"), self.fps, size)
        self.sink.write(self.draw(r.image, r.faces))

    def close(self, keep: bool) -> None:
        if self.sink is not None:
            self.sink.close(keep=keep)


def _error_result(name, message):
    from .recognizer import ImageResult
    return ImageResult(name, error=message)


def run_inputs(rec, specs: list[str], args, prior: str = "dataset") -> int:
    """Recognize ``specs`` (paths, folders, globs) then ``args.webcam``; returns the exit status
    (:data:`EXIT_CODES`). Runs of images go to the recognizer as one batch, videos one at a time."""
    from tqdm.auto import tqdm

    files, problems = expand_inputs(specs)
    reports = report_folders(files, args.webcam, args.report)
    if args.report and not reports:
        print(f"litefer predict: --report {args.report}: no video or webcam among the inputs, so no report",
              file=sys.stderr)
    out = Output(args, rec.class_names, prior, rec.detector_name)
    for message in problems:
        out.skip(message, "input")
    disable = None if args.progress is None else not args.progress     # None: only on a terminal

    def bar_factory(**kw):
        return tqdm(disable=disable, file=sys.stderr, dynamic_ncols=True, **kw)

    try:
        overall = bar_factory(total=len(files), unit="file", desc="litefer predict")
        for group in _runs_of_kind(files):
            if kind_of(group[0]) == "video":
                run_video(rec, group[0], out, args, bar_factory, reports.get(group[0]))
                overall.update(1)
                continue
            consume(rec.iter_many(group, keep_images=bool(drawings(args)),
                                  explain=bool(args.explain)),
                    lambda r: (out.image(r), overall.update(1)))
        overall.close()
        if args.webcam is not None:
            run_video(rec, args.webcam, out, args, bar_factory, reports.get(args.webcam))
    except KeyboardInterrupt as stop:
        code = out.finish(interrupted=True)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else code
    return out.finish()


def consume(results, handle) -> None:
    """``handle`` each result of a recognizer's generator. When Ctrl-C or SIGTERM lands while a
    result is being handled, the generator is handed the interrupt, so that the results it has
    finished (the rest of its batch) are handled too before the interrupt goes on."""
    try:
        for r in results:
            handle(r)
    except KeyboardInterrupt as stop:
        for r in finished_after(results, stop):
            handle(r)
        raise


def _runs_of_kind(files: list) -> list[list]:
    """Consecutive images as one group, each video as a group of its own, in input order."""
    groups: list[list] = []
    for f in files:
        if kind_of(f) == "image" and groups and kind_of(groups[-1][0]) == "image":
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups
