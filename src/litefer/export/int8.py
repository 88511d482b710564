"""Static INT8 quantization (ONNX Runtime QDQ: per-channel signed 8-bit weights, unsigned 8-bit
activations) calibrated on real face crops. Dynamic quantization would leave the convolutions in
float and make them about 10x slower on x86."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np


class _Reader:
    """CalibrationDataReader over preprocessed face crops, in batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32):
        batch = max(1, min(batch, len(x)))
        if len(x) % batch:      # equal batches: the histogram calibrators cannot stack ragged ones
            x = np.concatenate([x, x[: batch - len(x) % batch]])
        self._batches = iter([x[i:i + batch] for i in range(0, len(x), batch)])
        self.input_name = input_name

    def get_next(self):
        b = next(self._batches, None)
        return None if b is None else {self.input_name: b}

    def rewind(self):  # pragma: no cover - unused by MinMax calibration
        pass


def _named_graph(fp32_onnx: Path, prep: Path):
    """Pre-process for quantization into ``prep``; every node gets a unique name. Returns the model."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX's own shape inference (the symbolic one cannot follow the inference form's Resize). It
    # drops scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into the working directory: run it
    # from a temporary one.
    fp32_onnx, prep = Path(fp32_onnx).resolve(), Path(prep).resolve()
    with tempfile.TemporaryDirectory(prefix="litefer-int8-") as scratch:
        here = os.getcwd()
        os.chdir(scratch)
        try:
            quant_pre_process(str(fp32_onnx), str(prep), skip_symbolic_shape=True)
        finally:
            os.chdir(here)
    model = onnx.load(str(prep))
    seen: set[str] = set()
    for node in model.graph.node:   # pre-processing inlines HardSwish as unnamed nodes; the quantizer keys on names
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{node.output[0]}"
        seen.add(node.name)
    onnx.save(model, str(prep))
    return model


def first_convs(model) -> list[str]:
    """Names of the convolutions that read the network's input (the stem)."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and inputs & set(n.input)]


def quantize_int8(fp32_onnx: Path, out: Path, calib: np.ndarray, method: str = "minmax",
                  per_channel: bool = True, float_stem: bool = True) -> list[str]:
    """Static QDQ INT8 quantization of ``fp32_onnx`` calibrated on preprocessed inputs ``calib``;
    returns the names of the nodes left in float.

    ``float_stem`` keeps the first convolution in float: it holds about 3 % of the compute, and
    quantizing it is what costs the packaged 112 px model its INT8 agreement with fp32 (both runs
    in ``results/export_int8.md``)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(_Reader, CalibrationDataReader):
        pass

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="litefer-int8-") as tmp:
        prep = Path(tmp) / "prep.onnx"
        model = _named_graph(fp32_onnx, prep)
        name = model.graph.input[0].name
        kept = first_convs(model) if float_stem else []
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)    # the quantizer warns (via the root logger) about 1-D BatchNorm scales
        try:
            quantize_static(str(prep), str(out), Reader(calib.astype(np.float32), name), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=kept)
        finally:
            root.setLevel(level)
    return kept
