"""The ``litefer`` command line: one subcommand per job, each defined next to the code it drives."""
from __future__ import annotations

import argparse
import importlib
import sys

from .utils import MissingExtra

# subcommand -> module exposing ``add_arguments(parser)`` and ``main(args) -> int``
COMMANDS = {
    "profile": ("litefer.profile", "params, GMac, sizes and latency of registered models"),
    "train": ("litefer.train.cli", "train a model from a YAML config"),
    "eval": ("litefer.train.evaluate", "evaluate a checkpoint on a data set split"),
    "package": ("litefer.package", "turn a finished run into shippable weights + model card"),
    "predict": ("litefer.inference.predict", "recognize expressions in images, folders, videos or a webcam"),
    "export": ("litefer.export.cli", "export weights to ONNX, INT8 ONNX or TorchScript, with parity checks"),
    "serve": ("litefer.serve.cli", "HTTP API and live web page (webcam, on the server or in the browser)"),
    "reproduce": ("litefer.reproduce.cli", "train and aggregate the paper's Tables 2, 5, 6 and Figure 6"),
    "fetch": ("litefer.fetch", "download a third-party file (the YuNet detector) or published weights, on request only"),
}


DEBUG_HELP = "on an error, show the full traceback instead of a one-line message"
EXIT_HELP = """
exit status: 0 done; 2 bad arguments, config, data or file (one-line message; --debug for the
traceback); 1 an unexpected error; 130 interrupted (Ctrl-C); litefer predict also 1 when no input
could be processed and 3 when some were skipped."""
USER_ERRORS = (ValueError, OSError, MissingExtra)   # bad config, data, weights or file, missing extra: the message says what to fix


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (fast start, and
    ``litefer predict --backend onnxruntime`` never imports torch)."""
    from .version import __version__

    parser = argparse.ArgumentParser(prog="litefer", description=__doc__ + EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"litefer {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
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
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"litefer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error becomes one line unless --debug
        if args.debug:
            raise
        print(error_line(args.command, e), file=sys.stderr)
        return 2 if isinstance(e, USER_ERRORS) else 1


def error_line(command: str, e: BaseException) -> str:
    """``litefer train: error: <message>``; the exception's type is named when it is not a user error."""
    message = str(e).strip() or type(e).__name__
    if isinstance(e, USER_ERRORS):
        return f"litefer {command}: error: {message}"
    return f"litefer {command}: error: {type(e).__name__}: {message} (--debug shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
