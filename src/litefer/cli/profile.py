"""``litefer profile``: parameters, compute, file sizes and CPU latency of registered models
(the library is :mod:`litefer.profile`)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import options
from .options import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered model names (default: litefer_cpsca); see --all")
    p.add_argument("--all", action="store_true", help="profile every registered model")
    p.add_argument("--sizes", nargs="+", type=int, default=[224], metavar="N", help="square input sizes (default: 224)")
    p.add_argument("--num-classes", type=int, default=8, help="classifier outputs (default: 8)")
    p.add_argument("--in-chans", type=int, default=3, choices=(1, 3), help="input channels (default: 3)")
    options.add_threads(p, "torch and ONNX Runtime intra-op threads for latency", 1)
    p.add_argument("--repeats", type=int, default=100, help="timed runs per latency (default: 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default: 10)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="also write a markdown report")
    p.add_argument("--note", help="a remark to print in the markdown report (e.g. machine load)")


def model_names(args: argparse.Namespace) -> list[str]:
    """The models to profile, after the checks on the flags (UsageError naming the bad one)."""
    from ..models import list_models
    from ..profile import ordered_models

    if args.all and args.models:
        raise UsageError("give model names or --all, not both")
    names = ordered_models() if args.all else (args.models or ["litefer_cpsca"])
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(list_models())}")
    if any(not 32 <= s <= 1024 for s in args.sizes):
        raise UsageError("--sizes must be between 32 and 1024")
    options.positive(args, "threads", "repeats")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    return names


def command_line(args: argparse.Namespace) -> str:
    """The command that produced a report: the real argv when run as ``litefer``, else its equivalent."""
    if Path(sys.argv[0]).name == "litefer" and sys.argv[1:2] == ["profile"]:
        return shlex.join(["litefer", *sys.argv[1:]])
    parts = ["litefer", "profile", *(["--all"] if args.all else args.models)]
    parts += ["--sizes", *map(str, args.sizes), "--num-classes", str(args.num_classes),
              "--in-chans", str(args.in_chans), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    parts += ["--no-latency"] if args.no_latency else []
    parts += ["--json", str(args.json)] if args.json else []
    parts += ["--markdown", str(args.markdown)] if args.markdown else []
    parts += ["--note", args.note] if args.note else []
    return shlex.join(parts)


def main(args: argparse.Namespace) -> int:
    from ..profile import (
        LEGEND,
        environment,
        markdown_report,
        profile_models,
        rows_by_size,
        text_table,
    )
    from ..utils import atomic_write_json, atomic_write_text

    names = model_names(args)
    settings = {"num_classes": args.num_classes, "in_chans": args.in_chans, "threads": args.threads,
                "repeats": args.repeats, "warmup": args.warmup}
    rows = profile_models(names, args.sizes, progress=lambda m: print(m, file=sys.stderr, flush=True),
                          latency=not args.no_latency, **settings)
    for size, group in rows_by_size(rows).items():
        print(f"\n{size}x{size} input, batch 1" + ("" if args.no_latency else f", latency with {args.threads} thread(s)"))
        print(text_table(group))
    print("\n" + "\n".join(f"{h}: {text}" for h, text in LEGEND))
    env, command = environment(), command_line(args)
    if args.json:
        atomic_write_json(args.json, {"command": command, "environment": env, "settings": settings,
                                      "note": args.note, "rows": rows})
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(rows, env, command, settings, args.note))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0
