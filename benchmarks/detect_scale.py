"""Small faces in a 12-MP photo: time per photo and faces found, before and after the tiled search.

    python benchmarks/detect_scale.py [--before e97f65e] [--rounds 3] [--out results/detect_scale]

Before issue 20 an image larger than ``max_side`` (1280) was searched on one copy downscaled to
1280 px, which missed every face under 24 x 4032 / 1280 = 76 px of a 4032-px photo; now that copy
finds the large faces and tiles at the scale ``min_face`` needs find the others. The photo (made
here, 4032 x 3024): the astronaut photo that ships in litefer upscaled to 3024 px on the left (a
570-px face), and copies of its face of 40 to 150 px pasted on it and on the grey beside it.

Each version runs in its own worker process (this file with ``--worker``): the one installed here,
and the ``--before`` commit's ``src`` extracted with ``git archive`` into a temporary folder and put
first on ``PYTHONPATH``. Rounds alternate between them (which goes first alternates too); each
round times ``--repeat`` calls per photo after a warm-up, and a figure is the best of them (the
least disturbed by other work on the machine; the median and every call are in the JSON).
Timed: ``HaarDetector().detect`` (the default), ``Recognizer(backend="onnxruntime").recognize``
(the packaged model, Haar), and ``YuNetDetector.detect`` when ``--yunet`` exists; at 1 thread
(OpenCV and ONNX Runtime pinned to one) and at the libraries' default threads. A pasted face is
found when a box's centre lies within a third of its side from the face's and its side is 0.6 to
1.6 times the face's; a box matching no face is counted apart. ``measure`` returns the rows, for
``benchmarks/robustness.py`` too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_page import command_line, header, table, write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEFORE = "e97f65e"                      # main before the tiled search (issue 20)
# shared/ beside the checkout or beside a folder above it (a git worktree in a folder of worktrees)
SHARED = next((d / "shared" for d in ROOT.parents if (d / "shared").is_dir()), ROOT.parent / "shared")
YUNET = SHARED / "models" / "face_detection_yunet.onnx"
SETTINGS = {"1 thread": 1, "default threads": 0}
# (face side in px, top-left corner of the face) of the pasted faces
PASTED = [(40, (3300, 150)), (48, (3300, 450)), (60, (3300, 800)), (72, (3300, 1200)), (96, (3300, 1700)),
          (150, (3300, 2350)), (48, (400, 2500)), (60, (2300, 2600))]


def make_photo() -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """The 12-MP test photo and the boxes of its faces (the large one first)."""
    import cv2

    from litefer.inference.samples import sample_bgr

    src = sample_bgr()
    photo = np.full((3024, 4032, 3), 128, np.uint8)
    photo[:, :3024] = cv2.resize(src, (3024, 3024), interpolation=cv2.INTER_LINEAR)
    k = 3024 / 512
    faces = [(177 * k, 67 * k, 95 * k, 95 * k)]          # the photo's own face (Haar's box at 512 px)
    around = src[16:272, 96:352]                          # 256 px around it; the face is (81, 51, 95, 95) there
    for side, (fx, fy) in PASTED:
        n = round(256 * side / 95)
        patch = cv2.resize(around, (n, n), interpolation=cv2.INTER_AREA)
        ox, oy = round(fx - 81 * n / 256), round(fy - 51 * n / 256)
        photo[oy:oy + n, ox:ox + n] = patch
        faces.append((ox + 81 * n / 256, oy + 51 * n / 256, 95 * n / 256, 95 * n / 256))
    return photo, faces


def matches(boxes, faces) -> tuple[int, int]:
    """(faces found, boxes matching no face)."""
    def hit(b, f):
        dist = np.hypot(b[0] + b[2] / 2 - f[0] - f[2] / 2, b[1] + b[3] / 2 - f[1] - f[3] / 2)
        return dist < f[2] / 3 and 0.6 <= b[2] / f[2] <= 1.6
    found = sum(any(hit(b, f) for b in boxes) for f in faces)
    return found, sum(not any(hit(b, f) for f in faces) for b in boxes)


# ----------------------------------------------------------------------------- worker side

def timed(fn, photo, repeat: int) -> tuple[list[float], object]:
    out = fn(photo)                                       # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(photo)
        times.append(1000 * (time.perf_counter() - t0))
    return times, out


def peak_mib(fn, photo) -> float:
    """Peak memory traced while ``fn`` runs on the photo, MiB (NumPy and OpenCV arrays included)."""
    import tracemalloc

    tracemalloc.start()
    fn(photo)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def worker(photo_path: str, threads: int, repeat: int, yunet: str | None) -> dict:
    """This process's litefer on the photo: ms per call, boxes and peak memory of each search."""
    import cv2

    import litefer
    from litefer.inference.detect import HaarDetector, YuNetDetector

    if threads:
        cv2.setNumThreads(threads)
    photo = np.load(photo_path)
    rec = litefer.Recognizer(backend="onnxruntime", threads=threads or None)
    runs = {"Haar detect": HaarDetector().detect,
            "recognize (Haar)": lambda p: [f.box for f in rec.recognize(p)]}
    if yunet:
        runs["YuNet detect"] = YuNetDetector(yunet).detect
    out = {"litefer": str(Path(litefer.__file__).parent), "opencv": cv2.__version__, "cv2_threads": cv2.getNumThreads()}
    for name, fn in runs.items():
        times, found = timed(fn, photo, repeat)
        boxes = [list(map(float, getattr(d, "box", d))) for d in found]
        out[name] = {"ms": times, "boxes": boxes, "peak_mib": peak_mib(fn, photo)}
    return out


