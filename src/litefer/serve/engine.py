"""The serving engine: settings, model files, upload decoding with limits, and a bounded worker pool.

Nothing here imports FastAPI, so the pool and the decoder can be used (and tested) on their own.

Concurrency model: ``workers`` threads, each owning its own :class:`litefer.Recognizer` (OpenCV's
cascade classifier is not shared between threads) whose ONNX Runtime session uses ``threads``
intra-op threads. At most ``workers + queue`` requests are admitted at once; the rest are refused at
once with 503 and ``Retry-After`` rather than piling up. A request that is still queued when its
deadline passes is dropped without running.
"""
from __future__ import annotations

import io
import logging
import os
import queue as queue_mod
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..card import Card, read_card

log = logging.getLogger(__name__)

MiB = 1024 * 1024


def default_workers() -> int:
    """One worker per core, at most 4 (each worker runs one request at a time on one thread)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class ServeConfig:
    """Everything ``litefer serve`` can be told; the defaults suit a small CPU machine."""

    weights: str = "default"            # "default", "default-int8", a .pt weights file or an exported .onnx
    backend: str = "onnxruntime"        # what the server runs: "onnxruntime" or "torch"
    browser_model: str | None = None    # ONNX file the page runs on-device (default: the served model's)
    detector: str = "auto"              # server-side detector ("auto", "haar", "yunet" or a YuNet .onnx path)
    yunet_model: str | None = None
    min_face: int = 32                  # smallest face side in pixels of the uploaded image
    detect_max_side: int | None = None  # largest side the detector searches at once (None: its default, 1280)
    workers: int = field(default_factory=default_workers)
    threads: int = 1                    # intra-op threads per worker
    queue: int = 32                     # requests allowed to wait for a worker
    max_upload_bytes: int = 10 * MiB
    max_pixels: int = 40_000_000        # decoded image area limit (40 MP)
    max_side: int = 10_000              # decoded image side limit, pixels
    request_timeout: float = 30.0       # seconds from admission to answer (queue wait + work)
    upload_timeout: float = 15.0        # seconds to receive the whole request body
    header_timeout: float = 10.0        # seconds to receive the request line and headers
    max_connections: int | None = None  # open connections served at once (None: 4 x capacity, at least 256)
    max_connections_per_client: int = 64    # open connections per client address (0: no cap)
    min_transfer_rate: float = 500.0    # bytes/s a request must average once transfer_grace has passed (0: off)
    transfer_grace: float = 3.0         # seconds from a request's first byte before min_transfer_rate applies

    def __post_init__(self):
        from ..inference.detect import MIN_MAX_SIDE

        checks = {"workers": (self.workers >= 1, ">= 1"), "threads": (self.threads >= 1, ">= 1"),
                  "queue": (self.queue >= 0, ">= 0"), "max_upload_bytes": (self.max_upload_bytes >= 1024, ">= 1024 bytes"),
                  "max_pixels": (self.max_pixels >= 1, ">= 1"), "max_side": (self.max_side >= 1, ">= 1"),
                  "request_timeout": (self.request_timeout > 0, "> 0 seconds"),
                  "upload_timeout": (self.upload_timeout > 0, "> 0 seconds"),
                  "header_timeout": (self.header_timeout > 0, "> 0 seconds"), "min_face": (self.min_face >= 1, ">= 1"),
                  "detect_max_side": (self.detect_max_side is None or self.detect_max_side >= MIN_MAX_SIDE,
                                      f">= {MIN_MAX_SIDE}"),
                  "max_connections": (self.max_connections is None or self.max_connections >= 1,
                                      ">= 1 (there is always a limit)"),
                  "max_connections_per_client": (self.max_connections_per_client >= 0, ">= 0 (0: no cap)"),
                  "min_transfer_rate": (self.min_transfer_rate >= 0, ">= 0 bytes/s (0: off)"),
                  "transfer_grace": (self.transfer_grace > 0, "> 0 seconds")}
        for name, (ok, rule) in checks.items():
            if not ok:
                raise SettingError(name, getattr(self, name), rule)
        if self.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {self.backend!r}")

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    @property
    def connection_limit(self) -> int:
        """Open connections served at once: ``max_connections``, else 4 x capacity, at least 256."""
        return self.max_connections or max(256, 4 * self.capacity)

    def limits(self) -> dict:
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels, "max_side": self.max_side,
                "request_timeout_s": self.request_timeout, "upload_timeout_s": self.upload_timeout,
                "header_timeout_s": self.header_timeout, "max_connections": self.connection_limit,
                "max_connections_per_client": self.max_connections_per_client,
                "min_transfer_rate_bytes_per_s": self.min_transfer_rate, "transfer_grace_s": self.transfer_grace}


class SettingError(ValueError):
    """A :class:`ServeConfig` value out of range; ``name`` is the field, so that the command line can
    name its option instead."""

    def __init__(self, name: str, value, rule: str):
        super().__init__(f"invalid serve setting {name}={value!r}: must be {rule}")
        self.name, self.value, self.rule = name, value, rule


class ServeError(Exception):
    """An error answered to the client: HTTP ``status`` and a message saying what to change."""

    def __init__(self, status: int, message: str, headers: dict | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.message = int(status), message
        self.headers = dict(headers or {})
        if close:
            self.headers["Connection"] = "close"


# ----------------------------------------------------------------------------- model files

@dataclass
class ModelFiles:
    """What the server loads (``weights`` with ``backend``), its model card, the ONNX file the
    page downloads, and the face detector it runs (``"yunet"`` with its model file, or ``"haar"``)."""

    weights: Path
    backend: str
    onnx: Path
    card: Card
    detector: str = "haar"
    yunet: Path | None = None

    @property
    def name(self) -> str:
        return str(self.card.model_name or self.weights.stem)


def exported_onnx(weights: Path, cache: Path | None = None) -> Path:
    """An ONNX export (with metadata, and the map as the ``cam`` output so that the server and the
    page can explain) of a torch weights file, cached by the file's content hash."""
    from ..utils import cache_dir, require, sha256_file

    cache = cache or (cache_dir() / "serve")
    digest = sha256_file(weights)
    out = cache / f"{weights.stem}-{digest[:16]}-cam.onnx"
    if not out.is_file():
        require("torch", "train", f"{weights}: exporting it to ONNX for the page",
                f"or serve its .onnx export (`litefer export --weights {weights}`)")
        from ..export.core import export_with_metadata

        log.info("exporting %s to ONNX for the page's on-device mode: %s", weights, out)
        export_with_metadata(weights, out, explain=True)
    return out


