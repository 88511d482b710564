"""What ``litefer finetune`` leaves in its output folder: ``model.pt`` / ``.onnx`` / ``.json`` (the
card with its provenance) and ``report.md`` / ``.json`` / ``confusion.png``, all built in a hidden
temporary folder inside it and moved in together at the end, so that a failure leaves none of them."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..card import Card, write_json
from ..utils import atomic_write_json, atomic_write_text, sha256_file
from ..weights import weights_payload, write_weights
from .evaluate import plot_confusion

OUTPUTS = ("model.pt", "model.onnx", "model.json", "report.json", "report.md", "confusion.png")


def make_card(base: Card, classes: list[str], train_counts: dict, after: dict, provenance: dict) -> Card:
    """The fine-tuned model's card: the base's preprocessing, crop and TTA, the folder's classes, its
    training class shares as the prior, and provenance in place of the base's own history."""
    total = max(1, sum(train_counts.values()))
    return base.replace(class_names=list(classes), class_prior={c: round(train_counts[c] / total, 6) for c in classes},
                        epoch=None, val_accuracy=after["accuracy"], info=provenance, source="")


def write_outputs(out: Path, model, meta: dict, card: Card, report: dict) -> dict:
    """Every output file, written to a temporary folder inside ``out`` and then moved into ``out``."""
    from ..export.core import export_with_metadata

    check_finite(model)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".finetune-out-", dir=out))
    try:
        payload = weights_payload(model, meta["model_name"], card.class_names, card.preprocess,
                                  meta.get("model_kwargs"), card=card)
        write_weights(tmp / "model.pt", payload)
        export_with_metadata(tmp / "model.pt", tmp / "model.onnx")
        card.info.update(sha256=sha256_file(tmp / "model.pt"), file_bytes=(tmp / "model.pt").stat().st_size)
        write_json(card, tmp / "model.json")
        plot_confusion(report["after"], tmp / "confusion.png", title="validation faces, fine-tuned")
        atomic_write_json(tmp / "report.json", report)
        atomic_write_text(tmp / "report.md", markdown(report))
        for name in OUTPUTS:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: str(out / name) for name in OUTPUTS}


def check_finite(model) -> None:
    """ValueError when a weight or buffer is NaN or infinite: such a model scores every face NaN, and
    the last check before anything is written keeps it from replacing a working one."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise ValueError(f"the fine-tuned model has non-finite weights ({len(bad)} tensor(s), first {bad[0]}): "
                         f"training diverged; nothing was written (lower head.lr or full.lr)")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def estimate_text(e: dict | None) -> str:
    """The grouped k-fold estimate as a sentence (or why there is none)."""
    if not e or not e.get("accuracy"):
        why = (e or {}).get("reason", "not computed")
        return f"No grouped k-fold estimate: {why}. The validation figures above are all there is."
    pm = lambda d: f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f} %"  # noqa: E731
    return (f"Grouped {e['folds']}-fold estimate of accuracy on people the model has not seen: "
            f"**{pm(e['accuracy'])}** (mean class accuracy {pm(e['mean_class_accuracy'])}; ± is the spread "
            f"between folds), against the base model's {pm(e['shipped_accuracy'])} on the same faces. Each fold "
            f"trains the same recipe, for the chosen epochs, on the other people only. It may err either way: "
            f"the epochs were chosen on a split that shares people with the folds (optimistic), and each fold "
            f"learns from fewer people than the saved model (pessimistic: on two JAFFE splits it came out 10 to "
            f"15 points below the accuracy then measured on the held-out women, results/finetune_candidates.md).")


def markdown(r: dict) -> str:
    """The report as Markdown: figures before/after, per-class recall, data, skipped files, time."""
    b, a = r["before"], r["after"]
    lines = [f"# Fine-tuning report: {r['root']}", "", f"Command: `{r['command']}`", "",
             f"Base weights: `{r['base_weights']}`; hardware: {r['hardware']}; wall time {r['wall_seconds']:.0f} s.", ""]
    if r["split"].get("warning"):
        lines += [f"**Warning:** {r['split']['warning']}.", ""]
    lines += [f"Validation: {r['split']['how']}" + (f" (groups {', '.join(r['split']['val_groups'])})"
                                                     if r["split"].get("val_groups") else "") + f", {a['n']} faces.", "",
              "| on the validation faces | before (base model) | after (fine-tuned) |", "|---|---:|---:|",
              f"| accuracy | {_pct(b['accuracy'])} | {_pct(a['accuracy'])} |",
              f"| mean class accuracy | {_pct(b['mean_class_accuracy'])} | {_pct(a['mean_class_accuracy'])} |"]
    for rb, ra in zip(b["per_class"], a["per_class"]):
        lines.append(f"| recall {ra['class']} ({ra['support']}) | {_pct(rb['recall'])} | {_pct(ra['recall'])} |")
    lines += ["", "Before: the base model's outputs for these classes only (a class it lacks is never predicted)."]
    if r.get("refit"):
        lines += ["", f"These figures are the selection run's, on faces it did not train on. The saved model was then "
                  f"trained again the same way on all {r['refit']['faces']} faces (training and validation) for the "
                  f"chosen {r['refit']['head_epochs']} head and {r['refit']['full_epochs']} whole-network epochs."]
    lines += ["", "## On new people", "", estimate_text(r.get("estimate"))]
    budget = r.get("budget") or {}
    planned, wanted = budget.get("planned_whole_network_epochs"), r["recipe"]["full"]["epochs"]
    if planned is not None and planned < wanted:
        lines += ["", f"The time budget ({budget['seconds']:.0f} s) fitted {planned} of the recipe's {wanted} "
                  "whole-network epochs (the schedule planned to end there, the refit's too)."]
    if budget.get("stopped_whole_network_at") is not None:
        lines += ["", f"The time budget ({budget['seconds']:.0f} s) stopped the whole-network stage after "
                  f"{budget['stopped_whole_network_at']} epochs, to leave time for the refit."]
    lines += [
              "", "![confusion matrix](confusion.png)", "", "## Data", "",
              "| class | train | val |", "|---|---:|---:|"]
    for c in a["class_names"]:
        lines.append(f"| {c} | {r['data']['train_counts'][c]} | {r['data']['val_counts'][c]} |")
    lines += ["", f"Faces framed from photos: {r['data']['decisions']['photo']}; used as crops: "
              f"{r['data']['decisions']['crop']} (--faces {r['data']['faces']}; face detector: {r['data']['detector']}).", ""]
    skipped = r["data"]["skipped"]
    lines += [f"Skipped files: {len(skipped)}", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped[:200]]
    duplicates = r["data"].get("duplicates") or []
    lines += ["", f"Sets of identical images (same bytes): {len(duplicates)}", ""]
    lines += [f"- {' = '.join(f'`{f}`' for f in d['files'])} (class(es) {', '.join(d['classes'])}): {d['action']}"
              for d in duplicates[:200]]
    lines += ["", f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]
    return "\n".join(lines)
