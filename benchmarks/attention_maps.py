"""Where the shipped model looks, and whether its maps mean anything (issue 21).

    .venv/bin/python benchmarks/attention_maps.py --data ../shared/data/fer2013 [--runs NAME=PATH ...]

On the FERPlus validation faces (PublicTest rows with a majority label), one pass of the shipped
model (single pass, no flip TTA, no prior) gives:

1. the figure: mean Grad-CAM per class (in-graph map of ``litefer.models.explain.ExplainedNet``,
   each face's map divided by its max), by true and by predicted class, over each class's mean
   face; the autograd Grad-CAM of the last stride-16 block (``gradcam_autograd``) beside it; the
   mean attention gates of every CA/CPSCA block per class (``attention_gates``); the same for the
   CA and CPSCA runs of Table 5 where their checkpoints exist (``--runs``, else looked up from
   ``results/table5_ferplus_budget.json``); right and wrong predictions with their maps;
2. faithfulness, the deletion test: the most salient pixels of the model input set to grey in
   steps, re-classified by ONNX Runtime, for Grad-CAM, autograd Grad-CAM, random and centre-out
   orders; the normalised area under each accuracy curve;
3. sanity (Adebayo et al. 2018): Spearman rank correlation between the trained network's maps and
   those of the same network with re-initialised weights, cascading from the classifier down;
4. cost: time per face at 1 thread, torch and ONNX Runtime, plain vs explaining, batch 1 and 16,
   interleaved repetitions, medians;
5. what each map's resolution is and costs.

Writes ``<out>.md``, ``<out>.json`` and ``<out>_*.png`` (default ``results/explain``).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from litefer import create_model
from litefer.card import read_weights
from litefer.export.faces import ferplus_faces
from litefer.export.graph import export_onnx
from litefer.inference.align import CropSpec
from litefer.inference.files import resolve_weights
from litefer.inference.session import ort_session
from litefer.models.attention import CoordAttention
from litefer.models.explain import ExplainedNet, attention_gates, feature_resolution, gradcam_autograd
from litefer.preprocess import Preprocess
from litefer.profile import environment, torch_threads
from results_page import command_line, header, table, write
from litefer.utils import atomic_write_bytes, hardware_summary

FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TABLE5_ROWS = ("ca", "cpsca")
MIN_FACES = 50            # classes with fewer faces are left out of the gates' class deviation
SANITY_RHO = 0.2          # |mean Spearman| below this: the randomised maps count as unrelated
REPRODUCE = "litefer reproduce table5 --protocol budget --dataset ferplus"


# ----------------------------------------------------------------------------- models and faces

@dataclass
class Subject:
    """A model to explain, with what its weights file says about it."""

    name: str
    path: Path
    model: nn.Module
    pp: Preprocess
    meta: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def fresh(self, seed: int) -> nn.Module:
        """The same architecture with its initial (untrained) weights."""
        torch.manual_seed(seed)
        return create_model(self.meta["model_name"], num_classes=self.meta["num_classes"],
                            **self.meta["model_kwargs"]).eval()


def load_subject(name: str, path) -> Subject:
    from litefer.weights import load_checkpoint_model

    model, meta = load_checkpoint_model(path)
    return Subject(name, Path(path), model, Preprocess.from_dict(meta["preprocess"]), meta)


def parse_run(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` of a checkpoint file (argparse type)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--runs {text!r}: expected NAME=PATH")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--runs {text!r}: {path} is not a file")
    return name.strip(), Path(path)


def table5_runs(summary: Path, root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The CA and CPSCA checkpoints that ``summary`` (Table 5's results JSON) names, relative to
    ``root``: ({name: path} found, {name: path} missing here)."""
    if not summary.is_file():
        return {}, {}
    data = json.loads(summary.read_text())
    found, missing = {}, {}
    for row in (r for r in data.get("rows", []) if r.get("key") in TABLE5_ROWS):
        for run in data.get("runs", []):
            if f"/{row['experiment']}/" not in f"/{run['run_dir']}/":
                continue
            path = root / run["run_dir"] / "best.pt"
            (found if path.is_file() else missing)[f"{row['key']}_seed{run['seed']}"] = path
    return found, missing


def shared_runs(folder: Path, shipped: nn.Module) -> list[dict]:
    """Each ``folder/*/best.pt``: its architecture and input size, and whether it is the shipped model."""
    ref = shipped.state_dict()
    out = []
    for path in sorted(folder.glob("*/best.pt")) if folder.is_dir() else []:
        payload = read_weights(path)
        state = payload["state_dict"]
        same = state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
        out.append({"path": str(path), "model": payload["model_name"],
                    "input_size": payload["preprocess"]["input_size"], "same_as_shipped": same})
    return out


def batches(crops: np.ndarray, pp: Preprocess, size: int):
    for i in range(0, len(crops), size):
        yield i, torch.from_numpy(pp(crops[i:i + size]))


def gate_kinds(model: nn.Module) -> dict[str, str]:
    return {n: m.pooling.upper() for n, m in model.named_modules() if isinstance(m, CoordAttention)}


def block_sides(model: nn.Module, size: int) -> dict[str, tuple[int, int]]:
    """{"features.N": (h, w) of that block's output} for a square input of side ``size``."""
    shapes = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(f"features.{n}", tuple(o.shape[-2:])))
             for n, m in model.features.named_children()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, getattr(model, "in_chans", 3), size, size))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def stride16_layer(model: nn.Module, size: int) -> tuple[str, tuple[int, int]]:
    """The last block of ``model.features`` whose output is at 1/16 of the input: (name, (h, w))."""
    sides = block_sides(model, size)
    side = math.ceil(size / 16)
    name = [n for n, s in sides.items() if s == (side, side)][-1]
    return name, sides[name]


