"""Where ONNX Runtime's CPU time goes, per op type, for litefer_cpsca (training and inference form
of its coordinate attention) and mobilenetv3_large, in the same run.

    .venv/bin/python benchmarks/ort_profile.py --sizes 112 224 --threads 1

For each model and input size: the graph ONNX Runtime actually runs (its optimized model, written
with ``optimized_model_filepath`` at ORT_ENABLE_ALL: fused and NCHWc-blocked convolutions, layout
``ReorderInput``/``ReorderOutput`` nodes) counted per op type, and ONNX Runtime's own profiler
(``enable_profiling``): the summed kernel time per op type over timed batch-1 and batch-64 runs,
as a share of the model's time. Random weights (the time does not depend on them). Writes
``results/ort_profile.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from litefer import create_model
from litefer.export import export_onnx
from results_page import command_line, header, table, write

VARIANTS = (("mobilenetv3_large", "training form (SE)", "train"), ("litefer_cpsca", "training form", "train"),
            ("litefer_cpsca", "inference form", "inference"))
INT8_VARIANT = ("litefer_cpsca", "INT8 (inference form)", "int8")


def _options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def optimized_ops(path: Path, threads: int, tmp: Path) -> dict[str, int]:
    """Op type -> node count in the graph ONNX Runtime runs after its optimizations."""
    opts = _options(threads)
    out = tmp / (path.stem + "_optimized.onnx")
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(Counter(n.op_type for n in onnx.load(str(out)).graph.node).most_common())


def profiled_ms(path: Path, threads: int, x: np.ndarray, runs: int, tmp: Path) -> tuple[float, dict[str, float]]:
    """(mean ms per run, op type -> mean kernel ms per run) from ONNX Runtime's profiler."""
    opts = _options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / f"{path.stem}_{len(x)}")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(3 + runs):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    return _summarise(events, skip_runs=3)


def _summarise(events: list[dict], skip_runs: int) -> tuple[float, dict[str, float]]:
    """Per-op-type kernel time of the runs after the first ``skip_runs`` (warm-up)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    kept = runs[skip_runs:]
    if not kept:
        raise RuntimeError("the profile holds no timed runs")
    start = kept[0]["ts"]
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / len(kept)
    total = sum(r["dur"] for r in kept) / 1e3 / len(kept)
    return total, dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def _mul_graph(inputs: dict[str, list[int]], nodes: list, out_shape: list[int]) -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def gating_ops(shape: tuple[int, int, int, int], threads: int, runs: int = 30) -> dict[str, float]:
    """Median ms of the ways to gate an N,C,H,W map, each as a one-node (or few-node) graph."""
    from onnx import TensorProto, helper

    n, c, h, w = shape
    full, rng = list(shape), np.random.default_rng(0)

    def const(name, values):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [4], values))

    def mul(a, b, out="y"):
        return helper.make_node("Mul", [a, b], [out])

    resize = helper.make_node("Resize", ["a", "", "sc"], ["ra"], mode="nearest")
    scales = helper.make_node("Constant", [], ["sc"], value=helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 1, w]))
    cases = {
        "x * g, same shape": ({"x": full, "g": full}, [mul("x", "g")]),
        "x * s, s = N,C,1,1 (SE)": ({"x": full, "s": [n, c, 1, 1]}, [mul("x", "s")]),
        "x * a_h, a_h = N,C,H,1": ({"x": full, "a": [n, c, h, 1]}, [mul("x", "a")]),
        "x * a_w, a_w = N,C,1,W": ({"x": full, "b": [n, c, 1, w]}, [mul("x", "b")]),
        "x * (a_h * a_w) (broadcast outer product)": ({"x": full, "a": [n, c, h, 1], "b": [n, c, 1, w]},
                                                      [mul("a", "b", "g"), mul("x", "g")]),
        "x * (Resize(a_h) * Tile(a_w)) (inference form)": (
            {"x": full, "a": [n, c, h, 1], "b": [n, c, 1, w]},
            [scales, resize, const("r", [1, 1, h, 1]), helper.make_node("Tile", ["b", "r"], ["tb"]),
             mul("ra", "tb", "g"), mul("x", "g")]),
    }
    out = {}
    for label, (inputs, nodes) in cases.items():
        sess = ort.InferenceSession(_mul_graph(inputs, nodes, full), _options(threads), providers=["CPUExecutionProvider"])
        feed = {k: rng.random(v, dtype=np.float32) for k, v in inputs.items()}
        times = []
        for i in range(3 + runs):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t)
        out[label] = round(float(np.median(times[3:]) * 1e3), 3)
    return out


def model_file(name: str, form: str, size: int, tmp: Path, calib: str) -> Path:
    """The ONNX file of one variant: training or inference form, or static INT8 of the inference
    form calibrated on real faces (``calib``: FERPlus root, folder or astronaut)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=8).eval()
    path = tmp / f"{name}_{form}_{size}.onnx"
    export_onnx(model, path, size, 3, inference=form != "train")
    if form != "int8":
        return path
    from litefer.export import load_faces, quantize_int8
    from litefer.inference.align import CropSpec
    from litefer.preprocess import Preprocess

    faces = load_faces(calib, CropSpec(), "train", 256, seed=3)
    out = tmp / f"{name}_int8q_{size}.onnx"
    quantize_int8(path, out, Preprocess(input_size=size, in_chans=3)(faces))
    return out


