"""Per-face model latency (batch 1) and throughput (batch 64) on the CPU: PyTorch eager, ONNX Runtime
fp32 and ONNX Runtime static INT8, for litefer_cpsca and mobilenetv3_large in the same run, at the
shipped model's input size (read from the packaged weights) and at 224, with 1 and 2 threads.

    .venv/bin/python benchmarks/inference_speed.py --calib ../shared/data/fer2013

``ORT fp32`` is the file ``litefer export`` writes (coordinate attention in its inference form,
``litefer.models.inference_form``); ``ORT fp32 training form`` exports the training form instead.
The models' runs are interleaved over ``--rounds`` rounds and the best round is kept, so that load
from other processes on a shared machine hits both models alike.

Weights do not change the speed of these networks, so both are measured with random weights (the
INT8 models are still calibrated on real face crops: ``--calib`` FERPlus root or folder of faces,
else the built-in astronaut variations). Writes ``results/inference_speed.md`` and ``.json``.
Measure on an otherwise idle machine: the load average at the start is recorded in the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from litefer import create_model
from litefer.models.attention import CoordAttention
from litefer.inference.align import CropSpec
from litefer.inference.session import ort_session
from litefer.preprocess import Preprocess
from litefer.export import export_onnx
from litefer.export import load_faces, quantize_int8
from litefer.profile import torch_threads
from results_page import command_line, header, table, write

MODELS = ("litefer_cpsca", "mobilenetv3_large")


def default_input_size() -> int:
    """The packaged default weights' input size (64 when they are not installed)."""
    from litefer.card import read_card
    from litefer.inference.backends import DEFAULT_FILES, packaged_file

    try:
        return read_card(packaged_file(DEFAULT_FILES["default"]["onnxruntime"])).preprocess.input_size
    except FileNotFoundError:
        return 64


def timed_ms(fn, min_runs: int = 5, min_seconds: float = 1.5, warmup: int = 3) -> float:
    """Median milliseconds per call, over at least ``min_runs`` calls and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 2000:
            break
    return float(np.median(times) * 1e3)


def runners(name: str, size: int, threads: int, faces: np.ndarray, tmp: Path) -> dict[str, tuple]:
    """runtime label -> (batch-1 call, batch-64 call, file) for one model, size and thread count."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=8).eval()
    pp = Preprocess(input_size=size, in_chans=3)
    files = {"ORT fp32": tmp / f"{name}_{size}.onnx"}
    export_onnx(model, files["ORT fp32"], size, 3)
    if any(isinstance(m, CoordAttention) for m in model.modules()):
        files["ORT fp32 training form"] = tmp / f"{name}_{size}_train.onnx"
        export_onnx(model, files["ORT fp32 training form"], size, 3, inference=False)
    files["ORT INT8"] = tmp / f"{name}_{size}_int8.onnx"
    if not files["ORT INT8"].exists():
        quantize_int8(files["ORT fp32"], files["ORT INT8"], pp(faces))
    x64 = pp(faces[np.arange(64) % len(faces)])
    x1, t1, t64 = x64[:1], torch.from_numpy(x64[:1]), torch.from_numpy(x64)

    def torch_run(x):
        with torch_threads(threads), torch.inference_mode():
            model(x)
    out = {"torch fp32": (lambda: torch_run(t1), lambda: torch_run(t64), None)}
    for label, path in files.items():
        sess = ort_session(path, threads)
        iname = sess.get_inputs()[0].name
        out[label] = ((lambda s=sess, n=iname: s.run(None, {n: x1})),
                      (lambda s=sess, n=iname: s.run(None, {n: x64})), path)
    return out


def measure(names: list[str], size: int, threads: int, faces: np.ndarray, tmp: Path, seconds: float,
            rounds: int) -> list[dict]:
    """Every model's runtimes timed in ``rounds`` interleaved rounds (best round kept), so that load
    from other processes hits every model alike."""
    calls = {(n, label): r for n in names for label, r in runners(n, size, threads, faces, tmp).items()}
    best: dict[tuple, list[float]] = {}
    for _ in range(rounds):
        for key, (one, batch, _) in calls.items():
            lat = timed_ms(one, min_seconds=seconds / rounds)
            thr = 64 / (timed_ms(batch, min_runs=3, min_seconds=seconds / rounds) / 1e3)
            prev = best.get(key, [np.inf, 0.0])
            best[key] = [min(prev[0], lat), max(prev[1], thr)]
    rows = []
    for (name, runtime), (lat, thr) in best.items():
        path = calls[(name, runtime)][2]
        rows.append({"model": name, "input_size": size, "threads": threads, "runtime": runtime,
                     "latency_ms_b1": round(lat, 3), "throughput_b64": round(thr, 1),
                     "file_mb": round(path.stat().st_size / 1e6, 2) if path else None})
        print(f"{name:>18} {size:>4}px {threads}t {runtime:<22} {lat:8.2f} ms/face (b1) {thr:9.0f} faces/s (b64)",
              flush=True)
    return rows


