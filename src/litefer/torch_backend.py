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
from .inference.explain import EXPORT_HINT, ExplainError, mirror_average
from .weights import load_checkpoint_model, torch_device

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """A litefer weights file / run checkpoint, or a TorchScript file written by ``litefer export``."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        path = Path(path)
        if threads:
            torch.set_num_threads(int(threads))
        self.device, self.path, self._explained = torch_device(device), path, None
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

    def require_explain(self):
        self._explainer()

    def _explainer(self):
        """:class:`litefer.models.explain.ExplainedNet` around the model, built once."""
        if self._explained is None:
            from .models.explain import ExplainedNet

            if isinstance(self.model, torch.jit.ScriptModule):
                raise ExplainError(f"{self.path}: a TorchScript file cannot explain (the map needs the network's "
                                   f"layers); use the .pt weights W it came from, or an ONNX made by {EXPORT_HINT}")
            try:
                self._explained = ExplainedNet(self.model).eval()
            except ExplainError as e:
                raise ExplainError(f"{self.path}: cannot explain: {e}") from None
        return self._explained

    def explain(self, crops, tta_flip=False):
        net = self._explainer()
        with torch.inference_mode():
            x = preprocess(torch.from_numpy(np.ascontiguousarray(crops)), self.card.preprocess, self.device)
            plain = [t.float().cpu().numpy() for t in net(x)]
            if not tta_flip:
                return tuple(plain)
            mirrored = [t.float().cpu().numpy() for t in net(x.flip(3))]
        return mirror_average(tuple(plain), tuple(mirrored))


def _load_torchscript(path: Path, device):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated in torch 2.9+
            return torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise ValueError(f"{path}: not a readable TorchScript file ({type(e).__name__}: {e})") from None


def onnx_backend_from_torch(path: Path, device: str = "cpu", threads: int | None = None) -> OnnxBackend:
    """Export a torch weights file, with the map as a second output, to a temporary ONNX file and
    open it with ONNX Runtime (plain recognition runs without the map's branch)."""
    with tempfile.TemporaryDirectory(prefix="litefer-onnx-") as tmp:
        out = Path(tmp) / (path.stem + ".onnx")
        export_with_metadata(path, out, explain=True)
        log.info("exported %s to a temporary ONNX file for the onnxruntime backend", path)
        backend = OnnxBackend(out, device, threads)
        backend.explain_model = out.read_bytes()     # the file goes with the folder
    backend.card.source = str(path)          # messages name the user's file, not the temporary export
    return backend
