"""The FastAPI application of ``litefer serve``.

Routes: ``GET /`` (the page), ``POST /v1/recognize``, ``GET /healthz``, ``GET /v1/model`` (model card,
preprocessing, detector settings, limits), ``GET /v1/model.onnx`` (the model the page runs
on-device), ``GET /v1/detector.onnx`` (the YuNet model the server detects with, for the page; 404
with Haar), ``GET /v1/cascades/{name}`` (OpenCV's Haar cascades, served from the installed
opencv-python), ``/docs`` and ``/openapi.json``. Every error is JSON
``{"status": ..., "error": ..., "message": ...}`` with a 4xx or 5xx status.
"""
from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging
import mimetypes
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..version import __version__
from ..utils import release_free_memory, rss_mib
from ..inference.align import QUALITY_FLAGS, CropSpec
from ..inference.signals import DEFAULT_SMOOTH
from ..prior import PriorError, default_prior, describe as describe_prior, log_weights, offered_priors, parse_prior
from .engine import (ModelFiles, RecognizerPool, ServeConfig, ServeError, decode_upload, make_recognizer_factory,
                     prepare_model, recognize_image)
from .protocol import error_payload

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
EYE_CASCADE = "haarcascade_eye.xml"
DETECTOR_URL = "/v1/detector.onnx"        # the server's YuNet model file, for the page's on-device detector
MULTIPART_OVERHEAD = 64 * 1024          # boundaries and part headers around the file in a form upload
VENDOR_NOTE = '<p id="vendor-note" class="warn" hidden>'     # index.html's note, shown without the vendor files


# ----------------------------------------------------------------------------- response schemas (docs)

class ExplanationOut(BaseModel):
    label: str = Field(description="the class explained: the face's label (after the prior)")
    method: str = Field(description="how the map was made: Grad-CAM computed inside the network's graph, on "
                                    "its last feature map")
    resolution: list[int] = Field(description="[h, w] of the map as computed: the last feature map's size, "
                                              "4 x 4 at 112 px input; the PNG only interpolates it")
    cam: list[list[float]] = Field(description="the raw map of the label, h x w, non-negative, not normalised")
    rect: list[int] = Field(description="x, y, width, height: the photo pixels the PNG covers (the face crop's "
                                        "bounding rectangle, clipped to the image)")
    png: str = Field(description="base64 PNG, RGBA, rect-sized: the map scaled to [0, 1] and laid on the photo "
                                 "through the crop's warp, in heat colours, opacity rising with the map")


class FaceOut(BaseModel):
    box: list[int] = Field(description="x, y, width, height in the uploaded image's pixels")
    label: str = Field(description="most probable class")
    score: float = Field(description="probability of the label")
    scores: dict[str, float] = Field(description="probability of every class, in model-card order")
    detection_score: float = Field(description="face detector confidence (YuNet: its score in [0, 1]; Haar: "
                                               "merged detections)")
    quality: dict = Field(description="crop quality measurements and flags")
    issues: list[str] = Field(description="raised quality flags: " + ", ".join(QUALITY_FLAGS))
    landmarks: list[list[float]] | None = None
    explanation: ExplanationOut | None = Field(None, description="with `explain=1` only: where the network "
                                                                 "looked for the label")


class RecognizeOut(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]
    model: str
    detector: str = Field(description="the face detector that ran: yunet or haar")
    prior: str | dict[str, float] = Field(description="the class prior the scores were computed with "
                                                       "(the request's `prior` parameter, default /v1/model's default_prior)")
    timing_ms: dict[str, float] = Field(description="queue, decode, recognize and total milliseconds")


class ErrorOut(BaseModel):
    status: int
    error: str
    message: str


ERRORS = {code: {"model": ErrorOut, "description": text} for code, text in {
    400: "empty upload, malformed form or Content-Length",
    408: "headers or upload not received within header_timeout / upload_timeout, or arriving below "
         "min_transfer_rate once transfer_grace has passed",
    413: "upload larger than max_upload_bytes", 415: "not an image", 422: "truncated, corrupt or too many pixels",
    429: "more than max_connections_per_client connections open from this address; retry after Retry-After seconds",
    503: "all workers busy and the queue full, the request timed out, or max_connections open (a slow upload may "
         "be closed to make room for a request that arrives whole); retry after Retry-After seconds"}.items()}

