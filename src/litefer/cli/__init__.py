"""The ``litefer`` command line: one subcommand per job, each in a module of this package.

This module is the dispatcher and the one place where errors become a message and an exit status;
the command modules parse their flags and call the library, which never sees argparse.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..utils import MissingExtra
from .options import CommandFailed, add_debug, resolve_weights_flag

# subcommand -> help; litefer.cli.<subcommand> exposes ``add_arguments(parser)`` and ``main(args) -> int``
COMMANDS = {
    "profile": "params, GMac, sizes and latency of registered models",
    "train": "train a model from a YAML config",
    "finetune": "adapt a model to your own folder of faces (ROOT/<class>/*), minutes on a CPU",
    "eval": "score weights on a data set split, through ONNX Runtime or torch",
    "package": "turn a finished run into shippable weights + model card",
    "predict": "recognize expressions in images, folders, videos or a webcam",
    "export": "export weights to ONNX, INT8 ONNX or TorchScript, with parity checks",
    "serve": "HTTP API and live web page (webcam, on the server or in the browser)",
    "reproduce": "train and aggregate the paper's Tables 2, 5, 6 and Figure 6",
    "fetch": "download a third-party file (the YuNet detector) or published weights, on request only",
}

DESCRIPTION = "litefer: lightweight facial expression recognition, one subcommand per job."
EXIT_HELP = """
exit status: 0 done; 2 bad arguments, config, data or file (one-line message; --debug for the
traceback); 1 an unexpected error or a failed check; 130 interrupted (Ctrl-C); litefer predict also
1 when no input could be processed and 3 when some were skipped."""
# bad arguments, config, data, weights or file, or a missing optional dependency: the message says what to fix
USER_ERRORS = (ValueError, OSError, MissingExtra)


def command_module(name: str) -> str:
    return f"{__name__}.{name}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (fast start, and
    ``litefer predict`` on an ONNX model never imports torch)."""
    from ..version import __version__

    parser = argparse.ArgumentParser(prog="litefer", description=DESCRIPTION + EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"litefer {__version__}")
    add_debug(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_debug(p)
        if only is None or name == only:
            _add_command_arguments(p, name)
    return parser


def _add_command_arguments(p: argparse.ArgumentParser, name: str) -> None:
    try:
        importlib.import_module(command_module(name)).add_arguments(p)
    except ImportError as e:
        # one subcommand whose optional dependency is missing must not break the others
        p.set_defaults(_unavailable=f"litefer {name}: error: {as_missing_extra(e, name)}")
        p.add_argument("rest", nargs=argparse.REMAINDER)


# packages of the extras (pyproject.toml) -> the extra that installs them; the lean install has none
EXTRA_OF = {"torch": "train", "torchvision": "train", "onnx": "train", "yaml": "train", "matplotlib": "train",
            "tensorboard": "train", "ptflops": "train", "pandas": "all", "fastapi": "serve", "uvicorn": "serve",
            "starlette": "serve", "pydantic": "serve", "multipart": "serve", "python_multipart": "serve",
            "ray": "ray", "pyarrow": "ray"}


def as_missing_extra(e: BaseException, command: str) -> BaseException:
    """A missing package of one of litefer's extras as :class:`MissingExtra` naming the extra; else ``e``."""
    top = (getattr(e, "name", None) or "").partition(".")[0]
    if not isinstance(e, ImportError) or isinstance(e, MissingExtra) or top not in EXTRA_OF:
        return e
    return MissingExtra(f"litefer {command} needs {top}, which is not installed: pip install 'litefer[{EXTRA_OF[top]}]'")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    try:
        resolve_weights_flag(args)
        return int(importlib.import_module(command_module(args.command)).main(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"litefer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        e = as_missing_extra(e, args.command)
        print(error_line(args.command, e), file=sys.stderr)
        return exit_status(e)


def exit_status(e: BaseException) -> int:
    """2 for what the user can fix (arguments, config, data, files), 1 for anything else."""
    return 2 if isinstance(e, USER_ERRORS) else 1


def error_line(command: str, e: BaseException) -> str:
    """``litefer train: error: <message>``; the exception's type is named when it is unexpected."""
    message = str(e).strip() or type(e).__name__
    if isinstance(e, (*USER_ERRORS, CommandFailed)):
        return f"litefer {command}: error: {message}"
    return f"litefer {command}: error: {type(e).__name__}: {message} (--debug shows the traceback)"

