"""``litefer predict``: expressions of the faces in images, folders, globs, videos and webcams.

    litefer predict photo.jpg holiday/ "shots/*.png"            # table on stdout
    litefer predict clip.mp4 --every 5 --csv clip.csv --save-annotated out/
    litefer predict --webcam 0 --max-frames 300 --json

Inputs that cannot be used (missing, unreadable, truncated, not an image, an unopenable video, a
broken symbolic link) are skipped with their reason and counted in the summary on stderr; the rest of
the batch goes on. A video that breaks off before its announced end is analysed up to the break and
reported as incomplete. Exit status: :data:`EXIT_CODES`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from .inputs import InputError, TruncatedVideoWarning, expand_inputs, kind_of
from .samples import sample_photo
from ..utils import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {EXIT_OK: "every input processed", EXIT_NOTHING: "no input could be processed",
              EXIT_USAGE: "bad arguments or model (nothing run)",
              EXIT_PARTIAL: "some inputs skipped or videos incomplete, the rest processed",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C); results up to then written"}

ANNOTATED_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
REASONS = [("no such file", "missing file"), ("empty file", "empty file"), ("empty image", "empty image"),
           ("not an image file", "not an image"), ("truncated or corrupt", "truncated or corrupt image"),
           ("cannot decode image", "undecodable image"), ("MP limit", "image too large"),
           ("too large", "image too large"), ("cannot open as a video", "unopenable video"),
           ("cannot decode any frame", "undecodable video"), ("no image or video files", "empty folder"),
           ("pattern matches no files", "pattern without matches"), ("is a folder", "not a file"),
           ("broken symbolic link", "broken link"), ("symbolic link loop", "link loop"),
           ("cannot read folder", "unreadable folder")]


def reason_of(message: str) -> str:
    for needle, reason in REASONS:
        if needle in message:
            return reason
    return "other error"


class Output:
    """Collects results, prints the text table, writes JSON / CSV / annotated files."""

    def __init__(self, args, class_names, prior="dataset"):
        self.args, self.class_names, self.prior = args, class_names, prior
        self.entries: list[dict] = []          # JSON: one per input
        self.results = []                      # ImageResults for the CSV
        self.skipped: list[str] = []
        self.incomplete: list[str] = []        # videos analysed up to a break
        self.counts = Counter()
        self.table = args.json != "-" and args.csv != "-"
        self.used_names: set[str] = set()
        self.header_done = False

    # ---------------------------------------------------------------- table
    def _print(self, text: str):
        from tqdm.auto import tqdm
        tqdm.write(text, file=sys.stdout)

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
        self.row(r)
        if r.image is not None and not r.error and self.args.save_annotated:
            self.save_image(r)
        self.results.append(_stripped(r))
        self.entries.append({"kind": "image", **r.to_dict()})

    def frame(self, r, entry: dict):
        self.counts["frames"] += 1
        self.counts["faces"] += len(r.faces)
        self.row(r)
        entry["frames"].append({k: v for k, v in r.to_dict().items() if k != "source"})
        self.results.append(_stripped(r))

    def annotated_path(self, source: str, suffix: str) -> Path:
        stem = Path(source).stem if source else "image"
        stem = re.sub(r"[^\w.-]+", "_", stem) or "image"
        name, k = stem + suffix, 1
        while name in self.used_names:
            name, k = f"{stem}-{k}{suffix}", k + 1
        self.used_names.add(name)
        return Path(self.args.save_annotated) / name

    def save_image(self, r):
        import cv2

        from .draw import annotate

        suffix = Path(r.source).suffix.lower()
        suffix = suffix if suffix in ANNOTATED_IMAGE_SUFFIXES else ".png"
        path = self.annotated_path(r.source, suffix)
        ok, buf = cv2.imencode(suffix, annotate(r.image, r.faces))
        if ok:
            atomic_write_bytes(path, buf.tobytes())
        else:
            log.warning("%s: could not encode the annotated image", path)

    # ---------------------------------------------------------------- final files and summary
    def finish(self, interrupted: bool = False) -> int:
        from .recognizer import csv_text

        if self.args.json:
            text = json.dumps({"inputs": self.entries, "summary": self.summary_dict()}, indent=2) + "\n"
            if self.args.json == "-":
                sys.stdout.write(text)
            else:
                atomic_write_text(self.args.json, text)
        if self.args.csv:
            text = csv_text(self.results, class_names=self.class_names)
            if self.args.csv == "-":
                sys.stdout.write(text)
            else:
                atomic_write_text(self.args.csv, text)
        print(self.summary_text(interrupted), file=sys.stderr)
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
                "skipped_inputs": self.skipped, "incomplete_videos": self.incomplete, "prior": self.prior}

    def summary_text(self, interrupted: bool) -> str:
        c = self.counts
        parts = [f"{c['images']} image(s) ({c['images_with_faces']} with faces)"]
        if c["videos"] or c["streams"]:
            parts.append(f"{c['videos'] + c['streams']} video(s)/stream(s), {c['frames']} frame(s) analysed")
        parts.append(f"{c['faces']} face(s)")
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


def run_video(rec, source, out: Output, args, bar_factory) -> None:
    """One video file or webcam: per-frame results, optional annotated video."""
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
                                     keep_images=bool(args.save_annotated), detect_every=args.detect_every,
                                     detect_scale=args.detect_scale)
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
    sink = _AnnotatedVideo(out, f"webcam{source}" if is_cam else name, (info.fps or 25.0) / args.every) \
        if args.save_annotated else None
    n = 0
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", TruncatedVideoWarning)
            for r in frames:
                if sink is not None:
                    sink.add(r)
                n += 1
                out.frame(r, entry)
                bar.update(1)
        _note_warnings(warned, out, entry)
    except InputError as e:
        entry["error"] = str(e)
        out.skip(str(e), "video")
        out.row(_error_result(name, str(e)))
    finally:
        bar.close()
        if sink is not None:
            sink.close(keep=n > 0)
        if n > 0 and entry["error"] is None:
            out.counts["streams" if is_cam else "videos"] += 1


def _note_warnings(warned, out: Output, entry: dict) -> None:
    """Record a truncated video as incomplete; pass any other warning on."""
    for w in warned:
        if issubclass(w.category, TruncatedVideoWarning):
            entry["warning"] = str(w.message)
            out.incomplete.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


class _AnnotatedVideo:
    """The annotated copy of a video, opened at its first frame (whose size it takes)."""

    def __init__(self, out: Output, source_name: str, fps: float):
        self.out, self.source_name, self.fps, self.sink = out, source_name, fps, None

    def add(self, r) -> None:
        from .draw import annotate

        if r.image is None:
            return
        if self.sink is None:
            path = self.out.annotated_path(self.source_name, ".mp4")
            size = (r.image.shape[1], r.image.shape[0])
            try:
                self.sink = VideoSink(path, self.fps, size)
            except OSError:
                self.sink = VideoSink(path.with_suffix(".avi"), self.fps, size)
        self.sink.write(annotate(r.image, r.faces))

    def close(self, keep: bool) -> None:
        if self.sink is not None:
            self.sink.close(keep=keep)


def _error_result(name, message):
    from .recognizer import ImageResult
    return ImageResult(name, error=message)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="images, videos, folders (searched recursively) "
                                                             "or glob patterns (quote them)")
    p.add_argument("--webcam", type=int, default=None, metavar="INDEX", help="also read webcam INDEX "
                                                                             "(until --max-frames or Ctrl-C)")
    p.add_argument("--sample", action="store_true",
                   help="add the packaged sample photo (NASA's public-domain portrait of Eileen Collins) to the inputs")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos/webcam: analyse every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="videos/webcam: stop after N analysed frames")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="videos/webcam: detect faces on every K-th analysed frame (and when a face is lost), "
                        "track them in between (default 1: detect on every frame)")
    p.add_argument("--detect-scale", type=float, default=1.0, metavar="S",
                   help="videos/webcam: detect and track on the frame downscaled by S, 0 < S <= 1 (default 1)")
    p.add_argument("--weights", default="default",
                   help="'default' (packaged FERPlus model), 'default-int8', or a .pt / .ts / .onnx file")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default=None,
                   help="inference backend (default: onnxruntime for .onnx weights, torch otherwise)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    p.add_argument("--detector", default="haar", help="haar (built in), yunet (--yunet-model PATH, or the file `litefer fetch yunet` cached) or a YuNet .onnx path")
    p.add_argument("--yunet-model", default=None, metavar="PATH", help="YuNet face detector model file")
    p.add_argument("--min-face", type=int, default=32, metavar="PX", help="smallest face side in pixels (default 32)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per model call (default 64)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="average with the mirrored face")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no mirror averaging")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    p.add_argument("--prior", default="dataset", metavar="PRIOR",
                   help="class prior of the scores: 'dataset' (default: the model's own probabilities), 'balanced' "
                        "(the training class frequencies divided out) or class=weight pairs for every class, "
                        "e.g. neutral=1,happiness=0.5,... (probabilities multiplied by the weights, renormalised)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write results as JSON to FILE (stdout when FILE is omitted)")
    p.add_argument("--csv", nargs="?", const="-", default=None, metavar="FILE",
                   help="write one row per face as CSV to FILE (stdout when FILE is omitted)")
    p.add_argument("--save-annotated", default=None, metavar="DIR",
                   help="write images (and videos) with boxes and labels drawn to DIR")
    p.add_argument("--scores", action="store_true", help="table: show every class's probability")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for bad, message in ((args.every < 1, "--every must be >= 1"), (args.detect_every < 1, "--detect-every must be >= 1"),
                         (not 0 < args.detect_scale <= 1, "--detect-scale must be in (0, 1]")):
        if bad:
            print(f"litefer predict: error: {message}", file=sys.stderr)
            return EXIT_USAGE
    if args.json and args.json == args.csv == "-":
        print("litefer predict: error: --json and --csv cannot both go to stdout", file=sys.stderr)
        return EXIT_USAGE
    specs = list(args.paths)
    if args.sample:
        try:
            specs.insert(0, str(sample_photo()))
        except InputError as e:
            print(f"litefer predict: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    if not specs and args.webcam is None:
        print("litefer predict: error: give at least one PATH, --sample or --webcam INDEX", file=sys.stderr)
        return EXIT_USAGE
    from tqdm.auto import tqdm

    from ..prior import describe, parse_prior
    from .recognizer import Recognizer

    try:
        prior = parse_prior(args.prior)
        rec = Recognizer(weights=args.weights, detector=args.detector, backend=args.backend, device=args.device,
                         min_face=args.min_face, batch_size=args.batch_size, tta=args.tta, threads=args.threads,
                         yunet_model=args.yunet_model, prior=prior)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"litefer predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    files, problems = expand_inputs(specs)
    out = Output(args, rec.class_names, describe(prior))
    for message in problems:
        out.skip(message, "input")
    disable = None if args.progress is None else not args.progress     # None: only on a terminal

    def bar_factory(**kw):
        return tqdm(disable=disable, file=sys.stderr, dynamic_ncols=True, **kw)

    interrupted = False
    try:
        overall = bar_factory(total=len(files), unit="file", desc="litefer predict")
        i = 0
        while i < len(files):
            if kind_of(files[i]) == "video":
                run_video(rec, files[i], out, args, bar_factory)
                overall.update(1)
                i += 1
                continue
            j = i
            while j < len(files) and kind_of(files[j]) == "image":
                j += 1
            for r in rec.iter_many(files[i:j], keep_images=bool(args.save_annotated)):
                out.image(r)
                overall.update(1)
            i = j
        overall.close()
        if args.webcam is not None:
            run_video(rec, args.webcam, out, args, bar_factory)
    except KeyboardInterrupt:
        interrupted = True
    return out.finish(interrupted)