def analyse(subject: Subject, crops: np.ndarray, fine_layer: str | None = None, gates: bool = True,
            batch: int = 64) -> dict:
    """One pass over ``crops``: logits, every class's in-graph map, the gates of every CA/CPSCA
    block (if any and ``gates``) and, when ``fine_layer`` is given, the autograd Grad-CAM of the
    predicted class there."""
    net = ExplainedNet(subject.model).eval()
    layer = dict(subject.model.named_modules())[fine_layer] if fine_layer else None
    gates = gates and bool(gate_kinds(subject.model))
    logits, cams, fine, found = [], [], [], {}
    for _, x in batches(crops, subject.pp, batch):
        with torch.inference_mode():
            lo, cam = net(x)
        logits.append(lo.numpy())
        cams.append(cam.numpy())
        if layer is not None:
            fine.append(gradcam_autograd(subject.model, x, layer, lo.argmax(1)).numpy())
        for name, g in (attention_gates(subject.model, x) if gates else {}).items():
            found.setdefault(name, []).append(g.numpy())
    out = {"logits": np.concatenate(logits), "cam": np.concatenate(cams),
           "gates": {n: np.concatenate(v) for n, v in found.items()}}
    out["pred"] = out["logits"].argmax(1)
    if fine:
        out["fine"] = np.concatenate(fine)
    return out


# ----------------------------------------------------------------------------- maps

def pick(cams: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each face's map of its own class: (N, K, h, w), (N,) -> (N, h, w)."""
    return cams[np.arange(len(classes)), classes]


def unit_max(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its max (all-zero maps stay zero)."""
    top = maps.reshape(len(maps), -1).max(1).reshape(-1, *[1] * (maps.ndim - 1))
    return np.divide(maps, top, out=np.zeros_like(maps, dtype=np.float32), where=top > 0)


def class_means(values: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean of ``values`` (NaN for an empty group) and the group sizes."""
    counts = np.bincount(groups, minlength=k)
    means = np.full((k, *values.shape[1:]), np.nan, np.float32)
    for c in np.flatnonzero(counts):
        means[c] = values[groups == c].mean(0)
    return means, counts


def upsample(maps: np.ndarray, side: int) -> np.ndarray:
    """(N, h, w) -> (N, side, side), bilinear (torch's, align_corners=False, as cv2.INTER_LINEAR)."""
    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))[:, None]
    return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[:, 0].numpy()


def region_shares(mean_maps: np.ndarray, side: int = 48, border: int = 6) -> dict[str, list]:
    """For each class's mean map (upsampled to the crop): the share of its mass in the upper half
    of the crop (eyes and brows) and in the ``border``-pixel frame (background, hair, chin)."""
    up = np.clip(upsample(np.nan_to_num(mean_maps), side), 0, None)
    total = up.sum((1, 2))
    inner = up[:, border:-border, border:-border].sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"upper_half": (up[:, : side // 2].sum((1, 2)) / total).tolist(),
                "border": ((total - inner) / total).tolist()}


# ----------------------------------------------------------------------------- faithfulness: deletion

def pixel_ranks(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, P) saliency -> (N, P) deletion rank of each pixel, 0 = most salient; ties in random order."""
    order = np.lexsort((rng.random(saliency.shape), -saliency), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(saliency.shape[1]), order.shape), axis=1)
    return ranks


def centre_saliency(side: int) -> np.ndarray:
    """(side * side,) saliency falling with the distance from the centre: the centre-out order."""
    yy, xx = np.mgrid[:side, :side]
    c = (side - 1) / 2
    return -np.hypot(yy - c, xx - c).ravel()


def grey_fill(pp: Preprocess, channels: int) -> np.ndarray:
    """The model-input value of a mid-grey pixel (the average of the preprocessing means), per channel."""
    mean, std = pp.channel_stats(channels)
    grey = sum(pp.mean) / len(pp.mean)
    return np.array([(grey - m) / s for m, s in zip(mean, std)], np.float32)


def deletion_curve(classify, x: np.ndarray, labels: np.ndarray, saliency: np.ndarray, fractions,
                   fill: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Grey out the ``fractions`` most salient pixels of each input (N, C, S, S) and re-classify:
    (correct counts, counts still predicting the unperturbed label), one per fraction."""
    n, c, s, _ = x.shape
    ranks = pixel_ranks(saliency.reshape(n, -1), rng).reshape(n, 1, s, s)
    fill = np.asarray(fill, np.float32).reshape(1, c, 1, 1)
    base = classify(x)
    correct, kept = [], []
    for f in fractions:
        k = round(f * s * s)
        pred = base if k == 0 else classify(np.where(ranks < k, fill, x))
        correct.append(int((pred == labels).sum()))
        kept.append(int((pred == base).sum()))
    return np.array(correct), np.array(kept)


def auc(fractions, values) -> float:
    """Area under a curve sampled at ``fractions``, divided by the fraction range (trapezoids)."""
    f, v = np.asarray(fractions, float), np.asarray(values, float)
    return float(((v[1:] + v[:-1]) / 2 * np.diff(f)).sum() / (f[-1] - f[0]))


def ort_classifier(session, batch: int = 64):
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def classify(x: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run([out], {name: x[i:i + batch]})[0].argmax(1)
                               for i in range(0, len(x), batch)])
    return classify


def deletion_test(classify, subject: Subject, crops, labels, maps: dict[str, np.ndarray], seed: int,
                  batch: int = 64) -> dict:
    """Deletion curves for each saliency order in ``maps`` ({label: (N, h, w) map}) plus random and
    centre-out, on ``crops``; accuracy and agreement with the unperturbed prediction per fraction."""
    side = subject.pp.input_size
    orders = [*maps, "random", "centre-out"]
    sums = {k: np.zeros((2, len(FRACTIONS))) for k in orders}
    rng = np.random.default_rng(seed)
    for i, x in batches(crops, subject.pp, batch):
        x = x.numpy()
        n, fill = len(x), grey_fill(subject.pp, x.shape[1])
        for key in orders:
            if key in maps:
                sal = upsample(maps[key][i:i + n], side).reshape(n, -1)
            elif key == "random":
                sal = rng.random((n, side * side))
            else:
                sal = np.broadcast_to(centre_saliency(side), (n, side * side))
            sums[key] += deletion_curve(classify, x, labels[i:i + n], sal, FRACTIONS, fill, rng)
    out = {}
    for key, (correct, kept) in sums.items():
        acc, agree = correct / len(crops), kept / len(crops)
        out[key] = {"accuracy": acc.round(5).tolist(), "kept": agree.round(5).tolist(),
                    "auc": round(auc(FRACTIONS, acc), 4), "auc_kept": round(auc(FRACTIONS, agree), 4)}
    return out


