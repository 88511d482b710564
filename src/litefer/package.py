"""``litefer package RUN_DIR``: turn a finished run into shippable weights and a model card.

The weights file holds only the fp32 state dict and what is needed to use it (model name, class
order, preprocessing); the card (JSON, and embedded in the weights) says what data, labels, recipe,
hardware and command produced it and what it measured on the validation split.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from .utils import atomic_torch_save, atomic_write_json, sha256_file
from .weights import load_checkpoint_model, read_weights, weights_payload

PIPELINE_TEXT = {
    "ferplus": ("face crop framed like FER2013 -> grayscale -> 48x48 (the FER2013 storage size) -> bilinear "
                "resize to {size}x{size} -> grey replicated to {chans} channel(s) -> ImageNet mean/std"),
}


def build_card(run_dir: Path, payload: dict, val_plain: dict | None) -> dict:
    cfg = payload.get("config", {})
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    final = json.loads((run_dir / "final.json").read_text()) if (run_dir / "final.json").is_file() else {}
    history_epochs = final.get("epochs")
    val = payload.get("val") or {}
    pp = payload["preprocess"]
    dataset = cfg.get("data", {}).get("dataset", "unknown")
    card = {
        "model": payload["model_name"],
        "params": meta.get("params"),
        "classes": payload["class_names"],
        "data": {
            "dataset": dataset,
            "label_mode": cfg.get("data", {}).get("label_mode"),
            "train_split": "FER2013 'Training' rows, FERPlus majority labels (25,060 images)"
            if dataset == "ferplus" else "train",
            "selection_split": "FERPlus 'PublicTest' (validation, 3,199 images); the test split was not used"
            if dataset == "ferplus" else "validation",
        },
        "preprocess": pp,
        "pipeline": PIPELINE_TEXT.get(dataset, "resize to {size}x{size}, ImageNet mean/std").format(
            size=pp["input_size"], chans=pp["in_chans"]),
        "recipe": {k: cfg.get(k) for k in ("loss", "optim", "augment")},
        "selected_epoch": payload.get("epoch"),
        "epochs_trained": history_epochs,
        "validation": {
            "accuracy_tta_flip" if cfg.get("run", {}).get("tta_flip") else "accuracy": val.get("accuracy"),
            "mean_class_accuracy": val.get("mean_class_accuracy"),
            "macro_f1": val.get("macro_f1"),
            "per_class_recall": {r["class"]: round(r["recall"], 4) for r in val.get("per_class", [])},
        },
        "training_seconds": final.get("total_train_seconds"),
        "hardware": meta.get("hardware"),
        "torch": meta.get("torch"),
        "git_commit": meta.get("git_commit"),
        "command": meta.get("command"),
        "resumed_with_changes": meta.get("resumed_with_changes", []),
        "run_dir": str(run_dir),
        "packaged": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if val_plain is not None:
        card["validation"]["accuracy_no_tta"] = val_plain["accuracy"]
    return card


def package_run(run_dir: str | Path, out_dir: str | Path, name: str, data_root: str | None = None,
                note: str | None = None) -> dict:
    """Write ``out_dir/name.pt`` (weights + card) and ``out_dir/name.json`` (card); returns the card."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    payload = read_weights(run_dir / "best.pt")
    model, _ = load_checkpoint_model(run_dir / "best.pt")
    val_plain = None
    if data_root:
        from .data import Preprocess, load_split
        from .train.evaluate import evaluate
        data_cfg = dict(payload["config"]["data"], root=data_root)
        ds = load_split(data_cfg, "val", channels=1 if data_cfg["dataset"] == "ferplus" else 3)
        val_plain = evaluate(model, ds, Preprocess.from_dict(payload["preprocess"]), tta_flip=False)
    card = build_card(run_dir, payload, val_plain)
    if note:
        card["note"] = note
    shipped = weights_payload(model, payload["model_name"], payload["class_names"], payload["preprocess"],
                              payload.get("model_kwargs"), card=card)
    pt_path = out_dir / f"{name}.pt"
    atomic_torch_save(shipped, pt_path)
    card["sha256"] = sha256_file(pt_path)
    card["file_bytes"] = pt_path.stat().st_size
    atomic_write_json(out_dir / f"{name}.json", card)
    return card


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (with best.pt)")
    p.add_argument("--name", required=True, help="file stem, e.g. litefer_cpsca_ferplus")
    p.add_argument("--out", default="src/litefer/weights", help="output folder")
    p.add_argument("--data", default=None, help="data root to re-measure validation accuracy without TTA")
    p.add_argument("--note", default=None, help="a free-text note stored in the card (e.g. known limits)")


def main(args) -> int:
    card = package_run(args.run_dir, args.out, args.name, args.data, args.note)
    print(json.dumps({k: card[k] for k in ("model", "classes", "validation", "sha256", "file_bytes")}, indent=2))
    return 0
