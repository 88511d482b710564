"""``litefer finetune ROOT --out DIR``: adapt a model to a folder of faces ``ROOT/<class>/*`` (the
library is :func:`litefer.train.finetune.finetune`)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import options

FACES_HELP = ("photo: find and frame the face like predict; crop: the image is already a face crop; "
              "auto: crop when the image's longer side is at most 128 px, else photo (default: auto)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="ROOT", help="folder of class folders: ROOT/happy/*.jpg, ROOT/neutral/*.jpg, ...")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: model.pt/.onnx/.json, report.md/.json; not inside ROOT, one run at a time, "
                        "an earlier run's files replaced at the end")
    options.add_weights(p, help="weights to start from: 'default' (the shipped model) or a .pt file")
    p.add_argument("--faces", choices=("auto", "photo", "crop"), default="auto", help=FACES_HELP)
    p.add_argument("--pick", choices=("none", "largest"), default="none",
                   help="an image with several faces: none skips it, largest keeps the largest (default: none)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--group-by", metavar="REGEX", default=None,
                       help="group (person) of a file: this regex's first group (or match) in its name; "
                            "validation takes whole groups")
    split.add_argument("--groups", metavar="CSV", default=None, help="CSV of file,group rows (file relative to ROOT)")
    split.add_argument("--val", metavar="ROOT2", default=None, help="a separate validation folder, same layout")
    p.add_argument("--classes-must-exist", action="store_true",
                   help="refuse class folders that name none of the model's classes (default: they become new classes)")
    p.add_argument("--config", default=None, metavar="YAML", help="recipe file (default: configs/finetune.yaml's values)")
    options.add_overrides(p, "override a recipe key, e.g. --set full.epochs=4 (repeatable)")
    p.add_argument("--budget", default="10m", metavar="TIME",
                   help="time for the whole run, e.g. 10m, 90s, 1.5h, or none; the whole-network stage stops "
                        "where the refit would no longer fit (default: 10m)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from DIR's checkpoint (refused when there is none)")
    options.add_detector(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from ..train.finetune import checkpoint_path

    try:
        report = run(args)
    except KeyboardInterrupt:
        if not checkpoint_path(Path(args.out)).is_file():
            raise
        print(f"litefer finetune: interrupted; the finished epochs are saved in {args.out}: run the same command "
              f"with --resume to continue", file=sys.stderr)
        return 130
    print_summary(report, args)
    return 0


def run(args: argparse.Namespace) -> dict:
    from ..train.finetune import finetune

    return finetune(args.root, args.out, weights=args.weights, val=args.val, group_by=args.group_by,
                    groups=args.groups, faces=args.faces, pick=args.pick, config=args.config,
                    overrides=args.overrides, resume=args.resume, classes_must_exist=args.classes_must_exist,
                    detector=args.detector, min_face=args.min_face, yunet_model=args.yunet_model,
                    progress=not args.no_progress, budget=args.budget,
                    command="litefer " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["finetune"] else None)


def print_summary(report: dict, args: argparse.Namespace) -> None:
    b, a = report["before"], report["after"]
    print(f"validation ({a['n']} faces): accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}, "
          f"mean class accuracy {b['mean_class_accuracy']:.3f} -> {a['mean_class_accuracy']:.3f}")
    est = report.get("estimate") or {}
    if est.get("accuracy"):
        print(f"on new people (grouped {est['folds']}-fold): accuracy {est['accuracy']['mean']:.3f} "
              f"± {est['accuracy']['std']:.3f}, base model {est['shipped_accuracy']['mean']:.3f}")
    if report["split"].get("warning"):
        print(f"warning: {report['split']['warning']}", file=sys.stderr)
    duplicates = report["data"]["duplicates"]
    if duplicates:
        across = sum(len(d["files"]) for d in duplicates if len(d["classes"]) > 1)
        print(f"warning: {len(duplicates)} set(s) of identical images: {across} image(s) in two or more classes "
              f"left out of every class, other copies within one class dropped; list in {args.out}/report.md",
              file=sys.stderr)
    if report["data"]["skipped"]:
        print(f"skipped {len(report['data']['skipped'])} file(s); reasons in {args.out}/report.md", file=sys.stderr)
    if report["replaced"]:
        print(f"replaced the earlier run's {', '.join(report['replaced'])} in {args.out}", file=sys.stderr)
    print(f"wrote {', '.join(report['files'])} to {args.out}")
