"""Turning what users pass (paths, arrays, PIL images, videos, webcams) into BGR uint8 frames.

Every failure is an :class:`InputError` whose message starts with the input's name, so a batch can
record it and carry on. Nothing here imports torch.
"""
from __future__ import annotations

import errno
import glob
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".gif"}
# the iPhone's default photo format, which neither OpenCV nor Pillow reads: reported, not ignored
HEIF_SUFFIXES = {".heic", ".heif"}
HEIF_UNSUPPORTED = "HEIC/HEIF is not supported: convert it to JPEG or PNG first"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
# Decoding limit: a 30 MP photo is fine (about 90 MB as BGR); beyond this the input is refused
# before its pixels are decoded.
MAX_PIXELS = 150_000_000


class InputError(ValueError):
    """An input that cannot be used; the message names it and says why."""


class TruncatedVideoWarning(UserWarning):
    """A video that stops decoding before the frame count its header announces (cut short or corrupt);
    the frames before the break were delivered."""


def describe(src) -> str:
    """A short name for an input, used at the start of error messages and in result tables."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"<array {'x'.join(map(str, src.shape))} {src.dtype}>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.size[0]}x{src.size[1]} {src.mode}>"
    return f"<{type(src).__name__}>"


def to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale 16-bit, float, boolean or wider integer pixels to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise InputError(f"{name}: image has NaN or infinite pixel values")
        hi = float(arr.max()) if arr.size else 1.0
        scaled = arr * 255.0 if hi <= 1.0 else arr        # [0, 1] floats, else already 0..255
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        hi = int(arr.max()) if arr.size else 0
        if hi > 255 and hi <= 65535 and int(arr.min()) >= 0:  # 16-bit values in a wider integer type
            return to_uint8(arr.astype(np.uint16), name)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise InputError(f"{name}: unsupported pixel type {arr.dtype}")


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.rint(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def array_to_bgr(arr, color: str = "bgr", name: str | None = None) -> np.ndarray:
    """A NumPy image (H,W / H,W,1 / H,W,3 / H,W,4; any common dtype) as contiguous BGR uint8.

    ``color`` states the channel order of 3- and 4-channel arrays: ``"bgr"`` (OpenCV) or ``"rgb"``
    (PIL, scikit-image, matplotlib). Transparent pixels are composited over white.
    """
    name = name or describe(arr)
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected an H x W, H x W x 3 or H x W x 4 image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name}: empty image ({arr.shape[1]}x{arr.shape[0]} pixels)")
    arr = to_uint8(arr, name)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[2] == 4:
        arr = _over_white(arr[..., :3], arr[..., 3])
    return np.ascontiguousarray(arr[..., ::-1] if color == "rgb" else arr)


def pil_to_bgr(im: Image.Image, name: str | None = None) -> np.ndarray:
    """Any PIL image mode (1, L, P, RGB, RGBA, LA, I;16, I, F, CMYK, ...) as BGR uint8, EXIF
    orientation applied: the one place for it, so a path, an upload and an open PIL image agree."""
    name = name or describe(im)
    if im.width == 0 or im.height == 0:
        raise InputError(f"{name}: empty image ({im.width}x{im.height} pixels)")
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return array_to_bgr(np.asarray(im), "rgb", name)   # 16-bit / 32-bit grey, scaled to 8 bits
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
    elif mode == "LA":
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGB")    # 1, CMYK, YCbCr, LAB, HSV, RGBX, ...
    return array_to_bgr(np.asarray(im), "rgb", name)


SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device"}
# ISO base media brands of HEIF images (HEVC-coded and general): the ftyp box opens such a file
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


def special_file(path: str | os.PathLike) -> str | None:
    """"a FIFO", "a socket", "a character device" or "a block device" when ``path`` (its link
    target) is one, else None: such files are reported as inputs litefer cannot read, never opened
    (a FIFO would block the run, a device would be read without end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return SPECIAL_FILES.get(stat.S_IFMT(mode))


def _is_heif(path: Path) -> bool:
    """A HEIC/HEIF photo, by its suffix or its ftyp brand (a phone's export may be misnamed)."""
    if path.suffix.lower() in HEIF_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _check_file(path: Path, what: str) -> None:
    """InputError naming ``path`` when it is missing, a folder or a special file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not {what}")
    kind = special_file(path)
    if kind:
        raise InputError(f"{path}: not a regular file ({kind})")


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file as BGR uint8 (EXIF orientation applied); raises InputError naming it.
    A HEIC/HEIF photo that Pillow cannot open (no HEIF plugin registered) gets that reason."""
    path = Path(path)
    _check_file(path, "an image")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    return _decode(path, str(path), max_pixels, lambda: _is_heif(path))


def decode_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_image` for the bytes of a file read elsewhere (object storage: ``s3://...``), with
    the same checks and messages, ``name`` first."""
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    is_heif = Path(name).suffix.lower() in HEIF_SUFFIXES or (data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS)
    return _decode(io.BytesIO(data), name, max_pixels, lambda: is_heif)


def _decode(source, name: str, max_pixels: int, heif) -> np.ndarray:
    """Pillow's decoding of a path or file object, every failure an InputError naming ``name``;
    ``heif()`` says whether an unidentified file is a HEIC/HEIF photo."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InputError(f"{name}: {w}x{h} image ({w * h / 1e6:.0f} MP) exceeds the "
                                     f"{max_pixels / 1e6:.0f} MP limit")
                im.load()
                return pil_to_bgr(im, name)
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{name}: cannot read (permission denied)") from None
    except UnidentifiedImageError:
        if heif():
            raise InputError(f"{name}: {HEIF_UNSUPPORTED}") from None
        raise InputError(f"{name}: not an image file (format not recognised)") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{name}: image too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise InputError(f"{name}: truncated or corrupt image ({msg})") from None
        raise InputError(f"{name}: cannot decode image ({type(e).__name__}: {msg})") from None


def load_image(src, color: str = "bgr", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, NumPy array (``color`` gives its channel order) or PIL image, as BGR uint8."""
    if isinstance(src, (str, os.PathLike)):
        return read_image(src, max_pixels)
    if isinstance(src, Image.Image):
        return pil_to_bgr(src)
    if isinstance(src, np.ndarray):
        if src.size > max_pixels * 4:
            raise InputError(f"{describe(src)}: image exceeds the {max_pixels / 1e6:.0f} MP limit")
        return array_to_bgr(src, color)
    raise InputError(f"{describe(src)}: expected a file path, a NumPy array or a PIL image")


# ----------------------------------------------------------------------------- videos

@dataclass
class VideoInfo:
    fps: float
    frames: int            # as reported by the container; 0 when unknown (webcams, some streams)
    width: int
    height: int


def open_video(source) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file (path) or a webcam (int index); raises InputError when it cannot be read."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        _check_file(p, "a video")
        cap = cv2.VideoCapture(str(p))
        what = str(p)
    else:
        cap = cv2.VideoCapture(int(source))
        what = f"webcam {int(source)}"
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{what}: cannot open as a video (unsupported, corrupt or not a video)")
    info = VideoInfo(fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0), frames=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0),
                     width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
    return cap, info


def iter_frames(source, every: int = 1, max_frames: int | None = None,
                start: int = 0) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame index, time in s, BGR frame)`` for every ``every``-th frame from frame ``start``
    on (a multiple of ``every``: a range of a video split between workers), decoding only those.

    The video is opened at once (InputError here if it cannot be); frames in between are grabbed,
    not decoded to pixels. A video whose first frame cannot be decoded raises InputError when
    iterated; one that ends early just stops.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (None: no limit), got {max_frames}")
    if start < 0 or start % every:
        raise ValueError(f"start must be a multiple of every ({every}) and >= 0, got {start}")
    cap, info = open_video(source)
    if start:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    name = f"webcam {source}" if isinstance(source, int) else describe(source)
    return _frames(cap, info, name, every, max_frames, start)


def _frames(cap, info: VideoInfo, name: str, every: int, max_frames: int | None, start: int = 0):
    try:
        index, yielded = start, 0
        while max_frames is None or yielded < max_frames:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok or frame is None:
                    if index == 0:
                        raise InputError(f"{name}: cannot decode any frame (corrupt or unsupported video)")
                    break
                t = index / info.fps if info.fps > 0 else float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                yield index, t, to_bgr_frame(frame)
                yielded += 1
            elif not cap.grab():
                break
            index += 1
        else:
            return                                  # stopped at max_frames, not at the end
        _warn_if_truncated(name, index, info.frames)
    finally:
        cap.release()


def _warn_if_truncated(name: str, decoded: int, announced: int) -> None:
    """Warn when a video ended well before the frame count of its header (containers may round that
    count, so a shortfall of 1 % or one frame is taken as normal)."""
    if announced and decoded < announced - max(1, announced // 100):
        warnings.warn(f"{name}: video ends at frame {decoded} of the {announced} its header announces "
                      "(truncated or corrupt); the frames before were analysed", TruncatedVideoWarning, stacklevel=2)


def to_bgr_frame(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(to_uint8(frame, "frame"), cv2.COLOR_GRAY2BGR)
    if frame.dtype != np.uint8 or frame.shape[2] != 3:
        return array_to_bgr(frame, "bgr", "frame")
    return frame


# ----------------------------------------------------------------------------- command-line inputs

def kind_of(path: str | os.PathLike) -> str:
    """``"video"`` for known video suffixes, else ``"image"`` (unknown suffixes are tried as images)."""
    return "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"


def expand_inputs(specs: list[str]) -> tuple[list[Path], list[str]]:
    """Files named by paths, folders (searched recursively for images and videos), glob patterns and
    list files (``@FILE``: :func:`read_list_file`).

    Returns (files in a stable order without duplicates, problems such as a pattern matching nothing).
    Files named explicitly are kept whatever their suffix, so a bad one is reported, not ignored.
    """
    files: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(p: Path):
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for spec in specs:
        p = Path(spec)
        if is_list_file(spec):
            try:
                found, bad = expand_inputs(read_list_file(spec[1:]))
            except InputError as e:
                found, bad = [], [str(e)]
            problems += bad
            for q in found:
                add(q)
        elif p.is_dir():
            found, bad = walk_folder(p)
            problems += bad
            if not found and not bad:
                problems.append(f"{p}: folder has no image or video files")
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        elif glob.has_magic(spec):
            found = sorted(Path(q) for q in glob.glob(spec, recursive=True) if not Path(q).is_dir())
            if not found:
                problems.append(f"{spec}: pattern matches no files")
            for q in found:
                add(q)
        else:
            problems.append(f"{spec}: {_why_missing(p)}")
    return files, problems


def is_list_file(spec: str) -> bool:
    """``@FILE`` names a list file (:func:`read_list_file`), unless a file of that very name exists."""
    return spec.startswith("@") and len(spec) > 1 and not Path(spec).exists()


def read_list_file(path: str | os.PathLike) -> list[str]:
    """The inputs a list file names, one a line (blank lines and lines starting with ``#`` skipped);
    relative paths are taken from the list file's folder."""
    p = Path(path)
    _check_file(p, "a list file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read list file ({e})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [e if "://" in e or Path(e).is_absolute() else str(p.parent / e) for e in entries]


def _why_missing(p: Path) -> str:
    """Why a path that does not exist as a file or folder cannot be read."""
    if not p.is_symlink():
        return "no such file"
    try:
        p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symbolic link loop (-> {os.readlink(p)})"
    return f"broken symbolic link (-> {os.readlink(p)}, which does not exist)"


def walk_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """Image, video and HEIC/HEIF files below ``folder`` (hidden files excluded), following symbolic
    links to folders once each; returns (sorted files, problems): broken links, link loops and
    special files (FIFOs, sockets, devices) among the names that could be inputs (an image or video
    suffix, or none), and folders that cannot be read. HEIC/HEIF photos are inputs: the reader says
    why it cannot decode them, as for a path given by name."""
    known = IMAGE_SUFFIXES | VIDEO_SUFFIXES | HEIF_SUFFIXES
    found, problems, visited = [], [], set()

    def unreadable(e: OSError):
        problems.append(f"{e.filename}: cannot read folder ({e.strerror})")

    for root, dirs, names in os.walk(folder, followlinks=True, onerror=unreadable):
        real = os.path.realpath(root)
        if real in visited:          # a link to a folder already searched: a loop if it points up
            above = os.path.realpath(Path(root).parent)
            if above == real or above.startswith(real + os.sep):
                problems.append(f"{root}: symbolic link loop (-> {os.readlink(root)})")
            dirs[:] = []
            continue
        visited.add(real)
        for name in names:
            q = Path(root) / name
            if name.startswith(".") or q.suffix.lower() not in known | {""}:
                continue
            if q.is_file():
                if q.suffix:
                    found.append(q)
            elif special_file(q):
                problems.append(f"{q}: not a regular file ({special_file(q)})")
            elif q.is_symlink():
                problems.append(f"{q}: {_why_missing(q)}")
    return sorted(found), problems
