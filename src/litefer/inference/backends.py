"""Inference backends for face crops: ONNX Runtime here, PyTorch as a plug-in from the layer above.

A backend maps uint8 crops (N, S, S, C), as cut by ``litefer.inference.align``, to logits, and
carries the weights' card, whose :class:`litefer.preprocess.Preprocess` turns crops into model input.
ONNX Runtime runs ``.onnx`` files and the packaged default with no torch installed. ``.pt`` and
TorchScript files need torch: their backend (``TorchBackend``, and the ``.pt`` -> ONNX conversion for
``backend="onnxruntime"``) lives in :mod:`litefer.torch_backend`, which this layer finds by name at
run time, so recognition holds no import of torch code and a missing torch is one clear error.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from ..card import Card, read_card, require_torch
from .files import BACKENDS, DEFAULT_FILES, DEFAULT_STEM, packaged_file, resolve_weights  # noqa: F401 (public here too)
from .session import ort_session

TORCH_PLUGIN = "litefer.torch_backend"        # the layer above: TorchBackend, onnx_backend_from_torch


class Backend:
    """Maps uint8 crops to logits; ``card`` holds class names, preprocessing, crop settings and prior."""

    name = "backend"
    card: Card

    def logits(self, crops: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        raise NotImplementedError


class OnnxBackend(Backend):
    """An ONNX file written by ``litefer export`` (card embedded), run with ONNX Runtime; no torch."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        path = Path(path)
        self.card = read_card(path)
        self.session = ort_session(path, threads, device)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, crops, tta_flip=False):
        x = self.card.preprocess(crops)
        n = len(x)
        if tta_flip:
            x = np.concatenate([x, x[..., ::-1]])
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0].astype(np.float32)
        return (out[:n] + out[n:]) / 2 if tta_flip else out


def torch_plugin(path: Path):
    """The torch backend module, or :class:`litefer.utils.MissingExtra` naming the file that needs it."""
    require_torch(path)
    return importlib.import_module(TORCH_PLUGIN)


def create_backend(weights="default", backend: str | None = None, device: str = "cpu",
                   threads: int | None = None) -> Backend:
    """The backend for ``weights`` ('default', 'default-int8' or a path); ``backend=None`` runs
    ``.onnx`` files and the packaged default with ONNX Runtime and ``.pt``/TorchScript with torch."""
    path, backend = resolve_weights(weights, backend)
    if backend == "onnxruntime" and path.suffix.lower() == ".onnx":
        return OnnxBackend(path, device, threads)
    plugin = torch_plugin(path)
    if backend == "torch":
        return plugin.TorchBackend(path, device, threads)
    return plugin.onnx_backend_from_torch(path, device, threads)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
