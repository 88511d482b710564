"""Recognition with torch: the ``torch`` backend for ``.pt`` weights and TorchScript files, and the
``.pt`` -> ONNX conversion behind ``backend="onnxruntime"`` on a ``.pt`` file.

``litefer.inference.backends`` finds this module by name when weights need torch, so the
recognition layer below never imports it (nor torch) for ONNX files and the packaged default.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .card import TORCHSCRIPT_SUFFIXES, card_from_payload, read_card
from .data.transforms import preprocess
from .export.core import export_with_metadata
from .inference.backends import Backend, OnnxBackend
from .weights import load_checkpoint_model, torch_device

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """A litefer weights file / run checkpoint, or a TorchScript file written by ``litefer export``."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        path = Path(path)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch_device(device)
        if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            self.card = read_card(path)
            self.model = _load_torchscript(path, self.device)
        else:
            self.model, meta = load_checkpoint_model(path, self.device)
            self.card = card_from_payload(meta, str(path))
        self.model.eval()

    def logits(self, crops, tta_flip=False):
        with torch.inference_mode():
            x = preprocess(torch.from_numpy(np.ascontiguousarray(crops)), self.card.preprocess, self.device)
            out = self.model(x).float()
            if tta_flip:
                out = (out + self.model(x.flip(3)).float()) / 2
        return out.cpu().numpy()


def _load_torchscript(path: Path, device):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated in torch 2.9+
            return torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise ValueError(f"{path}: not a readable TorchScript file ({type(e).__name__}: {e})") from None


def onnx_backend_from_torch(path: Path, device: str = "cpu", threads: int | None = None) -> OnnxBackend:
    """Export a torch weights file to a temporary ONNX file and open it with ONNX Runtime."""
    with tempfile.TemporaryDirectory(prefix="litefer-onnx-") as tmp:
        out = Path(tmp) / (path.stem + ".onnx")
        export_with_metadata(path, out)
        log.info("exported %s to a temporary ONNX file for the onnxruntime backend", path)
        backend = OnnxBackend(out, device, threads)
    backend.card.source = str(path)          # messages name the user's file, not the temporary export
    return backend
