"""``litefer finetune`` on JAFFE, split by person: adapt on k of the 10 women, score on the others.

    .venv/bin/python benchmarks/finetune_jaffe.py --data ../shared/data/jaffe --ks 1 2 5 8 --splits 3

For each k and split (seeded draws of k women), the training women's photos are linked into a
temporary ``ROOT/<class>/`` folder outside the repository (JAFFE never enters it), and
:func:`litefer.train.finetune.finetune` adapts the shipped model to them (validation by woman when
k >= 2, stratified for k = 1). The other women's whole photos then go through the full photo
pipeline, ``Recognizer(weights=model.onnx)`` (``--detector``, default auto: YuNet when its model is on
disk, else Haar; FER2013-style crop, flip averaging),
against the shipped model through the same pipeline and a linear probe: multinomial logistic
regression on the shipped model's frozen 640-d embedding of the same training faces. A photo
without a face counts as wrong, and so does the shipped model's ``contempt``. Writes
``results/finetune.md``, ``.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from litefer import Recognizer
from litefer.train.evaluate import predict_embeddings
from litefer.train.finetune import finetune, load_base
from litefer.train.faces_folder import frame_folder
from litefer.inference.detect import create_detector
from litefer.utils import atomic_write_bytes
from results_page import command_line, header, table, write

CLASSES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
           "SU": "surprise"}
GROUP_BY = r"^([A-Z]{2})\."


def photos(root: Path) -> list[tuple[Path, str, str]]:
    """(file, subject, class) for every JAFFE photo."""
    out = []
    for p in sorted(root.glob("*.tiff")):
        subject, code = p.name.split(".")[:2]
        out.append((p, subject, CLASSES[code[:2]]))
    if not out:
        raise SystemExit(f"{root}: no JAFFE .tiff photos")
    return out


def link_folder(items, root: Path) -> Path:
    for p, _, cls in items:
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / p.name).symlink_to(p.resolve())
    return root


def pipeline_accuracy(rec: Recognizer, items) -> dict[str, bool]:
    """file -> right or wrong through the photo pipeline: the largest face's label; no face is wrong."""
    out = {}
    for (p, _, cls), res in zip(items, rec.recognize_many([p for p, _, _ in items])):
        faces = sorted(res.faces, key=lambda f: f.box[2] * f.box[3])
        out[p.name] = bool(faces) and faces[-1].label == cls
    return out


