"""Same-run comparison of ``litefer train`` on the CPU: this checkout's loop against an earlier commit's.

Both versions train the same short configuration on real FERPlus (the paper's recipe at 48 px, batch
64, one thread), alternating between versions. The figure is CPU time per training batch: each
version runs once with ``--short`` and once with ``--long`` batches per epoch, and the difference of
the two runs' process CPU times (user + system, from ``getrusage``) divided by the difference in
batches cancels everything but the training steps (start-up, data loading, validation). CPU time of
a one-thread process is little moved by other load on the machine, where wall time is not; each
run's wall-clock training seconds from its ``metrics.csv`` are reported beside it. The earlier
commit's ``src`` is taken with ``git archive``.

    python benchmarks/train_loop_cpu.py --ref e87d447 --repeats 2 --out results/train_loop_cpu.md
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from results_page import command_line, header, table, write

REPO = Path(__file__).resolve().parents[1]


def export_ref(ref: str, dest: Path) -> Path:
    """``src/`` of commit ``ref`` into ``dest``; returns the folder to put on PYTHONPATH."""
    blob = subprocess.run(["git", "archive", ref, "src"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def train_once(src: Path, data: str, work: Path, batches: int, threads: int) -> dict:
    """One ``litefer train`` run of ``batches`` batches; its CPU seconds and its wall training seconds."""
    run_dir = work / f"run{time.time_ns()}"
    cmd = [sys.executable, "-m", "litefer", "train", str(REPO / "configs" / "ferplus_paper.yaml"), "--run-dir", str(run_dir),
           "--set", f"data.root={data}", "--set", "data.input_size=48", "--set", "optim.batch_size=64",
           "--set", "optim.epochs=1", "--set", f"run.max_batches={batches}", "--set", f"run.threads={threads}",
           "--set", "run.progress=never", "--set", "run.tensorboard=false", "--set", "run.eval_test=false",
           "--set", "loss.centre=0.4"]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({src}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    with (run_dir / "metrics.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_seconds": cpu, "epoch_seconds": float(row["epoch_seconds"])}


def cpu_per_batch(src: Path, args, work: Path) -> dict:
    short = train_once(src, args.data, work, args.short, args.threads)
    long = train_once(src, args.data, work, args.long, args.threads)
    return {"cpu_ms_per_batch": 1000 * (long["cpu_seconds"] - short["cpu_seconds"]) / (args.long - args.short),
            "wall_s_long": long["epoch_seconds"]}


def _row(version: str, runs: list[dict], median: float) -> list:
    return [version, ", ".join(f"{r['cpu_ms_per_batch']:.1f}" for r in runs), f"{median:.1f}",
            ", ".join(f"{r['wall_s_long']:.1f}" for r in runs)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="the earlier commit to compare against")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"))
    p.add_argument("--short", type=int, default=5, help="batches of the short run")
    p.add_argument("--long", type=int, default=45, help="batches of the long run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="results page to write: OUT.md and OUT.json")
    args = p.parse_args(argv)
    command = command_line("train_loop_cpu.py", argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = {args.ref: export_ref(args.ref, tmp / "ref"), "this checkout": REPO / "src"}
        train_once(versions["this checkout"], args.data, tmp, 2, args.threads)      # warm the data cache
        results: dict[str, list[dict]] = {k: [] for k in versions}
        for _ in range(args.repeats):
            for name, src in versions.items():
                results[name].append(cpu_per_batch(src, args, tmp))
                print(json.dumps({"version": name, **results[name][-1]}), flush=True)
    med = {k: statistics.median(r["cpu_ms_per_batch"] for r in v) for k, v in results.items()}
    ratio = med["this checkout"] / med[args.ref]
    text = "\n".join([
        *header("`litefer train` on the CPU: this checkout against an earlier commit", command,
                f"{args.threads} thread(s)"),
        f"Work: the paper's recipe on FERPlus at 48 px, batch 64, softmax + 0.4 centre loss. CPU ms per training batch "
        f"= (CPU seconds of a {args.long}-batch run − those of a {args.short}-batch run) / {args.long - args.short}; "
        f"the versions alternate, {args.repeats} pairs of runs each.", "",
        *table(["version", "CPU ms per batch (each)", "median", "wall s of each long run (metrics.csv)"],
               [_row(k, v, med[k]) for k, v in results.items()]), "",
        f"CPU time ratio, this checkout / {args.ref}: **{ratio:.3f}** (below 1 = less work per batch)."]) + "\n"
    if args.out:
        write(args.out, {"command": command, "ref": args.ref, "runs": results, "median_cpu_ms_per_batch": med,
                         "ratio": ratio}, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
