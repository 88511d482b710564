"""Where weights come from: the packaged default files and the user's paths, resolved to a file and
a backend. Torch-free, and imported by the export package and the inference backends alike."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

# Packaged default files (written by `litefer package` and `litefer export`; see docs/guides/recognize.md, "The shipped model").
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
    """(weights path, backend); ``backend=None`` picks onnxruntime for the packaged models and ``.onnx``
    files, torch for ``.pt`` and TorchScript files (which need torch either way)."""
    w = str(weights)
    if w in DEFAULT_FILES:
        choices = DEFAULT_FILES[w]
        backend = backend or "onnxruntime"
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
