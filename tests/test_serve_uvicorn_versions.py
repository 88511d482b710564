"""litefer serve's protocol (serve/protocol.py) subclasses uvicorn internals, so pyproject.toml pins
uvicorn; this runs tests/test_serve_protocol.py against the oldest and the newest release the pin
allows, each pip-installed from PyPI into a temporary folder put first on the path. The newest is
run only when it is not the uvicorn installed here (the rest of the suite tests that one)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the [serve] extra (uvicorn) is not installed")
REPO = Path(__file__).resolve().parents[1]


def uvicorn_range() -> tuple[str, str]:
    """(lower, upper) of the ``uvicorn>=LOWER,<UPPER`` requirement of the serve extra."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'"uvicorn>=([\d.]+),<([\d.]+)"', text)
    assert m, "pyproject.toml's serve extra must pin uvicorn as uvicorn>=LOWER,<UPPER"
    return m.group(1), m.group(2)


def pip_install(spec: str, target: Path) -> str:
    """Install ``spec`` (and its dependencies) into ``target``; the uvicorn version installed."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "--no-cache-dir", "--target", str(target), spec], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, f"pip install {spec} failed:\n{proc.stderr[-2000:]}"
    return version_on(target)


def version_on(path: Path | None) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path)] if path else [])}
    return subprocess.run([sys.executable, "-c", "import uvicorn; print(uvicorn.__version__)"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def pypi():
    try:
        urllib.request.urlopen("https://pypi.org/simple/uvicorn/", timeout=10).close()
    except OSError as e:
        pytest.skip(f"PyPI cannot be reached ({e}): the pinned uvicorn range is not tested against its ends")


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_protocol_on_each_end_of_the_uvicorn_range(end, pypi, tmp_path):
    lower, upper = uvicorn_range()
    spec = f"uvicorn=={lower}" if end == "oldest" else f"uvicorn>={lower},<{upper}"
    version = pip_install(spec, tmp_path)
    if end == "newest" and version == version_on(None):
        pytest.skip(f"uvicorn {version}, the newest the pin allows, is the one installed here: the suite tests it")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "src")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_serve_protocol.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"tests/test_serve_protocol.py on uvicorn {version}:\n{proc.stdout[-4000:]}"
