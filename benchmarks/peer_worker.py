"""One tool's side of ``benchmarks/peer_speed.py``: recognizes the same decoded photos on request.

Run by the interpreter that has the tool (litefer's own venv, or the peer venv with fer), so each
tool keeps its own OpenCV and threads. Speaks JSON lines: it prints ``{"ready": ...}`` once loaded
and warm, then answers each ``round`` line on stdin with the time per photo and the largest face's
label of every photo, and exits on ``quit`` or end of input.

    python benchmarks/peer_worker.py --tool litefer|fer --photos photos.npy --threads 1|0 [--detector haar|auto]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# fer's 7 class names in the FERPlus names litefer uses
FER_TO_FERPLUS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "sad": "sadness",
                  "surprise": "surprise", "neutral": "neutral"}


def litefer_detector(name: str):
    """``haar``, or ``auto``: YuNet from ``LITEFER_YUNET`` (which the driver sets), given as
    ``detector="auto"`` where this litefer knows that name and as the model path where it does not."""
    if name != "auto":
        return name
    from litefer.inference.detect import DETECTORS

    return "auto" if "auto" in DETECTORS else os.environ["LITEFER_YUNET"]


def litefer_tool(threads: int, min_face: int | None, detector: str = "haar"):
    """litefer's default path after issue 18: the packaged model through ONNX Runtime."""
    import cv2
    import onnxruntime

    import litefer

    if threads:
        cv2.setNumThreads(threads)
    rec = litefer.Recognizer(backend="onnxruntime", threads=threads or None, min_face=min_face,
                             detector=litefer_detector(detector))

    def run(bgr):
        faces = rec.recognize(bgr)
        return len(faces), faces[0].label if faces else None     # largest face first

    versions = {"litefer": litefer.__version__, "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
                "numpy": np.__version__, "cv2_threads": cv2.getNumThreads(), "detector": repr(rec.detector),
                "quick_eyes": getattr(rec.detector, "quick_eyes", None), "tta": rec.tta,
                "mirrored_pass_beside": getattr(rec, "_mirror_pool", None) is not None}
    return run, versions


def pin_fer_to(threads: int):
    """fer builds its TFLite interpreter without ``num_threads``: put a 1-thread one in its cache first."""
    from pathlib import Path

    import tensorflow as tf
    from fer.fer import FER

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import fer

    path = next(Path(fer.__file__).parent.joinpath("data").glob("*.tflite"))
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    FER._tflite_interpreter_cache = interpreter


def fer_tool(threads: int, min_face: int | None = None, detector: str | None = None):
    """fer as its README shows it: ``FER()`` (Haar faces from 50 px, TFLite mini-Xception)."""
    from importlib.metadata import version

    import cv2
    import tensorflow as tf

    if threads:
        cv2.setNumThreads(threads)
        pin_fer_to(threads)
    from fer.fer import FER

    detector = FER()

    def run(bgr):
        faces = detector.detect_emotions(bgr)
        if not faces:
            return 0, None
        largest = max(faces, key=lambda f: f["box"][2] * f["box"][3])
        emotions = largest["emotions"]
        return len(faces), FER_TO_FERPLUS[max(emotions, key=emotions.get)]   # ties: fer's class order

    versions = {"fer": version("fer"), "tensorflow": tf.__version__, "opencv": cv2.__version__,
                "numpy": np.__version__, "cv2_threads": cv2.getNumThreads()}
    return run, versions


def one_round(run, photos: np.ndarray) -> dict:
    """Every photo once; only the recognition calls are timed."""
    faces, labels, spent = [], [], 0.0
    for bgr in photos:
        t = time.perf_counter()
        n, label = run(bgr)
        spent += time.perf_counter() - t
        faces.append(n)
        labels.append(label)
    return {"ms_per_photo": 1000.0 * spent / len(photos), "faces": faces, "labels": labels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=("litefer", "fer"), required=True)
    p.add_argument("--photos", required=True, help=".npy of N x H x W x 3 BGR uint8 photos")
    p.add_argument("--threads", type=int, default=0, help="1: one thread everywhere; 0: each library's default")
    p.add_argument("--min-face", type=int, default=None, help="litefer: smallest face searched (default: litefer's)")
    p.add_argument("--detector", default="haar", help="litefer: haar, or auto (YuNet from LITEFER_YUNET)")
    args = p.parse_args()
    out, sys.stdout = sys.stdout, sys.stderr                         # the tools' own prints stay off the protocol
    photos = np.load(args.photos)
    run, versions = (litefer_tool if args.tool == "litefer" else fer_tool)(args.threads, args.min_face, args.detector)
    for bgr in photos[:10]:                                          # warm-up: first calls load and allocate
        run(bgr)
    out.write(json.dumps({"ready": True, "versions": versions}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip() != "round":
            break
        out.write(json.dumps(one_round(run, photos)) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
