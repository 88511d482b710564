"""``litefer profile``: parameters, compute, file sizes and CPU latency of registered models.

One row per (model, input size), like the paper's Table 2, with every unit and counter named:

* GMac by torch's ``FlopCounterMode`` (which counts 2 FLOPs per multiply-add: FLOPs/2 = MACs;
  convolutions and linear layers only) and by ``ptflops`` (pytorch backend, which also counts
  BatchNorm, ReLU and pooling layers, the counter the paper's 0.19/0.23 GMac agree with);
* fp32 parameter bytes, the saved ``state_dict`` file, a training checkpoint that also holds the
  Adam optimizer state (the paper's "model size"), and the ONNX file;
* latency per image at batch 1: torch eager (``inference_mode``) and ONNX Runtime on the CPU,
  median of timed runs after warm-up, torch and ORT both limited to the same thread count.
"""
from __future__ import annotations

import copy
import datetime as _dt
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .export.graph import export_onnx, onnx_parity
from .inference.session import ort_session
from .models import create_model, list_models
from .utils import cpu_model

MB = 1e6          # file sizes: decimal megabytes, the paper's unit
MIB = 2 ** 20     # fp32 parameter memory: mebibytes

# The paper's Table 2 order, then anything registered later.
PAPER_ORDER = ("mobilenetv3_large", "mobilenetv3_large_reduced", "mobilenetv3_large_reduced_hswish",
               "litefer_baseline", "litefer_ca", "litefer_maxca", "litefer_cpsca")
# Paper Table 2 (RAF-DB, 7 classes, 224x224): GMac, params (M), model size (MB).
PAPER_TABLE2 = {
    "mobilenetv3_large": ("MobileNetV3", 0.23, 4.1, 50.1),
    "mobilenetv3_large_reduced": ("MobileNetV3+Modify channels", 0.19, 1.9, 23.5),
    "mobilenetv3_large_reduced_hswish": ("MobileNetV3+Modify channels+H-Swish", 0.19, 1.9, 23.5),
    "litefer_cpsca": ("Improved MobileNetV3", 0.19, 1.3, 15.9),
}


