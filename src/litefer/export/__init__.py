"""Export: ONNX (with the inference form of coordinate attention), static INT8 ONNX and TorchScript
files, each checked against the torch model on real faces; ``litefer export`` is
:mod:`litefer.cli.export`.

Modules: :mod:`.graph` (``export_onnx``,
``onnx_parity``), :mod:`.faces` (face sources), :mod:`.int8` (quantization), :mod:`.checks` (parity
and accuracy), :mod:`.report` (markdown), :mod:`.core` (``export``, ``export_with_metadata``).
The package sits above the torch-free inference layer (``litefer.inference``: the ONNX Runtime
session, the card's preprocessing, framing) and imports from it, never the other way round.
"""
from importlib import import_module

_NAMES = {"export_onnx": "graph", "onnx_parity": "graph", "INPUT_NAME": "graph",
          "OUTPUT_NAME": "graph", "astronaut_faces": "faces", "load_faces": "faces", "ferplus_faces": "faces",
          "quantize_int8": "int8", "compare": "checks", "markdown": "report", "export": "core",
          "export_with_metadata": "core", "load_torch": "core", "ExportError": "core", "FORMATS": "core"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'litefer.export' has no attribute {name!r}")
    return getattr(import_module(f".{_NAMES[name]}", __name__), name)
