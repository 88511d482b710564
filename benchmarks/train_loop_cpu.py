"""Same-run comparison of ``litefer train`` on the CPU: this checkout's loop against an earlier commit's.

Both versions train the same short configuration on real FERPlus (the paper's recipe at 48 px, batch
64, a fixed number of batches, two threads), alternating A/B so that load from anything else on the machine falls on
both alike; the figure is each version's training time per epoch from its own ``metrics.csv``
(validation excluded) and their ratio. The earlier commit's ``src`` is taken with ``git archive``.

    python benchmarks/train_loop_cpu.py --ref e87d447 --repeats 3 --out results/train_loop_cpu.md
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export_ref(ref: str, dest: Path) -> Path:
    """``src/`` of commit ``ref`` into ``dest``; returns the folder to put on PYTHONPATH."""
    blob = subprocess.run(["git", "archive", ref, "src"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def train_once(src: Path, data: str, work: Path, batches: int, threads: int) -> dict:
    run_dir = work / f"run{time.time_ns()}"
    cmd = [sys.executable, "-m", "litefer", "train", str(REPO / "configs" / "ferplus_paper.yaml"), "--run-dir", str(run_dir),
           "--set", f"data.root={data}", "--set", "data.input_size=48", "--set", "optim.batch_size=64",
           "--set", "optim.epochs=1", "--set", f"run.max_batches={batches}", "--set", f"run.threads={threads}",
           "--set", "run.progress=never", "--set", "run.tensorboard=false", "--set", "run.eval_test=false",
           "--set", "loss.centre=0.4"]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({src}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    with (run_dir / "metrics.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    return {"epoch_seconds": float(row["epoch_seconds"]), "images_per_s": float(row["images_per_s"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="the earlier commit to compare against")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"))
    p.add_argument("--batches", type=int, default=40, help="training batches per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="markdown file to write")
    args = p.parse_args(argv)
    from litefer.utils import atomic_write_text, hardware_summary

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = {args.ref: export_ref(args.ref, tmp / "ref"), "this checkout": REPO / "src"}
        train_once(versions["this checkout"], args.data, tmp, 2, args.threads)      # warm the data cache
        times: dict[str, list[float]] = {k: [] for k in versions}
        for _ in range(args.repeats):
            for name, src in versions.items():
                times[name].append(train_once(src, args.data, tmp, args.batches, args.threads)["epoch_seconds"])
                print(json.dumps({"version": name, "epoch_seconds": times[name][-1]}), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}         # least disturbed by other load on the machine
    ratio = med["this checkout"] / med[args.ref]
    ratio_best = best["this checkout"] / best[args.ref]
    text = "\n".join([
        "# `litefer train` on the CPU: this checkout against an earlier commit", "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Hardware: {hardware_summary()}; {args.threads} threads  ",
        f"Work: FERPlus at 48 px, batch 64, softmax + 0.4 centre loss, {args.batches} training batches per run; "
        f"runs alternate between the versions, {args.repeats} each; training seconds from each run's metrics.csv.", "",
        f"Machine load (1-minute average) when it finished: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.", "",
        "| version | training s per run (each) | median | fastest |", "|---|---|---|---|",
        *[f"| {k} | {', '.join(f'{t:.2f}' for t in v)} | {med[k]:.2f} | {best[k]:.2f} |" for k, v in times.items()], "",
        f"Time ratio, this checkout / {args.ref}: **{ratio:.3f}** on medians, **{ratio_best:.3f}** on the fastest "
        "runs (below 1 = faster)."]) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
