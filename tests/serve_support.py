"""Shared pieces of the serve tests: a small model the tests make themselves, the astronaut photo,
a fake-webcam video, and a ``litefer serve`` subprocess on a free loopback port."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
# a made-up training class prior, uneven like FERPlus's, so that prior="balanced" changes the scores
PRIOR = dict(zip(CLASSES, [0.34, 0.29, 0.12, 0.13, 0.08, 0.01, 0.025, 0.015]))


def make_weights(folder: Path) -> tuple[Path, Path]:
    """A litefer_cpsca weights file and its ONNX export (metadata embedded), made from scratch.

    The network is randomly initialised, its BatchNorm statistics set on random inputs and its last
    layer scaled up, so that different faces get different, clearly non-uniform scores (a freshly
    initialised network answers exactly 1/8 for every class, which would hide parity errors).
    """
    import torch

    from litefer import create_model
    from litefer.data.transforms import Preprocess
    from litefer.export import export_with_metadata
    from litefer.weights import weights_payload

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model("litefer_cpsca", num_classes=len(CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None                      # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 64, 64, generator=g) * 4 - 2)
        model.classifier[3].weight.mul_(40)
    model.eval()
    pt = folder / "test_model.pt"
    torch.save(weights_payload(model, "litefer_cpsca", CLASSES, Preprocess(64, 3).to_dict(), {}, tta_flip=True,
                               class_prior=PRIOR), pt)
    onnx = export_with_metadata(pt, folder / "test_model.onnx", explain=True)   # the page can explain
    return pt, onnx


def astronaut_rgb() -> np.ndarray:
    """The packaged sample photo (Eileen Collins, NASA, public domain): 512 x 512 RGB, one face."""
    from litefer.inference.samples import sample_rgb

    return sample_rgb()


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 5, fps: int = 10) -> Path:
    """An uncompressed YUV 4:2:0 video (Y4M, which Chromium's fake camera reads) of a still image."""
    import cv2

    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"Y4M 4:2:0 needs even sides, got {w}x{h}")
    yuv = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv)
    return path


def webcam_frame(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """The photo scaled to the frame height and centred on a grey 4:3 frame, as a webcam would show it."""
    import cv2

    side = min(width, height)
    face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 90, np.uint8)
    x0, y0 = (width - side) // 2, (height - side) // 2
    frame[y0:y0 + side, x0:x0 + side] = face
    return frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(weights: Path, log: Path, *extra: str, timeout: float = 90.0):
    """Run ``litefer serve`` in a subprocess on a free port; yields (base URL, process)."""
    from loadtest import wait_ready

    port = free_port()
    cmd = [sys.executable, "-m", "litefer", "serve", "--weights", str(weights), "--port", str(port),
           "--log-level", "warning", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, timeout, proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; server log:\n{log.read_text()[-3000:]}") from None
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
