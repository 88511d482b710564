"""The actor of the pool: one Recognizer, loaded once, turning tasks (image runs, video ranges) into rows."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from ..inference.inputs import InputError, TruncatedVideoWarning
from ..inference.recognizer import ImageResult, Recognizer, table
from .parquet import schema
from .sources import VideoCopies, load_image


def materialise(files: dict) -> dict:
    """Recognizer options whose files came through the object store (``{option: (suffix, ref)}``), as
    paths of local copies: a driver's weights or YuNet file need not exist on the worker's disk."""
    import ray

    folder = tempfile.mkdtemp(prefix="litefer-model-")
    paths = {}
    for option, (suffix, ref) in files.items():
        path = Path(folder) / f"{option}{suffix}"
        path.write_bytes(ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref)
        paths[option] = str(path)
    return paths


# a video's frame ranges are tracked (and smoothed) each on its own: a face's track id in the Parquet
# rows is the range's first frame times this plus its id in the range, so no two ranges share an id
TRACK_STRIDE = 1000


class RecognizerWorker:
    """``map_batches`` callable class: a batch of tasks in, an Arrow table of rows out (the CSV's columns
    and the internal ones of :data:`litefer.distributed.parquet.INTERNAL`), in task order."""

    def __init__(self, options: dict, files: dict, video: dict, threads: int):
        import cv2

        cv2.setNumThreads(threads)                 # OpenCV's pool would take every core of the node
        self.rec = Recognizer(**{**options, **materialise(files), "threads": options.get("threads") or threads})
        self.video = video
        self.schema = schema(self.rec.class_names)
        self.copies = VideoCopies()
        self.pid = os.getpid()

    def __call__(self, batch):
        rows: list[dict] = []
        for task in batch.to_pylist():
            if task["kind"] == "image":
                for key, result in zip(task["keys"], self.rec.iter_many(task["keys"], load=load_image)):
                    rows += self._rows(key, [result])
            else:
                results, note = self._video(task)
                rows += self._rows(task["keys"][0], results, note)
        import pyarrow as pa

        return pa.Table.from_pylist(rows, schema=self.schema)

    def _rows(self, key: str, results: list[ImageResult], note: str | None = None) -> list[dict]:
        """The CSV's rows of one item, tagged with its key; an item without rows gets a placeholder row."""
        rows = table(results, include_empty=True, class_names=self.rec.class_names)[1]
        rows = [{**r, "_item": key, "_keep": True} for r in rows] or \
            [{"source": key.rpartition("#")[0] or key, "_item": key, "_keep": False}]
        rows[-1]["_note"] = note
        return rows

    def _video(self, task: dict) -> tuple[list[ImageResult], str | None]:
        """The frames of one range, in order; an error ends the range with an error row, as predict's."""
        source, results = task["source"], []
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", TruncatedVideoWarning)
            try:
                frames = self.rec.recognize_video(self.copies.path(source), every=self.video["every"],
                                                  max_frames=task["count"] or None, start=task["start"],
                                                  detect_every=self.video["detect_every"],
                                                  detect_scale=self.video["detect_scale"],
                                                  smooth=self.video.get("smooth"))
                for r in frames:
                    r.source = source
                    for f in r.faces:               # a range is tracked on its own: ids unique in the video
                        f.track = None if f.track is None else task["start"] * TRACK_STRIDE + f.track
                    results.append(r)
            except InputError as e:
                message = str(e).replace(self.copies.path(source), source) if source in self.copies.paths else str(e)
                results.append(ImageResult(source, error=message))
        notes = [str(w.message).replace(self.copies.paths.get(source, source), source) for w in warned
                 if issubclass(w.category, TruncatedVideoWarning)]
        return results, (notes[0] if notes else None)
