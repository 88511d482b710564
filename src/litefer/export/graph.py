"""ONNX export and ONNX Runtime parity, shared by ``litefer profile`` and model export.

``export_onnx`` writes a model with a dynamic batch axis (TorchScript-based exporter, opset 17,
which has native HardSwish/HardSigmoid), by default in the inference form of its coordinate
attention (``litefer.models.inference_form``: the same function from pooling windows and folded
convolutions, which ONNX Runtime runs faster); ``onnx_parity`` runs the same input through torch and
ONNX Runtime and returns the largest absolute difference of the outputs.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import atomic_write_bytes
from ..inference.session import ort_session

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# ONNX opsets litefer exports: per-channel INT8 needs 13 (fp32 already 9, for the attention's
# resize), and 20 is the newest the TorchScript-based exporter supports
OPSETS = range(13, 21)


def check_opset(opset: int) -> None:
    """ValueError naming the opset and the supported range, before any model is loaded."""
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported: litefer exports ONNX opsets {OPSETS[0]} to {OPSETS[-1]}")


def _size_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    return (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)


class _Traced(nn.Module):
    """Calls the model with the input alone: the TorchScript exporter would otherwise turn keyword
    defaults such as ``return_embedding=False`` into traced tensors (and warn)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: int | tuple[int, int] = 224,
                in_chans: int | None = None, opset: int = 17, dynamic_batch: bool = True,
                inference: bool = True, explain: bool = False) -> Path:
    """Export ``model`` (in eval mode) to ONNX at ``path``, atomically; returns the path.

    Input ``input`` is N x C x H x W float32 (N dynamic when ``dynamic_batch``), output ``logits``;
    with ``explain`` a second output ``cam``, every class's Grad-CAM map (N x classes x h x w, see
    :mod:`litefer.models.explain`). ``in_chans`` defaults to the model's ``in_chans`` attribute (3
    when absent). ``inference`` exports the inference form of coordinate attention (the training
    form when False).
    """
    check_opset(opset)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    if inference:
        from ..models.inference_form import inference_form

        model = inference_form(model)
    outputs = [OUTPUT_NAME]
    if explain:
        from ..models.explain import CAM_OUTPUT, ExplainedNet

        model, outputs = ExplainedNet(model), [OUTPUT_NAME, CAM_OUTPUT]
    dummy = torch.randn(1, in_chans, *_size_hw(input_size))
    dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter announces its own deprecation; the output is what we check
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # pooling windows and the map's 1/hw are read from the traced input's (fixed) size
            warnings.filterwarnings("ignore", "Converting a tensor to a Python (integer|float)", torch.jit.TracerWarning)
            torch.onnx.export(_Traced(model), (dummy,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
    finally:
        model.train(was_training)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def onnx_parity(model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor, session=None) -> float:
    """Max absolute difference between torch (eval mode) and ONNX Runtime outputs on ``inputs``."""
    session = session or ort_session(path)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = model(inputs).float().numpy()
    finally:
        model.train(was_training)
    feed = {session.get_inputs()[0].name: inputs.detach().float().numpy()}
    got = session.run(None, feed)[0]
    if got.shape != expected.shape:
        raise ValueError(f"ONNX output shape {got.shape} != torch output shape {expected.shape}")
    return float(np.abs(got - expected).max())