def ordered_models(names: list[str] | None = None) -> list[str]:
    names = list_models() if names is None else names
    rank = {n: i for i, n in enumerate(PAPER_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


# ----------------------------------------------------------------------------- measurements

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_counter_gmac(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> float:
    """GMac of one image by torch's FlopCounterMode (FLOPs/2 = MACs), model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def ptflops_gmac(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> float | None:
    """GMac of one image by ptflops' pytorch backend (None when ptflops is missing or fails)."""
    try:
        from ptflops import get_model_complexity_info
    except ImportError:
        return None
    counted = copy.deepcopy(model).eval()        # ptflops attaches hooks and counters to modules
    try:
        macs, _ = get_model_complexity_info(counted, (in_chans, input_size, input_size), as_strings=False,
                                            print_per_layer_stat=False, verbose=False, backend="pytorch")
    except Exception:  # noqa: BLE001 - a third-party counter must not break the profile
        return None
    return None if macs is None else macs / 1e9


def saved_size(obj, path: Path) -> int:
    torch.save(obj, path)
    return path.stat().st_size


def adam_checkpoint_size(model: nn.Module, path: Path, input_size: int, in_chans: int) -> int:
    """Bytes of a checkpoint {model, optimizer} after one Adam step (so the moments exist)."""
    trained = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(trained.parameters())
    size = min(input_size, 64)                   # the state's size does not depend on the input size
    x = torch.randn(2, in_chans, size, size)
    target = torch.arange(2) % getattr(trained, "num_classes", 2)
    F.cross_entropy(trained(x), target).backward()
    optimizer.step()
    return saved_size({"model": trained.state_dict(), "optimizer": optimizer.state_dict()}, path)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def profile_model(name: str, input_size: int = 224, num_classes: int = 8, in_chans: int = 3,
                  threads: int = 1, repeats: int = 100, warmup: int = 10, latency: bool = True) -> dict:
    """Profile one registered model at one square input size; returns one result row (a dict).

    Keys: params, gmac_torch (FlopCounterMode/2), gmac_ptflops, fp32_params_bytes,
    state_dict_bytes, checkpoint_adam_bytes, onnx_bytes, onnx_max_abs_diff and, when ``latency``,
    latency_torch_ms / latency_ort_ms (median per image at batch 1 with ``threads`` threads).
    """
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError("threads and repeats must be >= 1 and warmup >= 0")
    model = create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
    params = count_params(model)
    row: dict = {
        "model": name, "input_size": input_size, "in_chans": in_chans, "num_classes": num_classes,
        "params": params,
        "gmac_torch": flop_counter_gmac(model, input_size, in_chans),
        "gmac_ptflops": ptflops_gmac(model, input_size, in_chans),
        "fp32_params_bytes": params * 4,
    }
    x = torch.randn(1, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="litefer-profile-") as tmp, torch_threads(threads):
        tmp = Path(tmp)
        row["state_dict_bytes"] = saved_size(model.state_dict(), tmp / "weights.pt")
        row["checkpoint_adam_bytes"] = adam_checkpoint_size(model, tmp / "checkpoint.pt", input_size, in_chans)
        onnx_path = export_onnx(model, tmp / "model.onnx", input_size, in_chans)
        row["onnx_bytes"] = onnx_path.stat().st_size
        session = ort_session(onnx_path, threads=threads)
        # JSON only: with freshly initialised weights the logits are tiny, so this is a smoke check
        # (tests/ check parity with weights scaled to give O(1) logits)
        row["onnx_max_abs_diff"] = onnx_parity(model, onnx_path, x, session)
        row["threads"] = threads
        if latency:
            feed = {session.get_inputs()[0].name: x.numpy()}
            with torch.inference_mode():
                row["latency_torch_ms"] = median_ms(lambda: model(x), repeats, warmup)
            row["latency_ort_ms"] = median_ms(lambda: session.run(None, feed), repeats, warmup)
            row["repeats"], row["warmup"] = repeats, warmup
    return row


def profile_models(names: list[str], sizes: list[int], progress: Callable[[str], None] | None = None,
                   **kwargs) -> list[dict]:
    rows = []
    for size in sizes:
        for name in names:
            if progress:
                progress(f"profiling {name} at {size}x{size} ...")
            rows.append(profile_model(name, input_size=size, **kwargs))
    return rows


# ----------------------------------------------------------------------------- tables

def _num(fmt: str) -> Callable[[object], str]:
    return lambda v: "–" if v is None else format(v, fmt)


# (key, header, formatter): shared by the text table, the markdown table and the legend
COLUMNS: list[tuple[str, str, Callable[[dict], str]]] = [
    ("model", "model", lambda r: r["model"]),
    ("params", "params", lambda r: f"{r['params']:,}"),
    ("gmac_torch", "GMac torch-FCM/2", lambda r: _num(".4f")(r["gmac_torch"])),
    ("gmac_ptflops", "GMac ptflops", lambda r: _num(".4f")(r["gmac_ptflops"])),
    ("fp32_params", "fp32 params MiB", lambda r: f"{r['fp32_params_bytes'] / MIB:.2f}"),
    ("state_dict", "state_dict MB", lambda r: f"{r['state_dict_bytes'] / MB:.2f}"),
    ("checkpoint", "ckpt+Adam MB", lambda r: f"{r['checkpoint_adam_bytes'] / MB:.2f}"),
    ("onnx", "ONNX MB", lambda r: f"{r['onnx_bytes'] / MB:.2f}"),
    ("torch_ms", "torch ms", lambda r: _num(".2f")(r.get("latency_torch_ms"))),
    ("ort_ms", "ORT ms", lambda r: _num(".2f")(r.get("latency_ort_ms"))),
]

LEGEND = [
    ("params", "trainable parameters"),
    ("GMac torch-FCM/2", "torch.utils.flop_counter.FlopCounterMode FLOPs / 2 (2 FLOPs per multiply-add; "
                         "convolutions and linear layers), one image, in GMac"),
    ("GMac ptflops", "ptflops get_model_complexity_info, pytorch backend: also counts BatchNorm, ReLU and "
                     "pooling layers (not h-swish, sigmoid gates or tensor-method pooling), one image, in GMac"),
    ("fp32 params MiB", "params x 4 bytes, in MiB (2^20 bytes)"),
    ("state_dict MB", "file size of torch.save(model.state_dict()) (includes BatchNorm buffers), "
                      "in MB (10^6 bytes)"),
    ("ckpt+Adam MB", "file size of torch.save({model, optimizer}) after one Adam step (weights + two "
                     "Adam moments per parameter), in MB: the paper's 'model size'"),
    ("ONNX MB", "ONNX file (opset 17, dynamic batch, TorchScript exporter), in MB"),
    ("torch ms", "median latency per image at batch 1, torch eager under inference_mode"),
    ("ORT ms", "median latency per image at batch 1, ONNX Runtime CPUExecutionProvider"),
]


def _cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    return [h for _, h, _ in COLUMNS], [[fmt(r) for _, _, fmt in COLUMNS] for r in rows]


def text_table(rows: list[dict]) -> str:
    headers, body = _cells(rows)
    widths = [max(len(c) for c in col) for col in zip(headers, *body)]
    align = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([align(headers), "  ".join("-" * w for w in widths), *map(align, body)])


def markdown_table(rows: list[dict]) -> str:
    headers, body = _cells(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def rows_by_size(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["input_size"], []).append(r)
    return groups


# ----------------------------------------------------------------------------- environment

def environment() -> dict:
    import onnxruntime

    try:
        ptflops_version = version("ptflops")
    except PackageNotFoundError:
        ptflops_version = None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "ptflops": ptflops_version,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ----------------------------------------------------------------------------- report

def paper_comparison(rows: list[dict]) -> str:
    """Markdown relating the 224x224 rows to the paper's Table 2 (empty when none is present)."""
    at224 = {r["model"]: r for r in rows if r["input_size"] == 224}
    present = [m for m in PAPER_TABLE2 if m in at224]
    if not present:
        return ""
    lines = ["## Relation to the paper's Table 2", "",
             "Paper figures are for RAF-DB (7 classes); ours use the class count stated above, which "
             "changes only the last layer (641 parameters per class for the reduced networks, "
             "1,281 for MobileNetV3-Large).", "",
             "| paper row | GMac (paper) | GMac torch-FCM/2 | GMac ptflops | params M (paper) | params | "
             "model size MB (paper) | ckpt+Adam MB | fp32 params MiB |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in present:
        label, gmac, params_m, size_mb = PAPER_TABLE2[m]
        r = at224[m]
        lines.append(f"| {label} (`{m}`) | {gmac} | {_num('.3f')(r['gmac_torch'])} | "
                     f"{_num('.3f')(r['gmac_ptflops'])} | {params_m} | {r['params']:,} | {size_mb} | "
                     f"{r['checkpoint_adam_bytes'] / MB:.1f} | {r['fp32_params_bytes'] / MIB:.2f} |")
    if "litefer_cpsca" in at224:
        r = at224["litefer_cpsca"]
        others = [m for m in present if m != "litefer_cpsca"]
        lines += ["", (
            f"The paper's network (`litefer_cpsca`) has {r['params']:,} parameters: the paper's 1.3 M. "
            f"Its compute is {r['gmac_torch']:.3f} GMac by FlopCounterMode (FLOPs/2) and "
            f"{_num('.3f')(r['gmac_ptflops'])} GMac by ptflops, whose extra count of BatchNorm, ReLU and "
            f"pooling layers brings it to the paper's 0.19 GMac. The fp32 parameters take only "
            f"{r['fp32_params_bytes'] / MIB:.2f} MiB ({r['state_dict_bytes'] / MB:.2f} MB as a state_dict file, "
            f"{r['onnx_bytes'] / MB:.2f} MB as ONNX); the paper's 15.9 MB is the size of a training checkpoint "
            f"that also holds Adam's two moments per parameter ({r['checkpoint_adam_bytes'] / MB:.2f} MB here). "
            + ("The same reading gives " + ", ".join(
                f"{at224[m]['checkpoint_adam_bytes'] / MB:.1f} MB for `{m}` (paper: {PAPER_TABLE2[m][3]})"
                for m in others) + ". " if others else "")
            + f"The deployable model is the ONNX file, {r['onnx_bytes'] / MB / 15.9:.0%} of the paper's figure.")]
    return "\n".join(lines)


def markdown_report(rows: list[dict], env: dict, command: str, settings: dict, note: str | None = None) -> str:
    latency = any("latency_torch_ms" in r for r in rows)
    out = ["# Model profile", "",
           f"Made by `litefer profile` on {env['date']} with:", "", "```", command, "```", "",
           f"- Hardware: {env['cpu']}, {env['logical_cpus']} logical CPUs ({env['platform']})",
           f"- Software: Python {env['python']}, torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
           f"ptflops {env['ptflops']}",
           f"- Settings: {settings['num_classes']} classes, {settings['in_chans']} input channels, batch 1"
           + (f"; latency = median of {settings['repeats']} runs after {settings['warmup']} warm-up runs, "
              f"torch and ONNX Runtime each limited to {settings['threads']} thread(s)" if latency
              else "; latency not measured (--no-latency)")]
    if note:
        out += ["", f"**Note:** {note}"]
    for size, group in rows_by_size(rows).items():
        out += ["", f"## {size}×{size} input", "", markdown_table(group)]
    out += ["", "Columns:", ""] + [f"- **{h}**: {text}" for h, text in LEGEND]
    comparison = paper_comparison(rows)
    if comparison:
        out += ["", comparison]
    return "\n".join(out) + "\n"
