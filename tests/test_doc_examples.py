"""Every fenced ``python``, ``bash``, ``sh`` and ``console`` block of README.md and docs/**/*.md runs, so
that a renamed flag or argument fails here rather than in a reader's shell.

Each block runs in one shared folder holding the files the examples name (``photo.jpg``, ``a.jpg``,
``b.png``, ``photos/``, ``shots/*.png``, ``clip.mp4``: the packaged sample photo and a short video
made from it; ``best.pt``: the packaged weights), with this checkout's litefer and ``litefer`` on
PATH. A block right after ``<!-- skip-example: why -->`` is skipped with that reason. The examples
serve on port 8000; here they get a free port instead.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from face_fixtures import write_video

REPO = Path(__file__).resolve().parents[1]
LANGS = {"python", "bash", "sh", "console"}
SKIP = re.compile(r"<!--\s*skip-example:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```+\s*([\w-]*)")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, skip reason) of every fenced block in ``path`` of a language we run."""
    lines, found, i = path.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(before)
        if m.group(2) in LANGS:
            code = "\n".join(line[len(m.group(1)):] for line in lines[i + 1:end])
            found.append((i + 1, m.group(2), code, skip.group(1) if skip else None))
        i = end + 1
    return found


EXAMPLES = [pytest.param(lang, code, skip, id=f"{path.relative_to(REPO)}:{line}")
            for path in doc_files() for line, lang, code, skip in blocks(path)]


def shell_script(lang: str, code: str) -> str:
    """A console block's ``$ `` lines are its commands, the rest their output; other blocks are scripts."""
    if lang != "console":
        return code
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The files the examples name, made from the packaged sample photo and weights."""
    import cv2

    from litefer.inference.samples import sample_bgr, sample_photo

    root = tmp_path_factory.mktemp("examples")
    for name in ("photo.jpg", "a.jpg", "photos/astronaut.jpg"):
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copy(sample_photo(), root / name)
    (root / "shots").mkdir()
    for name in ("b.png", "shots/astronaut.png"):
        cv2.imwrite(str(root / name), sample_bgr())
    clip = write_video(root / "clip.mp4", frames=12)
    if clip.suffix != ".mp4":
        pytest.skip("this OpenCV build cannot write the mp4 video the examples name")
    shutil.copy(REPO / "src/litefer/weights/litefer_cpsca112_ferplus.pt", root / "best.pt")
    return root


@pytest.mark.parametrize("lang, code, skip", EXAMPLES)
def test_example_runs(lang, code, skip, workspace, tmp_path):
    if skip:
        pytest.skip(f"skip-example: {skip}")
    port = str(free_port())
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LITEFER_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c",
                                                                 shell_script(lang, code)]
    log = tmp_path / "output.txt"
    with open(log, "w") as sink:   # a file, not a pipe: a server the example leaves running holds no pipe open
        proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=120)
        finally:   # a server the example left running, and anything else it started
            _kill_group(proc.pid)
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, f"example exited {proc.returncode}:\n{code}\n--- output ---\n{out[-4000:]}"


def test_examples_are_found():
    """The collector sees the README's examples and honours the skip mark (guards against a regex that
    silently matches nothing)."""
    readme = blocks(REPO / "README.md")
    assert any(lang == "python" and "Recognizer" in code for _, lang, code, _ in readme)
    assert any(skip and "make test" in code for _, _, code, skip in readme)
