"""The one ONNX Runtime session factory: the ``onnxruntime`` inference backend, and above it the
exports, their checks and the profiler. Torch-free."""
from __future__ import annotations

import os
import re


def ort_session(path: str | os.PathLike | bytes, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session with every graph optimization, sequential execution and ``threads``
    intra-op threads (ONNX Runtime's default when None); CPU unless ``device`` is ``cuda``.

    ``path`` may also be a serialized model. Raises ValueError naming the file when it cannot load.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ValueError(f"device={str(device)!r}: ONNX Runtime runs on cpu or cuda (mps needs --backend torch)")
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device={str(device)!r} needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
        providers.insert(0, "CUDAExecutionProvider")
    model = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(model, opts, providers=providers)
    except Exception as e:
        name = "the model" if isinstance(path, bytes) else path
        raise ValueError(f"{name}: not a loadable ONNX model ({type(e).__name__}: {str(e).strip()[:300]})") from None
