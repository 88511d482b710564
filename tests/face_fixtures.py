"""Real-photo fixtures for the recognizer tests, generated from the public-domain astronaut photo that
ships in litefer (``litefer.inference.samples``): image files in several formats, a two-face composite, a short video, and a
randomly initialised checkpoint in the litefer weights format. Import the fixtures by name."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image



def shared_dir() -> Path:
    """``shared`` beside the checkout, or beside a folder above it (a git worktree kept in a folder of
    worktrees); the one beside the checkout when there is none."""
    here = Path(__file__).resolve().parents[1]
    return next((d / "shared" for d in here.parents if (d / "shared").is_dir()), here.parent / "shared")


SHARED = shared_dir()
YUNET = SHARED / "models" / "face_detection_yunet.onnx"
JAFFE = SHARED / "data" / "jaffe"
# The astronaut's face: Haar finds it at about (177, 67, 95, 95) in the 512 x 512 photo.
FACE_CENTRE = (224.0, 113.0)


def astronaut_rgb() -> np.ndarray:
    from litefer.inference.samples import sample_rgb
    return sample_rgb()


def astronaut_bgr() -> np.ndarray:
    from litefer.inference.samples import sample_bgr
    return sample_bgr()


def two_face_composite() -> np.ndarray:
    """BGR 512 x 900: the photo, and a mirrored half-size copy of it on grey; faces of ~95 and ~56 px."""
    bgr = astronaut_bgr()
    small = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)
    comp = np.full((512, 900, 3), 128, np.uint8)
    comp[:, :512] = bgr
    comp[100:356, 600:856] = small[:, ::-1]
    return comp


# The astronaut's face box in the 256 x 256 patch around it (rows 16-272, columns 96-352 of the photo).
PATCH_FACE = (81.0, 51.0, 95.0, 95.0)


def face_patch(face_px: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The 256 x 256 patch around the astronaut's face resized so that the face is about ``face_px``
    wide, and the face's box in it."""
    side = round(256 * face_px / PATCH_FACE[2])
    patch = cv2.resize(astronaut_bgr()[16:272, 96:352], (side, side), interpolation=cv2.INTER_AREA)
    return patch, tuple(v * side / 256 for v in PATCH_FACE)


def yunet_path() -> Path:
    if not YUNET.is_file():
        pytest.skip(f"YuNet model not found at {YUNET} (../shared/models is absent on this machine)")
    return YUNET


def make_checkpoint(path: Path, class_names=None, input_size: int = 64, seed: int = 0, tta: bool = False,
                    packaged: bool = False, class_prior: dict | None = None) -> Path:
    """A litefer_cpsca weights file with random weights and BatchNorm statistics measured on real face
    crops, so that its outputs differ between faces like a trained model's do; ``class_prior`` is
    stored as its training class frequencies."""
    from litefer import create_model
    from litefer.inference.align import CropSpec, crop_face
    from litefer.data.transforms import Preprocess, preprocess
    from litefer.inference.detect import HaarDetector
    from litefer.weights import weights_payload, write_weights

    class_names = list(class_names or ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                       "contempt"])
    torch.manual_seed(seed)
    model = create_model("litefer_cpsca", num_classes=len(class_names))
    pp = Preprocess(input_size=input_size, in_chans=3)
    bgr = astronaut_bgr()
    det = HaarDetector().detect(bgr)[0]
    crop = crop_face(bgr, det, CropSpec())[0]
    rng = np.random.default_rng(seed)
    batch = np.stack([np.clip(crop.astype(np.float32) * rng.uniform(0.6, 1.4) + rng.normal(0, 25, crop.shape), 0, 255)
                      for _ in range(32)]).astype(np.uint8)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None                          # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        model(preprocess(torch.from_numpy(batch), pp))
    model.eval()
    if packaged:       # the shape `litefer package` writes: a model card instead of the run config
        extra = {"card": {"data": {"dataset": "ferplus"},
                          "validation": {"accuracy_tta_flip" if tta else "accuracy": 0.5}}}
    else:
        extra = {"config": {"data": {"dataset": "ferplus"}, "run": {"tta_flip": tta}}, "epoch": 1,
                 "val": {"accuracy": 0.5}}
    if class_prior is not None:
        (extra["card"] if packaged else extra)["class_prior"] = dict(class_prior)
    write_weights(path, weights_payload(model, "litefer_cpsca", class_names, pp, {}, **extra))
    return path


def write_video(path: Path, frames: int = 10, size=(320, 240), fps: float = 10.0) -> Path:
    """A short video of the astronaut's face drifting right by 2 px per frame (mp4v, else MJPG .avi)."""
    bgr = astronaut_bgr()
    w, h = size
    face = bgr[16:272, 96:352]                                  # 256 x 256 around the face
    face = cv2.resize(face, (h - 40, h - 40), interpolation=cv2.INTER_AREA)
    for fourcc, suffix in (("mp4v", path.suffix or ".mp4"), ("MJPG", ".avi")):
        out = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            continue
        for i in range(frames):
            frame = np.full((h, w, 3), 90, np.uint8)
            x = 20 + 2 * i
            frame[20:20 + face.shape[0], x:x + face.shape[1]] = face
            writer.write(frame)
        writer.release()
        cap = cv2.VideoCapture(str(out))
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if ok:
            return out
    pytest.skip("this OpenCV build can write neither mp4v nor MJPG video")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Good and bad inputs as real files."""
    d = tmp_path_factory.mktemp("photos")
    rgb = astronaut_rgb()
    Image.fromarray(rgb).save(d / "astronaut.jpg", quality=92)
    Image.fromarray(rgb).save(d / "astronaut.png")
    Image.fromarray(rgb).convert("L").save(d / "grey.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    cv2.imwrite(str(d / "rgb16.png"), astronaut_bgr().astype(np.uint16) * 257)
    Image.fromarray((rgb.mean(2) * 257).astype(np.uint16)).save(d / "grey16.png")
    cv2.imwrite(str(d / "two_faces.png"), two_face_composite())
    # a phone-style JPEG: pixels stored sideways, EXIF orientation 6 says "turn 90 degrees clockwise"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(d / "sideways_exif.jpg", quality=92, exif=exif)
    cv2.imwrite(str(d / "no_face.png"), np.full((200, 300, 3), 127, np.uint8))
    data = (d / "astronaut.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "not_an_image.png").write_text("this is text, not a picture\n")
    (d / "empty.jpg").write_bytes(b"")
    return d


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt")


@pytest.fixture(scope="session")
def onnx_file(checkpoint, tmp_path_factory) -> Path:
    from litefer.export import export_with_metadata
    return export_with_metadata(checkpoint, tmp_path_factory.mktemp("onnx") / "random.onnx")


@pytest.fixture(scope="session")
def rec_torch(checkpoint):
    from litefer import Recognizer
    return Recognizer(weights=checkpoint, backend="torch", threads=1)


@pytest.fixture(scope="session")
def rec_ort(onnx_file):
    from litefer import Recognizer
    return Recognizer(weights=onnx_file, backend="onnxruntime", threads=1)


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")