def _browser_model(path: Path, card: Card) -> Path:
    onnx_path = Path(path)
    if not onnx_path.is_file() or onnx_path.suffix.lower() != ".onnx":
        raise FileNotFoundError(f"--browser-model {onnx_path}: no such .onnx file")
    page = read_card(onnx_path)
    if page.class_names != card.class_names:
        raise ValueError(f"--browser-model {onnx_path} has classes {page.class_names}, the served model "
                         f"{card.class_names}")
    return onnx_path


def _onnx_of(path: Path, packaged: bool) -> Path:
    """The ONNX file of a weights file: itself, the packaged ONNX twin, or a cached export."""
    if path.suffix.lower() == ".onnx":
        return path
    if packaged and path.with_suffix(".onnx").is_file():
        return path.with_suffix(".onnx")
    return exported_onnx(path)


def prepare_model(cfg: ServeConfig) -> ModelFiles:
    """Resolve the weights string (once), export ONNX for the page when needed, read the card.

    Raises FileNotFoundError / ValueError with a message naming the file and what to pass instead.
    """
    from ..inference.backends import DEFAULT_FILES, resolve_weights
    from ..inference.detect import hint_fetch_once, resolve_detector

    detector, yunet = resolve_detector(cfg.detector, cfg.yunet_model)      # once, not per worker
    if detector == "haar" and cfg.detector == "auto":
        hint_fetch_once()

    packaged = str(cfg.weights) in DEFAULT_FILES
    path, _ = resolve_weights(cfg.weights, cfg.backend if packaged else None)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".onnx") or (cfg.backend == "torch" and suffix != ".pt"):
        need = "a .pt weights file" if cfg.backend == "torch" else "a .pt weights file or an .onnx export"
        raise ValueError(f"{path}: serve with backend {cfg.backend!r} needs {need}")
    card = read_card(path)
    model_onnx = None
    if cfg.backend == "onnxruntime" or not cfg.browser_model:
        model_onnx = _onnx_of(path, packaged)
    page = _browser_model(Path(cfg.browser_model), card) if cfg.browser_model else model_onnx
    served = model_onnx if cfg.backend == "onnxruntime" else path
    return ModelFiles(weights=served, backend=cfg.backend, onnx=page, card=card, detector=detector, yunet=yunet)


# ----------------------------------------------------------------------------- uploads

