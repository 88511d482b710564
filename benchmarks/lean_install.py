"""The lean install checked as a user gets it: the wheel built from the working tree, installed with
no extras into a fresh venv outside the repository. Run by ``.ci/run``; its helpers (wheel, venv,
size) serve ``benchmarks/install.py``.

Checks, one line each:

1. the wheel holds the sample photo, the packaged model, the page, and the page's vendor files
   when the tree has them (``make web``);
2. torch is not installed in the venv;
3. ``litefer predict`` recognizes the sample photo there (one face), and ``litefer export`` and
   ``litefer train --resume`` say in one line which extra brings torch;
4. with ``litefer[serve]`` added from the same wheel (the serve stack is not in the lean install:
   see results/install.md), torch is still absent, ``litefer serve`` answers a ``/v1/recognize``
   round trip with the sample photo, and the page says whether its on-device mode is available.

    .venv/bin/python benchmarks/lean_install.py [--workdir DIR] [--keep]

Exit status 0 when every check passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "src" / "litefer" / "serve" / "static" / "vendor"
SAMPLE = ROOT / "src" / "litefer" / "samples" / "astronaut.jpg"
PREDICT = ["predict", "--sample", "--json", "--no-progress"]      # the default: packaged ONNX, ONNX Runtime


class CheckFailed(RuntimeError):
    """A lean-install check that did not hold; the message says which and why."""


def run(cmd: list, cwd: Path | None = None, timeout: float = 900, env: dict | None = None) -> str:
    """Run ``cmd``; its stdout, or CheckFailed with the tail of its output."""
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if out.returncode != 0:
        tail = (out.stdout[-1500:] + "\n" + out.stderr[-3000:]).strip()
        raise CheckFailed(f"`{' '.join(map(str, cmd))}` exited with {out.returncode}:\n{tail}")
    return out.stdout


def source_files() -> list[Path]:
    """The working tree as git sees it: tracked files and untracked ones that are not ignored."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).split("\0")
    return [Path(p) for p in listed if p and (ROOT / p).is_file()]


def build_wheel(out_dir: Path, vendor: Path | None = VENDOR) -> Path:
    """The wheel of the working tree, built from a clean copy (so no stale ``build/`` leaks in),
    with the page's vendor files copied from ``vendor`` when it exists (None: without them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="litefer-src-") as tmp:
        src = Path(tmp)
        for rel in source_files():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        if vendor is not None and vendor.is_dir():
            shutil.copytree(vendor, src / VENDOR.relative_to(ROOT))
        before = set(out_dir.glob("litefer-*.whl"))
        for old in before:
            old.unlink()
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out_dir, src])
    wheels = sorted(out_dir.glob("litefer-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one litefer wheel in {out_dir}, found {[w.name for w in wheels]}")
    return wheels[0]


def make_venv(path: Path, *installs: list[str]) -> Path:
    """A fresh venv at ``path`` (pip as venv ships it); each item of ``installs`` is one
    ``pip install`` (torch first, then the wheel: pip never resolves plain torch). Its python."""
    if path.exists():
        shutil.rmtree(path)
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", path])
    py = path / "bin" / "python"
    for reqs in installs:
        run([py, "-m", "pip", "install", "-q", *reqs])
    return py


def site_packages(py: Path) -> Path:
    return Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())


def tree_bytes(folder: Path) -> int:
    """Bytes on disk under ``folder`` (allocated blocks, as ``du`` counts them)."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*")) + folder.lstat().st_blocks * 512


