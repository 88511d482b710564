"""``litefer package RUN_DIR``: turn a finished run into shippable weights and a model card
(the library is :func:`litefer.package.package_run`)."""
from __future__ import annotations

import argparse
import json

from . import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (with best.pt)")
    p.add_argument("--name", required=True, help="file stem, e.g. litefer_cpsca112_ferplus")
    p.add_argument("--out", default="src/litefer/weights", help="output folder (default: %(default)s)")
    options.add_data_root(p, "data root: measure the training prior and the validation figures")
    p.add_argument("--majority-rows", action="store_true",
                   help="FERPlus: the run trained on the majority-label rows only (data.majority_rows)")
    p.add_argument("--note", default=None, help="a free-text note stored in the card (e.g. known limits)")


def main(args: argparse.Namespace) -> int:
    from ..package import package_run

    card = package_run(args.run_dir, args.out, args.name, args.data, args.note, args.majority_rows)
    print(json.dumps({k: card.get(k) for k in ("model_name", "class_names", "class_prior", "val_accuracy",
                                               "validation", "sha256", "file_bytes")}, indent=2))
    return 0
