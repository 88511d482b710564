"""How an export is checked against the torch model: logits of torch, ONNX Runtime and TorchScript
on the same face crops, their agreement, accuracy on the FERPlus validation split, and the limits."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..card import Card
from ..inference.align import CropSpec
from ..inference.inputs import InputError
from ..inference.backends import softmax
from ..inference.session import ort_session
from ..preprocess import Preprocess
from .faces import _is_ferplus_root, ferplus_faces


def compare(reference: np.ndarray, got: np.ndarray) -> dict:
    """Largest absolute logit difference, top-1 agreement and largest probability difference."""
    return {"faces": int(len(reference)), "max_abs_diff": float(np.abs(reference - got).max()) if len(got) else 0.0,
            "top1_agreement": float(np.mean(reference.argmax(1) == got.argmax(1))) if len(got) else 1.0,
            "max_prob_diff": float(np.abs(softmax(reference) - softmax(got)).max()) if len(got) else 0.0}


def torch_logits(model, crops: np.ndarray, pp: Preprocess, batch: int = 256) -> np.ndarray:
    import torch

    from ..data.transforms import preprocess

    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            out.append(model(preprocess(torch.from_numpy(np.ascontiguousarray(crops[i:i + batch])), pp)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def onnx_logits(path: Path, crops: np.ndarray, pp: Preprocess, batch: int = 256, threads: int | None = None,
                output: int = 0) -> np.ndarray:
    """The ONNX model's first output (``output``: another one) on ``crops``."""
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: pp(crops[i:i + batch])})[output]
                           for i in range(0, len(crops), batch)])


def cam_difference(model, path: Path, crops: np.ndarray, pp: Preprocess, threads: int | None = None) -> float:
    """Largest absolute difference between the ONNX file's ``cam`` output and torch's
    :class:`~litefer.models.explain.ExplainedNet` on the same crops."""
    from ..models.explain import ExplainedNet

    net = ExplainedNet(model).eval()
    reference = torch_logits(lambda x: net(x)[1], crops, pp)
    got = onnx_logits(path, crops, pp, threads=threads, output=1)
    return float(np.abs(reference - got).max()) if len(got) else 0.0


def ts_logits(data: bytes, crops: np.ndarray, pp: Preprocess, batch: int = 256) -> np.ndarray:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return torch_logits(model, crops, pp, batch)


def accuracy(model, card: Card, root: Path, fmt: str, tmp: Path, data: bytes, threads) -> dict:
    """Top-1 accuracy of torch and of the export on the FERPlus validation split (model card TTA)."""
    if not _is_ferplus_root(root):
        raise InputError(f"{root}: --eval-data must be a FERPlus root (fer2013.csv[.gz] + fer2013new.csv)")
    spec, pp, tta = CropSpec.from_card(card), card.preprocess, card.tta_flip
    crops, labels = ferplus_faces(root, "val", spec)

    def score(logit_fn):
        logits = logit_fn(crops)
        if tta:
            logits = (logits + logit_fn(np.ascontiguousarray(crops[:, :, ::-1]))) / 2
        return float(np.mean(logits.argmax(1) == labels))

    acc = {"split": "FERPlus val (PublicTest, majority labels)", "images": int(len(labels)), "tta_flip": tta,
           "torch": score(lambda c: torch_logits(model, c, pp))}
    if fmt == "torchscript":
        acc["export"] = score(lambda c: ts_logits(data, c, pp))
    else:
        path = tmp / "eval.onnx"
        path.write_bytes(data)
        if fmt == "onnx-int8":
            fp32 = tmp / "fp32.onnx"
            acc["onnx_fp32"] = score(lambda c: onnx_logits(fp32, c, pp, threads=threads))
        acc["export"] = score(lambda c: onnx_logits(path, c, pp, threads=threads))
    return acc


def check(report: dict, max_diff, min_agreement, max_drop, max_cam_diff=None) -> list[str]:
    p, failures = report["parity"], []
    if max_diff is not None and p["max_abs_diff"] > max_diff:
        failures.append(f"max abs logit difference {p['max_abs_diff']:.2e} > {max_diff:.0e}")
    if max_cam_diff is not None and p.get("cam_max_abs_diff", 0.0) > max_cam_diff:
        failures.append(f"max abs cam difference {p['cam_max_abs_diff']:.2e} > {max_cam_diff:.0e}")
    if min_agreement is not None and p["top1_agreement"] < min_agreement:
        failures.append(f"top-1 agreement {p['top1_agreement']:.3f} < {min_agreement}")
    acc = report.get("accuracy")
    if acc and max_drop is not None:
        base = acc.get("onnx_fp32", acc["torch"])
        drop = 100 * (base - acc["export"])
        if drop > max_drop:
            failures.append(f"accuracy drop {drop:.2f} points > {max_drop} (fp32 {100 * base:.2f} %, "
                            f"export {100 * acc['export']:.2f} %)")
    return failures
