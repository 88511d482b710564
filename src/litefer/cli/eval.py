"""``litefer eval``: score weights on a data set split, every class prior, through ONNX Runtime or torch.

    litefer eval --data ../shared/data/fer2013                       # the packaged model, ONNX Runtime
    litefer eval --weights runs/<run>/best.pt --split val --json val.json --confusion cm.png
    litefer eval --weights default --backend torch --data ../shared/data/fer2013
"""
from __future__ import annotations

import argparse
import shlex
import sys

from . import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.add_weights(p, "a run's best.pt / last.pt, a weights file, an exported .onnx, or 'default' "
                           "(the packaged model)", positional_alias=True)
    options.add_backend(p, None, "onnxruntime for 'default' and .onnx files, torch for .pt")
    options.add_data_root(p, "data root (default: the one in the checkpoint's config)")
    p.add_argument("--dataset", default=None, choices=["ferplus", "rafdb", "folder"])
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--label-mode", default=None, choices=["majority", "probability", "crossentropy"],
                   help="FERPlus: which rows and labels to score (default: majority, the paper's split: "
                        "3,199 validation rows), whatever the model trained on")
    p.add_argument("--faces", default="crop", choices=["crop", "photo", "auto"],
                   help="--dataset folder: its images are face crops (default), whole photos whose face is found "
                        "and framed as `litefer predict` frames it, or auto (photos over 128 px, crops under)")
    p.add_argument("--pick", default="none", choices=["none", "largest"],
                   help="photos with several faces: skip them (none, default) or score the largest")
    options.add_detector(p, note=" for --faces photo/auto")
    options.add_tta(p, "as the model card says", old_spelling=True)
    options.add_batch_size(p, 256, "faces per model call")
    options.add_device(p)
    options.add_threads(p)
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the report as JSON here")
    p.add_argument("--confusion", default=None, metavar="PNG", help="write the confusion matrix PNG here")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="write the per-prior table (with command and hardware) here")


def main(args: argparse.Namespace) -> int:
    from ..train.evaluate import (
        evaluate_weights,
        format_priors,
        markdown_report,
        plot_confusion,
    )
    from ..train.metrics import format_report
    from ..utils import (
        atomic_write_json,
        atomic_write_text,
        hardware_summary,
        setup_logging,
    )

    setup_logging()
    options.positive(args, "batch_size")
    photos = {"faces": args.faces, "detector": args.detector, "yunet_model": args.yunet_model,
              "min_face": args.min_face, "pick": args.pick}
    report = evaluate_weights(args.weights, args.data, args.dataset, args.split, args.label_mode, args.tta,
                              args.backend, args.batch_size, args.device, args.threads, photos)
    print(format_report(report))
    if report.get("detector"):
        framed = report["framing"]
        print(f"faces found by the {report['detector']} detector in {framed['photo']} photo(s); "
              f"{framed['crop']} image(s) taken as crops")
    print(format_priors(report))
    if args.json_path:
        atomic_write_json(args.json_path, report)
    if args.confusion:
        plot_confusion(report, args.confusion, f"{report['split']}: accuracy {report['accuracy']:.3f}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(report, command_line(), hardware_summary()))
    return 0


def command_line() -> str:
    """The command as typed, for the results page (``litefer eval ...`` however it was started)."""
    argv = sys.argv[1:]
    return shlex.join(["litefer", *argv]) if "eval" in argv else "litefer eval (called from Python)"
