"""``litefer predict``: expressions of the faces in images, folders, globs, videos and webcams.

    litefer predict photo.jpg holiday/ "shots/*.png"            # table on stdout
    litefer predict clip.mp4 --every 5 --csv clip.csv --save-annotated out/
    litefer predict photos/ --explain maps/                      # where the network looked, per face
    litefer predict --webcam 0 --max-frames 300 --json
    litefer predict s3://bucket/photos/ talk.mp4 --ray auto --parquet out/    # on a Ray cluster

Exit status: 0 every input processed, 1 none could be, 3 some were skipped (the rest processed),
2 bad arguments or model (nothing run), 130 interrupted by Ctrl-C and 143 by SIGTERM (results up
to then written in both cases).
"""
from __future__ import annotations

import argparse
import logging
import signal

from ..inference.signals import DEFAULT_SMOOTH
from . import options, predict_ray
from .options import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="images, videos, folders (searched recursively), "
                                                             "glob patterns (quote them) or @FILE: a list file, one "
                                                             "input a line; with --ray also URIs (s3://...)")
    p.add_argument("--webcam", type=int, default=None, metavar="INDEX", help="also read webcam INDEX "
                                                                             "(until --max-frames or Ctrl-C)")
    p.add_argument("--sample", action="store_true", help="add the packaged sample photo (NASA's public-domain portrait of Eileen Collins) to the inputs")
    _add_video_arguments(p)
    options.add_weights(p)
    options.add_backend(p, None, "onnxruntime for .onnx weights, torch otherwise")
    options.add_device(p)
    options.add_detector(p)
    options.add_batch_size(p, 64, "faces per model call")
    options.add_tta(p, "as the model card says")
    options.add_threads(p)
    p.add_argument("--prior", default=None, metavar="PRIOR",
                   help="class prior of the scores: 'dataset' (the model's own probabilities), 'balanced' (the "
                        "training class frequencies divided out), 'balanced:TAU' (that share of it, TAU in 0..1) "
                        "or class=weight pairs for every class, e.g. neutral=1,happiness=0.5,... (probabilities "
                        "multiplied by the weights, renormalised); default: balanced:0.5 for weights that store "
                        "their class frequencies (the packaged ones do), else dataset")
    _add_output_arguments(p)
    predict_ray.add_arguments(p)


def _add_video_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos/webcam: analyse every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="videos/webcam: stop after N analysed frames, N >= 1 (default: no limit)")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="videos/webcam: detect faces on every K-th analysed frame (and when a face is lost), "
                        "track them in between (default 1: detect on every frame)")
    p.add_argument("--detect-scale", type=float, default=1.0, metavar="S",
                   help="videos/webcam: detect and track on the frame downscaled by S, 0 < S <= 1 (default 1)")
    p.add_argument("--smooth", type=float, default=None, metavar="SECONDS",
                   help="videos/webcam: average each track's class probabilities over SECONDS, centred on each "
                        "frame for files, over the last SECONDS for a webcam; label, score and class columns are "
                        "then smoothed and raw_* the frame's own (default %g; 0: off)" % DEFAULT_SMOOTH)
    p.add_argument("--report", default=None, metavar="DIR",
                   help="videos/webcam: write tracks.csv, segments.csv, timeline.png and report.html to DIR "
                        "(one subfolder per video when there are several)")


def _add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write results as JSON to FILE (stdout when FILE is omitted)")
    p.add_argument("--csv", nargs="?", const="-", default=None, metavar="FILE",
                   help="write one row per face as CSV to FILE (stdout when FILE is omitted); in CSV and JSON "
                        "a file name that is not valid UTF-8 shows its odd bytes as \\xNN escapes (caf\\xe9.jpg)")
    p.add_argument("--save-annotated", default=None, metavar="DIR",
                   help="write images (and videos) with boxes and labels drawn to DIR")
    p.add_argument("--explain", default=None, metavar="DIR",
                   help="write images (and videos) with each face's Grad-CAM map of its label, box and label drawn "
                        "to DIR (the weights need the map: a .pt, or an ONNX from `litefer export --explain`)")
    p.add_argument("--scores", action="store_true", help="table: show every class's probability")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def input_specs(args: argparse.Namespace) -> list[str]:
    """The inputs to read, after the checks that need no model (UsageError, exit 2, when one fails)."""
    from ..inference.samples import sample_photo

    options.positive(args, "every", "max_frames", "detect_every", "batch_size")
    if not 0 < args.detect_scale <= 1:
        raise UsageError(f"--detect-scale must be in (0, 1], got {args.detect_scale}")
    if args.smooth is not None and not args.smooth >= 0:
        raise UsageError(f"--smooth must be 0 (off) or a number of seconds > 0, got {args.smooth}")
    if args.json and args.json == args.csv == "-":
        raise UsageError("--json and --csv cannot both go to stdout")
    specs = list(args.paths)
    if args.sample:
        specs.insert(0, str(sample_photo()))
    if not specs and args.webcam is None:
        raise UsageError("give at least one PATH, --sample or --webcam INDEX")
    return specs


def main(args: argparse.Namespace) -> int:
    from ..inference.predict import run_inputs
    from ..inference.recognizer import Recognizer
    from ..prior import describe, parse_prior

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    specs = input_specs(args)
    prior = None if args.prior is None else parse_prior(args.prior)
    if args.ray or args.parquet:
        return _until_sigterm(lambda: predict_ray.main(args, specs, prior))
    rec = Recognizer(weights=args.weights, detector=args.detector, backend=args.backend, device=args.device,
                     min_face=args.min_face, batch_size=args.batch_size, tta=args.tta, threads=args.threads,
                     yunet_model=args.yunet_model, prior=prior)
    if args.explain:
        rec.backend.require_explain()            # weights that cannot explain: one line, exit 2, nothing run
    return _until_sigterm(lambda: run_inputs(rec, specs, args, describe(rec.prior)))


def _until_sigterm(run) -> int:
    """``run()`` with SIGTERM turned into :class:`~litefer.inference.predict.Terminated`."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    """SIGTERM stops the run like Ctrl-C, so the results so far are written; a second one kills."""
    from ..inference.predict import Terminated

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()
