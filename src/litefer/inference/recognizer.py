"""``litefer.Recognizer``: faces and expressions from photos, arrays, PIL images, folders and videos.

    rec = litefer.Recognizer()                         # packaged FERPlus weights, YuNet (or Haar) detector, CPU
    faces = rec.recognize("photo.jpg")                 # one FaceResult per face
    df = litefer.to_dataframe(rec.recognize_video("clip.mp4", every=5))

Pipeline per image: decode to BGR uint8 (any bit depth, grey or alpha), detect faces, crop each face
the way the training data was framed (``litefer.inference.align``), batch the crops of many images or frames,
classify them (``litefer.inference.backends``). Class names and preprocessing come from the weights' metadata.
The ONNX Runtime backend does not import torch.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .align import CropSpec, crop_face, frame_transform, quality_issues
from .backends import create_backend, resolve_weights, softmax
from .detect import Detection, FaceDetector, create_detector, positive_int, valid_max_side
from .explain import Explanation, mirror_average
from .inputs import InputError, describe, iter_frames, load_image
from .signals import DEFAULT_SMOOTH, smooth_results, valence
from .track import FaceTracker, TrackLinker
from ..prior import default_prior, describe as describe_prior, log_weights
from ..utils import atomic_write_text

log = logging.getLogger(__name__)


def _model_threads(threads: int | None, backend: str, device: str) -> int | None:
    """ONNX Runtime gets one thread unless told otherwise: with two, its pool spins between calls and
    slows OpenCV's face search on the same cores more than the second thread speeds up the model
    (1.47x the time per JAFFE photo with both on 2 threads, 2 cores; results/detection_figures.md)."""
    if threads is not None or str(device).startswith("cuda"):
        return threads
    return 1 if backend == "onnxruntime" else None


@dataclass
class FaceResult:
    """One face: box ``(x, y, w, h)`` in the input's pixels, the top label and its probability,
    the probability of every class (model-card order), detector score, and crop quality; with
    ``explain=True``, where the network looked for the label (:class:`~litefer.inference.explain.Explanation`)."""

    box: tuple[int, int, int, int]
    label: str
    score: float
    scores: dict[str, float]
    detection_score: float
    quality: dict
    landmarks: list[list[float]] | None = None
    explanation: Explanation | None = field(default=None, compare=False)
    track: int | None = None         # video: the face's track id, the same person from frame to frame
    raw: dict | None = None          # smoothed video: this frame's own {"label", "score", "scores"}

    @property
    def raw_scores(self) -> dict[str, float]:
        """This frame's own class probabilities (``scores`` unless smoothing replaced them)."""
        return self.scores if self.raw is None else self.raw["scores"]

    @property
    def valence(self) -> float | None:
        """FaceReader's valence of ``scores`` (:func:`litefer.inference.signals.valence`)."""
        return valence(self.scores)

    @property
    def issues(self) -> list[str]:
        """Raised quality flags, in ``QUALITY_FLAGS`` order (``small``, ``clipped``, ``dark``, ``bright``,
        ``low_contrast``, ``blurry``, ``turned``, ``occluded``, ``partial``; see :func:`crop_face`)."""
        return quality_issues(self.quality)

    def to_dict(self) -> dict:
        d = {"box": list(self.box), "label": self.label, "score": round(self.score, 6),
             "scores": {k: round(v, 6) for k, v in self.scores.items()},
             "detection_score": round(self.detection_score, 4), "quality": dict(self.quality),
             "issues": self.issues, "landmarks": self.landmarks}
        if self.explanation is not None:
            d["explanation"] = self.explanation.to_dict()
        if self.track is not None:
            d["track"] = self.track
            v = self.valence
            d["valence"] = None if v is None else round(v, 6)
        if self.raw is not None:
            d["raw"] = {"label": self.raw["label"], "score": round(self.raw["score"], 6),
                        "scores": {k: round(v, 6) for k, v in self.raw["scores"].items()}}
        return d


