"""``litefer train``: a YAML config, ``--set key=value`` overrides, ``--resume RUN_DIR``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import options
from .options import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.config import RESUME_FIXED

    p.add_argument("config", nargs="?", help="YAML config (configs/*.yaml); omitted with --resume")
    options.add_overrides(p, "override a config key, e.g. --set optim.lr=0.001 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.pt; --set may change the recipe, not what "
                        f"the weights are ({', '.join(RESUME_FIXED)})")
    p.add_argument("--run-dir", help="run directory (default: run.out_dir/run.name)")


def main(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.engine import train

    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_config(run_dir / "config.yaml", args.overrides)
        result = train(cfg, run_dir=run_dir, resume=True)
    else:
        if not args.config:
            raise UsageError("give a config file, or --resume RUN_DIR")
        cfg = load_config(args.config, args.overrides)
        result = train(cfg, run_dir=args.run_dir)
    summary = {k: v for k, v in result.items() if k not in ("val", "test")}
    for split in ("val", "test"):
        if split in result:
            summary[f"{split}_accuracy"] = result[split]["accuracy"]
    print(json.dumps(summary, indent=2))
    return 0
