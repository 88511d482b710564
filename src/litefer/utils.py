"""Small shared helpers: atomic writes, the cache directory, logging setup, optional dependencies."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import sys
import tempfile
from pathlib import Path


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the ``litefer[extra]`` that brings it.
    The command line reports it in one line with exit status 2, like any other user error."""


# packages of the extras (pyproject.toml) -> the extra that installs them; the lean install has none
EXTRA_OF = {"torch": "train", "torchvision": "train", "onnx": "train", "yaml": "train", "matplotlib": "train",
            "tensorboard": "train", "ptflops": "train", "pandas": "all", "fastapi": "serve", "uvicorn": "serve",
            "starlette": "serve", "pydantic": "serve", "multipart": "serve", "python_multipart": "serve",
            "ray": "ray", "pyarrow": "ray"}


def as_missing_extra(e: BaseException, what: str) -> BaseException:
    """A missing package of one of litefer's extras as :class:`MissingExtra`, saying that ``what``
    needs it and which extra to install; any other exception is returned as it is."""
    top = (getattr(e, "name", None) or "").partition(".")[0]
    if not isinstance(e, ImportError) or isinstance(e, MissingExtra) or top not in EXTRA_OF:
        return e
    return MissingExtra(f"{what} needs {top}, which is not installed: pip install 'litefer[{EXTRA_OF[top]}]'",
                        name=top)


def require(module: str, extra: str, what: str, hint: str = ""):
    """Import ``module`` or raise :class:`MissingExtra`: ``what`` needs it, what to install, ``hint``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{what} needs {module}, which is not installed: pip install 'litefer[{extra}]'"
                           + (f"; {hint}" if hint else "")) from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def cache_dir() -> Path:
    """Where parsed data sets are cached (``$LITEFER_CACHE`` or ``~/.cache/litefer``)."""
    path = Path(os.environ.get("LITEFER_CACHE", Path.home() / ".cache" / "litefer"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Where fetched files live (``<litefer cache>/models``): written by ``litefer.fetch``, read by
    the detectors, so it sits below both."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


# the name ``litefer fetch yunet`` stores the YuNet detector under, and ``--detector yunet`` looks for
YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (data files can be large)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


TEMP_SUFFIX = ".tmp"
# the names atomic_open's temporary files get: mkstemp's "." + target name + "." + 8 random characters
# from tempfile's alphabet (lower-case letters, digits, "_") + suffix
_TEMP_NAME = r"\.(?P<target>.+)\.[a-z0-9_]{8}"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _streamed_target(path: str | os.PathLike) -> bool:
    """Whether ``path`` (links followed) exists and is not a regular file, or is one of the process's
    open files (``/dev/stdout`` → ``/proc/self/fd/1``): those are written into, never renamed over."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode) or _through_proc(path)


def _through_proc(path: str | os.PathLike) -> bool:
    """Whether following ``path``'s links passes through ``/proc`` (an open descriptor such as
    ``/proc/self/fd/1``). ``realpath`` would not say: it resolves the descriptor to the file behind
    it, and stdout redirected into ``out.txt`` would then be replaced instead of appended to."""
    p = os.path.abspath(path)
    for _ in range(40):
        p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        if p.startswith("/proc/"):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = TEMP_SUFFIX):
    """A binary file handle whose content replaces ``path`` only if the block finishes without error:
    readers never see half a file, and a failure (or Ctrl-C) leaves no temporary file behind.

    A symbolic link is followed, so the link stays a link and its target gets the content. A target
    that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written into
    directly: replacing it by rename would turn a device node or a pipe into a plain file.
    """
    if _streamed_target(path):
        with open(path, "ab") as f:      # append: a redirected stdout keeps what was printed before
            yield f
        return
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(folder: str | os.PathLike, suffix: str = TEMP_SUFFIX) -> list[Path]:
    """Delete the temporary files that :func:`atomic_open` left in ``folder`` (not its subfolders)
    when the process was killed mid-write (``.last.pt.k3j_x9ab.tmp``); returns the paths removed.

    Only names of exactly that form are touched. Call it when no atomic write to ``folder`` is in
    progress (at resume, at the end of a run).
    """
    folder = Path(folder)
    pattern = re.compile(_TEMP_NAME + re.escape(suffix))
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if pattern.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename."""
    with atomic_open(path) as f:
        f.write(data)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (legal on Linux, read with Python's
    surrogateescape) shows its undecodable bytes as Python's ``\\xNN`` escapes, ``caf\\xe9.jpg``, in
    every file and message litefer writes (CSV, JSON, Markdown, the console)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:               # a lone surrogate that no file name made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _printable_tree(obj):
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, os.PathLike):
        return printable(os.fspath(obj))
    if isinstance(obj, dict):
        return {printable(str(k)) if isinstance(k, str) else k: _printable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_printable_tree(v) for v in obj]
    return obj


def json_text(obj, indent: int | None = 2) -> str:
    """JSON of ``obj`` with every string :func:`printable` (the same escapes as in the CSV and
    Markdown files); objects JSON lacks are written as their ``str``."""
    return json.dumps(_printable_tree(obj), indent=indent, default=lambda o: printable(str(o)))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, printable(text).encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json_text(obj) + "\n")


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_summary() -> str:
    """CPU model, logical CPU count and GPU name, for results files and run metadata."""
    text = f"{cpu_model()}, {os.cpu_count()} logical CPUs"
    torch = sys.modules.get("torch")        # a GPU matters only where torch runs; never import it here
    if torch is not None and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the operating system (glibc ``malloc_trim``); False where
    the C library has no such call. After a large image is freed its buffers sit in the allocator's
    arenas, one per thread that touched them, and the process would keep that memory while idle."""
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is None:
        return False
    trim(ctypes.c_size_t(0))
    return True


_LIBC = None


def rss_mib(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (Linux ``/proc``); None where that cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def setup_logging(level: int = logging.INFO, file: str | os.PathLike | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if file is not None:
        handlers.append(logging.FileHandler(file))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def finished_after(results, stop: KeyboardInterrupt):
    """The results a suspended generator still yields when thrown ``stop`` (a Ctrl-C or SIGTERM that
    landed in its consumer); none when it raised the interrupt itself (it has already yielded what it
    had finished, and is done). ``litefer predict`` and the video smoothing hand interrupts down so."""
    try:
        r = results.throw(stop)
        while True:
            yield r
            r = next(results)
    except (KeyboardInterrupt, StopIteration):
        return
