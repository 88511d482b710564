"""The one script to run on a GPU machine: pack the data here, then throughput + paper-protocol runs there.

GPU time is rare here (one H200, 15 minutes a session, start-up included), so everything the GPU
machine does is prepared and tested on the CPU (``--dry-run``) and runs as one command:

    python benchmarks/gpu_suite.py --pack .gpupack                       # here: FERPlus -> 50 MB, lossless
    python benchmarks/gpu_suite.py --pack-dir .gpupack --budget-s 540 --out $OUT      # there (carry .gpupack)
    python benchmarks/gpu_suite.py --dry-run --data tests-fixture --out /tmp/suite   # the whole suite, tiny, CPU

On the GPU the suite unpacks the data (while the throughput benchmark runs), measures training
throughput for at most 60 s (eager vs CUDA-graph steps, one and two processes sharing the GPU),
then starts the paper protocol (``configs/ferplus_paper.yaml`` through ``litefer reproduce``'s
planner, so the run folders are the ones ``litefer reproduce --protocol paper`` aggregates) for
``litefer_cpsca`` and, beside it in parallel processes, as many further paper-protocol rows (Table 6
softmax-only, Table 5 CA, baseline, MAXCA) as the measured speeds fit in the budget. Every run gets
``run.time_limit_s`` so that it ends before the budget does. It writes ``gpu.md`` and ``gpu.json``,
the log, and one archive per run (metrics, config, meta, log, best weights) under ``--out``.

Only torch, numpy, PyYAML and matplotlib are needed there (and litefer's source, via PYTHONPATH).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from litefer.data.ferplus import FER_COLUMNS, find_files, load_arrays, majority_labels  # noqa: E402
from litefer.utils import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402

log = logging.getLogger("gpu_suite")

PACK_FORMAT = "litefer-ferplus-pack/1"
# Paper-protocol rows after the main run, most informative first: the loss question of Table 6,
# then Table 5's attention variants. (table, row key)
MAIN_ROW = ("table5", "cpsca")
EXTRA_ROWS = [("table6", "softmax"), ("table5", "ca"), ("table5", "baseline"), ("table5", "maxca")]
# Most needed first: the plan reads the first two; the rest fill what is left of the minute.
BENCH_CONFIGS = ["litefer_cpsca:224:64:graph", "litefer_cpsca:224:64:eager", "litefer_cpsca:112:128:graph",
                 "mobilenetv3_large:224:64:graph", "litefer_cpsca:112:128:eager", "mobilenetv3_large:112:128:graph",
                 "litefer_cpsca:224:256:graph", "litefer_cpsca:112:256:graph"]
# Two processes sharing the H200 trained litefer_cpsca (224 px, batch 64, CUDA graphs) at 4,973 images/s
# in all against 5,056 for one alone (results/gpu_suite_h200_run1.json, results/train_throughput_cuda.json):
# the GPU is already full, so without a measurement the plan gives parallel rows no extra speed.


# ------------------------------------------------------------------------------------- pack / unpack
def _fer_emotions(pixels_path: Path) -> np.ndarray:
    """The FER2013 ``emotion`` column (kept so that the unpacked file is a complete fer2013.csv)."""
    opener = gzip.open if pixels_path.suffix == ".gz" else open
    with opener(pixels_path, "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return np.array([int(row[0]) for row in reader], dtype=np.uint8)


def pack(data_root: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Write the FERPlus rows that have a majority label (every row the paper's protocol and the
    GPU recipes train or validate on) as xz-compressed raw pixels plus their CSV fields."""
    pixels_path, votes_path = find_files(data_root)
    arrays = load_arrays(data_root)
    keep = np.flatnonzero(majority_labels(arrays["votes"]) >= 0)
    emotions = _fer_emotions(pixels_path)
    vote_lines = votes_path.read_text(encoding="utf-8").splitlines()
    images = np.ascontiguousarray(arrays["images"][keep])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = images.tobytes()
    atomic_write_bytes(out / "pixels.u8.xz", lzma.compress(raw, preset=6))
    rows = {"emotion": emotions[keep].tolist(), "usage": arrays["usage"][keep].tolist(),
            "votes_header": vote_lines[0], "votes_lines": [vote_lines[i + 1] for i in keep.tolist()]}
    atomic_write_bytes(out / "rows.json.xz", lzma.compress(json.dumps(rows).encode()))
    manifest = {"format": PACK_FORMAT, "rows": int(len(keep)), "source_rows": int(len(arrays["images"])),
                "shape": list(images.shape), "pixels_sha256": hashlib.sha256(raw).hexdigest(),
                "selection": "FERPlus rows with a majority label (Training + PublicTest)",
                "bytes": {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def unpack(pack_dir: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    """Rebuild ``fer2013.csv`` and ``fer2013new.csv`` (the packed rows, official formats) in ``data_dir``."""
    pack_dir, data_dir = Path(pack_dir), Path(data_dir)
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    if manifest.get("format") != PACK_FORMAT:
        raise ValueError(f"{pack_dir}/manifest.json: not a {PACK_FORMAT} pack")
    raw = lzma.decompress((pack_dir / "pixels.u8.xz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != manifest["pixels_sha256"]:
        raise ValueError(f"{pack_dir}/pixels.u8.xz: pixel checksum mismatch (a damaged pack)")
    images = np.frombuffer(raw, dtype=np.uint8).reshape(manifest["shape"])
    rows = json.loads(lzma.decompress((pack_dir / "rows.json.xz").read_bytes()))
    data_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    text.write(",".join(FER_COLUMNS) + "\n")
    flat = images.reshape(len(images), -1)
    for emotion, usage, px in zip(rows["emotion"], rows["usage"], flat):
        text.write(f"{emotion},{' '.join(map(str, px.tolist()))},{usage}\n")
    atomic_write_text(data_dir / "fer2013.csv", text.getvalue())
    atomic_write_text(data_dir / "fer2013new.csv", "\n".join([rows["votes_header"], *rows["votes_lines"]]) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------ planning
def epoch_seconds(speed: float, train_images: int, val_images: int, overhead_s: float = 0.4) -> float:
    """Predicted wall time of one epoch at ``speed`` training images/s: training, validation
    (forward only: about a third of a training step per image) and the checkpoint."""
    return train_images / speed + val_images / (3 * speed) + overhead_s


def plan_runs(single: float, pair: float | None, seconds_left: float, train_images: int, val_images: int,
              epochs: int, max_extra: int, startup_s: float = 30.0) -> dict:
    """How many runs fit beside the main one, and how many epochs the main run gets.

    ``single``: images/s of one process alone; ``pair``: images/s of two processes together (their
    sum). More than two processes are assumed to add nothing over two (the GPU is then full), which
    errs towards fewer rows, never towards a main run that does not finish."""
    best = {"extra": 0, "epochs": epochs, "per_process": single,
            "predicted_s": startup_s + epochs * epoch_seconds(single, train_images, val_images)}
    if best["predicted_s"] > seconds_left:
        fit = int((seconds_left - startup_s) // epoch_seconds(single, train_images, val_images))
        best.update(epochs=max(fit, 0), truncated=True,
                    predicted_s=startup_s + max(fit, 0) * epoch_seconds(single, train_images, val_images))
        return best
    for extra in range(1, max_extra + 1):
        total = pair if pair else single
        per_process = total / (extra + 1)
        predicted = startup_s + epochs * epoch_seconds(per_process, train_images, val_images)
        if predicted > seconds_left:
            break
        best = {"extra": extra, "epochs": epochs, "per_process": per_process, "predicted_s": predicted}
    return best


# ------------------------------------------------------------------------------------------- running
def planned_runs(runs_dir: Path, overrides: list[str]) -> list:
    """The main row and the extra rows as ``litefer reproduce`` plans them (paper protocol, seed 0)."""
    from litefer.reproduce.plan import load_protocols, load_table, plan_table

    recipes, protocols = load_protocols(REPO / "configs")
    out = []
    for table, key in [MAIN_ROW, *EXTRA_ROWS]:
        spec = load_table(REPO / "configs", table)
        runs = plan_table(spec, "ferplus", protocols["paper"], [0], recipes, runs_dir, overrides)
        out.append(next(r for r in runs if r.row.key == key))
    return out


def launch(run, log_path: Path, env: dict) -> subprocess.Popen:
    from litefer.train.config import dump_config

    run.run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run.run_dir.parent / f"{run.run_dir.name}.launch.yaml"
    cfg_path.write_text(dump_config(run.cfg))
    cmd = [sys.executable, "-m", "litefer", "train", str(cfg_path), "--run-dir", str(run.run_dir)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def run_benchmark(out_dir: Path, device: str, configs: list[str], seconds: float, max_seconds: float,
                  concurrent: list[str], env: dict, lead_s: float) -> dict:
    """``benchmarks/train_throughput.py`` in its own process (so that its CUDA state is gone after)."""
    path = out_dir / "throughput.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--device", device, "--configs", *configs,
           "--seconds", str(seconds), "--max-seconds", str(max_seconds), "--json", str(path),
           "--concurrent", *concurrent, "--concurrent-lead-s", str(lead_s)]
    if device != "cpu":
        cmd.append("--parity")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max_seconds + 120)
    log.info("throughput benchmark (exit %d):\n%s", proc.returncode, proc.stdout[-4000:] + proc.stderr[-4000:])
    if proc.returncode != 0 or not path.is_file():
        return {"rows": [], "concurrent": [], "parity": [], "error": proc.stderr[-2000:]}
    return json.loads(path.read_text())


def _rate(report: dict, model: str, size: int, batch: int, mode: str) -> float | None:
    for r in report.get("rows", []):
        if (r["model"], r["input"], r["batch"], r["mode"]) == (model, size, batch, mode) and r.get("images_per_s"):
            return float(r["images_per_s"])
    return None


def choose_mode(report: dict, size: int, batch: int) -> tuple[str, float | None]:
    """CUDA graphs where they were measured faster and agree with the eager step; else eager."""
    eager = _rate(report, "litefer_cpsca", size, batch, "eager")
    graph = _rate(report, "litefer_cpsca", size, batch, "graph")
    parity_ok = all(p.get("ok") for p in report.get("parity", [])) and bool(report.get("parity"))
    if graph and parity_ok and (eager is None or graph > eager):
        return "graph", graph
    return "eager", eager


def archive_run(run_dir: Path, runs_root: Path, out_path: Path) -> None:
    """metrics, config, meta, final, log, curves and best weights of one run, paths relative to the
    runs root (so that unpacking into runs/reproduce/ restores ``litefer reproduce``'s layout)."""
    with tarfile.open(out_path, "w:gz") as tar:
        for name in ("metrics.csv", "config.yaml", "meta.json", "final.json", "train.log", "curves.png",
                     "confusion_val.png", "best.pt"):
            f = run_dir / name
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(runs_root)))


# ------------------------------------------------------------------------------------------- the suite
def suite(args) -> dict:
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    data_dir, runs_dir = work / "data", work / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "LITEFER_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    os.environ["LITEFER_CACHE"] = env["LITEFER_CACHE"]
    tiny = args.dry_run

    # 1. unpack and parse the data (CPU) while the benchmark measures the GPU
    data_state: dict = {}

    def prepare_data():
        try:
            if tiny and not args.pack_dir:
                pack(args.data, work / "pack")
            data_state["manifest"] = unpack(args.pack_dir or work / "pack", data_dir)
            arrays = load_arrays(data_dir)                # fills the parse cache the runs then read
            data_state["rows"] = int(len(arrays["images"]))
            data_state["split_sizes"] = _split_sizes(arrays)
        except Exception as e:
            data_state["error"] = f"{type(e).__name__}: {e}"
        data_state["seconds"] = time.time() - t0

    loader = threading.Thread(target=prepare_data)
    loader.start()
    if tiny:
        bench = run_benchmark(work, "cpu", ["litefer_cpsca:48:16:eager"], 0.5, 40,
                              ["litefer_cpsca:48:16:eager:2"], env, lead_s=8)
        mode, single = "eager", _rate(bench, "litefer_cpsca", 48, 16, "eager")
    else:
        bench = run_benchmark(work, "cuda", BENCH_CONFIGS, 2.0, args.bench_s,
                              ["litefer_cpsca:224:64:graph:2"] if args.measure_concurrency else [], env, lead_s=45)
        mode, single = choose_mode(bench, 224, 64)
    pair = next((c["images_per_s"] for c in bench.get("concurrent", []) if c.get("images_per_s")
                 and c["mode"] == mode and not c.get("late_start_s")), None)
    loader.join()
    if "error" in data_state:
        raise RuntimeError(f"data preparation failed: {data_state['error']}")
    log.info("data ready after %.1f s; benchmark done after %.1f s", data_state["seconds"], time.time() - t0)

    # 2. plan: the main row must finish; further rows only where the measured speed fits them
    overrides = [f"data.root={data_dir}", f"run.cuda_graph={'true' if mode == 'graph' else 'false'}",
                 "run.tensorboard=false", "run.progress=never", "run.eval_test=false",
                 f"run.eval_batch_size={64 if tiny else 1024}", f"run.threads={1 if tiny else 2}"]
    if tiny:
        overrides += ["data.input_size=48", "optim.epochs=2", "optim.batch_size=16", "run.max_batches=2"]
    runs = planned_runs(runs_dir, overrides)
    train_images, val_images = data_state["split_sizes"]
    epochs = runs[0].cfg["optim"]["epochs"]
    seconds_left = args.budget_s - (time.time() - t0) - args.reserve_s
    plan = plan_runs(single or 1.0, pair, seconds_left, train_images if not tiny else 32, val_images, epochs,
                     max_extra=min(args.max_extra, len(EXTRA_ROWS)), startup_s=args.startup_s)
    if tiny:
        plan["extra"] = min(args.max_extra, 1)
    chosen = runs[: 1 + plan["extra"]]
    limit = max(seconds_left, 1.0)
    for run in chosen:       # a run that cannot finish in time stops at an epoch boundary, resumable
        run.cfg["run"]["time_limit_s"] = float(limit)
    log.info("plan: mode %s, %d run(s), %s; %.0f s left, limit per run %.0f s", mode, len(chosen), plan,
             seconds_left, limit)

    # 3. run them side by side
    started = time.time()
    procs = [(run, launch(run, work / f"train-{i}.log", env), time.time()) for i, run in enumerate(chosen)]
    finished = []
    for run, proc, t_launch in procs:
        code = proc.wait(timeout=limit + 300)
        finished.append((run, code, time.time() - t_launch))
    log.info("all runs ended after %.1f s", time.time() - started)

    report = collect(out, work, runs_dir, finished, bench, plan, mode, data_state, args, t0)
    return report


def _split_sizes(arrays: dict) -> tuple[int, int]:
    """Majority-label faces in Training and PublicTest: the paper protocol's epoch and validation."""
    labelled = majority_labels(arrays["votes"]) >= 0
    return (int((labelled & (arrays["usage"] == "Training")).sum()),
            int((labelled & (arrays["usage"] == "PublicTest")).sum()))


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_summary(run, code: int, wall: float) -> dict:
    metrics = _read_csv(run.run_dir / "metrics.csv")
    final_path = run.run_dir / "final.json"
    final = json.loads(final_path.read_text()) if final_path.is_file() else {}
    rates = [float(r["images_per_s"]) for r in metrics[2:]] or [float(r["images_per_s"]) for r in metrics]
    epoch_s = [float(r["epoch_seconds"]) for r in metrics]
    return {"table": run.table, "row": run.row.key, "label": run.row.label, "model": run.cfg["model"]["name"],
            "loss": {k: run.cfg["loss"][k] for k in ("softmax", "centre", "triplet")},
            "run_dir": str(run.run_dir), "exit_code": code, "wall_seconds": round(wall, 1),
            "epochs_planned": run.cfg["optim"]["epochs"], "epochs_done": len(metrics),
            "best_epoch": final.get("best_epoch"), "best_val_acc": final.get("best_val_acc"),
            "val": {k: (final.get("val") or {}).get(k) for k in ("accuracy", "mean_class_accuracy", "macro_f1", "n")},
            "stopped": final.get("stopped"),
            "images_per_s_median_after_epoch_2": round(float(np.median(rates)), 1) if rates else None,
            "first_epoch_s": round(epoch_s[0], 2) if epoch_s else None,
            "median_epoch_s": round(float(np.median(epoch_s[2:] or epoch_s)), 2) if epoch_s else None,
            "setup_s": float(metrics[0].get("setup_seconds") or 0) if metrics else None}


def collect(out: Path, work: Path, runs_dir: Path, finished, bench: dict, plan: dict, mode: str, data_state: dict,
            args, t0: float) -> dict:
    import torch

    runs = [run_summary(run, code, wall) for run, code, wall in finished]
    for i, (run, _, _) in enumerate(finished):
        if run.run_dir.is_dir():
            archive_run(run.run_dir, runs_dir, out / f"run{i}-{run.row.key}.tar.gz")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run)"
    from results_page import command_line, write

    report = {"command": command_line("gpu_suite.py"), "device": device, "torch": torch.__version__,
              "budget_s": args.budget_s, "suite_seconds": round(time.time() - t0, 1), "mode": mode, "plan": plan,
              "data": {k: v for k, v in data_state.items() if k != "manifest"}, "benchmark": bench, "runs": runs,
              "dry_run": bool(args.dry_run)}
    write(out / "gpu", report, markdown(report))
    return report


def markdown(report: dict) -> str:
    from results_page import header, table
    from train_throughput import throughput_table

    bench, plan = report["benchmark"], report["plan"]
    title = f"GPU suite: {report['device']}" + (" — DRY RUN on the CPU, tiny settings" if report["dry_run"] else "")
    lines = [*header(title, report["command"], f"device {report['device']}"),
             f"Suite wall time {report['suite_seconds']:.0f} s of a {report['budget_s']:.0f} s budget; "
             f"data unpacked and parsed in {report['data'].get('seconds', float('nan')):.1f} s "
             f"({report['data'].get('rows')} rows), beside the benchmark.", "",
             "## Training throughput (`benchmarks/train_throughput.py`)", "", *throughput_table(bench.get("rows", []))]
    for c in bench.get("concurrent", []):
        lines.append(f"\n{c['procs']} processes at once ({c['model']}, {c['input']} px, batch {c['batch']}, {c['mode']}): "
                     f"{c['images_per_s']:,.0f} images/s in all ({', '.join(f'{v:,.0f}' for v in c['per_process'])}).")
    for p in bench.get("parity", []):
        if p.get("error"):
            lines.append(f"\nCUDA-graph parity check failed: {p['error']}")
        else:
            lines.append(f"\nCUDA-graph parity ({p['input']} px, batch {p['batch']}, dropout off): loss eager "
                         f"{p['loss_eager']:.5f}, graph {p['loss_graph']:.5f}; first weight updates differ by "
                         f"{p['weights_rel_diff']:.1e} (relative): {'agree' if p['ok'] else 'DISAGREE'}.")
    lines += ["", "## Plan", "",
              f"Step mode chosen: **{report['mode']}**. {1 + plan['extra']} run(s) side by side, "
              f"{plan['epochs']} epochs each, predicted {plan['predicted_s']:.0f} s at "
              f"{plan['per_process']:,.0f} images/s per process" + (" (truncated to fit the budget)" if plan.get("truncated")
                                                                    else "") + ".", "",
              "## Paper-protocol runs (FERPlus, 224 px, Adam 0.01, batch 64, plateau, dropout 0.4; seed 0)", "",
              *table(["table/row", "model", "loss", "epochs", "best epoch", "val acc", "mean class acc", "macro-F1",
                      "images/s (median, epoch 3+)", "first epoch s", "median epoch s", "process wall s", "stopped"],
                     [_run_row(r) for r in report["runs"]])]
    n_val = next((r["val"]["n"] for r in report["runs"] if r["val"].get("n")), None)
    lines += ["", f"Validation = FERPlus PublicTest, majority labels ({n_val} faces); epoch selected on it. "
              "The test split is not on the GPU machine."]
    return "\n".join(lines) + "\n"


def _run_row(r: dict) -> list:
    v = r["val"]

    def acc(x):
        return f"{100 * x:.2f}" if isinstance(x, (int, float)) else "–"
    return [f"{r['table']}/{r['row']}", r["model"], " + ".join(f"{w:g}·{k}" for k, w in r["loss"].items() if w),
            f"{r['epochs_done']}/{r['epochs_planned']}", r["best_epoch"], acc(v.get("accuracy")),
            acc(v.get("mean_class_accuracy")), v.get("macro_f1") if v.get("macro_f1") is None else round(v["macro_f1"], 3),
            r["images_per_s_median_after_epoch_2"], r["first_epoch_s"], r["median_epoch_s"], r["wall_seconds"],
            r["stopped"] or "no"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", metavar="DIR", help="write the data pack into DIR and exit")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"), help="FERPlus root to pack")
    p.add_argument("--pack-dir", help="the pack to unpack on the GPU machine")
    p.add_argument("--budget-s", type=float, default=540, help="the suite ends within this many seconds")
    p.add_argument("--reserve-s", type=float, default=45, help="kept back for final evaluation and archives")
    p.add_argument("--startup-s", type=float, default=30, help="a run's start-up allowance in the plan")
    p.add_argument("--max-extra", type=int, default=4, help="at most this many rows beside the main run")
    p.add_argument("--bench-s", type=float, default=60, help="the throughput benchmark's time bound")
    p.add_argument("--measure-concurrency", action="store_true",
                   help="also time two processes sharing the GPU (about 50 s more); else assume no gain")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="where results go ($OUT there)")
    p.add_argument("--work", default="/tmp/litefer_gpu", help="scratch folder for data and runs")
    p.add_argument("--dry-run", action="store_true", help="the whole suite on the CPU with tiny settings")
    args = p.parse_args(argv)
    if args.pack:
        print(json.dumps(pack(args.data, args.pack), indent=2))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(Path(args.out) / "suite.log")])
    report = suite(args)
    failed = [r for r in report["runs"] if r["exit_code"] != 0]
    print(markdown(report))
    return 1 if failed or not report["runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
