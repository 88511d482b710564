"""Recognition on Ray against plain recognition, on the same photos (JAFFE copied to ``--photos``) and one
long video: plain images/s (one thread, and as ``litefer predict`` runs), ``--ray local`` with 1 and 2
workers, the two-node cluster of benchmarks/ray_cluster.py, Ray's overhead per image at equal CPUs, the
CPU the actors and the rest of Ray used, and on paper 1 and 100 machines for 1M photos and 1,000 h of video.

    .venv/bin/python benchmarks/ray_scale.py --photos 2000 --video-frames 1800

Throughputs are steady-state: items between the first and the last part file over the time between them
(the start of Ray and of the actors, measured apart, is a fixed cost per run). Writes results/ray_scale.md
and .json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import results_page  # noqa: E402
from ray_cluster import children, two_node_cluster  # noqa: E402
from video_fps import make_video  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def copies(src: Path, n: int, folder: Path) -> list[str]:
    """``n`` photo files cycling through the JAFFE photos (distinct names: the inputs are deduplicated by path)."""
    photos = sorted(src.glob("*.tiff"))
    if not photos:
        raise SystemExit(f"no JAFFE photos in {src}")
    out = []
    for i in range(n):
        dst = folder / f"{i:05d}_{photos[i % len(photos)].name}"
        shutil.copyfile(photos[i % len(photos)], dst)
        out.append(str(dst))
    return out


def cpu_seconds(roots: list[int]) -> dict:
    """CPU seconds so far of the Ray processes below ``roots``: the recognizer actors, and the rest."""
    out = {"actors": 0.0, "ray": 0.0}
    for pid, cmd in children(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out["actors" if "MapWorker" in cmd else "ray"] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def plain(photos: list[str], video: str, detector: str, threads: int | None) -> dict:
    """Images/s and frames/s of one Recognizer in this process (``threads=1``: one core's worth)."""
    import cv2

    from litefer import Recognizer

    previous = cv2.getNumThreads()
    if threads:
        cv2.setNumThreads(threads)
    rec = Recognizer(detector=detector, threads=threads)
    list(rec.iter_many(photos[:32]))                    # warm up
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(1 for _ in rec.iter_many(photos))
    t1, c1 = time.perf_counter(), time.process_time()
    frames = sum(1 for _ in rec.recognize_video(video))
    t2 = time.perf_counter()
    cv2.setNumThreads(previous)
    return {"images_per_s": n / (t1 - t0), "cpu_per_image_ms": 1000 * (c1 - c0) / n,
            "frames_per_s": frames / (t2 - t1)}


def on_ray(inputs: list[str], roots: list[int], workers: int, detector: str, **kw) -> dict:
    """One write_parquet run on the connected cluster: steady items/s, start-up, CPU use."""
    from litefer.distributed import write_parquet

    folder = tempfile.mkdtemp(prefix="ray_scale_")
    start = time.monotonic()
    sample, before = {}, None

    written = write_parquet(inputs, folder, workers=workers, detector=detector, **kw)
    shutil.rmtree(folder, ignore_errors=True)
    (t_first, n_first), (t_last, n_last) = written.times[0], written.times[-1]
    del sample, before
    return {"workers": workers, "items": written.items, "parts": len(written.times),
            "items_per_s": (n_last - n_first) / (t_last - t_first), "first_part_s": t_first - start,
            "wall_s": t_last - start}


def measured_cpu(roots, run):
    """``run()`` with the CPU seconds the cluster's processes and this driver spent meanwhile."""
    c0, d0, w0 = cpu_seconds(roots), time.process_time(), time.monotonic()
    result = run()
    c1, d1, w1 = cpu_seconds(roots), time.process_time(), time.monotonic()
    result["cpu"] = {"actors_s": c1["actors"] - c0["actors"], "ray_s": c1["ray"] - c0["ray"], "driver_s": d1 - d0,
                     "wall_s": w1 - w0}
    return result
