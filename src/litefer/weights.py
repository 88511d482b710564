"""Writing ``.pt`` weights files, and building the network one describes.

A weights file is a state dict plus everything needed to use it (model name and arguments, class
names in order, preprocessing) and, when packaged, its card. Run checkpoints (``best.pt``,
``last.pt``) carry the same fields. :func:`write_weights` is the one writer of such files (the
trainer's ``best.pt`` and ``litefer package``); the one reader is :func:`litefer.card.read_weights`,
below torch, and :func:`load_checkpoint_model` builds the model from what it reads.
"""
from __future__ import annotations

import os
from pathlib import Path

from .card import Card, read_weights
from .models import create_model
from .preprocess import Preprocess
from .utils import atomic_open

FORMAT = "litefer-weights/1"


def weights_payload(model, model_name: str, class_names, preprocess: Preprocess | dict,
                    model_kwargs: dict | None = None, card: Card | dict | None = None, **extra) -> dict:
    """The dict saved as a weights file: with ``card`` (a :class:`litefer.card.Card`, or its dict) a
    packaged file that ``litefer.card`` reads back; ``extra`` may hold a run's config and metrics."""
    preprocess = Preprocess.from_dict(preprocess)
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
             for k, v in model.state_dict().items()}
    if isinstance(card, dict):
        extra["card"] = dict(card)
    elif card is not None:
        if list(card.class_names) != list(class_names) or card.preprocess != preprocess:
            raise ValueError(f"{card.source}: the card's classes / preprocessing differ from the weights'")
        extra["card"] = card.to_dict()
    return {"format": FORMAT, "model_name": model_name, "num_classes": len(class_names),
            "class_names": list(class_names), "preprocess": preprocess.to_dict(),
            "model_kwargs": dict(model_kwargs or {}), "state_dict": state, **extra}


def write_weights(path: str | os.PathLike, payload: dict) -> Path:
    """Write a :func:`weights_payload`, or a run checkpoint (``last.pt``), with ``torch.save`` through a
    temporary file and a rename; the one writer of ``.pt`` files. Returns the path."""
    import torch

    with atomic_open(path) as f:
        torch.save(payload, f)
    return Path(path)


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
