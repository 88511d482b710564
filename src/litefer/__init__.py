"""litefer: lightweight facial expression recognition (Liang et al., IET Image Processing 2023).

Names are imported on first use: ``litefer.Recognizer()`` (the packaged model through ONNX Runtime)
needs only the lean install, and ``create_model`` brings torch (``litefer[train]``) only when asked for.

Layers, bottom first (``tests/test_imports.py`` holds them): the card, its ``Preprocess`` and small
helpers; ``inference`` (recognition, torch-free); ``models``, ``data``, ``losses`` and ``weights``
(torch); ``export``; ``torch_backend`` and ``profile``; ``train`` and ``serve``; ``package``;
``reproduce``; ``cli``.
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
    "finetune": "litefer.train.finetune",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'litefer' has no attribute {name!r}")
    try:
        value = getattr(import_module(module), name)
    except ImportError as e:                # the lean install: say which extra brings the name
        from .utils import as_missing_extra

        raise as_missing_extra(e, f"litefer.{name}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
