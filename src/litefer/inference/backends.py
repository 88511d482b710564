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
from importlib import resources
from pathlib import Path

import numpy as np

from ..card import TORCHSCRIPT_SUFFIXES, Card, card_from_payload, read_card

log = logging.getLogger(__name__)

# Packaged default files (written by `litefer package` and `litefer export`; see README "The shipped model").
DEFAULT_STEM = "litefer_cpsca112_ferplus"
DEFAULT_FILES = {"default": {"torch": f"{DEFAULT_STEM}.pt", "onnxruntime": f"{DEFAULT_STEM}.onnx"},
                 "default-int8": {"onnxruntime": f"{DEFAULT_STEM}_int8.onnx"}}
BACKENDS = ("torch", "onnxruntime")


def packaged_file(name: str) -> Path:
    """Path of a file in the installed package's ``weights`` folder; FileNotFoundError when absent."""
    path = Path(str(resources.files("litefer").joinpath("weights", name)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the packaged file litefer/weights/{name} is missing from this installation ({path}). "
            "Reinstall litefer, or pass weights=PATH (a .pt weights file, a run's best.pt, or an exported .onnx)")
    return path


def resolve_weights(weights, backend: str | None) -> tuple[Path, str]:
    """(weights path, backend); ``backend=None`` picks onnxruntime for ``.onnx`` files, torch otherwise."""
    w = str(weights)
    if w in DEFAULT_FILES:
        choices = DEFAULT_FILES[w]
        backend = backend or ("torch" if "torch" in choices else "onnxruntime")
        if backend not in choices:
            raise ValueError(f"weights={w!r} is only available for backend(s) {sorted(choices)}")
        return packaged_file(choices[backend]), backend
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if backend is None:
        backend = "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "torch" and path.suffix.lower() == ".onnx":
        raise ValueError(f"{path}: an ONNX file runs with backend='onnxruntime', not 'torch'")
    return path, backend


# ----------------------------------------------------------------------------- preprocessing (NumPy)

def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of PyTorch's bilinear resize (align_corners=False, no antialias)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def preprocess_numpy(crops: np.ndarray, pp: dict) -> np.ndarray:
    """uint8 (N, H, W, C) crops -> float32 (N, C', S, S) model input, as ``litefer.data.transforms.preprocess``."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4:
        raise ValueError(f"crops must be uint8 N,H,W,C, got {crops.dtype} {crops.shape}")
    in_chans, size = int(pp["in_chans"]), int(pp["input_size"])
    x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    c = x.shape[1]
    if c == 3 and in_chans == 1:
        x = np.tensordot(x, np.array([0.299, 0.587, 0.114], np.float32), axes=([1], [0]))[:, None]
    elif c != in_chans and not (c == 1 and in_chans == 3):
        raise ValueError(f"cannot map {c}-channel crops to a {in_chans}-channel model")
    h, w = x.shape[2:]
    if (h, w) != (size, size):
        r0, r1, rw = _bilinear_weights(h, size)
        c0, c1, cw = _bilinear_weights(w, size)
        x = x[:, :, r0, :] * (1 - rw)[:, None] + x[:, :, r1, :] * rw[:, None]
        x = x[:, :, :, c0] * (1 - cw) + x[:, :, :, c1] * cw
    if x.shape[1] == 1 and in_chans == 3:
        x = np.repeat(x, 3, axis=1)
    mean, std = list(pp["mean"]), list(pp["std"])
    k = x.shape[1]
    m = np.array(mean[:k] if k == len(mean) else [sum(mean) / len(mean)], np.float32).reshape(1, -1, 1, 1)
    s = np.array(std[:k] if k == len(std) else [sum(std) / len(std)], np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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


def ort_session(path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session (CPU unless ``device`` is ``cuda``); ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("device='cuda' needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {str(e).strip()[:300]})") from None


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

    from ..export_tools import export_with_metadata

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
