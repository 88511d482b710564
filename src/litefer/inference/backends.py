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
import threading
from pathlib import Path

import numpy as np

from ..card import Card, read_card, require_torch
from ..onnxproto import ProtoError, graph_outputs, without_output
from .explain import CAM_OUTPUT, EXPORT_HINT, ExplainError, mirror_average
from .files import BACKENDS, DEFAULT_FILES, DEFAULT_STEM, packaged_file, resolve_weights  # noqa: F401 (public here too)
from .session import ort_session

TORCH_PLUGIN = "litefer.torch_backend"        # the layer above: TorchBackend, onnx_backend_from_torch


class Backend:
    """Maps uint8 crops to logits; ``card`` holds class names, preprocessing, crop settings and prior."""

    name = "backend"
    card: Card

    def logits(self, crops: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        raise NotImplementedError

    def require_explain(self) -> None:
        """Raise :class:`ExplainError` (naming the weights file and the fix) unless :meth:`explain` works."""
        raise ExplainError(f"{self.card.source}: the {self.name} backend cannot explain")

    def explain(self, crops: np.ndarray, tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, cam)``: logits as :meth:`logits` and every class's Grad-CAM on the last feature
        map, (N, K, h, w), raw; with ``tta_flip`` the mirrored pass's map is mirrored back and averaged."""
        raise NotImplementedError


class OnnxBackend(Backend):
    """An ONNX file written by ``litefer export`` (card embedded), run with ONNX Runtime; no torch.

    A file that can explain (a ``cam`` output, ``litefer export --explain``) gets two sessions: plain
    recognition runs the graph with the map's branch cut out (ONNX Runtime would run it even when
    only ``logits`` is asked for), :meth:`explain` the whole file, opened on first use."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        self.path, self.device, self.threads = Path(path), device, threads
        self.card = read_card(self.path)
        data = self.path.read_bytes()
        try:
            self.can_explain = CAM_OUTPUT in graph_outputs(data)
        except ProtoError:
            self.can_explain = False          # ONNX Runtime says what is wrong with the file below
        if self.can_explain:
            self.session = ort_session(without_output(data, CAM_OUTPUT), threads, device)
        else:
            self.session = ort_session(self.path, threads, device)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.explain_model: Path | bytes = self.path     # what the explaining session opens (bytes: a temporary file's)
        self._explain_session = None
        self._lock = threading.Lock()

    def _run(self, session, names, crops, tta_flip):
        x = self.card.preprocess(crops)
        if tta_flip:
            x = np.concatenate([x, x[..., ::-1]])
        return [o.astype(np.float32) for o in session.run(names, {self.input_name: np.ascontiguousarray(x)})]

    def logits(self, crops, tta_flip=False):
        out, = self._run(self.session, [self.output_name], crops, tta_flip)
        return (out[:len(crops)] + out[len(crops):]) / 2 if tta_flip else out

    def require_explain(self):
        if not self.can_explain:
            raise ExplainError(f"{self.card.source}: this ONNX file has no '{CAM_OUTPUT}' output, so it cannot "
                               f"explain; re-export it from its .pt weights W with {EXPORT_HINT}")

    def explain(self, crops, tta_flip=False):
        self.require_explain()
        with self._lock:
            if self._explain_session is None:
                self._explain_session = ort_session(self.explain_model, self.threads, self.device)
        logits, cam = self._run(self._explain_session, [self.output_name, CAM_OUTPUT], crops, tta_flip)
        if not tta_flip:
            return logits, cam
        n = len(crops)
        return mirror_average((logits[:n], cam[:n]), (logits[n:], cam[n:]))


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
