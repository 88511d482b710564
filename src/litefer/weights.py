"""Writing ``.pt`` weights files, and building the network one describes.

A weights file is a state dict plus everything needed to use it (model name and arguments, class
names in order, preprocessing) and, when packaged, its card. Run checkpoints (``best.pt``,
``last.pt``) carry the same fields. :func:`write_weights` is the one writer of such files (the
trainer's ``best.pt`` and ``litefer package``); the one reader is :func:`litefer.card.read_weights`,
below torch, and :func:`load_checkpoint_model` builds the model from what it reads, on a device
:func:`torch_device` has checked this machine has.
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


def load_state(module, state_dict: dict, mismatch: str) -> None:
    """``module.load_state_dict``; tensors missing, unexpected or of other shapes than the
    architecture's are a one-line ValueError starting with ``mismatch`` (torch lists every key)."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"{mismatch} ({' '.join(x.strip() for x in first[:3])[:300]})") from None


def torch_device(name, what: str = "device"):
    """``name`` (cpu, cuda, cuda:N, mps, or a torch.device) as a device this machine has; else a
    ValueError naming ``what`` (the flag or config key), not torch's assertion on first use."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what}={str(name)!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else "no CUDA device is visible"
            raise ValueError(f"{what}={str(name)!r}: torch {torch.__version__} has no CUDA device here ({build})")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{what}={str(name)!r}: there are only {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what}={str(name)!r}: MPS (Apple GPU) is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what}={str(name)!r}: litefer runs on cpu, cuda or mps")
    return device


def load_checkpoint_model(path: str | os.PathLike, device="cpu"):
    """Build the model a weights file or run checkpoint describes; returns (model in eval mode, meta)."""
    device = torch_device(device)
    payload = read_weights(path)
    model = create_model(payload["model_name"], num_classes=payload["num_classes"], **payload["model_kwargs"])
    load_state(model, payload["state_dict"], f"{path}: its tensors do not fit {payload['model_name']} with "
                                             f"{payload['num_classes']} classes")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(device).eval(), meta
