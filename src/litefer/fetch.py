"""``litefer fetch``: the one place litefer downloads anything, and only when a user asks.

Nothing in litefer downloads at run time: the expression model ships in the package and the Haar
detector ships in opencv-python. Third-party files we may not redistribute (the YuNet face detector
of the OpenCV Zoo) or weights a user publishes elsewhere are fetched by this explicit command into
litefer's cache folder, checked (SHA-256 when one is given, and a YuNet file must load as one), and
written atomically: an interrupted or wrong download leaves nothing behind. ``create_detector("yunet")``
then finds the cached file without a path.
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .utils import YUNET_FILENAME, atomic_open, models_dir, sha256_file


@dataclass(frozen=True)
class Source:
    """A file litefer knows how to fetch: where from, the name it is cached under, and how to check it."""
    url: str
    filename: str
    sha256: str | None = None      # None: the upstream file is not pinned; the load check still applies
    kind: str = "file"             # "yunet": must load in cv2.FaceDetectorYN
    about: str = ""


KNOWN: dict[str, Source] = {
    "yunet": Source(
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
            + YUNET_FILENAME,
        filename=YUNET_FILENAME,
        kind="yunet",
        about="OpenCV Zoo YuNet face detector (MIT licence upstream), used by --detector yunet"),
}

MAX_BYTES = 512 * 1024 * 1024


def cached_path(name: str) -> Path | None:
    """The cached file of a known source, or None when it has not been fetched."""
    path = models_dir() / KNOWN[name].filename
    return path if path.is_file() else None


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, timeout: float = 60.0,
             max_bytes: int = MAX_BYTES) -> Path:
    """Stream ``url`` (http(s) or file) to ``dest`` through a temporary file, hashing as it goes.

    A checksum mismatch, an oversized body or a network error raises and leaves ``dest`` untouched.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{url}: only http(s):// and file:// URLs can be fetched")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)    # noqa: S310 (scheme checked above)
    except (OSError, ValueError) as e:
        raise OSError(f"cannot fetch {url}: {e}") from None
    h = hashlib.sha256()
    size = 0
    with response, atomic_open(dest, suffix=".part") as out:
        while chunk := response.read(1 << 20):
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{url}: larger than {max_bytes} bytes; refusing it")
            h.update(chunk)
            out.write(chunk)
        if size == 0:
            raise ValueError(f"{url}: empty response")
        if sha256 is not None and h.hexdigest() != sha256.lower():
            raise ValueError(f"{url}: SHA-256 {h.hexdigest()} does not match the expected {sha256.lower()}")
    return dest


def _check_yunet(path: Path) -> None:
    from .inference.detect import YuNetDetector

    YuNetDetector(path)     # raises ValueError naming the file when OpenCV cannot load it


def fetch(name_or_url: str, url: str | None = None, sha256: str | None = None, out: str | os.PathLike | None = None,
          force: bool = False, timeout: float = 60.0) -> Path:
    """Fetch a known source by name (``"yunet"``) or any URL; returns the local path.

    ``url`` replaces a known source's address (a mirror, or a local ``file://`` copy); ``sha256``
    pins what must arrive. An existing cached file is reused unless ``force`` or its checksum differs.
    """
    if name_or_url in KNOWN:
        src = KNOWN[name_or_url]
        url = url or src.url
        sha256 = sha256 or src.sha256
        dest = Path(out) if out else models_dir() / src.filename
        kind = src.kind
    else:
        if url is not None:
            raise ValueError(f"unknown source {name_or_url!r}: known names are {sorted(KNOWN)}; "
                             "or give a URL as the only positional argument")
        url = name_or_url
        if "://" not in url:
            raise ValueError(f"unknown source {url!r}: known names are {sorted(KNOWN)}, or give an http(s):// or "
                             "file:// URL")
        filename = Path(urllib.parse.urlparse(url).path).name or "download"
        dest = Path(out) if out else models_dir() / filename
        kind = "file"
    if dest.is_file() and not force and (sha256 is None or sha256_file(dest) == sha256.lower()):
        return dest
    if kind != "yunet":
        return download(url, dest, sha256=sha256, timeout=timeout)
    # checked under a staging name (same suffix: OpenCV picks the loader by it) before it replaces
    # anything, so a bad --force download never costs the good file already cached
    staging = dest.with_name(f".staging-{dest.name}")
    try:
        download(url, staging, sha256=sha256, timeout=timeout)
        try:
            _check_yunet(staging)
        except ValueError as e:
            raise ValueError(f"{url}: not a YuNet model ({e})") from None
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    return dest
