"""Export a weights file to ONNX, static INT8 ONNX or TorchScript, checked against torch.

Every exported file carries the weights' model card (class names, preprocessing, crop framing), so
``litefer.Recognizer`` can run it alone, and every export is compared with the torch model on real
face crops (largest absolute logit difference, top-1 agreement; optionally FERPlus validation
accuracy) before it is written. ONNX files hold the inference form of coordinate attention.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

from ..card import Card, card_from_payload, torchscript_extra_files, with_onnx_card, write_onnx
from ..inference.align import CropSpec
from ..inference.files import resolve_weights
from ..utils import atomic_write_bytes, hardware_summary
from .checks import accuracy, cam_difference, check, compare, onnx_logits, torch_logits, ts_logits
from .faces import load_faces
from .graph import check_opset, export_onnx
from .int8 import quantize_int8

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8", "torchscript")
SUFFIX = {"onnx": ".onnx", "onnx-int8": "_int8.onnx", "torchscript": ".ts"}


class ExportError(RuntimeError):
    """An export failed its parity or accuracy check (message says which and by how much)."""


# ----------------------------------------------------------------------------- exports

def load_torch(weights) -> tuple[object, Card, Path]:
    """(model in eval mode, model card, weights path) for ``"default"`` or a weights path."""
    from ..weights import load_checkpoint_model

    path, _ = resolve_weights(weights, "torch")
    model, meta = load_checkpoint_model(path)
    return model, card_from_payload(meta, str(path)), path


def export_with_metadata(weights, out: str | os.PathLike, opset: int = 17, explain: bool = False) -> Path:
    """fp32 ONNX (dynamic batch) with the model card embedded, written atomically; with ``explain``
    the map of every class is a second output, ``cam``."""
    model, card, _ = load_torch(weights)
    with tempfile.TemporaryDirectory(prefix="litefer-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        export_onnx(model, raw, card.preprocess.input_size, card.preprocess.in_chans, opset=opset, explain=explain)
        return write_onnx(raw.read_bytes(), card.replace(precision="fp32"), out)


def _LogitsOnly(model):
    """The model called with its input alone (keyword defaults would otherwise be traced as inputs)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return LogitsOnly(model)


def torchscript_bytes(model, card: Card) -> bytes:
    import torch

    pp = card.preprocess
    example = torch.randn(2, pp.in_chans, pp.input_size, pp.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # torch 2.9+ marks TorchScript deprecated
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(_LogitsOnly(model).eval(), example, check_trace=False))
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files=torchscript_extra_files(card))
    return buf.getvalue()


def export(weights, fmt: str, out: str | os.PathLike | None = None, faces: str = "astronaut",
           calib: str | None = None, calib_size: int = 1000, parity_size: int = 512, eval_data: str | None = None,
           calib_method: str = "minmax", opset: int = 17, max_diff: float | None = None,
           min_agreement: float | None = None, max_accuracy_drop: float = 1.0, force: bool = False,
           threads: int | None = None, float_stem: bool = True, explain: bool = False,
           max_cam_diff: float = 1e-3) -> dict:
    """Export, check, write. Returns a report dict; raises ExportError when a check fails (nothing
    is written then, unless ``force``). ``explain`` (fp32 ONNX only) adds the ``cam`` output, every
    class's Grad-CAM map, checked against torch's :class:`~litefer.models.explain.ExplainedNet`
    (largest absolute difference at most ``max_cam_diff``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if explain and fmt != "onnx":
        raise ValueError(f"--explain needs --format onnx (the map is a second output of the fp32 ONNX), "
                         f"not --format {fmt}")
    check_opset(opset)
    t0 = time.time()
    model, card, src = load_torch(weights)
    spec = CropSpec.from_card(card)
    pp = card.preprocess
    out = Path(out) if out else src.with_name(src.stem + SUFFIX[fmt])
    max_diff = max_diff if max_diff is not None else (None if fmt == "onnx-int8" else 1e-3)
    min_agreement = min_agreement if min_agreement is not None else (0.9 if fmt == "onnx-int8" else 0.99)
    report = {"weights": str(src), "format": fmt, "output": str(out), "model_name": card.model_name,
              "hardware": hardware_summary(),
              "input_size": pp.input_size, "opset": opset if fmt != "torchscript" else None, "explain": explain}

    parity_faces = load_faces(faces, spec, "val", parity_size, seed=1)
    reference = torch_logits(model, parity_faces, pp)
    with tempfile.TemporaryDirectory(prefix="litefer-export-") as tmp:
        tmp = Path(tmp)
        if fmt == "torchscript":
            data = torchscript_bytes(model, card.replace(precision="fp32"))
            got = ts_logits(data, parity_faces, pp)
        else:
            fp32 = tmp / "fp32.onnx"
            export_onnx(model, fp32, pp.input_size, pp.in_chans, opset=opset, explain=explain)
            final = fp32
            if fmt == "onnx-int8":
                if not calib:
                    raise ValueError("onnx-int8 needs calibration faces: --calib FERPLUS_ROOT or a folder of face "
                                     "images/photos (real faces; a few hundred to a thousand)")
                calib_faces = load_faces(calib, spec, "train", calib_size, seed=2)
                report["calibration"] = {"source": calib, "faces": int(len(calib_faces)), "method": calib_method}
                final = tmp / "int8.onnx"
                report["calibration"]["float_nodes"] = quantize_int8(
                    fp32, final, pp(calib_faces), calib_method, float_stem=float_stem)
            precision = "int8" if fmt == "onnx-int8" else "fp32"
            data = with_onnx_card(final.read_bytes(), card.replace(precision=precision))
            got = onnx_logits(final, parity_faces, pp, threads=threads)
        report["parity"] = {"source": faces, **compare(reference, got)}
        if explain:
            report["parity"]["cam_max_abs_diff"] = cam_difference(model, final, parity_faces, pp, threads)
        report["bytes"] = len(data)
        if eval_data:
            report["accuracy"] = accuracy(model, card, Path(eval_data), fmt, tmp, data, threads)
        failures = check(report, max_diff, min_agreement, max_accuracy_drop, max_cam_diff)
        report["checks"] = {"max_diff": max_diff, "min_agreement": min_agreement,
                            "max_cam_diff": max_cam_diff if explain else None,
                            "max_accuracy_drop_points": max_accuracy_drop if eval_data else None,
                            "failures": failures}
        report["seconds"] = round(time.time() - t0, 1)
        if failures and not force:
            raise ExportError(f"{out}: not written, check failed: " + "; ".join(failures))
        atomic_write_bytes(out, data)
    return report
