"""Initialise from torchvision's ImageNet MobileNetV3-Large weights by parameter name.

Our module names follow torchvision's, so tensors whose name and shape agree are copied (the
authors' code did this; about a third of the paper network's parameters match). Nothing is
downloaded: the user passes a local ``.pth`` file.
"""
from __future__ import annotations

import logging
import os

import torch

from ..card import read_torch_file

log = logging.getLogger(__name__)


def load_by_name(model: torch.nn.Module, path: str | os.PathLike) -> dict:
    """Copy matching tensors from a state-dict file; returns counts of copied and skipped tensors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"initial weights {path} do not exist (download them yourself; "
                                "litefer never downloads at run time)")
    source = read_torch_file(path, "initial weights file")
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    target = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    copied, skipped, copied_params = 0, 0, 0
    for name, tensor in source.items():
        if name in target and target[name].shape == tensor.shape:
            target[name] = tensor.to(target[name].dtype)
            copied += 1
            copied_params += tensor.numel() if name in param_names else 0   # buffers are not parameters
        else:
            skipped += 1
    model.load_state_dict(target)
    total = sum(p.numel() for p in model.parameters())
    log.info("initialised %d tensors (%.1f %% of parameters) from %s; %d skipped", copied,
             100.0 * copied_params / total, path, skipped)
    return {"copied": copied, "skipped": skipped, "fraction_params": copied_params / total}
