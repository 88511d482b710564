"""``recognize`` (a Ray Dataset of the rows) and ``write_parquet`` (the rows as a resumable Parquet
dataset), both built on one plan: list on the driver, split videos, run an actor pool."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..inference.detect import resolve_detector
from ..inference.files import DEFAULT_FILES
from ..inference.inputs import kind_of
from ..inference.predict import Terminated
from ..inference.recognizer import Recognizer
from ..prior import describe as describe_prior
from ..utils import sha256_file
from .cluster import connect, pool_size, require_ray
from .parquet import PartsFolder, public_rows
from .sources import list_inputs, plan, video_frames
from .worker import RecognizerWorker

FRAMES_PER_TASK = 300        # analysed frames per video range: 10 s of 30 fps video, ~10 s of work on a core
IMAGES_PER_TASK = 32         # photos per actor call: large enough to batch faces, small enough to balance


@dataclass
class Job:
    """What the driver settled before anything ran: the inputs, the problems, the tasks and the pool."""

    inputs: list[str]
    problems: list[str]
    class_names: list[str]
    settings: dict
    tasks: list[dict] = field(default_factory=list)


def _recognizer_files(options: dict) -> tuple[dict, dict]:
    """(options for the actors, files to ship): weights and YuNet files are read on the driver and sent
    through the object store; ``detector="auto"`` is settled here, so every actor uses the driver's choice."""
    import ray

    options, files = dict(options), {}
    weights = str(options.get("weights", "default"))
    if weights not in DEFAULT_FILES:
        files["weights"] = (Path(weights).suffix, ray.put(Path(weights).read_bytes()))
    name, path = resolve_detector(options.get("detector", "auto"), options.pop("yunet_model", None))
    if name == "yunet":
        files["detector"] = (".onnx", ray.put(Path(path).read_bytes()))
    else:
        options["detector"] = "haar"
    return options, files


def _settings(rec: Recognizer, options: dict, video: dict, frames_per_task: int) -> dict:
    """The options the rows depend on, by their CLI names, for the resume check."""
    weights = str(options.get("weights", "default"))
    digest = weights if weights in DEFAULT_FILES else sha256_file(weights)[:16]
    return {"weights": digest, "detector": rec.detector_name, "min-face": options.get("min_face"),
            "tta": rec.tta, "prior": describe_prior(rec.prior), "every": video["every"],
            "max-frames": video["max_frames"], "detect-every": video["detect_every"],
            "detect-scale": video["detect_scale"], "smooth": video.get("smooth"), "frames-per-task": frames_per_task}


def _dataset(job: Job, options: dict, video: dict, workers, cpus, gpus, device: str, progress: bool):
    """The rows (with the internal columns) of ``job.tasks``, in task order."""
    require_ray()
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True          # rows in input order, frames in order per video
    ctx.enable_progress_bars = progress
    actors, cpus, gpus = pool_size(workers, cpus, gpus, device)
    actors = min(actors, len(job.tasks))                 # an idle actor would only hold its model
    worker_options, files = _recognizer_files(options)
    threads = max(1, int(cpus))
    ds = ray.data.from_items(job.tasks, override_num_blocks=max(1, len(job.tasks)))
    return ds.map_batches(RecognizerWorker, batch_size=1, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus or None,
                          fn_constructor_kwargs=dict(options=worker_options, files=files, video=video,
                                                     threads=threads))


def _job(inputs, options: dict, video: dict, frames_per_task: int, images_per_task: int,
         folder=None) -> tuple[Job, PartsFolder | None]:
    """List the inputs, count the videos' frames on the cluster, and plan the tasks left to do."""
    import ray

    rec = Recognizer(**options)                  # options checked (and the classes known) before any task runs
    found, problems = list_inputs([str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)])
    job = Job(found, problems, rec.class_names, _settings(rec, options, video, frames_per_task))
    parts = PartsFolder(folder, job.settings) if folder is not None else None
    videos = [s for s in found if kind_of(s) == "video"]
    count = ray.remote(num_cpus=0.1)(video_frames)
    frames = dict(zip(videos, ray.get([count.remote(v) for v in videos])))
    job.tasks = plan(found, frames, video["every"], video["max_frames"], frames_per_task, images_per_task,
                     parts.done if parts else set())
    return job, parts


