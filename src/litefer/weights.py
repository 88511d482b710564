"""Weights files: a state dict plus everything needed to use it (model name and arguments, class
names in order, preprocessing). Run checkpoints (``best.pt``, ``last.pt``) carry the same fields,
so every consumer loads models through ``load_checkpoint_model``; what a file says about itself
(its model card) is read by ``litefer.card``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .models import create_model

FORMAT = "litefer-weights/1"
REQUIRED = ("model_name", "num_classes", "class_names", "preprocess", "state_dict")


def weights_payload(model, model_name: str, class_names, preprocess: dict, model_kwargs: dict | None = None,
                    card: Card | dict | None = None, **extra) -> dict:
    """The dict saved as a weights file: with ``card`` (a :class:`litefer.card.Card`, or its dict) a
    packaged file that ``litefer.card`` reads back; ``extra`` may hold a run's config and metrics."""
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
             for k, v in model.state_dict().items()}
    if isinstance(card, dict):
        extra["card"] = dict(card)
    elif card is not None:
        if list(card.class_names) != list(class_names) or dict(card.preprocess) != dict(preprocess):
            raise ValueError(f"{card.source}: the card's classes / preprocessing differ from the weights'")
        extra["card"] = card.to_dict()
    return {"format": FORMAT, "model_name": model_name, "num_classes": len(class_names),
            "class_names": list(class_names), "preprocess": dict(preprocess),
            "model_kwargs": dict(model_kwargs or {}), "state_dict": state, **extra}


def read_weights(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt archives
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    if isinstance(payload, dict) and "best" in payload and isinstance(payload["best"], dict):
        payload = payload["best"]       # a run's last.pt holds the selected weights under "best"
    missing = [k for k in REQUIRED if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ValueError(f"{path}: not a litefer weights file (missing {missing})")
    return payload


def load_checkpoint_model(path: str | os.PathLike, device="cpu"):
    """Build the model a weights file or run checkpoint describes; returns (model in eval mode, meta)."""
    payload = read_weights(path)
    model = create_model(payload["model_name"], num_classes=payload["num_classes"], **payload["model_kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:          # tensors missing, unexpected or of other shapes than the architecture's
        first = str(e).strip().splitlines()
        raise ValueError(f"{path}: its tensors do not fit {payload['model_name']} with "
                         f"{payload['num_classes']} classes ({' '.join(x.strip() for x in first[:3])[:300]})") from None
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(device).eval(), meta
