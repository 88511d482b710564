"""Inference backends for face crops: PyTorch (weights files, TorchScript) and ONNX Runtime.

Both take uint8 crops (N, S, S, C) as cut by ``litefer.inference.align`` and return class probabilities.
The torch backend preprocesses with the training pipeline itself (``litefer.data.transforms``);
the ONNX Runtime backend uses ``preprocess_numpy``, a NumPy transcription of the same steps that is
tested against it, so that it runs without importing torch.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ..card import TORCHSCRIPT_SUFFIXES, Card, card_from_payload, read_card
from ..export.session import ort_session
from .files import BACKENDS, DEFAULT_FILES, DEFAULT_STEM, packaged_file, resolve_weights  # noqa: F401 (public here too)
from .preprocess import preprocess_numpy, softmax  # noqa: F401 (public here too)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- backends

class Backend:
    """Maps uint8 crops to logits; ``card`` holds class names, preprocessing, crop settings and prior."""

    name = "backend"
    card: Card

    def logits(self, crops: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(Backend):
    """A litefer weights file / run checkpoint, or a TorchScript file written by ``litefer export``."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        import torch

        from ..data.transforms import Preprocess

        path = Path(path)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            self.card = read_card(path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated in torch 2.9+
                    self.model = torch.jit.load(str(path), map_location=self.device)
            except Exception as e:
                raise ValueError(f"{path}: not a readable TorchScript file ({type(e).__name__}: {e})") from None
        else:
            from ..weights import load_checkpoint_model

            self.model, meta = load_checkpoint_model(path, self.device)
            self.card = card_from_payload(meta, str(path))
        self.model.eval()
        self.pp = Preprocess.from_dict(self.card.preprocess)

    def logits(self, crops, tta_flip=False):
        import torch

        from ..data.transforms import preprocess

        with torch.inference_mode():
            x = preprocess(torch.from_numpy(np.ascontiguousarray(crops)), self.pp, self.device)
            out = self.model(x).float()
            if tta_flip:
                out = (out + self.model(x.flip(3)).float()) / 2
        return out.cpu().numpy()


class OnnxBackend(Backend):
    """An ONNX file written by ``litefer export`` (metadata embedded), run with ONNX Runtime; no torch."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        path = Path(path)
        self.card = read_card(path)
        self.session = ort_session(path, threads, device)
        self.input_name = self.session.get_inputs()[0].name
        self.pp = self.card.preprocess

    def logits(self, crops, tta_flip=False):
        x = preprocess_numpy(crops, self.pp)
        n = len(x)
        if tta_flip:
            x = np.concatenate([x, x[..., ::-1]])
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0].astype(np.float32)
        return (out[:n] + out[n:]) / 2 if tta_flip else out


def torch_to_onnx_backend(path: Path, device: str = "cpu", threads: int | None = None) -> OnnxBackend:
    """Export a torch weights file to a temporary ONNX file and open it (needs torch, at load time only)."""
    import tempfile

    from ..export.core import export_with_metadata

    with tempfile.TemporaryDirectory(prefix="litefer-onnx-") as tmp:
        out = Path(tmp) / (path.stem + ".onnx")
        export_with_metadata(path, out)
        log.info("exported %s to a temporary ONNX file for the onnxruntime backend", path)
        backend = OnnxBackend(out, device, threads)
    backend.card.source = str(path)          # messages name the user's file, not the temporary export
    return backend


def create_backend(weights="default", backend: str | None = None, device: str = "cpu",
                   threads: int | None = None) -> Backend:
    path, backend = resolve_weights(weights, backend)
    if backend == "torch":
        return TorchBackend(path, device, threads)
    if path.suffix.lower() != ".onnx":
        return torch_to_onnx_backend(path, device, threads)
    return OnnxBackend(path, device, threads)