def report(rows: list[dict], command: str, calib: str, load) -> str:
    lines = [*header("Model speed on the CPU: PyTorch, ONNX Runtime fp32 and INT8", command, load_start=load),
             "Latency: median time of one call at batch 1 (one face). Throughput: faces per second at batch 64. "
             f"Random weights (speed does not depend on them); INT8 = ONNX Runtime static QDQ, per-channel, "
             f"calibrated on real face crops from `{calib}`. Model only: no detection, no preprocessing.", ""]
    for size in sorted({r["input_size"] for r in rows}):
        for threads in sorted({r["threads"] for r in rows}):
            sub = [r for r in rows if r["input_size"] == size and r["threads"] == threads]
            if sub:
                lines += [f"## {size}×{size}, {threads} thread{'s' if threads > 1 else ''}", "",
                          *table(["model", "runtime", "latency b1 (ms)", "throughput b64 (faces/s)",
                                  "vs torch fp32 (b64)", "litefer_cpsca speed-up over mobilenetv3_large (b1 / b64)"],
                                 [_speed_row(r, sub) for r in sub], "llrrrr"), ""]
    return "\n".join(lines + targets(rows))


def _speed_row(r: dict, sub: list[dict]) -> list:
    base = next(q for q in sub if q["model"] == r["model"] and q["runtime"] == "torch fp32")
    ratio = ""
    if r["model"] == "litefer_cpsca":
        runtime = "ORT fp32" if r["runtime"] == "ORT fp32 training form" else r["runtime"]
        other = next((q for q in sub if q["model"] == "mobilenetv3_large" and q["runtime"] == runtime), None)
        if other:
            ratio = f"{other['latency_ms_b1'] / r['latency_ms_b1']:.2f}× / {r['throughput_b64'] / other['throughput_b64']:.2f}×"
    return [r["model"], r["runtime"], f"{r['latency_ms_b1']:.2f}", f"{r['throughput_b64']:.0f}",
            f"{r['throughput_b64'] / base['throughput_b64']:.2f}×", ratio]


def targets(rows: list[dict]) -> list[str]:
    """Issue 14's targets for ORT fp32 at 1 thread: litefer_cpsca's batch-1 latency at most 0.80x,
    and its batch-64 throughput at least 1.2x, mobilenetv3_large's."""
    found = []
    for size in sorted({r["input_size"] for r in rows}):
        def row(model, runtime):
            return next((r for r in rows if r["model"] == model and r["runtime"] == runtime
                         and r["input_size"] == size and r["threads"] == 1), None)
        mb = row("mobilenetv3_large", "ORT fp32")
        for runtime in ("ORT fp32", "ORT fp32 training form"):
            ours = row("litefer_cpsca", runtime)
            if mb is None or ours is None:
                continue
            lat, thr = ours["latency_ms_b1"] / mb["latency_ms_b1"], ours["throughput_b64"] / mb["throughput_b64"]
            found.append([f"{size}×{size}", runtime, f"{lat:.2f}× ({'met' if lat <= 0.8 else f'missed by {lat - 0.8:.2f}'})",
                          f"{thr:.2f}× ({'met' if thr >= 1.2 else f'missed by {1.2 - thr:.2f}'})"])
    return ["## Targets: litefer_cpsca vs mobilenetv3_large, ORT fp32, 1 thread", "",
            *table(["input", "runtime", "latency ratio (target ≤ 0.80)", "throughput ratio (target ≥ 1.20)"],
                   found, "llrr"), ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--sizes", nargs="+", type=int, default=None,
                   help="input sizes (default: the packaged weights' input size, or 64 without them, and 224)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--calib", default="astronaut", help="INT8 calibration faces: FERPlus root, folder, or astronaut")
    p.add_argument("--calib-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timing per measurement, all rounds together")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (the best is kept)")
    p.add_argument("--out", default="results/inference_speed", help="output path without suffix")
    args = p.parse_args(argv)
    load = os.getloadavg()
    if args.sizes is None:
        args.sizes = [default_input_size(), 224]
    faces = load_faces(args.calib, CropSpec(), "train", args.calib_size, seed=3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="litefer-speed-") as tmp:
        for size in args.sizes:
            for threads in args.threads:
                rows += measure(args.models, size, threads, faces, Path(tmp), args.seconds, args.rounds)
    command = command_line("inference_speed.py", argv)
    write(args.out, {"command": command, "rows": rows}, report(rows, command, args.calib, load), load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
