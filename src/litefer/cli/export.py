"""``litefer export``: the command line of :func:`litefer.export.core.export`.

    litefer export --weights best.pt --format onnx-int8 --calib ../shared/data/fer2013
    litefer export --weights best.pt --explain          # + the 'cam' output: every class's Grad-CAM map
"""
from __future__ import annotations

import argparse
import logging

from . import options
from .options import CommandFailed


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..export.core import FORMATS
    from ..export.graph import OPSETS

    options.add_weights(p, "weights file or run checkpoint (.pt), or 'default' for the packaged model",
                        positional_alias=True, default=None)
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    p.add_argument("--out", default=None, help="output file (default: next to the weights, "
                                                "<stem>.onnx / <stem>_int8.onnx / <stem>.ts)")
    p.add_argument("--faces", default="astronaut",
                   help="real faces for the parity check: a FERPlus root, a folder of face images or photos, "
                        "or 'astronaut' (built in; default)")
    p.add_argument("--calib", default=None, metavar="ROOT", help="onnx-int8: calibration faces (FERPlus root or folder)")
    p.add_argument("--calib-size", type=int, default=1000, help="calibration faces to sample, >= 1 (default 1000)")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--parity-size", type=int, default=512, help="parity faces to sample, >= 1 (default 512)")
    options.add_data_root(p, "FERPlus root: also report accuracy of torch and the export on the validation split",
                          flag="--eval-data")
    p.add_argument("--opset", type=int, default=17,
                   help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (default 17)")
    p.add_argument("--explain", action="store_true",
                   help="fp32 ONNX only: add a second output 'cam', every class's Grad-CAM map on the last feature "
                        "map (4x4 at 112 px), for `predict --explain`, `?explain=1` and the page's on-device map")
    _add_check_arguments(p)
    p.add_argument("--report", default=None, help="also write the report here (.md or .json)")
    options.add_threads(p, "ONNX Runtime threads for the checks")


def _add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-diff", type=float, default=None,
                   help="fail when the max abs logit difference exceeds this (default 1e-3; none for INT8)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="fail below this top-1 agreement with torch (default 0.99; 0.90 for INT8)")
    p.add_argument("--max-cam-diff", type=float, default=1e-3,
                   help="with --explain: fail when the max abs map difference from torch exceeds this (default 1e-3)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="with --eval-data: fail when the export loses more accuracy points than this (default 1)")
    p.add_argument("--quantize-stem", action="store_true",
                   help="onnx-int8: quantize the first convolution too (default: it stays in float)")
    p.add_argument("--force", action="store_true", help="write the file even when a check fails")


def main(args: argparse.Namespace) -> int:
    from ..export.core import ExportError, export
    from ..export.report import markdown
    from ..utils import atomic_write_json, atomic_write_text

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options.positive(args, "parity_size", "calib_size")
    try:
        report = export(args.weights, args.format, args.out, faces=args.faces, calib=args.calib,
                        calib_size=args.calib_size, parity_size=args.parity_size, eval_data=args.eval_data,
                        calib_method=args.calib_method, opset=args.opset, max_diff=args.max_diff,
                        min_agreement=args.min_agreement, max_accuracy_drop=args.max_accuracy_drop,
                        force=args.force, threads=args.threads, float_stem=not args.quantize_stem,
                        explain=args.explain, max_cam_diff=args.max_cam_diff)
    except ExportError as e:          # a check failed: the export's result, not a crash
        raise CommandFailed(str(e)) from e
    text = markdown(report)
    print(text)
    if args.report:
        if str(args.report).endswith(".json"):
            atomic_write_json(args.report, report)
        else:
            atomic_write_text(args.report, text)
    return 1 if report["checks"]["failures"] else 0