UPLOAD_DOC = {"requestBody": {"required": True, "description": "an image file, as the raw body or a multipart field "
                              "named 'file'", "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


# ----------------------------------------------------------------------------- helpers

def vendor_manifest() -> dict | None:
    """What ``make web`` copied from npm (``static/vendor/manifest.json``), or None when absent."""
    path = VENDOR_DIR / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return None
    missing = [f for f in manifest.get("files", []) if vendor_file(f) is None]
    return None if missing else manifest


def vendor_file(rel: str) -> tuple[Path, bool] | None:
    """The file behind ``/static/vendor/<rel>`` as (path, gzipped), or None when absent or outside the
    folder. ``make web`` stores the large files (opencv.js, the WebAssembly runtime) gzipped only: 7 MB
    in the wheel and over the network instead of 25 MB."""
    root = VENDOR_DIR.resolve()
    try:                                       # a path the OS cannot name (a NUL byte, too long) is absent
        target = (root / rel).resolve()
        if root not in target.parents:
            return None
        if target.is_file():
            return target, False
        packed = target.with_name(target.name + ".gz")
        return (packed, True) if packed.is_file() else None
    except (OSError, ValueError):
        return None


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip: the q-value of ``gzip`` (or ``x-gzip``), else
    of ``*``, is above 0 (RFC 9110 12.5.3: ``gzip;q=0`` refuses it; a coding without q has q=1)."""
    weights = {}
    for item in accept_encoding.split(","):
        coding, *params = (x.strip() for x in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            weights[coding.lower()] = q
    q = next((weights[c] for c in ("gzip", "x-gzip", "*") if c in weights), 0.0)
    return q > 0                               # NaN is not above 0 either


def vendor_response(rel: str, accept_encoding: str) -> Response:
    """A vendor file, sent gzipped as stored to clients that accept gzip, decompressed for the rest."""
    found = vendor_file(rel)
    if found is None:
        raise StarletteHTTPException(404, f"/static/vendor/{rel}: no such file")
    path, packed = found
    media = mimetypes.guess_type(rel)[0] or "application/octet-stream"
    if not packed:
        return FileResponse(path, media_type=media)
    if accepts_gzip(accept_encoding):
        return FileResponse(path, media_type=media, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(gzip.decompress(path.read_bytes()), media_type=media, headers={"Vary": "Accept-Encoding"})


def page_html(vendor_present: bool) -> str:
    """index.html, with its note that the on-device mode is unavailable shown when the vendor files are missing."""
    html = (STATIC_DIR / "index.html").read_text()
    return html if vendor_present else html.replace(VENDOR_NOTE, VENDOR_NOTE.replace(" hidden>", ">"))


def cascade_dir() -> Path:
    import cv2

    return Path(cv2.data.haarcascades)


def detector_settings(cfg: ServeConfig, detector=None) -> dict:
    """What the page's on-device detector needs to find the faces the server finds.

    With the server's detector (``detector``, the workers' own) a ``YuNetDetector``: the same model file
    (at ``DETECTOR_URL``), run in onnxruntime-web, with the net's thresholds, ``min_size`` and
    ``max_side``, and the landmark template its faces are framed by; ``fallback`` holds the Haar
    settings the page uses when it cannot load that file. Otherwise the Haar settings, read from a
    detector built the way the server builds its own (``litefer.inference.detect.HaarDetector``).
    """
    from ..inference.align import FER2013_TEMPLATE, FER_SIZE
    from ..inference.detect import YuNetDetector

    haar = haar_settings(cfg)
    if not isinstance(detector, YuNetDetector):
        return haar
    d = detector
    return {"name": "yunet", "url": DETECTOR_URL, "model_bytes": d.model_path.stat().st_size,
            "score_threshold": d.score_threshold, "nms_threshold": d.nms_threshold, "top_k": d.top_k,
            "min_size": d.min_size, "max_side": d.max_side,
            "template": FER2013_TEMPLATE.astype(float).tolist(), "template_size": FER_SIZE,
            "fallback": haar}


def haar_settings(cfg: ServeConfig) -> dict:
    """The Haar settings of the page's on-device detector, from a ``HaarDetector`` built as the server's."""
    from ..inference.align import HAAR_FRAME_SCALE
    from ..inference.detect import HaarDetector

    d = HaarDetector(min_size=cfg.min_face, **({"max_side": cfg.detect_max_side} if cfg.detect_max_side else {}))
    face_cascade = inspect.signature(HaarDetector.__init__).parameters["cascade"].default
    return {"name": "haar", "scale_factor": d.scale_factor, "min_neighbors": d.min_neighbors,
            "min_size": d.min_size, "search_size": d.search_size(), "max_side": d.max_side, "find_eyes": d.find_eyes,
            "smallest_window": d.smallest_window, "min_score_without_eyes": d.min_score_without_eyes,
            "frame_scale": HAAR_FRAME_SCALE,
            "face_cascade": f"/v1/cascades/{face_cascade}", "eye_cascade": f"/v1/cascades/{EYE_CASCADE}"}


def explain_support(model: ModelFiles) -> dict:
    """Whether the server (``?explain=1``) and the page's on-device mode can explain: an ONNX file
    needs the ``cam`` output; a ``.pt`` always has it (the server runs it in torch or exports it
    with the map); a TorchScript file cannot."""
    from ..inference.explain import CAM_OUTPUT
    from ..onnxproto import graph_outputs

    def has_cam(path: Path) -> bool:
        return CAM_OUTPUT in graph_outputs(path.read_bytes())

    suffix = model.weights.suffix.lower()
    return {"server": has_cam(model.weights) if suffix == ".onnx" else suffix == ".pt",
            "on_device": has_cam(model.onnx)}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, message), status_code=status, headers=headers)


async def read_upload(request: Request, cfg: ServeConfig) -> bytes:
    """The image bytes of a request: the ``file`` field of a multipart form, else the raw body whatever
    its Content-Type (``curl --data-binary @photo.jpg`` sends one saying URL-encoded form).

    Enforces ``max_upload_bytes`` (from Content-Length before reading, and while reading); the
    deadline on the body (``upload_timeout``) is the protocol's, the same for every route
    (``protocol.py``).
    """
    ctype = request.headers.get("content-type", "").lower()
    multipart = ctype.startswith("multipart/form-data")
    limit = cfg.max_upload_bytes + (MULTIPART_OVERHEAD if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ServeError(400, f"Content-Length {declared!r} is not a number", close=True) from None
        if n > limit:
            raise ServeError(413, f"upload of {n} bytes exceeds the {cfg.max_upload_bytes}-byte limit", close=True)
    body = bytearray()

    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise ServeError(413, f"upload exceeds the {cfg.max_upload_bytes}-byte limit", close=True)
    except ClientDisconnect:
        raise ServeError(400, f"client disconnected during the upload ({len(body)} bytes arrived)", close=True) from None
    if not multipart:
        return bytes(body)
    return await _form_file(request, bytes(body), cfg)


async def _form_file(request: Request, body: bytes, cfg: ServeConfig) -> bytes:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive)
    form = await buffered.form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if upload is None:
            files = [v for v in form.values() if hasattr(v, "read")]
            upload = files[0] if files else None
        if upload is None or not hasattr(upload, "read"):
            raise ServeError(400, "multipart upload has no file field; name the image field 'file'")
        data = await upload.read()
        if len(data) > cfg.max_upload_bytes:
            raise ServeError(413, f"uploaded file of {len(data)} bytes exceeds the {cfg.max_upload_bytes}-byte limit")
        return data
    finally:
        await form.close()


PRIOR_DOC = ("class prior of the scores: 'dataset' (the model's own probabilities), 'balanced' (the training "
             "class frequencies divided out), 'balanced:TAU' (that share of it, TAU from 0 to 1) or class=weight "
             "pairs naming every class, e.g. neutral=1,happiness=0.5,... (each probability multiplied by its "
             "weight, then renormalised); default: /v1/model's default_prior (balanced:0.5 for weights that "
             "store their class frequencies, else dataset); at most once per request (repeated: 422)")


def single_query(request: Request, name: str) -> str | None:
    """A query parameter that may be given once: repeated, it is a 422 naming it (the framework
    would silently keep the last value)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ServeError(422, f"{name}: given {len(values)} times ({', '.join(map(repr, values))}); give it once")
    return values[0] if values else None


def request_prior(text: str | None, model: ModelFiles):
    """The ``prior`` query parameter, checked against the model's classes (422 when unusable)."""
    if text is None or text == "":
        return default_prior(model.card)
    try:
        prior = parse_prior(text)
        log_weights(prior, model.card)
    except PriorError as e:
        names = model.card.class_names
        hint = "" if str(names) in str(e) else f" (the model's classes: {names})"
        raise ServeError(422, f"prior: {e}{hint}") from None
    return prior


LARGE_IMAGE_PIXELS = 4_000_000     # after an image this large, the worker returns the freed memory to the OS


EXPLAIN_DOC = ("1 (or true): each face also gets `explanation`, the Grad-CAM map of its label as raw h x w "
               "values (`cam`, 4 x 4 for the shipped model) and as a heat-coloured RGBA PNG over the face (`png`, "
               "covering `rect` of the photo); 0 (default): nothing extra is computed; at most once per request "
               "(repeated: 422)")


def _work(rec, data: bytes, cfg: ServeConfig, admitted: float, prior="dataset", explain: bool = False) -> dict:
    t0 = time.monotonic()
    bgr = decode_upload(data, cfg.max_pixels, cfg.max_side)
    t1 = time.monotonic()
    height, width = bgr.shape[:2]
    try:
        faces = recognize_image(rec, bgr, prior, explain)
    finally:
        del bgr
        if width * height >= LARGE_IMAGE_PIXELS:
            release_free_memory()
    t2 = time.monotonic()
    return {"width": int(width), "height": int(height), "faces": faces,
            "timing_ms": {"queue": round(1000 * (t0 - admitted), 2), "decode": round(1000 * (t1 - t0), 2),
                          "recognize": round(1000 * (t2 - t1), 2)}}


# ----------------------------------------------------------------------------- application

def create_app(cfg: ServeConfig, model: ModelFiles | None = None) -> FastAPI:
    """Build the app: resolves the model (``prepare_model``) and starts the worker pool now, so a
    bad model or setting fails here rather than on the first request."""
    model = model or prepare_model(cfg)
    pool = RecognizerPool(make_recognizer_factory(cfg, model), cfg.workers, cfg.capacity)
    started = time.time()
    model_name = model.name
    detector = detector_settings(cfg, pool.detector)  # once: building a HaarDetector per poll blocked the event loop
    yunet_file = model.yunet          # None on a Haar server, whose detector block is then Haar's
    explains = explain_support(model)
    cascades = {Path(detector.get("fallback", detector)["face_cascade"]).name, EYE_CASCADE}
    if vendor_manifest() is None:
        log.warning("the page's on-device mode is unavailable: no onnxruntime-web / opencv.js in %s (run `make web` "
                    "before building or installing litefer); server mode and the API work", VENDOR_DIR)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown()

    app = FastAPI(title="litefer", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Facial expression recognition (litefer). Upload an image to `/v1/recognize`; the page "
                              "at `/` runs the same model live from a webcam, on the server or in the browser.")
    app.state.pool, app.state.config, app.state.model = pool, cfg, model

    @app.exception_handler(ServeError)
    async def _serve_error(_request, exc: ServeError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        parts = ["{}: {}".format(".".join(str(x) for x in e.get("loc", ())), e.get("msg")) for e in exc.errors()]
        return error_response(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(_request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.post("/v1/recognize", response_model=RecognizeOut, responses=ERRORS, openapi_extra=UPLOAD_DOC,
              summary="Faces, expression labels and per-class scores in an uploaded image; with explain=1, where "
                      "the network looked")
    async def recognize(request: Request, prior: str | None = Query(None, description=PRIOR_DOC),
                        explain: bool = Query(False, description=EXPLAIN_DOC)):
        t0 = time.monotonic()
        data = await read_upload(request, cfg)
        # ``prior`` is declared for the API docs; read it from the query so that a repeat is refused
        chosen = request_prior(single_query(request, "prior"), model)
        single_query(request, "explain")          # parsed by the framework; a repeat is refused too
        admitted = time.monotonic()
        deadline = admitted + cfg.request_timeout
        fut = pool.submit(_work, data, cfg, admitted, chosen, explain, deadline=deadline)
        if fut is None:
            raise ServeError(503, f"server busy: {pool.capacity} requests are running or queued; retry later",
                             headers={"Retry-After": "1"})
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(fut), cfg.request_timeout)
        except asyncio.TimeoutError:
            raise ServeError(503, f"request not answered within {cfg.request_timeout:g} s; the server is overloaded",
                             headers={"Retry-After": "2"}) from None
        result["model"] = model_name
        result["detector"] = model.detector
        result["prior"] = describe_prior(chosen)
        result["timing_ms"]["total"] = round(1000 * (time.monotonic() - t0), 2)
        return JSONResponse(result)

    @app.get("/healthz", summary="Liveness and load")
    async def healthz():
        return {"status": "ok", "model": model_name, "backend": model.backend, "workers": pool.workers,
                "inflight": pool.inflight, "capacity": pool.capacity, "uptime_s": round(time.time() - started, 1),
                "rss_mib": rss_mib(), "stats": dict(pool.stats)}

    @app.get("/v1/model", summary="Model card: classes, preprocessing, crop, detector settings, limits")
    async def model_card():
        card = model.card
        manifest = vendor_manifest()
        return {"model_name": model_name, "class_names": card.class_names, "num_classes": card.num_classes,
                "preprocess": card.preprocess.to_dict(), "crop": CropSpec.from_card(card).to_dict(),
                "tta_flip": card.tta_flip, "precision": card.precision, "val_accuracy": card.val_accuracy,
                "class_prior": card.class_prior,
                "priors": offered_priors(card), "default_prior": default_prior(card), "explain": explains,
                "card": card.to_dict(),
                "server": {"backend": model.backend, "weights": model.weights.name, "workers": cfg.workers,
                           "threads_per_worker": cfg.threads, "queue": cfg.queue, "detector": model.detector,
                           "detector_requested": cfg.detector},
                "limits": cfg.limits(),
                "timeline": {"smooth_s": DEFAULT_SMOOTH, "history_s": 30},
                "browser": {"onnx_url": "/v1/model.onnx", "onnx_bytes": model.onnx.stat().st_size,
                            "detector": detector,
                            "vendor": manifest, "available": manifest is not None,
                            "missing_hint": None if manifest else "run `make web` (npm) to fetch onnxruntime-web "
                                                                  "and opencv.js for the on-device mode"}}

    @app.get("/v1/model.onnx", summary="The ONNX model the page runs on-device (litefer metadata embedded)")
    async def model_onnx():
        return FileResponse(model.onnx, media_type="application/octet-stream", filename=f"{model_name}.onnx")

    @app.get(DETECTOR_URL, summary="The YuNet face detector model (ONNX) the server detects with, for the page's "
                                   "on-device mode to run the same one (404 when the server detects with Haar)")
    async def detector_onnx():
        if yunet_file is None:
            raise ServeError(404, f"this server detects faces with {model.detector!r}, not YuNet, so it has no detector "
                                  "model to serve (the page uses the Haar cascades at /v1/cascades/); start it with "
                                  "--detector yunet --yunet-model PATH for one")
        if not yunet_file.is_file():
            raise ServeError(500, f"the YuNet model {yunet_file} the server started with is gone")
        return FileResponse(yunet_file, media_type="application/octet-stream", filename=yunet_file.name)

    @app.get("/v1/cascades/{name}", summary="An OpenCV Haar cascade from the installed opencv-python")
    async def cascade(name: str):
        if name not in cascades:
            raise ServeError(404, f"unknown cascade {name!r}; available: {sorted(cascades)}")
        path = cascade_dir() / name
        if not path.is_file():
            raise ServeError(500, f"{path} is missing from the installed opencv-python")
        return FileResponse(path, media_type="application/xml")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        swagger = VENDOR_DIR / "swagger"
        if (swagger / "swagger-ui-bundle.js").is_file():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="litefer API",
                                       swagger_js_url="/static/vendor/swagger/swagger-ui-bundle.js",
                                       swagger_css_url="/static/vendor/swagger/swagger-ui.css",
                                       swagger_favicon_url="/static/favicon.svg")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="litefer API")

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page_html(vendor_manifest() is not None), headers={"Cache-Control": "no-cache"})

    @app.api_route("/static/vendor/{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def vendor(rel: str, request: Request):
        return vendor_response(rel, request.headers.get("accept-encoding", ""))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

