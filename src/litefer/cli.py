"""The ``litefer`` command line: one subcommand per job, each defined next to the code it drives."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing ``add_arguments(parser)`` and ``main(args) -> int``
COMMANDS = {
    "profile": ("litefer.profile", "params, GMac, sizes and latency of registered models"),
    "train": ("litefer.train.cli", "train a model from a YAML config"),
    "eval": ("litefer.train.evaluate", "evaluate a checkpoint on a data set split"),
    "package": ("litefer.package", "turn a finished run into shippable weights + model card"),
    "predict": ("litefer.inference.predict", "recognize expressions in images, folders, videos or a webcam"),
    "export": ("litefer.export_tools", "export weights to ONNX, INT8 ONNX or TorchScript, with parity checks"),
    "serve": ("litefer.serve.cli", "HTTP API and live web page (webcam, on the server or in the browser)"),
    "reproduce": ("litefer.reproduce", "train and aggregate the paper's Tables 2, 5, 6 and Figure 6"),
    "fetch": ("litefer.fetch", "download a third-party file (the YuNet detector) or published weights, on request only"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (fast start, and
    ``litefer predict --backend onnxruntime`` never imports torch)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="litefer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"litefer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is not None and name != only:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as e:
            # one subcommand whose optional dependency is missing must not break the others
            p.set_defaults(_unavailable=f"litefer {name} is unavailable: {e}")
            p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
