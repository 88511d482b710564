"""litefer against the peer ``fer`` (25.10.3), per photo, on the 213 JAFFE photos: time and accuracy.

    .venv/bin/python benchmarks/peer_speed.py --data ../shared/data/jaffe            # full: about 4 minutes
    .venv/bin/python benchmarks/peer_speed.py --data ../shared/data/jaffe --quick    # a check: 20 photos, 1 round

fer and its TensorFlow go into a throwaway venv outside the repository (``--cache``, default
``~/.cache/litefer-peer``; reused when it already holds fer 25.10.3). The photos are decoded once
(litefer's reader, BGR uint8) and handed to both tools as the same arrays. Each tool runs in its own
worker process (``benchmarks/peer_worker.py``): litefer in this interpreter through
``Recognizer(backend="onnxruntime")`` on the packaged model, fer in the peer venv as ``FER()``. The
rounds alternate between the tools (which goes first alternates too), at 1 thread (OpenCV, ONNX
Runtime, TFLite and TensorFlow pinned to one) and at each library's default threads. Only the
recognition calls are timed; a tool's figure is its best round (the median round beside it).

litefer runs once per detector (``--detectors``: ``haar``, and ``auto`` with ``LITEFER_YUNET`` set to
``--yunet`` so that ``auto`` is YuNet) and smallest face (``--min-face``). Issue 25's target: litefer
with YuNet at most 0.7 x fer's time per photo at both thread settings.

Accuracy: the label of the largest face against the expression in the file name (7 classes); a
photo without a face counts as wrong, and so does litefer's ``contempt``, which JAFFE does not pose.
Writes ``results/peer_speed.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from litefer.inference.inputs import load_image
from results_page import command_line, header, table, write

HERE = Path(__file__).resolve().parent
FER_VERSION = "25.10.3"
# fer's own dependencies (installed with --no-deps, see ../shared/notes/peer-fer.md): TensorFlow for
# its TFLite model, OpenCV with cv2.data for its cascade, and setuptools < 70 for pkg_resources.
PEER_PACKAGES = ["tensorflow-cpu", "opencv-contrib-python", "numpy", "pandas", "pillow", "tqdm", "requests",
                 "matplotlib", "setuptools<70"]
JAFFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
               "SU": "surprise"}
SETTINGS = {"1 thread": 1, "default threads": 0}


def peer_python(cache: Path) -> Path:
    """The peer venv's interpreter, built on first use; later runs reuse it."""
    py = cache / "venv" / "bin" / "python"
    probe = [str(py), "-c", "from importlib.metadata import version; print(version('fer'))"]
    if py.exists() and subprocess.run(probe, check=False, capture_output=True, text=True).stdout.strip() == FER_VERSION:
        return py
    print(f"installing fer {FER_VERSION} and TensorFlow into {cache / 'venv'} (once; several minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache / "venv")], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", f"fer=={FER_VERSION}"], check=True)
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    return py


def jaffe(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    """File names, their expression (FERPlus names) and the decoded BGR photos."""
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() in (".tiff", ".tif"))
    truth = [JAFFE_CODES[p.name.split(".")[1][:2]] for p in paths]
    return [p.name for p in paths], truth, np.stack([load_image(p) for p in paths])