def embed(model, card, folder) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen embedding of each face (mean of the face's and its mirror's) and its label."""
    ds = folder.subset(np.arange(len(folder.labels)), "probe")
    return predict_embeddings(model, ds, card.preprocess, tta_flip=True), ds.labels


def fit_probe(x: torch.Tensor, y: torch.Tensor, k: int, l2: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features (L-BFGS, L2 penalty)."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")
    z = (x - mu) / sd

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda q: ((q - mu) / sd) @ w.detach() + b.detach()


def probe_accuracy(base, card, detector, train_root: Path, test_root: Path, n_test: int) -> float:
    tr = frame_folder(train_root, card, detector)
    te = frame_folder(test_root, card, detector, classes=tr.class_names)
    (x, y), (xt, yt) = embed(base, card, tr), embed(base, card, te)
    predict = fit_probe(x, y, len(tr.class_names))
    right = int((predict(xt).argmax(1) == yt).sum())
    return right / n_test                      # photos without a face (not in te) count as wrong


def one_split(items, women: list[str], base, card, shipped: dict, detector, args) -> dict:
    train = [i for i in items if i[1] in women]
    test = [i for i in items if i[1] not in women]
    with tempfile.TemporaryDirectory(prefix="litefer-ft-jaffe-") as tmp:
        root, test_root = link_folder(train, Path(tmp) / "train"), link_folder(test, Path(tmp) / "test")
        t0 = time.perf_counter()
        report = finetune(root, Path(tmp) / "out", group_by=GROUP_BY if len(women) > 1 else None,
                          overrides=args.set, detector=args.detector, budget=args.budget)
        seconds = time.perf_counter() - t0
        tuned = pipeline_accuracy(Recognizer(weights=Path(tmp) / "out" / "model.onnx", detector=args.detector), test)
        probe = probe_accuracy(base, card, detector, root, test_root, len(test)) if args.probe else None
    return {"women": women, "train_photos": len(train), "test_photos": len(test), "finetune_seconds": round(seconds, 1),
            "val": {k: report["after"][k] for k in ("n", "accuracy", "mean_class_accuracy")},
            "split": report["split"]["how"], "epochs": len([h for h in report["history"] if h["stage"] == "full"]),
            "refit": report.get("refit"), "detector": report["data"]["detector"],
            "estimate": (report.get("estimate") or {}).get("accuracy"),
            "shipped": float(np.mean([shipped[p.name] for p, _, _ in test])),
            "finetuned": float(np.mean([tuned[p.name] for p, _, _ in test])), "probe": probe}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for k in sorted({len(r["women"]) for r in runs}):
        sel = [r for r in runs if len(r["women"]) == k]
        row = {"k": k, "splits": len(sel), "train_photos": float(np.mean([r["train_photos"] for r in sel])),
               "finetune_seconds": float(np.mean([r["finetune_seconds"] for r in sel]))}
        for key in ("shipped", "probe", "finetuned"):
            vals = [r[key] for r in sel if r[key] is not None]
            row[key] = (float(np.mean(vals)), float(np.std(vals))) if vals else None
        rows.append(row)
    return rows


def pct(v) -> str:
    return "-" if v is None else f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"


def markdown(rows, runs, command: str, seconds: float) -> str:
    detector = runs[0]["detector"] if runs else "-"
    summary = [[r["k"], r["splits"], f"{r['train_photos']:.0f}", pct(r["shipped"]), pct(r["probe"]), pct(r["finetuned"]),
                f"{r['finetune_seconds']:.0f}"] for r in rows]
    each = [[" ".join(r["women"]), f"{100 * r['shipped']:.1f}", "-" if r["probe"] is None else f"{100 * r['probe']:.1f}",
             f"{100 * r['finetuned']:.1f}", f"{100 * r['val']['mean_class_accuracy']:.1f} ({r['split']})", r["epochs"],
             f"{r['finetune_seconds']:.0f}"] for r in runs]
    lines = [*header("Fine-tuning on JAFFE, split by person", command), f"Whole benchmark {seconds / 60:.1f} min.", "",
             "Adapt on k of JAFFE's 10 women, score on the other 10 - k women's whole photos through the full "
             f"photo pipeline ({detector} detector, FER2013-style crop, flip averaging; no face or `contempt` counts "
             "as wrong). Mean ± std over the splits (seeded draws of women). Probe: logistic regression on the "
             "shipped model's frozen 640-d embedding of the same training faces. Fine-tune time: framing, "
             "both stages, ONNX export and report, on this CPU.", "",
             *table(["k women", "splits", "training photos", "shipped", "probe", "fine-tuned", "fine-tune time (s)"],
                    summary, "rrrrrrr"),
             "", "![accuracy on other women against k](finetune.png)", "", "## Runs", "",
             *table(["women", "shipped", "probe", "fine-tuned", "val (mean class acc.)", "full epochs", "s"], each,
                    "lrrrrrr")]
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ks = [r["k"] for r in rows]
    for key, label in (("shipped", "shipped model"), ("probe", "frozen-embedding probe"), ("finetuned", "litefer finetune")):
        pts = [(k, r[key]) for k, r in zip(ks, rows) if r[key] is not None]
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts], yerr=[100 * p[1][1] for p in pts],
                        marker="o", capsize=3, label=label)
    ax.set_xlabel("women adapted on (k of 10)")
    ax.set_ylabel("accuracy on the other women (%)")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/jaffe")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 5, 8])
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--no-probe", dest="probe", action="store_false")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    ap.add_argument("--only", type=int, nargs="+", default=None, metavar="I",
                    help="run only these split indices of each k's seeded draws (the draws stay those of a full run)")
    ap.add_argument("--detector", default="auto", help="face detector for framing and scoring (default: auto)")
    ap.add_argument("--budget", default="10m", help="finetune's --budget (default 10m, as users get it; none: no "
                    "limit, for accuracy figures on a machine other work loads)")
    ap.add_argument("--out", default="results/finetune")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    items = photos(Path(args.data))
    women = sorted({s for _, s, _ in items})
    base, _, card, _ = load_base("default")
    detector = create_detector(args.detector)
    shipped = pipeline_accuracy(Recognizer(detector=args.detector), items)
    runs = []
    for k in args.ks:
        rng = np.random.default_rng(k)
        for s in range(args.splits):
            chosen = sorted(rng.choice(women, k, replace=False).tolist())
            if args.only is not None and s not in args.only:
                continue
            runs.append(one_split(items, chosen, base, card, shipped, detector, args))
            print(json.dumps(runs[-1]), flush=True)
    rows = summarise(runs)
    command = command_line("finetune_jaffe.py", argv)
    out = Path(args.out)
    seconds = time.perf_counter() - t0
    plot(rows, out.with_suffix(".png"))
    write(out, {"command": command, "rows": rows, "runs": runs, "seconds": round(seconds, 1)},
          markdown(rows, runs, command, seconds))


if __name__ == "__main__":
    main()