@dataclass
class ImageResult:
    """The faces of one image or video frame; ``error`` says why an input was skipped (then no faces)."""

    source: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    frame: int | None = None
    time: float | None = None
    detector: str | None = None                      # the face detector that ran ("yunet", "haar")
    image: np.ndarray | None = field(default=None, repr=False, compare=False)   # BGR, only when kept

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        d = {"source": self.source, "error": self.error, "width": self.width, "height": self.height,
             "detector": self.detector, "faces": [f.to_dict() for f in self.faces]}
        if self.frame is not None:
            d.update(frame=self.frame, time=None if self.time is None else round(self.time, 4))
        return d


class Recognizer:
    """Detect faces and recognise their expressions.

    Args:
        weights: ``"default"`` (the packaged FERPlus model), ``"default-int8"`` (its INT8 ONNX, with
            the onnxruntime backend), or a path: a weights file / run checkpoint (``.pt``), a
            TorchScript file or an ONNX file written by ``litefer export``.
        detector: ``"auto"`` (YuNet when its model is on disk: ``yunet_model``, ``$LITEFER_YUNET`` or
            the file ``litefer fetch yunet`` cached; else Haar, with a one-line hint), ``"haar"``
            (built in), ``"yunet"``, a YuNet ``.onnx`` path, or a
            :class:`litefer.inference.detect.FaceDetector`. ``detector_name`` says which ran.
        backend: ``"torch"`` or ``"onnxruntime"``; None picks onnxruntime for ``.onnx`` weights.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` (torch), ``"cpu"``/``"cuda"`` (onnxruntime).
        min_face: smallest face side, in pixels of the input image; None: the detector's default (32).
            For ``haar`` the search time grows with the range of sizes: 48 skips 15-24 % of it and
            keeps the boxes of 48 px and more (all but 2 of 2,653 on FER2013;
            ``results/detection_figures.md``).
        max_side: the largest image side searched for faces at once (at least 256). A larger image
            is searched on a copy downscaled to it for its large faces and in overlapping tiles of
            that side for the faces of ``min_face`` and more that the copy cannot see, so the time
            grows with the image's area (``results/detect_scale.md``); boxes and crops use the full image.
        batch_size: faces per model call; crops of several images or frames are batched together.
        tta: average the prediction with the mirrored face's; None follows the weights' model card.
        threads: CPU threads for the model (torch's setting is process-wide). None: torch's default;
            for ONNX Runtime on the CPU, 1 (its idle threads spin and take the cores from OpenCV's
            face search between photos, see ``_model_threads``), with the mirrored pass of ``tta`` on
            a second core when there is one.
        prior: ``"dataset"`` (the model's own probabilities, its training class balance included),
            ``"balanced"`` (the stored training class frequencies divided out: logit adjustment),
            ``"balanced:TAU"`` (that share of it), or a mapping of every class to a positive weight
            that multiplies its probability; None: ``"balanced:0.5"`` for weights that store their
            class frequencies, as the packaged ones do, else ``"dataset"``
            (:func:`litefer.prior.default_prior`, chosen in ``results/prior_choice.md``); see
            :mod:`litefer.prior`. Raises :class:`litefer.prior.PriorError` when unusable.
    """

    def __init__(self, weights="default", detector="auto", backend: str | None = None, device: str = "cpu",
                 min_face: int | None = None, batch_size: int = 64, tta: bool | None = None, threads: int | None = None,
                 yunet_model: str | os.PathLike | None = None, max_side: int = 1280, prior=None):
        batch_size = positive_int("batch_size", batch_size)       # checked before the model loads
        if min_face is not None:
            positive_int("min_face", min_face)
        valid_max_side(max_side)
        path, backend = resolve_weights(weights, backend)                # once: the file and its backend
        model_threads = _model_threads(threads, backend, device)
        self.backend = create_backend(path, backend, device, model_threads)
        # threads left to ONNX Runtime (1, see above) and a spare core: the mirrored pass runs beside
        # the plain one, which the backend would otherwise run in the same call on one thread
        spare = threads is None and model_threads == 1 and (os.cpu_count() or 1) > 1
        self._mirror_pool = ThreadPoolExecutor(1, thread_name_prefix="litefer-mirror") if spare else None
        self.card = self.backend.card
        self.class_names: list[str] = list(self.card.class_names)
        self.crop_spec = CropSpec.from_card(self.card)
        self.prior = default_prior(self.card) if prior is None else prior
        self._prior_logits = log_weights(self.prior, self.card)   # checked now: a bad prior fails here
        self.detector: FaceDetector = create_detector(detector, min_size=min_face, model_path=yunet_model,
                                                      max_side=max_side) \
            if not isinstance(detector, FaceDetector) else detector
        self.batch_size = int(batch_size)
        self.tta = self.card.tta_flip if tta is None else bool(tta)

    @property
    def detector_name(self) -> str:
        """The detector that runs: ``"yunet"``, ``"haar"`` or a custom detector's ``name``."""
        return self.detector.name

    @property
    def meta(self) -> dict:
        """The model card as a dict (:class:`litefer.card.Card` is ``self.card``)."""
        return self.card.to_dict()

    def __repr__(self) -> str:
        return (f"Recognizer(model={self.card.model_name!r}, backend={self.backend.name!r}, "
                f"detector={self.detector!r}, classes={self.class_names}, prior={describe_prior(self.prior)!r})")

    # ------------------------------------------------------------------ single calls

    def recognize(self, image, color: str = "bgr", prior=None, explain: bool = False) -> list[FaceResult]:
        """Faces in one image: a path, a NumPy array (``color="bgr"`` or ``"rgb"``) or a PIL image.

        ``prior`` overrides the recognizer's own for this call. ``explain`` fills each face's
        ``explanation``: the Grad-CAM map of its label (:mod:`litefer.inference.explain`; the weights
        need a pooled classifier, and an ONNX file the ``cam`` output of ``litefer export --explain``).
        Raises :class:`litefer.InputError` (naming the input) if it cannot be read; no face is [].
        """
        result = next(self.iter_many([image], color=color, on_error="raise", prior=prior, explain=explain))
        return result.faces

    def _adjustment(self, prior) -> np.ndarray | None:
        return self._prior_logits if prior is None else log_weights(prior, self.card)

    def classify_crops(self, crops: np.ndarray, prior=None) -> np.ndarray:
        """Class probabilities (N, K) for face crops already framed like the training data
        (uint8 N,S,S,C as returned by :func:`litefer.inference.align.crop_face`); ``prior`` overrides
        the recognizer's own."""
        return self._classify(crops, self._adjustment(prior))[0]

    def _classify(self, crops: np.ndarray, adjust: np.ndarray | None, explain: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and, with ``explain``, every class's map (N, K, h, w)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[..., None]
        out, cams = [], []
        for i in range(0, len(crops), self.batch_size):
            batch = crops[i:i + self.batch_size]
            if explain:
                logits, cam = self._explained(batch)
                cams.append(cam)
            else:
                logits = self._logits(batch)
            out.append(softmax(logits if adjust is None else logits + adjust))
        probs = np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)
        return probs, (np.concatenate(cams) if cams else None)

    def _logits(self, crops: np.ndarray) -> np.ndarray:
        """Logits, mirror-averaged when ``tta``: the two passes side by side when a core is spare."""
        if not (self.tta and self._mirror_pool):
            return self.backend.logits(crops, self.tta)
        mirrored = self._mirror_pool.submit(self.backend.logits, np.ascontiguousarray(crops[:, :, ::-1]), False)
        return (self.backend.logits(crops, False) + mirrored.result()) / 2

    def _explained(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_logits` with every class's map, mirror-averaged the same way."""
        if not (self.tta and self._mirror_pool):
            return self.backend.explain(crops, self.tta)
        mirrored = self._mirror_pool.submit(self.backend.explain, np.ascontiguousarray(crops[:, :, ::-1]), False)
        return mirror_average(self.backend.explain(crops, False), mirrored.result())

    def detect_and_crop(self, bgr: np.ndarray, detector=None) -> tuple[list[Detection], list[np.ndarray], list[dict]]:
        """Detections, crops and quality for one BGR image (``detector``: the recognizer's by default)."""
        dets = (detector or self.detector).detect(bgr)
        crops, quals = [], []
        for d in dets:
            c, q = crop_face(bgr, d, self.crop_spec)
            crops.append(c)
            quals.append(q)
        return dets, crops, quals

    # ------------------------------------------------------------------ batches and videos

    def recognize_many(self, images: Iterable, color: str = "bgr", on_error: str = "skip",
                       progress: bool = False, prior=None, explain: bool = False) -> list[ImageResult]:
        """One :class:`ImageResult` per input, in order; faces of many images are batched.

        With ``on_error="skip"`` (default) an unreadable input gives a result whose ``error`` says
        why, and the rest of the batch goes on; ``"raise"`` stops at the first bad input.
        """
        images = list(images)
        it = self.iter_many(images, color=color, on_error=on_error, prior=prior, explain=explain)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, total=len(images), unit="image", desc="recognize")
        return list(it)

    def iter_many(self, images: Iterable, color: str = "bgr", on_error: str = "skip",
                  keep_images: bool = False, prior=None, explain: bool = False, load=None) -> Iterator[ImageResult]:
        """Streaming :meth:`recognize_many`: yields results in input order as batches complete;
        ``prior`` overrides the recognizer's own; ``explain`` as in :meth:`recognize`. ``load(src)``
        replaces :func:`~litefer.inference.inputs.load_image` as the reader (object storage URIs)."""
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        adjust = self._adjustment(prior)             # a bad prior fails before any input is read
        if explain:
            self.backend.require_explain()           # so do weights that cannot explain

        def items():
            for src in images:
                yield ImageResult(describe(src)), (lambda s=src: load(s) if load else load_image(s, color))

        yield from self._pipeline(items(), on_error, keep_images, adjust, explain=explain)

    def recognize_video(self, source, every: int = 1, max_frames: int | None = None,
                        keep_images: bool = False, detect_every: int = 1,
                        detect_scale: float = 1.0, explain: bool = False, smooth: float | None = None,
                        centred: bool | None = None, start: int = 0) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per analysed frame (every ``every``-th frame, from frame
        ``start`` on) of a video file or webcam index, with ``frame`` (index) and ``time`` (seconds) set.

        Every face gets a ``track`` id that stays with the person (:class:`~litefer.inference.track.TrackLinker`).
        ``smooth`` seconds (None: ``DEFAULT_SMOOTH``, 0: off) average each track's class probabilities
        over time, centred on each frame for files and over the last ``smooth`` seconds for a webcam
        (``centred`` overrides); ``label``, ``score`` and ``scores`` are then the smoothed values and
        ``FaceResult.raw`` the frame's own (:func:`litefer.inference.signals.smooth_results`).

        Frames in between are skipped without decoding. Memory stays flat however long the video:
        at most ``batch_size`` frames' crops are held. Raises InputError if the video cannot be opened.
        Collect with :func:`litefer.to_dataframe` / :func:`litefer.write_csv`.

        Faster on live video: ``detect_every=k`` runs the face detector on every k-th analysed frame
        only (and whenever a face is lost), following the faces in between by template matching;
        ``detect_scale`` (0 < s <= 1) detects and tracks on a frame downscaled by s, so faces need
        ``24 / s`` pixels with Haar. Every analysed frame is still classified. See
        :class:`litefer.inference.track.FaceTracker`. ``explain`` as in :meth:`recognize`.
        """
        if explain:
            self.backend.require_explain()
        tracker = None
        if detect_every != 1 or detect_scale != 1.0:
            tracker = FaceTracker(self.detector, detect_every, detect_scale)       # checks the values now
        frames = iter_frames(source, every=every, max_frames=max_frames, start=start)   # raises now if unopenable
        name = f"webcam {source}" if isinstance(source, int) else describe(source)
        items = ((ImageResult(name, frame=idx, time=t), (lambda f=frame: f)) for idx, t, frame in frames)
        results = self._pipeline(items, "raise", keep_images, self._prior_logits, tracker, explain, TrackLinker())
        seconds = DEFAULT_SMOOTH if smooth is None else float(smooth)
        if seconds <= 0:
            return results
        return smooth_results(results, seconds, not isinstance(source, int) if centred is None else centred)

    def _pipeline(self, items, on_error: str, keep_images: bool, adjust=None,
                  detector=None, explain: bool = False, linker: TrackLinker | None = None) -> Iterator[ImageResult]:
        """Read and detect item by item, classify the crops of up to ``batch_size`` faces at once.

        On Ctrl-C or SIGTERM (a KeyboardInterrupt) the images read so far are classified and
        yielded before the interrupt goes on: they are finished but for one model call, and a
        caller writing results as they come would otherwise lose up to a batch of them.
        """
        pending: list[tuple[ImageResult, list[Detection], list[np.ndarray], list[dict], list]] = []
        max_images = 8 if keep_images else max(self.batch_size, 8)
        try:
            for result, load in items:
                dets, crops, quals = self._detect_item(result, load, on_error, keep_images, detector)
                ids = linker.link(result.time or 0.0, [d.box for d in dets], crops) if linker else [None] * len(dets)
                pending.append((result, dets, crops, quals, ids))
                if sum(len(p[2]) for p in pending) >= self.batch_size or len(pending) >= max_images:
                    yield from self._flush(pending, adjust, explain)
            yield from self._flush(pending, adjust, explain)
        except KeyboardInterrupt:
            yield from self._flush(pending, adjust, explain)
            raise

    def _detect_item(self, result: ImageResult, load, on_error: str, keep_images: bool, detector):
        """(detections, crops, qualities) of one item; a failure is recorded in ``result`` (or raised)."""
        result.detector = self.detector.name
        try:
            bgr = load()
            result.height, result.width = bgr.shape[:2]
            dets, crops, quals = self.detect_and_crop(bgr, detector)
            if keep_images:
                result.image = bgr
            return dets, crops, quals
        except InputError as e:
            if on_error == "raise":
                raise
            result.error = str(e)
        except (MemoryError, ValueError, OSError) as e:   # decoder or OpenCV failures on odd inputs
            if on_error == "raise":
                raise InputError(f"{result.source}: {type(e).__name__}: {e}") from e
            result.error = f"{result.source}: {type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - e.g. cv2.error; one input must not end the batch
            if on_error == "raise":
                raise
            result.error = f"{result.source}: {type(e).__name__}: {str(e).strip()[:300]}"
        return [], [], []

    def _flush(self, pending: list, adjust, explain: bool = False) -> Iterator[ImageResult]:
        """Classify the crops of ``pending`` and yield its results in order, emptying it as they go
        (so that an interrupted flush is resumed where it stopped, never repeated)."""
        crops = [c for _, _, cs, _, _ in pending for c in cs]
        probs, cams = self._classify(np.stack(crops), adjust, explain) if crops else \
            (np.zeros((0, len(self.class_names))), None)
        k = 0
        while pending:
            result, dets, _, quals, ids = pending.pop(0)
            for d, q, track in zip(dets, quals, ids):
                p = probs[k]
                top = int(np.argmax(p))
                result.faces.append(FaceResult(
                    box=tuple(int(round(v)) for v in d.box), label=self.class_names[top], score=float(p[top]),
                    scores={n: float(v) for n, v in zip(self.class_names, p)}, detection_score=float(d.score),
                    quality=q, landmarks=None if d.landmarks is None else np.round(d.landmarks, 1).tolist(),
                    explanation=None if cams is None else self._explanation(cams[k, top], top, d), track=track))
                k += 1
            yield result

    def _explanation(self, cam: np.ndarray, top: int, det: Detection) -> Explanation:
        """The label's map, with the crop's warp (the one :func:`crop_face` applied) to place it on the photo."""
        spec = self.crop_spec
        transform = frame_transform(det, spec.size, spec.rotate, spec.level_above)[0]
        return Explanation.of(cam, self.class_names[top], spec.size, transform)


# ----------------------------------------------------------------------------- tables

def _rows(results, class_names, include_empty: bool):
    if isinstance(results, (ImageResult, FaceResult)):
        results = [results]
    for r in results:
        if isinstance(r, FaceResult):
            r = ImageResult("", [r])
        if not isinstance(r, ImageResult):
            raise TypeError(f"expected ImageResult or FaceResult, got {type(r).__name__}")
        base = {"source": r.source, "frame": r.frame, "time": r.time}
        if not r.faces and include_empty:
            yield {**base, "face": None, "error": r.error, "detector": r.detector}
        for i, f in enumerate(r.faces):
            x, y, w, h = f.box
            row = {**base, "face": i, "x": x, "y": y, "w": w, "h": h, "label": f.label, "score": f.score,
                   "detection_score": f.detection_score}
            if f.track is not None:
                row.update(track=f.track, valence=f.valence)
            for name in class_names or f.scores:
                row[name] = f.scores.get(name)
            if f.raw is not None:
                row.update(raw_label=f.raw["label"], raw_score=f.raw["score"])
                row.update({f"raw_{name}": f.raw["scores"].get(name) for name in class_names or f.raw["scores"]})
            row.update(face_px=f.quality.get("face_px"), aligned=f.quality.get("aligned"),
                       angle=f.quality.get("angle"), issues=";".join(f.issues), error=r.error, detector=r.detector)
            yield row


COLUMNS = ["source", "frame", "time", "face", "track", "x", "y", "w", "h", "label", "score", "valence",
           "detection_score"]
TAIL_COLUMNS = ["face_px", "aligned", "angle", "issues", "error", "detector"]
INT_COLUMNS = ("frame", "face", "track", "x", "y", "w", "h", "face_px")
FLOAT_COLUMNS = ("time", "score", "valence", "raw_score", "detection_score", "angle")
BOOL_COLUMNS = ("aligned",)


def column_types(class_names: list[str]) -> dict[str, str]:
    """Every column of the table in order (``frame`` and ``time`` included) -> ``"int"``, ``"float"``,
    ``"bool"`` or ``"str"``: the typed tables (Parquet) take their schema from here, the class scores
    (and their ``raw_`` twins for smoothed video faces) being floats."""
    raw = ["raw_label", "raw_score"] + [f"raw_{c}" for c in class_names]

    def kind(c):
        return "int" if c in INT_COLUMNS else "float" if c in FLOAT_COLUMNS or c in class_names or c in raw[2:] else \
            "bool" if c in BOOL_COLUMNS else "str"
    return {c: kind(c) for c in COLUMNS + list(class_names) + raw + TAIL_COLUMNS}


def table(results, include_empty: bool = True, class_names: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the results table, one row per face (and per image or frame without faces
    with ``include_empty``); ``frame`` and ``time`` are left out when no row is a video frame.
    Video faces add ``track`` and ``valence``, and smoothed ones ``raw_label``, ``raw_score`` and
    ``raw_<class>`` (the frame's own values beside the smoothed ``label``, ``score`` and class columns).
    The one source of :func:`to_dataframe` and :func:`csv_text`, so that CSV needs no pandas."""
    rows = list(_rows(results, class_names, include_empty))
    if not rows:
        return COLUMNS + TAIL_COLUMNS, []
    seen = list(dict.fromkeys(k for row in rows for k in row))
    fixed = set(COLUMNS) | set(TAIL_COLUMNS)
    # the fixed columns first and last whatever row comes first (an image without faces has no box),
    # the class scores between them
    columns = [c for c in COLUMNS if c in seen] + [c for c in seen if c not in fixed] + \
        [c for c in TAIL_COLUMNS if c in seen]
    if all(row["frame"] is None for row in rows):
        columns = [c for c in columns if c not in ("frame", "time")]
    return columns, rows


def csv_text(results, include_empty: bool = True, class_names: list[str] | None = None) -> str:
    """:func:`table` as CSV text (missing values empty), written with the standard library."""
    return _format_csv(*table(results, include_empty, class_names))


def _format_csv(columns: list[str], rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_dataframe(results, include_empty: bool = True, class_names: list[str] | None = None):
    """A pandas DataFrame with one row per face (and, with ``include_empty``, one row per image or
    frame without faces, its ``error`` filled when it was skipped). Accepts ImageResults (from
    ``recognize_many`` / ``recognize_video``, a generator is consumed) or FaceResults.
    pandas is not a dependency of litefer: :func:`write_csv` and :func:`csv_text` need none."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("litefer.to_dataframe needs pandas: pip install pandas (or litefer[all])") from None
    columns, rows = table(results, include_empty, class_names)
    df = pd.DataFrame(rows, columns=columns)
    for c in INT_COLUMNS:
        if c in df and not df.empty:
            df[c] = df[c].astype("Int64")
    return df


def write_csv(results, path: str | os.PathLike, include_empty: bool = True) -> list[dict]:
    """Write the results table (:func:`table`) as CSV, atomically, without pandas; returns its rows."""
    columns, rows = table(results, include_empty)
    atomic_write_text(path, _format_csv(columns, rows))
    return rows