def installed(py: Path, name: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    return subprocess.run([py, "-c", code], capture_output=True, check=False).returncode == 0


# ----------------------------------------------------------------------------- the checks

def check_wheel(wheel: Path) -> str:
    names = set(zipfile.ZipFile(wheel).namelist())
    need = ["litefer/samples/astronaut.jpg", "litefer/weights/litefer_cpsca112_ferplus.onnx",
            "litefer/weights/litefer_cpsca112_ferplus.json", "litefer/serve/static/index.html"]
    manifest = VENDOR / "manifest.json"
    if manifest.is_file():
        listed = json.loads(manifest.read_text())
        packed = set(listed.get("gzipped", []))                  # stored as <name>.gz by make web
        need += ["litefer/serve/static/vendor/manifest.json"] + [
            f"litefer/serve/static/vendor/{f}{'.gz' if f in packed else ''}" for f in listed["files"]]
    missing = [n for n in need if n not in names]
    if missing:
        raise CheckFailed(f"{wheel.name} lacks {missing}")
    vendor = "with" if manifest.is_file() else "without (no `make web` in this tree)"
    return f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, {vendor} the page's vendor files"


def check_no_torch(py: Path) -> str:
    if installed(py, "torch"):
        raise CheckFailed(f"torch is installed in {py.parents[1]}")
    return "torch is not installed"


def check_predict(venv: Path, cwd: Path) -> str:
    out = run([venv / "bin" / "litefer", *PREDICT], cwd=cwd)
    summary = json.loads(out)["summary"]
    if summary["faces"] != 1 or summary["skipped"]:
        raise CheckFailed(f"litefer predict on the sample found {summary['faces']} face(s): {summary}")
    return f"litefer {' '.join(PREDICT)}: 1 face"


# README commands that need torch: the lean install answers each with the extra to install, exit 2
TORCH_COMMANDS = (["export", "--weights", "default", "--out", "x.onnx"], ["train", "--resume", "runs/x"])


def check_torch_commands(venv: Path, cwd: Path) -> str:
    for argv in TORCH_COMMANDS:
        p = subprocess.run([str(venv / "bin" / "litefer"), *argv], cwd=cwd, capture_output=True, text=True,
                           timeout=120, check=False)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 2 or len(lines) != 1 or "pip install 'litefer[train]'" not in lines[0]:
            raise CheckFailed(f"litefer {' '.join(argv)}: exit {p.returncode}, stderr {p.stderr[-500:]!r}")
    return f"{' and '.join('litefer ' + ' '.join(a) for a in TORCH_COMMANDS)}: one line naming litefer[train], exit 2"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "image/jpeg"} if body else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def check_serve(venv: Path, cwd: Path) -> str:
    """``litefer serve`` on a free port: /v1/recognize with the sample photo, the page, the card."""
    sys.path.insert(0, str(Path(__file__).parent))
    from loadtest import wait_ready

    port = free_port()
    log = cwd / "serve.log"
    cmd = [venv / "bin" / "litefer", "serve", "--port", str(port), "--workers", "1", "--log-level", "warning"]
    with open(log, "wb") as sink:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}", 120, proc)
        except RuntimeError as e:
            raise CheckFailed(f"litefer serve: {e}\n{log.read_text()[-3000:]}") from None
        status, body = request(port, "POST", "/v1/recognize", SAMPLE.read_bytes())
        faces = json.loads(body).get("faces") if status == 200 else None
        if status != 200 or len(faces) != 1:
            raise CheckFailed(f"POST /v1/recognize: HTTP {status}, {body[:300]!r}")
        page = request(port, "GET", "/")
        card = json.loads(request(port, "GET", "/v1/model")[1])
    finally:
        proc.terminate()
        proc.wait(30)
    if page[0] != 200 or b'id="vendor-note"' not in page[1]:
        raise CheckFailed(f"GET /: HTTP {page[0]}")
    mode = "available" if card["browser"]["available"] else "unavailable (the page says so)"
    return f"litefer serve: /v1/recognize 1 face ({faces[0]['label']}), page served, on-device mode {mode}"


def lean_checks(wheel: Path, workdir: Path, add: list[str]) -> list[str]:
    """Every check on ``wheel``; raises CheckFailed at the first that fails. ``add``: packages
    installed beside the wheel, for trying the checks on a tree that still needs them."""
    venv = workdir / "venv-lean"
    py = make_venv(venv, [str(wheel), *add])
    lines = [check_wheel(wheel), check_no_torch(py), check_predict(venv, workdir), check_torch_commands(venv, workdir)]
    run([py, "-m", "pip", "install", "-q", f"{wheel}[serve]"])
    lines += [check_no_torch(py) + " (with litefer[serve])", check_serve(venv, workdir)]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=None, help="where the wheel and venv go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--add", action="append", default=[], metavar="REQ",
                   help="also install REQ in the lean venv (to try the checks on a tree whose recognition path still "
                        "needs it; a passing run then says so)")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="litefer-lean-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for line in lean_checks(build_wheel(workdir / "dist"), workdir, args.add):
            print(f"lean install: ok: {line}", flush=True)
    except (CheckFailed, subprocess.TimeoutExpired) as e:
        print(f"lean install: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.add:
        print(f"lean install: passed only with {args.add} added to the lean venv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