def decode_upload(data: bytes, max_pixels: int, max_side: int) -> np.ndarray:
    """An uploaded image file (JPEG, PNG, WebP, BMP, GIF, TIFF, ...) as BGR uint8, EXIF orientation applied.

    The size is read from the file header and checked against the limits before pixels are decoded.
    Raises :class:`ServeError` (400 empty, 415 not an image, 422 truncated/corrupt/too many pixels).
    """
    from PIL import Image, UnidentifiedImageError

    from ..inference.inputs import InputError, pil_to_bgr

    if not data:
        raise ServeError(400, "empty upload: send the image file as the request body or as a multipart 'file' field")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise ServeError(422, f"image has no pixels ({w}x{h})")
                if max(w, h) > max_side or w * h > max_pixels:
                    raise ServeError(422, f"image is {w}x{h} ({w * h / 1e6:.1f} MP); the limits are {max_side} px "
                                          f"per side and {max_pixels / 1e6:.1f} MP")
                im.load()
                return pil_to_bgr(im, f"upload ({w}x{h} {im.format or 'image'})")
    except ServeError:
        raise
    except UnidentifiedImageError:
        raise ServeError(415, f"the {len(data)}-byte upload is not an image in a format the server decodes "
                              "(JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except Image.DecompressionBombError as e:      # PIL refuses absurd sizes before our own check
        raise ServeError(422, f"image too large ({e}); the limits are {max_side} px per side and "
                              f"{max_pixels / 1e6:.1f} MP") from None
    except InputError as e:
        raise ServeError(422, str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        msg = str(e) or type(e).__name__
        what = "truncated or corrupt image" if ("truncated" in msg.lower() or isinstance(e, EOFError)) \
            else "cannot decode image"
        raise ServeError(422, f"{what} ({type(e).__name__}: {msg})") from None


def recognize_image(rec, bgr: np.ndarray, prior=None, explain: bool = False) -> list[dict]:
    """Faces of one BGR image as JSON-ready dicts; ``prior`` overrides the recognizer's own; with
    ``explain`` each face's explanation also holds its map on the photo (:func:`explanation_on_photo`)."""
    from ..inference.explain import ExplainError
    from ..inference.inputs import InputError

    try:
        faces = rec.recognize(bgr, prior=prior, explain=explain)
    except InputError as e:
        raise ServeError(422, str(e)) from None
    except ExplainError as e:
        raise ServeError(422, f"explain: the served model cannot explain ({e})") from None
    out = [f.to_dict() for f in faces]
    for d, f in zip(out, faces):
        if f.explanation is not None:
            d["explanation"].update(explanation_on_photo(f.explanation, bgr.shape[1], bgr.shape[0]))
    return out


def explanation_on_photo(explanation, width: int, height: int) -> dict:
    """``rect`` ([x, y, w, h], the photo pixels the face crop covers) and ``png``: the map there as a
    base64 RGBA PNG of that size, heat colours with opacity rising with the map."""
    import base64

    import cv2

    from ..inference.draw import heat_rgba

    rect, values = explanation.on_photo(width, height)
    png = ""
    if values.size:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(heat_rgba(values), cv2.COLOR_RGBA2BGRA))
        png = base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""
    return {"rect": list(rect), "png": png}


# ----------------------------------------------------------------------------- worker pool

class RecognizerPool:
    """``workers`` threads, each with its own recognizer from ``factory()``; at most ``capacity``
    jobs admitted (running or queued). :meth:`submit` returns None when full."""

    def __init__(self, factory, workers: int, capacity: int):
        if capacity < workers:
            raise ValueError(f"capacity {capacity} < workers {workers}")
        self.workers, self.capacity = int(workers), int(capacity)
        self._free: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        made = [factory() for _ in range(self.workers)]    # up front: a bad model fails at start, not per request
        for rec in made:
            self._free.put(rec)
        # the first worker's face detector (all are built alike): what /v1/model describes to the page
        self.detector = getattr(made[0], "detector", None) if made else None
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="litefer-worker")
        self._lock = threading.Lock()
        self._inflight = 0
        self.stats = {"admitted": 0, "rejected_busy": 0, "expired_in_queue": 0, "completed": 0, "failed": 0}

    @property
    def inflight(self) -> int:
        return self._inflight

    def submit(self, fn, *args, deadline: float | None = None) -> Future | None:
        """Run ``fn(recognizer, *args)`` on a worker; None when ``capacity`` jobs are already admitted."""
        with self._lock:
            if self._inflight >= self.capacity:
                self.stats["rejected_busy"] += 1
                return None
            self._inflight += 1
            self.stats["admitted"] += 1
        try:
            fut = self._executor.submit(self._run, fn, args, deadline)
        except RuntimeError:                    # executor shut down
            self._release(None)
            raise ServeError(503, "server is shutting down")
        fut.add_done_callback(self._release)
        return fut

    def _run(self, fn, args, deadline):
        if deadline is not None and time.monotonic() > deadline:
            with self._lock:
                self.stats["expired_in_queue"] += 1
            raise ServeError(503, "request waited in the queue past its deadline; the server is overloaded, retry later",
                             headers={"Retry-After": "2"})
        rec = self._free.get()
        try:
            return fn(rec, *args)
        finally:
            self._free.put(rec)

    def _release(self, fut: Future | None):
        with self._lock:
            self._inflight -= 1
            if fut is not None and not fut.cancelled():
                self.stats["completed" if fut.exception() is None else "failed"] += 1

    def shutdown(self):
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_recognizer_factory(cfg: ServeConfig, model: ModelFiles):
    """A callable building one recognizer for one worker thread."""
    def factory():
        from ..inference.recognizer import Recognizer

        extra = {"max_side": cfg.detect_max_side} if cfg.detect_max_side else {}
        return Recognizer(weights=str(model.weights), detector=model.detector, backend=model.backend, device="cpu",
                          min_face=cfg.min_face, threads=cfg.threads, yunet_model=model.yunet, **extra)
    return factory
