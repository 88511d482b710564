"""Flags that several commands take, defined once so that their names, defaults and help agree,
and the two exception types by which a command tells the dispatcher how it ended."""
from __future__ import annotations

import argparse
import sys

DEBUG_HELP = "on an error, show the full traceback instead of a one-line message"
DEFAULT_WEIGHTS = "default"
WEIGHTS_HELP = ("'default' (the packaged FERPlus model), 'default-int8', a .pt weights file or run "
                "checkpoint, a TorchScript .ts or an exported .onnx")
BACKENDS = ("onnxruntime", "torch")


class UsageError(ValueError):
    """The command line asks for something impossible; the dispatcher prints it and exits with 2."""


class CommandFailed(Exception):
    """The command ran and its result is a failure (e.g. a parity check): one line, exit status 1."""


def deprecated(old: str, new: str) -> None:
    """One line on stderr: old spellings keep working for one release, and say what replaces them."""
    print(f"litefer: warning: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)


class _OldFlag(argparse.Action):
    """A hidden old spelling of a switch: stores ``const`` where the new flag stores, with a warning."""

    def __init__(self, option_strings, dest, const=None, new="", **kwargs):
        super().__init__(option_strings, dest, nargs=0, const=const, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string, self.new)
        setattr(namespace, self.dest, self.const)


class _OldPositionalWeights(argparse.Action):
    """The weights as a positional argument (eval and export before ``--weights``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated("the positional WEIGHTS argument", f"--weights {values}")
        namespace._positional_weights = values


def add_debug(p: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``--debug`` before or after the command name (the subcommand's copy keeps the top one's value)."""
    default = False if top_level else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help=DEBUG_HELP)


def add_weights(p: argparse.ArgumentParser, help: str = WEIGHTS_HELP, positional_alias: bool = False,
                default: str | None = DEFAULT_WEIGHTS) -> None:
    """``--weights``; ``positional_alias`` also takes the old positional spelling. ``default=None``
    makes the flag required (export: writing next to the packaged model must be asked for)."""
    p.add_argument("--weights", default=None, metavar="WEIGHTS",
                   help=f"{help} (default: {default})" if default else f"{help} (required)")
    p.set_defaults(_weights_default=default)
    if positional_alias:
        p.add_argument("_old_weights", nargs="?", default=argparse.SUPPRESS, action=_OldPositionalWeights,
                       help=argparse.SUPPRESS)


def resolve_weights_flag(args: argparse.Namespace) -> None:
    """Fill in ``args.weights``: the deprecated positional when given (once only), else the default."""
    if not hasattr(args, "weights"):
        return
    old = getattr(args, "_positional_weights", None)
    if old is not None and args.weights is not None:
        raise UsageError(f"give the weights once: --weights {args.weights} or the deprecated positional {old}")
    args.weights = old or args.weights or args._weights_default
    if args.weights is None:
        raise UsageError("give the weights: --weights PATH, or --weights default for the packaged model")


def add_backend(p: argparse.ArgumentParser, default: str | None, default_help: str) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=default,
                   help=f"what runs the model (default: {default_help})")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")


def add_threads(p: argparse.ArgumentParser, help: str = "CPU threads for the model", default: int | None = None) -> None:
    p.add_argument("--threads", type=int, default=default, metavar="N",
                   help=help + (f" (default: {default})" if default is not None else ""))


def add_tta(p: argparse.ArgumentParser, default_help: str, old_spelling: bool = False) -> None:
    """``--tta`` / ``--no-tta``: mirror averaging; ``old_spelling`` also takes ``--tta-flip`` / ``--no-tta-flip``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--tta", dest="tta", action="store_true", default=None,
                       help=f"average the logits of each face and its mirror image (default: {default_help})")
    group.add_argument("--no-tta", dest="tta", action="store_false", help="no mirror averaging")
    if old_spelling:
        group.add_argument("--tta-flip", dest="tta", action=_OldFlag, const=True, new="--tta")
        group.add_argument("--no-tta-flip", dest="tta", action=_OldFlag, const=False, new="--no-tta")


def add_detector(p: argparse.ArgumentParser, default: str = "auto", min_face: int = 32, note: str = "") -> None:
    """The face detector flags of predict, finetune, eval and serve."""
    p.add_argument("--detector", default=default,
                   help="auto (YuNet when its model is on disk: --yunet-model, $LITEFER_YUNET or the file "
                        "`litefer fetch yunet` cached; else Haar), haar (built in), yunet, "
                        f"or a YuNet .onnx path{note} (default: {default})")
    p.add_argument("--yunet-model", default=None, metavar="PATH",
                   help="YuNet face detector model file (default: $LITEFER_YUNET, else the cached one)")
    p.add_argument("--min-face", type=int, default=min_face, metavar="PX",
                   help=f"smallest face side in pixels (default: {min_face})")


def add_batch_size(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--batch-size", type=int, default=default, metavar="N", help=f"{what} (default: {default})")


def add_data_root(p: argparse.ArgumentParser, help: str, flag: str = "--data") -> None:
    p.add_argument(flag, default=None, metavar="ROOT", help=help)


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) config overrides, as train and reproduce take them."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def positive(args: argparse.Namespace, *names: str) -> None:
    """UsageError naming the first flag among ``names`` whose value is below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