# ----------------------------------------------------------------------------- driver side

def extract(ref: str, into: Path) -> Path:
    """``src`` of git commit ``ref`` of this repository under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run_worker(src: Path | None, photo: Path, threads: int, repeat: int, yunet: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1") if threads == 1 else dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(HERE / "detect_scale.py"), "--worker", str(photo), "--threads", str(threads),
           "--repeat", str(repeat), *(["--yunet", yunet] if yunet else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("{")), None)
    if p.returncode or line is None:
        raise RuntimeError(f"worker failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(line)


def measure(before: str = BEFORE, rounds: int = 3, repeat: int = 2, yunet: str | os.PathLike | None = YUNET) -> dict:
    """Rows of ms per photo (best call), faces found and peak memory for each search, version and thread
    setting, with the photo's faces; see the module's docstring."""
    yunet = str(yunet) if yunet and Path(yunet).is_file() else None
    photo, faces = make_photo()
    rows = []
    with tempfile.TemporaryDirectory(prefix="detect-scale-") as tmp:
        np.save(Path(tmp) / "photo.npy", photo)
        versions = {f"before ({before})": extract(before, Path(tmp)), "after": None}
        for setting, threads in SETTINGS.items():
            runs = {v: [] for v in versions}
            for r in range(rounds):
                order = list(versions)[::(-1) ** r]
                for v in order:
                    runs[v].append(run_worker(versions[v], Path(tmp) / "photo.npy", threads, repeat, yunet))
                    print(f"{setting}, round {r + 1}: {v} done", flush=True)
            rows += [row(setting, v, name, rs, faces) for v, rs in runs.items() for name in rs[0]
                     if isinstance(rs[0][name], dict)]
    return {"photo": {"width": 4032, "height": 3024, "faces": [[round(v, 1) for v in f] for f in faces]},
            "before": before, "rounds": rounds, "repeat": repeat, "rows": rows}


def row(setting: str, version: str, search: str, runs: list[dict], faces) -> dict:
    last = runs[-1][search]
    found, others = matches(last["boxes"], faces)
    ms = [t for r in runs for t in r[search]["ms"]]
    return {"threads": setting, "version": version, "search": search, "ms_per_photo": round(min(ms), 1),
            "ms_median": round(statistics.median(ms), 1), "ms_all": [round(t, 1) for t in ms], "faces_found": found,
            "faces": len(faces), "other_boxes": others,
            "same_boxes_every_round": all(r[search]["boxes"] == last["boxes"] for r in runs),
            "peak_mib": round(last["peak_mib"], 1)}


def markdown(result: dict) -> str:
    """The table of ``measure``'s rows, with the after / before time ratio."""
    rows = result["rows"]
    base = {(r["threads"], r["search"]): r["ms_per_photo"] for r in rows if r["version"].startswith("before")}
    lines = table(["threads", "search", "version", "ms / photo", "× before", "faces found", "other boxes", "peak MiB"],
                  [[r["threads"], r["search"], r["version"], f"{r['ms_per_photo']:.0f}",
                    f"{r['ms_per_photo'] / base[(r['threads'], r['search'])]:.2f}", f"{r['faces_found']} / {r['faces']}",
                    r["other_boxes"], f"{r['peak_mib']:.0f}"] for r in rows], "lllrrrrr")
    sizes = ", ".join(str(s) for s, _ in PASTED)
    lines += ["", f"The photo: 4032 x 3024 px, {len(result['photo']['faces'])} faces: one of about 570 px and pasted "
              f"ones of {sizes} px. \"Other boxes\" match no face (false detections on the upscaled photo). Peak MiB: "
              "memory traced during one call (tracemalloc). Times are the best of "
              f"{result['rounds']} alternating rounds x {result['repeat']} calls; the median and every call are in "
              "the JSON."]
    return "\n".join(lines)


def report(result: dict, command: str) -> str:
    return "\n".join([*header("Small faces in a 12-MP photo: the tiled search against one downscaled copy", command),
                      f"Before: commit {result['before']} (one copy downscaled to 1280 px). After: this tree "
                      "(that copy for the large faces, tiles at the scale `min_face` needs for the others).", "",
                      markdown(result), ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=BEFORE, help="git commit of the version to compare with (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=2, help="timed calls per round, after one warm-up")
    p.add_argument("--yunet", default=str(YUNET), help="YuNet model for its row (skipped when absent)")
    p.add_argument("--out", default="results/detect_scale", help="report path without suffix (.md and .json)")
    p.add_argument("--worker", metavar="PHOTO_NPY", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.repeat, args.yunet or None)))
        return 0
    result = measure(args.before, args.rounds, args.repeat, args.yunet)
    command = command_line("detect_scale.py", argv)
    write(args.out, {"command": command, **result}, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