# ----------------------------------------------------------------------------- sanity: randomisation

def rankdata(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank."""
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    first = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(v)]
    ranks = np.empty(len(v))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation of two (N, ...) arrays; NaN where a row is constant."""
    ra = np.stack([rankdata(r) for r in a.reshape(len(a), -1)])
    rb = np.stack([rankdata(r) for r in b.reshape(len(b), -1)])
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    return np.divide((ra * rb).sum(1), den, out=np.full(len(a), np.nan), where=den > 0)


def cascade_groups(model: nn.Module, size: int) -> list[tuple[str, list[str]]]:
    """(label, layer names) from the top down: the layers after ``features`` (the classifier), then
    ``features`` stage by stage (consecutive blocks with the same output resolution)."""
    head = [n for n, child in model.named_children() if n != "features" and child.state_dict()]
    stages: list[list[str]] = []
    sides = block_sides(model, size)
    for name, hw in sides.items():
        if not stages or sides[stages[-1][-1]] != hw:
            stages.append([])
        stages[-1].append(name)
    label = [f"features.{g[0].split('.')[1]}–{g[-1].split('.')[1]} ({sides[g[0]][0]}×{sides[g[0]][1]})"
             if len(g) > 1 else g[0] for g in stages]
    return [(", ".join(head), head)] + list(zip(label, stages))[::-1]


def randomised(model: nn.Module, fresh: nn.Module, prefixes: list[str], blank: nn.Module) -> nn.Module:
    """``blank`` (the same architecture) holding ``model``'s tensors, but ``fresh``'s (re-initialised)
    under ``prefixes``."""
    old, new = model.state_dict(), fresh.state_dict()
    blank.load_state_dict({k: new[k] if any(k.startswith(p + ".") for p in prefixes) else v for k, v in old.items()})
    return blank.eval()


def summary(values: np.ndarray) -> dict:
    ok = values[np.isfinite(values)]
    if not len(ok):
        return {"mean": None, "median": None, "q25": None, "q75": None, "undefined": int(len(values))}
    q25, med, q75 = np.percentile(ok, [25, 50, 75])
    return {"mean": round(float(ok.mean()), 4), "median": round(float(med), 4), "q25": round(float(q25), 4),
            "q75": round(float(q75), 4), "undefined": int(len(values) - len(ok))}


def randomisation_test(subject: Subject, crops, labels, fine_layer: str, seed: int) -> list[dict]:
    """Spearman correlation of the trained network's maps (its predicted class) with those of
    copies whose layers are re-initialised from the top down, cumulatively."""
    trained = analyse(subject, crops, fine_layer)
    pred = trained["pred"]
    ref_cam, ref_fine = pick(trained["cam"], pred), trained["fine"]
    fresh = subject.fresh(seed)
    rows, names = [], []
    for label, group in cascade_groups(subject.model, subject.pp.input_size):
        names += group
        blank = randomised(subject.model, fresh, names, subject.fresh(seed + 1))
        probe = Subject(subject.name, subject.path, blank, subject.pp, subject.meta)
        got = analyse(probe, crops, gates=False)
        cam = pick(got["cam"], pred)
        fine = gradcam_autograd_batched(probe.model, crops, probe.pp, fine_layer, pred)
        rows.append({"reinitialised": list(names), "down_to": label,
                     "accuracy": round(float((got["pred"] == labels).mean()), 4),
                     "spearman_cam": summary(spearman(ref_cam, cam)),
                     "spearman_fine": summary(spearman(ref_fine, fine))})
        print(f"  randomised down to {label:<24} rho(cam) {rows[-1]['spearman_cam']['mean']}, "
              f"rho(fine) {rows[-1]['spearman_fine']['mean']}", flush=True)
    return rows


def gradcam_autograd_batched(model, crops, pp, layer_name: str, classes: np.ndarray, batch: int = 64) -> np.ndarray:
    layer = dict(model.named_modules())[layer_name]
    return np.concatenate([gradcam_autograd(model, x, layer, torch.from_numpy(classes[i:i + len(x)])).numpy()
                           for i, x in batches(crops, pp, batch)])


# ----------------------------------------------------------------------------- cost

def interleaved(calls: dict, reps: int, warmup: int = 3) -> dict[str, np.ndarray]:
    """Seconds per call of each callable, the callables taking turns (order reversed every other
    round) so that load from other processes falls on all alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    keys = list(calls)
    times = {k: [] for k in keys}
    for r in range(reps):
        for k in keys if r % 2 == 0 else keys[::-1]:
            t = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t)
    return {k: np.array(v) for k, v in times.items()}


def cost_calls(subject: Subject, x: torch.Tensor, fine_layer: str, plain_onnx: Path, explain_onnx: Path) -> dict:
    """{(runtime, variant): call} for one input batch; ONNX Runtime returns every output of its graph."""
    model, net = subject.model, ExplainedNet(subject.model).eval()
    layer = dict(model.named_modules())[fine_layer]
    feed = {"input": x.numpy()}
    plain_s, explain_s = ort_session(plain_onnx, 1), ort_session(explain_onnx, 1)

    def inference(f):
        def call():
            with torch.inference_mode():
                f(x)
        return call
    return {("torch", "plain"): inference(model), ("torch", "in-graph Grad-CAM"): inference(net),
            ("torch", "autograd Grad-CAM"): lambda: gradcam_autograd(model, x, layer),
            ("onnxruntime", "plain"): lambda: plain_s.run(None, feed),
            ("onnxruntime", "in-graph Grad-CAM"): lambda: explain_s.run(None, feed)}


def cost_test(subject: Subject, crops, fine_layer: str, plain: Path, explain: Path, reps: int) -> dict:
    """Time per face of plain and explaining runs at batch 1 and 16, 1 thread, interleaved; ``plain``
    and ``explain`` are the model's ONNX exports without and with the map."""
    load = [os.getloadavg()]
    rows = []
    with torch_threads(1):
        for b in (1, 16):
            x = torch.from_numpy(subject.pp(crops[np.arange(b) % len(crops)]))
            calls = cost_calls(subject, x, fine_layer, plain, explain)
            times = interleaved(calls, reps if b == 1 else max(3, reps // 5), warmup=min(3, reps))
            for (runtime, variant), t in times.items():
                base = times[(runtime, "plain")]
                rows.append({"runtime": runtime, "variant": variant, "batch": b,
                             "ms_per_face": round(float(np.median(t)) * 1e3 / b, 4),
                             "ratio": round(float(np.median(t) / np.median(base)), 4),
                             "paired_ratio": round(float(np.median(t / base)), 4),
                             "fastest_ratio": round(float(t.min() / base.min()), 4), "calls": len(t)})
    load.append(os.getloadavg())
    return {"rows": rows, "loadavg": [[round(v, 2) for v in la] for la in load],
            "onnx_parity": onnx_parity(subject, explain, crops[:16])}


def onnx_parity(subject: Subject, explain_onnx: Path, crops) -> float:
    """Largest |ONNX cam - torch cam| over ``crops``, relative to the largest torch cam value."""
    x = torch.from_numpy(subject.pp(crops))
    cam_ort = ort_session(explain_onnx, 1).run(["cam"], {"input": x.numpy()})[0]
    with torch.inference_mode():
        cam = ExplainedNet(subject.model).eval()(x)[1].numpy()
    return float(np.abs(cam_ort - cam).max() / max(float(cam.max()), 1e-12))


# ----------------------------------------------------------------------------- figures

def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


PANEL_PX, GAP_PX, BAND_PX = 96, 6, 30      # a panel's side, the space between panels, a title band


def panel(face=None, heat=None, vrange=(0.0, 1.0), smooth=True, title=None) -> np.ndarray:
    """One (PANEL_PX, PANEL_PX, 3) image: a grey face, a heat map over it (or alone), or white; the
    map resized like the API's (cv2.INTER_LINEAR), or cell by cell when not ``smooth``."""
    import cv2
    from matplotlib import colormaps

    side = (PANEL_PX, PANEL_PX)
    out = np.ones((*side, 3), np.float32)
    if face is not None and np.isfinite(face).all():
        out[:] = cv2.resize(np.float32(face) / 255, side, interpolation=cv2.INTER_LINEAR)[..., None]
    if heat is not None and np.isfinite(heat).all():
        h = cv2.resize(np.float32(heat), side, interpolation=cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST)
        lo, hi = vrange
        colour = colormaps["jet"](np.clip((h - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]
        out = colour if face is None else 0.5 * out + 0.5 * colour
    return out


def grid_figure(path: Path, title: str, rows: list[tuple[str, list[dict]]], col_titles=None) -> None:
    """Rows of panels (``panel``'s keyword arguments, ``title`` above the panel), a label left of
    each row: one image, so that a grid of a hundred panels draws in a moment."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol, step = max(len(cells) for _, cells in rows), PANEL_PX + GAP_PX
    canvas = np.ones((len(rows) * (step + BAND_PX), ncol * step, 3), np.float32)
    fig = plt.figure(figsize=(canvas.shape[1] / 100 + 1.6, canvas.shape[0] / 100 + 0.4), dpi=100)
    ax = fig.add_axes((1.6 / (canvas.shape[1] / 100 + 1.6), 0, 1 - 1.6 / (canvas.shape[1] / 100 + 1.6), 0.97))
    for r, (label, cells) in enumerate(rows):
        y = r * (step + BAND_PX) + BAND_PX
        for c, cell in enumerate(cells):
            canvas[y:y + PANEL_PX, c * step:c * step + PANEL_PX] = panel(**cell)
            heading = cell.get("title") or (col_titles[c] if r == 0 and col_titles else None)
            if heading:
                ax.text(c * step + PANEL_PX / 2, y - 3, heading, ha="center", va="bottom", fontsize=7)
        ax.text(-6, y + PANEL_PX / 2, label, ha="right", va="center", fontsize=7)
    ax.imshow(canvas, interpolation="none")
    ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def row_range(maps: np.ndarray) -> tuple[float, float]:
    finite = maps[np.isfinite(maps)]
    return (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)


def class_rows(label: str, maps: np.ndarray, faces: np.ndarray | None, smooth=True) -> tuple[str, list[dict]]:
    """One figure row: each class's map, over its mean face when ``faces`` is given; colour scale
    from the row's min to its max (printed in the label)."""
    lo, hi = row_range(maps)
    cells = [dict(face=None if faces is None else faces[k], heat=maps[k], vrange=(lo, hi), smooth=smooth)
             for k in range(len(maps))]
    return f"{label}\n[{lo:.2f} … {hi:.2f}]", cells


def gate_rows(prefix: str, gates: dict[str, np.ndarray], labels: np.ndarray, k: int, kinds: dict) -> list:
    rows = []
    for name, g in gates.items():
        means, _ = class_means(g, labels, k)
        means = np.concatenate([means, g.mean(0, keepdims=True)])
        rows.append(class_rows(f"{prefix}{name.removesuffix('.block.2')} {kinds[name]} "
                               f"{g.shape[1]}×{g.shape[2]}", means, None, smooth=False))
    return rows


def examples_figure(path: Path, crops, labels, res: dict, names: list[str], fine_label: str) -> None:
    """Per class, the first right and the first wrong prediction among the faces, with both maps."""
    prob = torch.softmax(torch.from_numpy(res["logits"]), 1).numpy()
    pred = res["pred"]
    cam, fine = unit_max(pick(res["cam"], pred)), unit_max(res["fine"])
    rows = []
    for right in (True, False):
        first = [np.flatnonzero((labels == k) & ((pred == k) == right))[:1] for k in range(len(names))]
        for kind, maps in (("in-graph", cam), (fine_label, fine)):
            cells = [dict(face=crops[i[0], ..., 0], heat=maps[i[0]],
                          title=f"{names[k]} →\n{names[pred[i[0]]]} {prob[i[0], pred[i[0]]]:.0%}") if len(i)
                     else dict(title=f"{names[k]}: none") for k, i in enumerate(first)]
            rows.append((f"{'right' if right else 'wrong'}\n{kind}", cells))
    grid_figure(path, "Examples: true → predicted (probability), map of the predicted class, each scaled "
                "to its own max", rows)


def deletion_figure(path: Path, curves: dict, n: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, c in curves.items():
        x = 100 * np.asarray(FRACTIONS)
        axes[0].plot(x, 100 * np.asarray(c["accuracy"]), marker=".", label=f"{key} (AUC {c['auc']:.3f})")
        axes[1].plot(x, 100 * np.asarray(c["kept"]), marker=".", label=f"{key} (AUC {c['auc_kept']:.3f})")
    for ax, what in zip(axes, ("accuracy %", "prediction unchanged %")):
        ax.set_xlabel("pixels greyed out, most salient first (%)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Deletion test, {n} FERPlus validation faces", fontsize=9)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- report

def fmt(v, spec=".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def maps_section(r: dict, png: dict) -> list[str]:
    names, m = r["class_names"], r["maps"]
    lines = ["## 1. Where the shipped model looks", "",
             f"{r['n_faces']} FERPlus validation faces; single-pass accuracy {r['accuracy']:.2%} "
             "(no flip TTA, no prior; the Recognizer averages a mirrored pass by default). Each face's map is "
             "divided by its own max, then averaged. *By true class*: the map of the face's true class; "
             "*by predicted class*: the map of the predicted class, grouped by prediction. Rows 2-4 are drawn "
             "over the mean face of the same group; each row has its own colour scale (printed left).", "",
             f"![mean maps per class]({png['maps']})", "",
             "Share of each class's mean map in the upper half of the crop (eyes, brows) and in its "
             f"outer {m['border_px']}-pixel frame (of {m['crop']} px: background, hair, chin):", "",
             *table(["class", "faces (true / predicted)", "upper half, in-graph by true", "by predicted",
                     f"{m['fine_label']} by predicted", "frame, in-graph by predicted", f"frame, {m['fine_label']}"],
                    [[name, f"{m['n_true'][k]} / {m['n_pred'][k]}", fmt(m["true"]["upper_half"][k], ".0%"),
                      fmt(m["pred"]["upper_half"][k], ".0%"), fmt(m["fine"]["upper_half"][k], ".0%"),
                      fmt(m["pred"]["border"][k], ".0%"), fmt(m["fine"]["border"][k], ".0%")]
                     for k, name in enumerate(names)], "llrrrrr")]
    lines += ["", "A uniform map would put 50 % in the upper half and "
              f"{m['uniform_border']:.0%} in the frame.", ""]
    return lines + gates_section(r, png) + runs_section(r, png) + [
        "### Examples", "", f"![right and wrong predictions]({png['examples']})", ""]


def gates_section(r: dict, png: dict) -> list[str]:
    lines = ["### The attention gates", "",
             "Each CA/CPSCA block's height gate times its width gate, averaged over channels (what the block "
             "multiplies its input by), mean per true class and over all faces (last column); nearest-neighbour "
             "display at the block's own resolution, colour scale per row.", "",
             f"![attention gates per class]({png['gates']})", "",
             *table(["block", "pooling", "resolution", "mean gate", "spatial range of the all-faces mean",
                     f"largest deviation of a class mean from it (classes with ≥ {MIN_FACES} faces)"],
                    [[g["block"], g["pooling"], g["resolution"], f"{g['mean']:.3f}",
                      f"{g['spatial_min']:.3f} … {g['spatial_max']:.3f}", fmt(g["class_deviation"])] for g in r["gates"]],
                    "lllrrr")]
    spread = max(g["spatial_max"] / g["spatial_min"] - 1 for g in r["gates"])
    deviation = max((g["class_deviation"] for g in r["gates"] if g["class_deviation"] is not None), default=None)
    level = float(np.mean([g["mean"] for g in r["gates"]]))
    return lines + ["", f"Averaged over channels the gates are nearly flat: across positions a block's all-faces "
                    f"mean varies by at most {spread:.0%} (max over min), and a class's mean departs from it by at "
                    f"most {fmt(deviation)}, against gate values around {level:.2f}. So the channel-averaged gate "
                    "shows little spatial or class structure; single channels' gates may differ more (not shown).",
                    ""]


def runs_section(r: dict, png: dict) -> list[str]:
    lines = ["### Table 5's CA and CPSCA runs", ""]
    if r["runs"]:
        lines += [f"Checkpoints: {', '.join(f'`{n}` ({p})' for n, p in r['runs'].items())}. Their own input size "
                  "(the budget protocol's is 48 px, so their last map is coarser).", "",
                  f"![Table 5 runs]({png['runs']})", ""]
        return lines
    shared = "; ".join(f"`{s['path']}` ({s['model']}, {s['input_size']} px"
                       f"{', the same weights as the shipped model' if s['same_as_shipped'] else ''})"
                       for s in r["shared_runs"]) or "nothing"
    expected = ", ".join(f"`{p}`" for p in r["runs_missing"].values()) or "no run (no Table 5 results file)"
    example = " ".join(f"{k}={p}" for k, p in r["runs_missing"].items())
    return lines + [
        "**No CA or CPSCA checkpoint of Table 5 exists on this machine**, so this figure covers the shipped "
        f"model only. `results/table5_ferplus_budget.json` names {expected}; none is present here. "
        f"The shared runs folder holds {shared}: not a Table 5 row.", "",
        "To add them: train the runs (about 17 min each on this 2-core machine), then rerun this benchmark "
        "from the same folder; it finds them through the Table 5 results file, or name them with `--runs`:", "",
        "```bash", REPRODUCE, f"python benchmarks/attention_maps.py --data {r['data']} --runs {example}", "```", ""]


def deletion_section(r: dict, png: dict) -> list[str]:
    d = r["deletion"]
    gc, rnd = d["curves"]["Grad-CAM in-graph"], d["curves"]["random"]
    verdict = ("falls faster than random" if gc["auc"] < rnd["auc"] else "does NOT fall faster than random")
    lines = ["## 2. Faithfulness: the deletion test", "",
             f"{d['n']} validation faces (seeded random sample, seed {d['seed']}); in each, the given share of the "
             f"{r['input_size']}×{r['input_size']} model input's pixels, most salient first, set to mid-grey "
             f"({d['grey']:.3f}, the average of the preprocessing means) and the face re-classified by ONNX Runtime "
             "(the plain export). Saliency: the predicted class's map, upsampled bilinearly; ties in random "
             "order. AUC = area under the curve over 0-100 % deleted, divided by 100 % (lower = the map finds "
             "what the decision rests on sooner).", "",
             f"![deletion curves]({png['deletion']})", "",
             *table(["order", "AUC accuracy", "AUC prediction unchanged", *(f"{f:.0%}" for f in FRACTIONS)],
                    [[key, f"{c['auc']:.3f}", f"{c['auc_kept']:.3f}", *(f"{v:.1%}" for v in c["accuracy"])]
                     for key, c in d["curves"].items()], "l" + "r" * (2 + len(FRACTIONS)))]
    centre = d["curves"]["centre-out"]["auc"]
    return lines + ["", f"**The in-graph Grad-CAM curve {verdict}**: AUC {gc['auc']:.3f} vs {rnd['auc']:.3f} "
                    f"(centre-out {centre:.3f}, {r['fine_label']} {d['curves'][r['fine_label']]['auc']:.3f}). "
                    "Random deletes scattered pixels, which a network may shrug off more easily than a region; "
                    "centre-out deletes a growing disc, the contiguous baseline: Grad-CAM's AUC is "
                    f"{'below' if gc['auc'] < centre else 'not below'} it. At 100 % every input is the same grey "
                    f"square, which the model calls *{d['grey_label']}*: every curve ends at that class's share of "
                    f"the faces ({gc['accuracy'][-1]:.1%}).", ""]


def _rho(c: dict) -> str:
    return f"{fmt(c['mean'])} ({fmt(c['median'])}, {fmt(c['q25'])}…{fmt(c['q75'])})"


def sanity_section(r: dict) -> list[str]:
    s = r["sanity"]
    lines = ["## 3. Sanity: model randomisation", "",
             f"{s['n']} validation faces. The trained network's map of its predicted class against the map of the "
             "same class from copies whose weights are re-initialised (the architecture's own initialisation, "
             f"seed {s['seed']}), cumulatively from the classifier down to the first block, one resolution "
             "stage at a time; Spearman rank correlation over the map's cells, per face (the in-graph map has "
             f"{r['cam_cells']} cells, "
             f"{r['fine_label']} {r['fine_cells']}); *undefined*: faces where either map is constant (all zero).", "",
             *table(["re-initialised down to", "accuracy", "ρ in-graph mean (median, IQR)", "undefined",
                     f"ρ {r['fine_label']} mean (median, IQR)", "undefined"],
                    [[row["down_to"], f"{row['accuracy']:.1%}", _rho(row["spearman_cam"]), row["spearman_cam"]["undefined"],
                      _rho(row["spearman_fine"]), row["spearman_fine"]["undefined"]] for row in s["rows"]], "lrrrrr")]
    full = s["rows"][-1]
    rho = [full[k]["mean"] for k in ("spearman_cam", "spearman_fine")]
    unrelated = all(v is not None and abs(v) < SANITY_RHO for v in rho)
    verdict = ("essentially unrelated to the trained network's: the maps depend on what the network learnt, "
               "not on the architecture and the input alone" if unrelated else
               "still correlated with the trained network's: part of what the maps show comes from the "
               "architecture and the input rather than from training")
    return lines + ["", f"With every layer re-initialised the mean correlation is {fmt(rho[0])} (in-graph) and "
                    f"{fmt(rho[1])} ({r['fine_label']}; 0 = unrelated ranks, 1 = the same order). Taking "
                    f"|ρ| < {SANITY_RHO} as unrelated, the randomised network's maps are {verdict}.", ""]


def cost_section(r: dict) -> list[str]:
    c = r["cost"]
    lines = ["## 4. Cost", "",
             f"Time per face at {r['input_size']} px, 1 thread, model only (no detection or preprocessing); "
             "the variants of one runtime and batch take turns call by call (order reversed every other round). "
             "*ms / face*: median over the calls; *ratio*: the variant's median over plain's; *paired*: the median "
             "of the ratios of neighbouring calls; *fastest*: the ratio of the fastest calls. On a shared machine "
             "a call that loses the CPU takes far longer, and two medians can land on different sides of that "
             "split; neighbouring calls share the machine's state, so *extra* and the target are judged on "
             "*paired*. "
             f"ONNX Runtime: `litefer export` graphs (plain: output logits; explain: logits and cam, both read). "
             f"Load average (1/5/15 min) at start {c['loadavg'][0]}, at end {c['loadavg'][1]}. ONNX cam vs torch "
             f"cam: max difference {c['onnx_parity']:.1e} of the largest value.", "",
             *table(["runtime", "variant", "batch", "ms / face", "ratio", "paired", "fastest", "extra (paired)",
                     "target ≤ 25 %", "calls"], [_cost_row(row) for row in c["rows"]], "llrrrrrrlr")]
    return lines + [""]


def _cost_row(row: dict) -> list:
    extra = row["paired_ratio"] - 1
    target = "–" if row["variant"] == "plain" else ("met" if extra <= 0.25 else "missed")
    if row["variant"].startswith("autograd"):
        target = "(not a target)"
    return [row["runtime"], row["variant"], row["batch"], f"{row['ms_per_face']:.3f}", f"{row['ratio']:.3f}",
            f"{row['paired_ratio']:.3f}", f"{row['fastest_ratio']:.3f}", f"{extra:+.1%}", target, row["calls"]]


def resolution_section(r: dict) -> list[str]:
    cost = {(x["runtime"], x["variant"], x["batch"]): x for x in r["cost"]["rows"]}
    fine = cost[("torch", "autograd Grad-CAM", 1)]
    graph = cost[("torch", "in-graph Grad-CAM", 1)]
    ort = cost[("onnxruntime", "in-graph Grad-CAM", 1)]
    d = r["deletion"]["curves"]
    h, w = r["cam_resolution"]
    fh, fw = r["fine_resolution"]
    s = r["input_size"]
    crop = r["maps"]["crop"]
    return ["## 5. Resolution", "",
            f"- **In-graph Grad-CAM** (`ExplainedNet`, every interface): the last feature map, {h}×{w} at {s} px; "
            f"one cell covers {s / h:.0f}×{s / w:.0f} input pixels ({crop / h:.0f} px of the {crop} px crop). "
            f"It costs {graph['paired_ratio'] - 1:+.1%} over plain in torch and {ort['paired_ratio'] - 1:+.1%} in "
            "ONNX Runtime "
            "(batch 1), runs wherever the model runs (ONNX, the page), and gives every class's map at once. "
            f"It tells which of {h * w} regions of the face the decision rests on (eyes, mouth, a cheek), "
            "not which feature within one.",
            f"- **Autograd Grad-CAM at {r['fine_layer']}** (the last stride-16 block, torch only): {fh}×{fw}, "
            f"cells of {s / fh:.0f}×{s / fw:.0f} input px ({crop / fh:.1f} px of the crop); one class per backward "
            f"pass; {fine['paired_ratio']:.2f}× the plain forward's time in torch at batch 1 "
            f"({fine['ms_per_face']:.2f} vs {cost[('torch', 'plain', 1)]['ms_per_face']:.2f} ms). Deletion AUC "
            f"{d[r['fine_label']]['auc']:.3f} vs the in-graph map's {d['Grad-CAM in-graph']['auc']:.3f}: "
            + ("lower, so by this test the finer map finds the pixels the decision rests on sooner; it is worth its "
               "cost where a finer picture matters and torch runs (research), not in ONNX Runtime or the page."
               if d[r['fine_label']]['auc'] < d['Grad-CAM in-graph']['auc'] else
               "not lower, so by this test the finer map is not worth its cost."),
            f"- **Attention gates**: {', '.join(sorted(set(g['resolution'] for g in r['gates'])))} at {s} px, "
            "the blocks' own resolution; `attention_gates` reads them with forward hooks in one forward pass of "
            "its own (torch only, not part of the ONNX graph). They show where each block amplifies its input, "
            "summed over channels, not the evidence for a class.",
            ""]


def report(r: dict, png: dict) -> str:
    head = [*header("Explain: where the shipped model looks, faithfulness, sanity and cost", r["command"]),
            f"Weights: `{r['weights']}` ({r['model']}, {r['input_size']} px). Data: FERPlus validation "
            f"(`{r['data']}`, PublicTest rows with a majority label). Wall time {r['seconds']:.0f} s.", ""]
    return "\n".join(head + maps_section(r, png) + deletion_section(r, png) + sanity_section(r)
                     + cost_section(r) + resolution_section(r))


# ----------------------------------------------------------------------------- main

def figure_maps(res: dict, crops, labels, names, fine_label: str) -> tuple[dict, list]:
    """Mean maps per class and their figure rows."""
    k = len(names)
    pred = res["pred"]
    faces_true, n_true = class_means(crops[..., 0].astype(np.float32), labels, k)
    faces_pred, n_pred = class_means(crops[..., 0].astype(np.float32), pred, k)
    true_m, _ = class_means(unit_max(pick(res["cam"], labels)), labels, k)
    pred_m, _ = class_means(unit_max(pick(res["cam"], pred)), pred, k)
    fine_m, _ = class_means(unit_max(res["fine"]), pred, k)
    side, border = crops.shape[1], max(1, crops.shape[1] // 8)
    stats = {"n_true": n_true.tolist(), "n_pred": n_pred.tolist(), "crop": side, "border_px": border,
             "uniform_border": 1 - ((side - 2 * border) / side) ** 2, "fine_label": fine_label,
             "true": region_shares(true_m, side, border), "pred": region_shares(pred_m, side, border),
             "fine": region_shares(fine_m, side, border),
             "mean_maps": {"true": true_m.tolist(), "pred": pred_m.tolist(), "fine": fine_m.tolist()}}
    rows = [("mean face\n(true class)", [dict(face=faces_true[c]) for c in range(k)]),
            class_rows("in-graph Grad-CAM\nby true class", true_m, faces_true),
            class_rows("in-graph Grad-CAM\nby predicted class", pred_m, faces_pred),
            class_rows(f"{fine_label}\nby predicted class", fine_m, faces_pred)]
    return stats, rows


def gate_stats(gates: dict, labels, k: int, kinds: dict) -> list[dict]:
    """Per block: mean gate, the range over positions of its all-faces mean, and the largest
    difference between a class's mean and the all-faces mean (classes with MIN_FACES faces or more)."""
    out = []
    for name, g in gates.items():
        means, counts = class_means(g, labels, k)
        overall = g.mean(0)
        big = counts >= MIN_FACES
        out.append({"block": name.removesuffix(".block.2"), "pooling": kinds[name],
                    "resolution": f"{g.shape[1]}×{g.shape[2]}", "mean": float(g.mean()),
                    "spatial_min": float(overall.min()), "spatial_max": float(overall.max()),
                    "class_deviation": float(np.abs(means[big] - overall).max()) if big.any() else None,
                    "class_means": means.tolist()})
    return out


def run_subjects(runs: dict[str, Path], crops, labels, out: Path, names: list[str]) -> str | None:
    """The figure of the Table 5 runs: per run, its Grad-CAM by true class and its gates."""
    if not runs:
        return None
    rows = []
    for name, path in runs.items():
        s = load_subject(name, path)
        res = analyse(s, crops)
        true_m, _ = class_means(unit_max(pick(res["cam"], labels)), labels, len(names))
        acc = float((res["pred"] == labels).mean())
        rows.append(class_rows(f"{name} ({acc:.1%})\nGrad-CAM by true class", true_m, None))
        rows += gate_rows(f"{name}: ", res["gates"], labels, len(names), gate_kinds(s.model))
    path = Path(f"{out}_runs.png")
    grid_figure(path, "Table 5 runs: mean in-graph Grad-CAM and attention gates per true class", rows,
                [*names, "all"])
    return path.name


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/fer2013", help="FERPlus root (fer2013.csv[.gz] + fer2013new.csv)")
    p.add_argument("--weights", default="default", help="weights to explain (default: the packaged model)")
    p.add_argument("--runs", nargs="*", type=parse_run, default=[], metavar="NAME=PATH",
                   help="Table 5 checkpoints to add to the figure (default: those results/table5_ferplus_budget.json "
                        "names, where they exist)")
    p.add_argument("--table5", default="results/table5_ferplus_budget.json")
    p.add_argument("--shared-runs", default="../shared/runs")
    p.add_argument("--faces", type=int, default=None, help="validation faces for the figure (default: all)")
    p.add_argument("--deletion-faces", type=int, default=1000)
    p.add_argument("--sanity-faces", type=int, default=200)
    p.add_argument("--cost-reps", type=int, default=300, help="timed calls per variant at batch 1 (a fifth at 16)")
    p.add_argument("--threads", type=int, default=1, help="threads for everything but the cost test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/explain", help="output path without suffix")
    return p.parse_args(argv)


def finite(obj):
    """``obj`` with NaN and infinite floats as None (JSON has no NaN), the others to 6 significant digits."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else None
    return obj


def sample(n_all: int, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= n_all:
        return np.arange(n_all)
    return np.sort(np.random.default_rng(seed).choice(n_all, n, replace=False))


def shipped_figures(subject: Subject, crops, labels, res: dict, out: Path, fine_label: str) -> tuple[dict, dict]:
    """The mean-map, gate and example figures of the shipped model: (map statistics, figure names)."""
    names = subject.class_names
    maps, map_rows = figure_maps(res, crops, labels, names, fine_label)
    png = {key: f"{out.name}_{key}.png" for key in ("maps", "gates", "examples", "deletion")}
    grid_figure(out.parent / png["maps"], "Mean Grad-CAM per class, each face's map scaled to its max", map_rows, names)
    grid_figure(out.parent / png["gates"], "Mean attention gates (height × width gate, mean over channels) per true "
                "class", gate_rows("", res["gates"], labels, len(names), gate_kinds(subject.model)), [*names, "all"])
    examples_figure(out.parent / png["examples"], crops, labels, res, names, fine_label)
    return maps, png


def measurements(subject: Subject, crops, labels, res: dict, args, fine_layer: str, fine_label: str,
                 figure: Path) -> dict:
    """Deletion (drawn to ``figure``), randomisation and cost tests."""
    size, chans = subject.pp.input_size, getattr(subject.model, "in_chans", 3)
    di = sample(len(crops), args.deletion_faces, args.seed + 1)
    si = sample(len(crops), args.sanity_faces, args.seed + 2)
    with tempfile.TemporaryDirectory(prefix="litefer-explain-") as tmp:
        plain = export_onnx(subject.model, Path(tmp) / "plain.onnx", size, chans)
        explain = export_onnx(subject.model, Path(tmp) / "explain.onnx", size, chans, explain=True)
        classify = ort_classifier(ort_session(plain, args.threads))
        print("deletion test ...", flush=True)
        curves = deletion_test(classify, subject, crops[di], labels[di],
                               {"Grad-CAM in-graph": pick(res["cam"], res["pred"])[di], fine_label: res["fine"][di]},
                               args.seed)
        deletion_figure(figure, curves, len(di))
        grey = np.broadcast_to(grey_fill(subject.pp, chans).reshape(1, -1, 1, 1), (1, chans, size, size))
        deletion = {"n": len(di), "seed": args.seed + 1, "fractions": list(FRACTIONS),
                    "grey": sum(subject.pp.mean) / len(subject.pp.mean), "curves": curves,
                    "grey_label": subject.class_names[int(classify(np.ascontiguousarray(grey))[0])]}
        print("randomisation test ...", flush=True)
        sanity = {"n": len(si), "seed": args.seed,
                  "rows": randomisation_test(subject, crops[si], labels[si], fine_layer, args.seed)}
        print("cost ...", flush=True)
        cost = cost_test(subject, crops, fine_layer, plain, explain, args.cost_reps)
    return {"deletion": deletion, "sanity": sanity, "cost": cost}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start, env = time.time(), environment()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    subject = load_subject("shipped", resolve_weights(args.weights, "torch")[0])
    names, size = subject.class_names, subject.pp.input_size
    crops, labels = ferplus_faces(Path(args.data), "val", CropSpec())
    keep = sample(len(crops), args.faces, args.seed)
    crops, labels = crops[keep], labels[keep]
    fine_layer, fine_res = stride16_layer(subject.model, size)
    fine_label = f"autograd {fine_layer} ({fine_res[0]}×{fine_res[1]})"
    print(f"explaining {len(crops)} faces with {subject.path.name} ...", flush=True)
    res = analyse(subject, crops, fine_layer)
    maps, png = shipped_figures(subject, crops, labels, res, out, fine_label)
    found, missing = table5_runs(Path(args.table5), Path("."))
    runs = dict(args.runs) or found
    png["runs"] = run_subjects(runs, crops, labels, out, names)
    measured = measurements(subject, crops, labels, res, args, fine_layer, fine_label, out.parent / png["deletion"])
    result = {"command": command_line("attention_maps.py", argv), "date": env["date"],
              "machine": hardware_summary(), "torch": env["torch"], "onnxruntime": env["onnxruntime"],
              "weights": str(args.weights), "model": subject.meta["model_name"], "input_size": size,
              "data": args.data, "class_names": names, "n_faces": len(crops),
              "accuracy": float((res["pred"] == labels).mean()),
              "cam_resolution": list(feature_resolution(subject.model, size)), "fine_layer": fine_layer,
              "fine_resolution": list(fine_res), "fine_label": fine_label,
              "cam_cells": int(np.prod(res["cam"].shape[2:])), "fine_cells": int(np.prod(fine_res)),
              "maps": maps, "gates": gate_stats(res["gates"], labels, len(names), gate_kinds(subject.model)),
              "runs": {n: str(p) for n, p in runs.items()},
              "runs_missing": {} if runs else {n: str(p) for n, p in missing.items()},
              "shared_runs": shared_runs(Path(args.shared_runs), subject.model), **measured,
              "seconds": time.time() - start}
    result = finite(result)
    write(out, {**result, "figures": png}, report(result, png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
