"""litefer: lightweight facial expression recognition (Liang et al., IET Image Processing 2023).

Names are imported on first use, so ``litefer.Recognizer(..., backend="onnxruntime")`` runs
without importing torch.
"""
from importlib import import_module

from .version import __version__

_LAZY = {
    "create_model": "litefer.models",
    "list_models": "litefer.models",
    "Recognizer": "litefer.inference.recognizer",
    "FaceResult": "litefer.inference.recognizer",
    "ImageResult": "litefer.inference.recognizer",
    "to_dataframe": "litefer.inference.recognizer",
    "write_csv": "litefer.inference.recognizer",
    "csv_text": "litefer.inference.recognizer",
    "InputError": "litefer.inference.inputs",
    "PriorError": "litefer.prior",
    "read_card": "litefer.card",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'litefer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