def _video_options(every=1, max_frames=None, detect_every=1, detect_scale=1.0, smooth=None) -> dict:
    for name, value in (("every", every), ("max_frames", max_frames), ("detect_every", detect_every)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 < detect_scale <= 1:
        raise ValueError(f"detect_scale must be in (0, 1], got {detect_scale}")
    if smooth is not None and not smooth >= 0:
        raise ValueError(f"smooth must be 0 (off) or seconds > 0, got {smooth}")
    return dict(every=every, max_frames=max_frames, detect_every=detect_every, detect_scale=detect_scale, smooth=smooth)


def recognize(inputs, address: str = "auto", *, workers: int | None = None, cpus_per_worker: float | None = None,
              gpus_per_worker: float | None = None, every: int = 1, max_frames: int | None = None,
              detect_every: int = 1, detect_scale: float = 1.0, smooth: float | None = None,
              frames_per_task: int = FRAMES_PER_TASK, images_per_task: int = IMAGES_PER_TASK,
              runtime_env: dict | None = None, **recognizer_options):
    """A ``ray.data.Dataset`` of the rows ``litefer predict --csv`` gives for ``inputs`` (paths, folders,
    globs, ``@list`` files, URIs), ``frame`` and ``time`` always there; lazy, like any Dataset.

    ``address``: ``local``, ``auto`` or ``host:port`` (joined unless Ray is already initialised);
    ``workers`` actors of ``cpus_per_worker`` CPUs (0.9) and ``gpus_per_worker`` GPUs each (default: one
    per CPU, or per GPU with ``device="cuda"``); ``runtime_env`` as ``ray.init`` takes it (env vars such
    as object storage credentials for the workers). ``recognizer_options`` go to
    :class:`~litefer.inference.recognizer.Recognizer` in every actor."""
    video = _video_options(every, max_frames, detect_every, detect_scale, smooth)
    connect(address, runtime_env)
    job, _ = _job(inputs, recognizer_options, video, frames_per_task, images_per_task)
    ds = _dataset(job, recognizer_options, video, workers, cpus_per_worker, gpus_per_worker,
                  recognizer_options.get("device", "cpu"), progress=False)
    return ds.map_batches(public_rows, batch_format="pyarrow", batch_size=None)


@dataclass
class Written:
    """What :func:`write_parquet` did: items done before, items and rows written now, the skipped table."""

    folder: str
    inputs: int
    already: int
    items: int = 0
    rows: int = 0
    skipped: list[dict] = field(default_factory=list)
    interrupted: bool = False
    terminated: bool = False                  # the interrupt was SIGTERM (litefer.inference.predict.Terminated)
    times: list[tuple[float, int]] = field(default_factory=list)   # (time.monotonic(), items so far) per part


def write_parquet(inputs, folder, address: str = "auto", *, workers=None, cpus_per_worker=None, gpus_per_worker=None,
                  every=1, max_frames=None, detect_every=1, detect_scale=1.0, smooth=None, frames_per_task=FRAMES_PER_TASK,
                  images_per_task=IMAGES_PER_TASK, runtime_env=None, progress=False, **recognizer_options) -> Written:
    """:func:`recognize` written to the Parquet dataset ``folder`` (:mod:`litefer.distributed.parquet`),
    a part per finished task; a rerun with the same folder does only the items not written yet.
    Ctrl-C stops it with every finished part kept (``interrupted`` set)."""
    video = _video_options(every, max_frames, detect_every, detect_scale, smooth)
    started = connect(address, runtime_env)
    parts = None
    try:
        job, parts = _job(inputs, recognizer_options, video, frames_per_task, images_per_task, folder)
        out = Written(str(folder), len(job.inputs), len(parts.done))
        try:
            if job.tasks:
                ds = _dataset(job, recognizer_options, video, workers, cpus_per_worker, gpus_per_worker,
                              recognizer_options.get("device", "cpu"), progress)
                for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    before = len(parts.done)
                    out.rows += parts.write(block)
                    out.items += len(parts.done) - before
                    out.times.append((time.monotonic(), out.items))
        except KeyboardInterrupt as stop:
            out.interrupted, out.terminated = True, isinstance(stop, Terminated)
        out.skipped = parts.write_skipped(job.problems)
        return out
    finally:
        if parts is not None:
            parts.close()
        if started:
            import ray

            ray.shutdown()