class Worker:
    """One tool in its own process, answering ``round`` requests (see ``peer_worker.py``)."""

    def __init__(self, python: Path, tool: str, photos: Path, threads: int, min_face: int | None = None,
                 detector: str = "haar", yunet: Path | None = None):
        env = dict(os.environ, OMP_NUM_THREADS="1") if threads == 1 else dict(os.environ)
        env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        if detector == "auto" and yunet is not None:
            env["LITEFER_YUNET"] = str(yunet)               # what "auto" picks: YuNet from this file
        cmd = [str(python), str(HERE / "peer_worker.py"), "--tool", tool, "--photos", str(photos),
               "--threads", str(threads), *(["--min-face", str(min_face)] if min_face else []),
               *(["--detector", detector] if tool == "litefer" else [])]
        self.tool = tool
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.versions = self._answer()["versions"]

    def _answer(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the {self.tool} worker ended with code {self.proc.wait()} (its messages are above)")

    def round(self) -> dict:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def accuracy(labels: list[str | None], truth: list[str]) -> float:
    return float(np.mean([a == b for a, b in zip(labels, truth)]))


def compare(setting: str, peer: Path, photos: Path, truth: list[str], rounds: int, min_faces: list[int],
            detectors: tuple[str, ...] = ("haar",), yunet: Path | None = None) -> dict:
    """fer and litefer with each detector and smallest face, at one thread setting; rounds interleaved
    (the order turns each round); best round per tool."""
    threads = SETTINGS[setting]
    workers = {f"litefer {d} {m} px": Worker(Path(sys.executable), "litefer", photos, threads, m, d, yunet)
               for d in detectors for m in min_faces}
    workers["fer"] = Worker(peer, "fer", photos, threads)
    runs: dict[str, list[dict]] = {name: [] for name in workers}
    try:
        for r in range(rounds):
            names = list(workers)
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                runs[name].append(workers[name].round())
                print(f"{setting}, round {r + 1}: {name} {runs[name][-1]['ms_per_photo']:.1f} ms/photo", flush=True)
    finally:
        for w in workers.values():
            w.close()
    row = {"setting": setting, "threads": threads or "default"}
    for name, rs in runs.items():
        last = rs[-1]
        row[name] = {"ms_per_photo": min(r["ms_per_photo"] for r in rs),
                     "ms_median": statistics.median(r["ms_per_photo"] for r in rs),
                     "rounds_ms": [round(r["ms_per_photo"], 2) for r in rs],
                     "photos_with_face": int(sum(n > 0 for n in last["faces"])), "faces": int(sum(last["faces"])),
                     "accuracy": accuracy(last["labels"], truth),
                     "same_labels_every_round": all(r["labels"] == last["labels"] for r in rs),
                     "labels": last["labels"], "versions": workers[name].versions}
    row["ratio"] = {name: row[name]["ms_per_photo"] / row["fer"]["ms_per_photo"] for name in workers if name != "fer"}
    return row


def intro(env: dict, n: int) -> list[str]:
    """The report's title, command, machine, tools and method."""
    lf, fe = env["litefer"], env["fer"]
    beside = env["litefer_default"].get("mirrored_pass_beside")
    detectors = "; ".join(f"{name.split(' ', 1)[1]}: `{v.get('detector')}`" for name, v in env["litefer_rows"].items())
    auto = (f" `auto` is run with `LITEFER_YUNET={env['yunet']}`, so that it is YuNet." if "auto" in env["detectors"]
            else "")
    tools = (f"litefer {lf['litefer']}: onnxruntime {lf['onnxruntime']}, OpenCV {lf['opencv']}, "
             "`Recognizer(backend=\"onnxruntime\", detector=...)` with the packaged model and its defaults "
             f"(flip averaging {lf.get('tta')}, mirrored pass beside the plain one at default threads: {beside}); "
             f"detectors: {detectors}.{auto} fer {fe['fer']}: "
             f"TensorFlow {fe['tensorflow']}, OpenCV {fe['opencv']}, `FER()` (Haar faces from 50 px, TFLite model), "
             "in its own venv.")
    method = (f"{n} photos decoded once and given to both tools as the same BGR arrays; each tool in its own "
              "process; rounds alternate between the tools; only the recognition call is timed; ms per photo is "
              "the best of the rounds, then the median round (all rounds in the JSON). 1 thread: OpenCV, ONNX "
              "Runtime, TFLite and "
              "TensorFlow pinned to one thread; default threads: each library's own.")
    quick = ["**Quick check: few photos and one round; not figures to quote.**", ""] if env.get("quick") else []
    return [*header("litefer against fer, per photo, on the JAFFE photos", env["command"], load_start=env["load_start"]),
            *quick, tools, "", method, ""]


def target(rows: list[dict], name: str) -> str:
    """Whether litefer row ``name`` is within 0.7 x fer's time at every thread setting, with the ratios."""
    ratios = ", ".join(f"{r['setting']} {r['ratio'][name]:.2f}×" for r in rows)
    return f"{name.split(' ', 1)[1]} {'met' if all(r['ratio'][name] <= 0.7 for r in rows) else 'not met'} ({ratios})"


def report(rows: list[dict], env: dict, n: int) -> str:
    tools = [k for k in rows[0] if k.startswith("litefer") or k == "fer"]
    rows_out = [[r["setting"], name.split(" ", 1)[1], f"{r[name]['ms_per_photo']:.1f}, {r[name]['ms_median']:.1f}",
                 f"{r['fer']['ms_per_photo']:.1f}, {r['fer']['ms_median']:.1f}", f"{ratio:.2f}×",
                 ", ".join(f"{v:.1f}" for v in r[name]["rounds_ms"]), ", ".join(f"{v:.1f}" for v in r["fer"]["rounds_ms"])]
                for r in rows for name, ratio in r["ratio"].items()]
    lines = [*intro(env, n),
             *table(["threads", "litefer: detector, smallest face", "litefer ms / photo (best, median)",
                     "fer ms / photo (best, median)", "litefer / fer", "litefer rounds", "fer rounds"], rows_out, "llrrrll")]
    autos = [name for name in rows[0]["ratio"] if " auto " in name]
    if autos:
        lines += ["", "Issue 25's target, litefer with YuNet (`auto`) at most 0.70× fer's time at both thread "
                      "settings: " + "; ".join(target(rows, name) for name in autos) + "."]
    lines += ["", *table(["tool", "photos with a face", "faces", "accuracy (7 classes, largest face)"],
                         [[name, f"{rows[0][name]['photos_with_face']} / {n}", rows[0][name]["faces"],
                           f"{100 * rows[0][name]['accuracy']:.1f} %"] for name in tools], "lrrr")]
    same = all(r[name]["labels"] == rows[0][name]["labels"] for r in rows for name in tools)
    lines += ["", "Accuracy: the largest face's label against the expression in the file name (AN anger, DI "
              "disgust, FE fear, HA happiness, NE neutral, SA sadness, SU surprise); no face, or litefer's "
              "`contempt` (not posed in JAFFE), counts as wrong. fer rounds its scores to 2 decimals; a tie "
              "goes to the class first in fer's order. "
              + ("Labels were the same in every round and at both thread settings." if same else
                 "Labels differed between rounds or settings (see the JSON).")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/jaffe", help="folder of the 213 JAFFE .tiff photos")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "litefer-peer"),
                   help="where fer's throwaway venv lives (outside the repository)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-face", type=int, nargs="+", default=[32, 48], metavar="PX",
                   help="litefer's smallest face, one litefer row each per detector (default: 32, litefer's default, "
                        "and 48, about fer's 50)")
    p.add_argument("--detectors", nargs="+", default=["haar", "auto"], choices=("haar", "auto"),
                   help="litefer's detectors, one row each per smallest face (auto: YuNet from --yunet)")
    p.add_argument("--yunet", default=str(HERE.parent.parent / "shared" / "models" / "face_detection_yunet.onnx"),
                   help="the YuNet model `auto` finds through LITEFER_YUNET")
    p.add_argument("--quick", action="store_true", help="20 photos and 1 round: a check of the script, not figures")
    p.add_argument("--out", default=None, help="report path without suffix (.md and .json; default: "
                                               "results/peer_speed, results/peer_speed_quick with --quick)")
    args = p.parse_args(argv)
    if "auto" in args.detectors and not Path(args.yunet).is_file():
        p.error(f"--yunet {args.yunet}: no such file (auto is run with LITEFER_YUNET set to it)")
    out = args.out or ("results/peer_speed_quick" if args.quick else "results/peer_speed")
    rounds = 1 if args.quick else args.rounds
    data = Path(args.data)
    if not data.is_dir():
        print(f"skipped: {data} is absent (the JAFFE photos live outside the repository, see its README)")
        return
    names, truth, photos = jaffe(data)
    if args.quick:                                       # 20 photos spread over the ten posers
        step = max(1, len(names) // 20)
        names, truth, photos = names[::step][:20], truth[::step][:20], photos[::step][:20]
    peer = peer_python(Path(args.cache).expanduser())
    env = {"command": command_line("peer_speed.py", argv), "load_start": os.getloadavg(), "quick": args.quick,
           "detectors": args.detectors, "yunet": str(Path(args.yunet).resolve())}
    with tempfile.TemporaryDirectory(prefix="litefer-peer-") as tmp:
        np.save(Path(tmp) / "photos.npy", photos)
        rows = [compare(s, peer, Path(tmp) / "photos.npy", truth, rounds, args.min_face, tuple(args.detectors),
                        Path(args.yunet).resolve()) for s in SETTINGS]
    first = f"litefer {args.detectors[0]} {args.min_face[0]} px"
    env.update(litefer=rows[0][first]["versions"], fer=rows[0]["fer"]["versions"],
               litefer_default=rows[-1][first]["versions"],
               litefer_rows={name: rows[-1][name]["versions"] for name in rows[-1]["ratio"]})
    write(out, {"command": env["command"], "environment": env, "photos": names, "truth": truth, "rows": rows},
          report(rows, env, len(names)), env["load_start"])


if __name__ == "__main__":
    main()
