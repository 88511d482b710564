"""Training throughput (images/s) of the engine's own training step, on the CPU or a CUDA device.

Each measurement builds the step exactly as ``litefer train`` does (``litefer.train.step``: training
images resident on the device as uint8, batched augmentation there, forward with embedding, joint
loss, backward, the engine's optimizer, centre step, device-side metric sums) and times whole steps
for a fixed number of seconds after warm-up; the device is synchronised at the start and end of the
timed span only. ``--modes`` compares the eager step with the CUDA-graph step (``run.cuda_graph``)
and ``torch.compile``; ``--concurrent MODEL:SIZE:BATCH:MODE:N`` runs N copies at once and reports
their sum (runs sharing a GPU); ``--parity`` checks one graph step against one eager step. ``--max-seconds`` bounds the whole benchmark: configurations left when it is spent are listed
as skipped. Usage:

    python benchmarks/train_throughput.py --out results/train_throughput.md          # CPU: 48/112/224 px, batch 64
    python benchmarks/train_throughput.py --json results/train_throughput_cuda.json \\
        --out results/train_throughput_cuda.md       # on a CUDA machine: 112/224 px, batch 64-256, eager and graph
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from litefer import create_model
from litefer.data import AugmentConfig, FaceDataset, FERPLUS_CLASSES, Preprocess
from litefer.losses import JointLoss
from litefer.train.engine import make_optimizer, resolve_device
from litefer.train.step import DeviceData, EpochMeter, StepConfig, TrainStep
from litefer.utils import atomic_write_json, hardware_summary
from results_page import command_line, header, table, write


def build_step(name: str, size: int, batch: int, device: torch.device, mode: str, dropout: float = 0.2):
    """The engine's training step for ``name`` at ``size`` px, on random uint8 faces held on ``device``."""
    torch.manual_seed(0)
    k = len(FERPLUS_CLASSES)
    model = create_model(name, num_classes=k, dropout=dropout).to(device).to(memory_format=torch.channels_last)
    crit = JointLoss(k, model.embedding_dim, softmax=1.0, centre=0.4).to(device)
    optim_cfg = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
    opt = make_optimizer(model.parameters(), optim_cfg, device)
    copt = torch.optim.SGD(crit.center.parameters(), lr=0.5)
    faces = torch.randint(0, 256, (batch * 8, 48, 48, 1), dtype=torch.uint8)
    data = DeviceData(FaceDataset(faces, torch.randint(0, k, (len(faces),)), FERPLUS_CLASSES), device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    settings = StepConfig(Preprocess(input_size=size, in_chans=3), AugmentConfig(), "hard", True, amp, 0.0)
    train_model = torch.compile(model) if mode == "compile" else model
    step = TrainStep(model.train(), train_model, crit, opt, copt, None, settings)
    return step, data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, size: int, batch: int, device: torch.device, mode: str, seconds: float,
            warmup: int = 3, start_at: float | None = None) -> dict:
    """Images/s of whole training steps over ``seconds`` after ``warmup`` steps (and, with
    ``start_at``, after waiting for that wall-clock time, so that concurrent copies overlap)."""
    torch.backends.cudnn.benchmark = device.type == "cuda"        # as the engine sets it
    step, data = build_step(name, size, batch, device, mode)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(1)
    meter = EpochMeter(device)
    order = torch.randperm(len(data)).to(device)
    batches = [order[i * batch:(i + 1) * batch] for i in range(len(data) // batch)]
    t_setup = time.perf_counter()
    for i in range(warmup):
        x, y = step.batch(data, batches[i % len(batches)], gen)
        if mode == "graph" and not step.graphed:
            step.capture_graph(x)
        step(x, y, meter)
    _sync(device)
    setup = time.perf_counter() - t_setup
    late = 0.0
    if start_at is not None:
        late = max(0.0, time.time() - start_at)       # >0: this copy missed the common start
        time.sleep(max(0.0, start_at - time.time()))
    steps, t0 = 0, time.perf_counter()
    while True:
        x, y = step.batch(data, batches[steps % len(batches)], gen)
        step(x, y, meter)
        steps += 1
        if steps % 5 == 0:
            _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    elapsed = time.perf_counter() - t0
    loss = meter.read()["loss"] / meter.n
    if loss != loss:
        raise RuntimeError(f"{name} {mode}: the training loss is NaN")
    return {"model": name, "input": size, "batch": batch, "mode": mode, "images_per_s": round(steps * batch / elapsed, 1),
            "step_ms": round(1000 * elapsed / steps, 3), "steps": steps, "setup_s": round(setup, 2),
            "late_start_s": round(late, 2)}


def graph_parity(name: str, size: int, batch: int, device: torch.device) -> dict:
    """One step eager and one replayed from a CUDA graph, from the same weights on the same batch
    (dropout off): the losses and the updated weights must agree to bf16 precision."""
    results = {}
    flat = lambda m: torch.cat([p.detach().float().flatten() for p in m.parameters()])  # noqa: E731
    for mode in ("eager", "graph"):
        step, data = build_step(name, size, batch, device, mode, dropout=0.0)
        before = flat(step.model)
        x, y = step.batch(data, torch.arange(batch, device=device), torch.Generator(
            device=device if device.type == "cuda" else "cpu").manual_seed(2))
        if mode == "graph":
            step.capture_graph(x)
        meter = EpochMeter(device)
        step(x, y, meter)
        results[mode] = (meter.read()["loss"] / batch, flat(step.model) - before)
    (le, de), (lg, dg) = results["eager"], results["graph"]
    rel = float((de - dg).norm() / de.norm())        # Adam's first update is nearly sign(grad): loose bound
    return {"model": name, "input": size, "batch": batch, "loss_eager": le, "loss_graph": lg,
            "weights_rel_diff": rel, "ok": abs(le - lg) <= 2e-2 * max(1.0, abs(le)) and rel < 0.3}


def run_concurrent(args, name: str, size: int, batch: int, mode: str, procs: int) -> dict:
    """``procs`` copies of one measurement at once, timed over the same wall-clock span; their sum."""
    start_at = time.time() + args.concurrent_lead_s
    cmd = [sys.executable, __file__, "--single", name, str(size), str(batch), mode, "--device", args.device,
           "--seconds", str(args.seconds), "--start-at", str(start_at)]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                for _ in range(procs)]
    rates, late = [], 0.0
    for c in children:
        out, _ = c.communicate(timeout=args.concurrent_lead_s + 10 * args.seconds + 120)
        if c.returncode != 0:
            raise RuntimeError(f"concurrent copy failed with exit code {c.returncode}")
        row = json.loads(out.strip().splitlines()[-1])
        rates.append(row["images_per_s"])
        late = max(late, row["late_start_s"])
    return {"model": name, "input": size, "batch": batch, "mode": mode, "procs": procs,
            "images_per_s": round(sum(rates), 1), "per_process": rates, "late_start_s": late}


def _configs(args) -> list[tuple[str, int, int, str]]:
    """The measurements in order: ``--configs`` as given, else models x sizes x batches x modes."""
    if args.configs is not None:
        out = []
        for spec in args.configs:
            name, size, batch, mode = spec.split(":")
            out.append((name, int(size), int(batch), mode))
        return out
    return [(name, size, batch, mode) for size in args.sizes for batch in args.batches for name in args.models
            for mode in args.modes]


def run_all(args, device: torch.device) -> dict:
    """The parity check, then the single-process rows, then concurrent copies, until ``--max-seconds``
    is spent. (A capture of litefer_cpsca costs about 20 s on an H200, mostly cuDNN autotuning of
    its attention convolutions; later captures of the same shapes in the process reuse it.)"""
    t_begin = time.time()
    rows, skipped, parity, concurrent = [], [], [], []
    budget_left = lambda: args.max_seconds - (time.time() - t_begin) if args.max_seconds else float("inf")  # noqa: E731
    configs = _configs(args)
    if device.type == "cuda" and args.parity and configs:
        name, size, batch, _ = configs[0]
        try:
            parity.append(graph_parity(name, size, batch, device))
        except Exception as e:
            parity.append({"model": name, "input": size, "batch": batch, "ok": False,
                           "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps({"parity": parity[-1]}), flush=True)
    for name, size, batch, mode in configs:
        if mode == "graph" and device.type != "cuda":
            continue
        if budget_left() < args.seconds + 5:
            skipped.append({"model": name, "input": size, "batch": batch, "mode": mode})
            continue
        try:
            rows.append(measure(name, size, batch, device, mode, args.seconds, args.warmup))
        except Exception as e:  # one failing mode (a capture, a compile) must not lose the others
            rows.append({"model": name, "input": size, "batch": batch, "mode": mode, "images_per_s": None,
                         "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps(rows[-1]), flush=True)
    for spec in args.concurrent:
        name, size, batch, mode, procs = spec.split(":")
        if budget_left() < args.concurrent_lead_s + args.seconds + 5:
            skipped.append({"concurrent": spec})
            continue
        try:
            concurrent.append(run_concurrent(args, name, int(size), int(batch), mode, int(procs)))
        except Exception as e:
            concurrent.append({"model": name, "input": int(size), "batch": int(batch), "mode": mode,
                               "procs": int(procs), "images_per_s": None, "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps(concurrent[-1]), flush=True)
    return {"command": command_line("train_throughput.py"), "device": device_label(device),
            "hardware": hardware_summary(), "torch": torch.__version__, "seconds_per_measurement": args.seconds,
            "rows": rows, "concurrent": concurrent, "parity": parity, "skipped": skipped,
            "wall_seconds": round(time.time() - t_begin, 1)}


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} threads"


def throughput_table(rows: list[dict]) -> list[str]:
    """One row per measurement: images/s, ms per step and the one-off set-up (gpu_suite.py's report too)."""
    def cells(r):
        if r.get("error") or not r.get("images_per_s"):
            return [r["model"], r["input"], r["batch"], r["mode"], f"failed: {str(r.get('error'))[:120]}", "", ""]
        return [r["model"], r["input"], r["batch"], r["mode"], f"{r['images_per_s']:,.0f}", r["step_ms"], r["setup_s"]]
    return table(["model", "input", "batch", "mode", "images/s", "ms/step", "one-off set-up s"], [cells(r) for r in rows])


def to_markdown(report: dict) -> str:
    lines = [*header(f"Training throughput: {report['device']}", report["command"], f"device {report['device']}"),
             "Data: random uint8 48x48 faces, 8 batches' worth, held on the device (a step's cost does not depend on "
             "the pixels). Step: the engine's training step (`litefer.train.step`): images resident on the device, batched "
             "augmentation, forward with embedding, softmax + centre loss, backward, Adam (fused on CUDA), centre "
             f"step, device-side metric sums; channels_last, bf16 autocast on CUDA; timed over "
             f"{report['seconds_per_measurement']} s per row after warm-up.", "", *throughput_table(report["rows"])]
    if report["concurrent"]:
        lines += ["", "Several processes at once on the same device (sum of their images/s):", "",
                  *table(["model", "input", "batch", "mode", "processes", "images/s in all", "per process"],
                         [[r["model"], r["input"], r["batch"], r["mode"], r["procs"], "failed", r["error"][:120]]
                          if r.get("error") else
                          [r["model"], r["input"], r["batch"], r["mode"], r["procs"], f"{r['images_per_s']:,.0f}",
                           ", ".join(f"{v:,.0f}" for v in r["per_process"])] for r in report["concurrent"]])]
    for p in report["parity"]:
        if p.get("error"):
            lines += ["", f"CUDA-graph parity check failed to run: {p['error']}"]
            continue
        lines += ["", f"CUDA-graph parity ({p['model']}, {p['input']} px, batch {p['batch']}, dropout off): loss eager "
                  f"{p['loss_eager']:.5f} vs graph {p['loss_graph']:.5f}, relative difference of the first weight update "
                  f"{p['weights_rel_diff']:.2e}: {'agree' if p['ok'] else 'DISAGREE'}."]
    if report["skipped"]:
        lines += ["", f"Skipped for the time budget: {len(report['skipped'])} measurement(s)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["litefer_cpsca", "mobilenetv3_large"])
    p.add_argument("--sizes", nargs="+", type=int, help="default: 48 112 224 on the CPU, 112 224 on CUDA")
    p.add_argument("--batches", nargs="+", type=int, help="default: 64 on the CPU, 64 128 256 on CUDA")
    p.add_argument("--modes", nargs="+", choices=["eager", "graph", "compile"],
                   help="default: eager on the CPU, eager graph on CUDA")
    p.add_argument("--configs", nargs="*", metavar="MODEL:SIZE:BATCH:MODE",
                   help="measure exactly these, in this order (instead of the product of the lists above)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--seconds", type=float, default=3.0, help="timed span per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (CPU device)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="bound on the whole benchmark; 0 = none")
    p.add_argument("--parity", action="store_true", help="check one graph step against one eager step first")
    p.add_argument("--concurrent", nargs="*", default=[], metavar="MODEL:SIZE:BATCH:MODE:PROCS")
    p.add_argument("--concurrent-lead-s", type=float, default=25.0, help="start-up allowance of concurrent copies")
    p.add_argument("--single", nargs=4, metavar=("MODEL", "SIZE", "BATCH", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="JSON file to write (the raw report, as gpu_suite.py reads it)")
    p.add_argument("--out", default=None, help="results page to write: OUT.md and OUT.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.sizes = args.sizes or ([112, 224] if cuda else [48, 112, 224])
    args.batches = args.batches or ([64, 128, 256] if cuda else [64])
    args.modes = args.modes or (["eager", "graph"] if cuda else ["eager"])
    if args.single:
        name, size, batch, mode = args.single
        print(json.dumps(measure(name, int(size), int(batch), device, mode, args.seconds, args.warmup, args.start_at)))
        return 0
    report = run_all(args, device)
    if args.json:
        atomic_write_json(args.json, report)
    if args.out:
        write(args.out, report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