def measure(name: str, label: str, form: str, size: int, threads: int, runs: int, tmp: Path, calib: str) -> dict:
    path = model_file(name, form, size, tmp, calib)
    rng = np.random.default_rng(0)
    row = {"model": name, "form": label, "input_size": size, "threads": threads,
           "exported_ops": dict(Counter(n.op_type for n in onnx.load(str(path)).graph.node).most_common()),
           "optimized_ops": optimized_ops(path, threads, tmp)}
    for batch in (1, 64):
        x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
        total, per_op = profiled_ms(path, threads, x, runs if batch == 1 else max(3, runs // 10), tmp)
        row[f"b{batch}"] = {"run_ms": round(total, 3), "op_ms": {k: round(v, 4) for k, v in per_op.items()}}
        print(f"{name:>18} {label:<20} {size}px b{batch}: {total:8.2f} ms/run", flush=True)
    return row


def _op_table(rows: list[dict], batch: int) -> list[str]:
    ops = sorted({op for r in rows for op in r[f"b{batch}"]["op_ms"]},
                 key=lambda op: -max(r[f"b{batch}"]["op_ms"].get(op, 0) for r in rows))

    def cell(r, op):
        ms, total = r[f"b{batch}"]["op_ms"].get(op), r[f"b{batch}"]["run_ms"]
        return "" if ms is None else f"{ms:.3f} ({100 * ms / total:.0f} %)"
    body = [[op, *(cell(r, op) for r in rows)] for op in ops]
    body.append(["**whole run**", *(f"**{r[f'b{batch}']['run_ms']:.3f}**" for r in rows)])
    return [f"Batch {batch}: kernel ms per run by op type (share of the run)", "",
            *table(["op type", *(f"{r['model']} {r['form']}" for r in rows)], body, "l" + "r" * len(rows)), ""]


def _node_table(rows: list[dict]) -> list[str]:
    ops = sorted({op for r in rows for op in r["optimized_ops"]},
                 key=lambda op: -max(r["optimized_ops"].get(op, 0) for r in rows))
    body = [[op, *(r["optimized_ops"].get(op, "") for r in rows)] for op in ops]
    body.append(["**all nodes**", *(f"**{sum(r['optimized_ops'].values())}**" for r in rows)])
    return ["Nodes in the graph ONNX Runtime runs (after ORT_ENABLE_ALL), per op type", "",
            *table(["op type", *(f"{r['model']} {r['form']}" for r in rows)], body, "l" + "r" * len(rows)), ""]


def report(rows: list[dict], command: str, gating: dict, load) -> str:
    lines = [*header("Where ONNX Runtime's CPU time goes, per op type", command, load_start=load),
             "Random weights; kernel times from ONNX Runtime's profiler (sum of each op type's kernel time per run, "
             "mean over the timed runs after 3 warm-up runs); 'whole run' is the profiler's model_run time.", ""]
    for size in sorted({r["input_size"] for r in rows}):
        for threads in sorted({r["threads"] for r in rows}):
            sub = [r for r in rows if r["input_size"] == size and r["threads"] == threads]
            lines += [f"## {size}×{size}, {threads} thread{'s' if threads > 1 else ''}", ""]
            lines += _node_table(sub) + _op_table(sub, 1) + _op_table(sub, 64)
    shape, threads, times = gating["shape"], gating["threads"], gating["ms"]
    lines += [f"## Gating an N,C,H,W = {' x '.join(map(str, shape))} map ({threads} thread{'s' if threads > 1 else ''})", "",
              "The last stage's maps at 112 px, batch 64: each way to multiply by attention gates as its own small "
              "graph (median of 30 runs).", "", *table(["operation", "ms"], [[k, f"{v:.3f}"] for k, v in times.items()], "lr")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[112, 224])
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 runs (batch 64: a tenth, at least 3)")
    p.add_argument("--int8", default=None, metavar="CALIB",
                   help="also profile litefer_cpsca's static INT8, calibrated on these faces (FERPlus root, folder, astronaut)")
    p.add_argument("--out", default="results/ort_profile", help="output path without suffix")
    args = p.parse_args(argv)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="litefer-ortprof-") as tmp:
        for size in args.sizes:
            for threads in args.threads:
                variants = VARIANTS + ((INT8_VARIANT,) if args.int8 else ())
                rows += [measure(n, label, form, size, threads, args.runs, Path(tmp), args.int8)
                         for n, label, form in variants]
    gating = {"shape": [64, 480, 7, 7], "threads": args.threads[0]}
    gating["ms"] = gating_ops(tuple(gating["shape"]), gating["threads"])
    command = command_line("ort_profile.py", argv)
    write(args.out, {"command": command, "rows": rows, "gating": gating}, report(rows, command, gating, load), load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
