"""``litefer predict ... --ray ADDRESS --parquet DIR``: the same recognition on a Ray cluster, written as
a resumable Parquet dataset (:mod:`litefer.distributed`)."""
from __future__ import annotations

import argparse
import os
import sys

from . import options
from .options import UsageError

# predict's flags that draw or print per input, which the cluster's table does not do
LOCAL_ONLY = ("webcam", "save_annotated", "explain", "json", "csv", "report")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..distributed.cluster import ADDRESS_HELP

    g = p.add_argument_group("Ray cluster (pip install 'litefer[ray]')")
    g.add_argument("--ray", default=None, metavar="ADDRESS", help=f"recognize on a Ray cluster: {ADDRESS_HELP}; "
                                                                  "needs --parquet")
    g.add_argument("--parquet", default=None, metavar="DIR", help="--ray: write the rows (the CSV's columns) as a "
                   "Parquet dataset in DIR, the skipped inputs in DIR/_skipped.parquet; rerun to resume")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="--ray: recognizer actors (default: one per CPU of the cluster, per GPU with --device cuda)")
    g.add_argument("--ray-cpus", type=float, default=None, metavar="C", help="--ray: CPUs per actor (default 0.9)")
    g.add_argument("--ray-gpus", type=float, default=None, metavar="G",
                   help="--ray: GPUs per actor (default: 1 with --device cuda, else 0)")
    g.add_argument("--frames-per-task", type=int, default=None, metavar="N",
                   help="--ray: analysed frames per video range (default 300)")
    g.add_argument("--images-per-task", type=int, default=None, metavar="N",
                   help="--ray: photos per actor call, the unit of retries and of resuming (default 32)")
    g.add_argument("--ray-env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="--ray: set NAME in the workers' environment (from this shell when no VALUE), e.g. "
                        "AWS_ENDPOINT_URL; repeatable")


def check(args: argparse.Namespace) -> None:
    """UsageError for flag combinations --ray cannot honour."""
    if args.parquet and not args.ray:
        raise UsageError("--parquet needs --ray ADDRESS (use --csv without Ray)")
    if not args.parquet:
        raise UsageError("--ray needs --parquet DIR: the cluster writes a Parquet dataset")
    for name in LOCAL_ONLY:
        if getattr(args, name) not in (None, False):
            raise UsageError(f"--{name.replace('_', '-')} is not available with --ray")
    options.positive(args, "frames_per_task", "images_per_task", "ray_workers")


def runtime_env(pairs: list[str]) -> dict | None:
    """``--ray-env`` as Ray's runtime_env."""
    env = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not name or (not eq and name not in os.environ):
            raise UsageError(f"--ray-env {pair}: give NAME=VALUE, or NAME of a variable set in this shell")
        env[name] = value if eq else os.environ[name]
    return {"env_vars": env} if env else None


def main(args: argparse.Namespace, specs: list[str], prior) -> int:
    from ..distributed.run import FRAMES_PER_TASK, IMAGES_PER_TASK, write_parquet
    from ..inference.predict import EXIT_INTERRUPTED, EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_TERMINATED

    check(args)
    done = write_parquet(specs, args.parquet, address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus,
                         gpus_per_worker=args.ray_gpus, every=args.every, max_frames=args.max_frames,
                         detect_every=args.detect_every, detect_scale=args.detect_scale, smooth=args.smooth,
                         frames_per_task=args.frames_per_task or FRAMES_PER_TASK,
                         images_per_task=args.images_per_task or IMAGES_PER_TASK, runtime_env=runtime_env(args.ray_env),
                         progress=bool(args.progress), weights=args.weights, detector=args.detector,
                         backend=args.backend, device=args.device, min_face=args.min_face, batch_size=args.batch_size,
                         tta=args.tta, threads=args.threads, yunet_model=args.yunet_model, prior=prior)
    print(summary(done), file=sys.stderr)
    if done.interrupted:
        return EXIT_TERMINATED if done.terminated else EXIT_INTERRUPTED
    if done.skipped and not (done.items or done.already):
        return EXIT_NOTHING
    return EXIT_PARTIAL if done.skipped else EXIT_OK


def summary(done) -> str:
    from collections import Counter

    line = (f"litefer predict --ray: {done.inputs} input(s); {done.items} item(s) recognised now "
            f"({done.rows} row(s)), {done.already} already in {done.folder}")
    if done.skipped:
        by = Counter(s["reason"] for s in done.skipped)
        line += f"; skipped {len(done.skipped)}: " + ", ".join(f"{n} {r}" for r, n in by.most_common())
        line += f" (table: {os.path.join(done.folder, '_skipped.parquet')})"
    if done.interrupted:
        line += "\n(interrupted; the parts written so far are complete: rerun the command to resume)"
    return line
