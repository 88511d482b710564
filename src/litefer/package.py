"""``litefer package RUN_DIR``: turn a finished run into shippable weights and a model card.

The weights file holds only the fp32 state dict and what is needed to use it (model name, class
order, preprocessing) plus the card (``litefer.card``), which is also written beside it as JSON: what
data, labels, recipe, hardware and command produced the weights, the training split's class
frequencies (the prior ``prior="balanced"`` divides out), and, measured here with ``--data``, the
validation figures for ``prior="dataset"`` and ``prior="balanced"``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .card import Card, card_from_payload, infer_crop, write_json
from .preprocess import Preprocess
from .utils import hardware_summary, sha256_file
from .weights import load_checkpoint_model, weights_payload, write_weights

PIPELINE_TEXT = {
    "ferplus": ("face crop framed like FER2013 -> grayscale -> 48x48 (the FER2013 storage size) -> bilinear "
                "resize to {size}x{size} -> grey replicated to {chans} channel(s) -> ImageNet mean/std"),
}
SOFT_MODES = ("crossentropy", "probability")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_summary(run_dir: Path) -> dict:
    """The run's final report: ``final.json`` as the trainer writes it (``result.json`` in the GPU run
    folders of ../shared/runs, which hold the same fields)."""
    return _read_json(run_dir / "final.json") or _read_json(run_dir / "result.json")


def training_prior(data_cfg: dict) -> dict:
    """Class frequencies of the training split as the model was fitted to them: the mean soft target
    for soft-label training (FERPlus vote shares), the label shares otherwise; with row counts."""
    from .data import load_split

    ds = load_split(data_cfg, "train", channels=1 if data_cfg["dataset"] == "ferplus" else 3)
    soft = ds.soft_targets is not None and data_cfg.get("label_mode") in SOFT_MODES
    counts = ds.class_counts()
    freq = ds.soft_targets.double().mean(0).tolist() if soft else [n / max(1, len(ds)) for n in counts]
    return {"frequencies": {c: round(float(f), 6) for c, f in zip(ds.class_names, freq)},
            "label_counts": dict(zip(ds.class_names, counts)), "rows": len(ds),
            "how": "mean soft target (vote share) over the training rows" if soft
            else "share of training rows per label"}


def provenance(run_dir: Path, meta: dict, summary: dict) -> dict:
    return {"hardware": meta.get("hardware"), "device": meta.get("device"), "torch": meta.get("torch"),
            "git_commit": meta.get("git_commit"), "command": meta.get("command"),
            "resumed_with_changes": meta.get("resumed_with_changes", []),
            "epochs_trained": summary.get("epochs"), "training_seconds": summary.get("total_train_seconds"),
            "run_dir": str(run_dir)}


def data_section(cfg: dict, prior: dict | None) -> dict:
    data = cfg.get("data", {})
    out = {"dataset": data.get("dataset", "unknown"), "label_mode": data.get("label_mode"),
           "majority_rows": bool(data.get("majority_rows"))}
    if prior:
        out["train_rows"] = prior["rows"]
    if out["dataset"] == "ferplus":
        out["selection_split"] = "FERPlus 'PublicTest' (validation); the test split was not used for selection"
    return out


def build_card(run_dir: Path, payload: dict, prior: dict | None, validation: dict | None) -> Card:
    cfg = payload.get("config", {})
    meta = _read_json(run_dir / "meta.json")
    summary = run_summary(run_dir)
    pp = Preprocess.from_dict(payload["preprocess"])
    data = data_section(cfg, prior)
    run_val = (payload.get("val") or {}).get("accuracy")
    info = {
        "params": meta.get("params"),
        "data": data,
        "pipeline": PIPELINE_TEXT.get(data["dataset"], "resize to {size}x{size}, ImageNet mean/std").format(
            size=pp.input_size, chans=pp.in_chans),
        "recipe": {k: cfg.get(k) for k in ("loss", "optim", "augment")},
        "training": provenance(run_dir, meta, summary),
        "training_prior": prior,
        "run_val_accuracy": run_val,
        "validation": validation,
        "packaged": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    base = card_from_payload({k: v for k, v in payload.items() if k != "state_dict"}, str(run_dir / "best.pt"))
    accuracy = validation["prior"]["dataset"]["accuracy"] if validation else run_val
    return base.replace(crop=infer_crop(cfg.get("data", {}), pp), epoch=payload.get("epoch"), val_accuracy=accuracy,
                        class_prior=prior["frequencies"] if prior else None, info=info)


def measure_validation(model, payload: dict, card: Card, data_root: str) -> dict:
    """Validation figures as ``litefer eval`` gives them (majority labels on FERPlus), both priors."""
    from .train.evaluate import eval_data_config, score_split

    data_cfg = eval_data_config(payload, card, data_root, None, None)
    tta = score_split(model, payload, card, data_cfg, "val", card.tta_flip)
    plain = score_split(model, payload, card, data_cfg, "val", False) if card.tta_flip else tta
    return {"split": "val", "label_mode": data_cfg.get("label_mode"), "images": tta["n"], "tta_flip": card.tta_flip,
            "prior": {k: {x: v[x] for x in v if x != "confusion"} for k, v in tta["priors"].items()},
            "accuracy_no_tta": plain["accuracy"],
            "measured": f"litefer package / litefer eval on {hardware_summary()}"}


def package_run(run_dir: str | Path, out_dir: str | Path, name: str, data_root: str | None = None,
                note: str | None = None, majority_rows: bool = False) -> dict:
    """Write ``out_dir/name.pt`` (weights + card) and ``out_dir/name.json`` (card); returns the card dict.

    With ``data_root`` the training prior and the validation figures are measured; ``majority_rows``
    says the run saw FERPlus's majority-label rows only (see ``data.majority_rows``)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, payload = load_checkpoint_model(run_dir / "best.pt")
    if majority_rows:
        payload["config"]["data"]["majority_rows"] = True
    prior = validation = None
    if data_root:
        data_cfg = dict(payload["config"]["data"], root=data_root)
        prior = training_prior(data_cfg)
        provisional = build_card(run_dir, payload, prior, None)
        validation = measure_validation(model, payload, provisional, data_root)
    card = build_card(run_dir, payload, prior, validation)
    if note:
        card.info["note"] = note
    shipped = weights_payload(model, payload["model_name"], payload["class_names"], payload["preprocess"],
                              payload.get("model_kwargs"), card=card)
    pt_path = write_weights(out_dir / f"{name}.pt", shipped)
    card.info.update(sha256=sha256_file(pt_path), file_bytes=pt_path.stat().st_size)
    write_json(card, out_dir / f"{name}.json")
    return card.to_dict()
