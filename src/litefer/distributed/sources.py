"""What the driver lists and the actors read: local paths (as ``litefer predict`` expands them) and
URIs of any file system pyarrow knows (``s3://``, ``gs://``, ``hdfs://``), images and video ranges.

Local paths are read where the actor runs: on a cluster of several machines they must be visible at
the same path on every node (a shared file system), or be given as URIs."""
from __future__ import annotations

import fnmatch
import glob
import os
import shutil
import tempfile
from pathlib import Path

from ..inference.inputs import (HEIF_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, InputError, decode_image_bytes,
                                expand_inputs, is_list_file, kind_of, read_image, read_list_file)

KNOWN_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES | HEIF_SUFFIXES


def first_line(e: BaseException) -> str:
    """An error's message in one line (pyarrow's and Ray's run to several), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def is_uri(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def list_inputs(specs: list[str]) -> tuple[list[str], list[str]]:
    """(inputs in order without duplicates, problems) for paths, folders, globs, ``@list`` files and URIs."""
    found, problems, seen = [], [], set()
    for spec in _flatten(specs, problems):
        files, bad = _list_uri(spec) if is_uri(spec) else expand_inputs([spec])
        problems += bad
        for f in map(str, files):
            key = f if is_uri(f) else os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found, problems


def _flatten(specs: list[str], problems: list[str]):
    """The specs with each ``@list`` file replaced by its entries (list files may name list files)."""
    for spec in specs:
        if not is_list_file(spec):
            yield spec
            continue
        try:
            yield from _flatten(read_list_file(spec[1:]), problems)
        except InputError as e:
            problems.append(str(e))


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, path, query) of a URI: ``s3://b/k?endpoint_override=h:p`` -> ``s3``, ``b/k``, ``?endpoint...``."""
    scheme, _, rest = uri.partition("://")
    path, q, query = rest.partition("?")
    return scheme, path, q + query


_FILESYSTEMS: dict[str, object] = {}


def filesystem(uri: str):
    """(pyarrow file system, path inside it), the file system made once per scheme, bucket and query."""
    from pyarrow import fs

    scheme, path, query = _split(uri)
    key = f"{scheme}://{path.partition('/')[0]}{query}"
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = fs.FileSystem.from_uri(uri)[0]
    return _FILESYSTEMS[key], path


def _list_uri(uri: str) -> tuple[list[str], list[str]]:
    """The files a URI names: itself, the image and video files below a prefix, or a glob's matches."""
    from pyarrow import fs

    scheme, path, query = _split(uri)
    magic = glob.has_magic(path)
    base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] if magic else path
    try:
        system = filesystem(f"{scheme}://{base}{query}")[0]
        info = system.get_file_info(base)
        if info.type == fs.FileType.File and not magic:
            return [uri], []
        if info.type != fs.FileType.Directory:
            return [], [f"{uri}: {'pattern matches no files' if magic else 'no such file'}"]
        listed = system.get_file_info(fs.FileSelector(base, recursive=True))
    except (OSError, ValueError) as e:
        return [], [f"{uri}: cannot list ({first_line(e)})"]
    files = sorted(i.path for i in listed if i.type == fs.FileType.File and not i.base_name.startswith("."))
    if magic:
        files = [f for f in files if fnmatch.fnmatchcase(f, path)]
    else:
        files = [f for f in files if Path(f).suffix.lower() in KNOWN_SUFFIXES]
    if not files:
        return [], [f"{uri}: {'pattern matches no files' if magic else 'folder has no image or video files'}"]
    return [f"{scheme}://{f}{query}" for f in files], []


def read_bytes(uri: str) -> bytes:
    """The bytes of a URI's file; InputError naming it when it cannot be read."""
    try:
        system, path = filesystem(uri)
        with system.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{uri}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{uri}: cannot read ({first_line(e)})") from None


def load_image(src: str):
    """BGR pixels of a local path or URI, decoded here (in the actor)."""
    return decode_image_bytes(read_bytes(src), src) if is_uri(src) else read_image(src)


class VideoCopies:
    """Local copies of remote videos (OpenCV reads files only), the last ``keep`` kept: the ranges of one
    video mostly reach an actor one after another."""

    def __init__(self, keep: int = 2):
        self.folder = tempfile.mkdtemp(prefix="litefer-videos-")
        self.paths: dict[str, str] = {}
        self.keep = keep

    def path(self, uri: str) -> str:
        if not is_uri(uri):
            return uri
        if uri not in self.paths:
            while len(self.paths) >= self.keep:
                os.unlink(self.paths.pop(next(iter(self.paths))))
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=Path(_split(uri)[1]).suffix)
            with os.fdopen(fd, "wb") as out:
                system, path = filesystem(uri)
                try:
                    with system.open_input_stream(path) as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                except (OSError, ValueError) as e:
                    os.unlink(tmp)
                    raise InputError(f"{uri}: cannot read ({first_line(e)})") from None
            self.paths[uri] = tmp
        return self.paths[uri]


def video_frames(uri: str) -> int:
    """The frame count a video's header announces, 0 when unknown or unreadable (the video is then one
    range, whose actor reports the error)."""
    from ..inference.inputs import open_video

    copies = VideoCopies(keep=1) if is_uri(uri) else None
    try:
        cap, info = open_video(copies.path(uri) if copies else uri)
        cap.release()
        return info.frames
    except InputError:
        return 0
    finally:
        if copies:
            shutil.rmtree(copies.folder, ignore_errors=True)


def plan(inputs: list[str], frames: dict[str, int], every: int, max_frames: int | None,
         frames_per_task: int, images_per_task: int, done: set[str]) -> list[dict]:
    """Tasks in input order: runs of up to ``images_per_task`` images, and each video in ranges of
    ``frames_per_task`` analysed frames (one range when its length is unknown); items in ``done``
    (keys: an image's source, a range's ``source#start:count``) are left out."""
    tasks: list[dict] = []
    for src in inputs:
        if kind_of(src) == "image":
            if src in done:
                continue
            last = tasks[-1] if tasks else None
            if last and last["kind"] == "image" and len(last["keys"]) < images_per_task:
                last["keys"].append(src)
            else:
                tasks.append({"kind": "image", "keys": [src], "source": "", "start": 0, "count": 0})
            continue
        for start, count in _ranges(frames.get(src, 0), every, max_frames, frames_per_task):
            key = f"{src}#{start}:{count}"
            if key not in done:
                tasks.append({"kind": "video", "keys": [key], "source": src, "start": start, "count": count})
    return tasks


def _ranges(frames: int, every: int, max_frames: int | None, per_task: int) -> list[tuple[int, int]]:
    """(first frame, analysed frames; 0: to the end) of each range."""
    analysed = -(-frames // every)
    if max_frames:
        analysed = min(analysed, max_frames) if analysed else max_frames
    if not frames:
        return [(0, max_frames or 0)]
    return [(i * every, min(per_task, analysed - i)) for i in range(0, analysed, per_task)]
