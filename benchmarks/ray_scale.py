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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import results_page  # noqa: E402
from ray_cluster import children, ray_env, two_node_cluster  # noqa: E402
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


class CpuSampler:
    """CPU seconds of the Ray processes below ``roots`` during a run, the recognizer actors apart from the
    rest: sampled every 0.2 s from /proc, so that actors that exit at the end of the run still count."""

    def __init__(self, roots: list[int]):
        self.roots, self.first, self.last, self.kind = roots, {}, {}, {}
        self.history: list[tuple[float, float]] = []        # (time.monotonic(), CPU seconds of all so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid, cmd in children(self.roots):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            self.first.setdefault(pid, cpu)
            self.last[pid] = cpu
            self.kind[pid] = "actors" if "MapWorker" in cmd else "ray"
        used = sum(cpu - self.first[pid] for pid, cpu in self.last.items()) + time.process_time()
        self.history.append((time.monotonic(), used))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self):
        self._sample()
        self.t0, self.c0 = time.monotonic(), time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.wall, self.driver = time.monotonic() - self.t0, time.process_time() - self.c0

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds (cluster processes and driver) from the last sample before ``t0`` to the first after ``t1``."""
        before = [c for t, c in self.history if t <= t0] or [self.history[0][1]]
        after = [c for t, c in self.history if t >= t1] or [self.history[-1][1]]
        return after[0] - before[-1]

    def seconds(self) -> dict:
        out = {"actors_s": 0.0, "ray_s": 0.0, "driver_s": round(self.driver, 2), "wall_s": round(self.wall, 2)}
        for pid, cpu in self.last.items():
            out[f"{self.kind[pid]}_s"] += cpu - self.first[pid]
        return {k: round(v, 2) for k, v in out.items()}


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
    """One write_parquet run on the connected cluster: steady items/s, start-up, CPU used."""
    from litefer.distributed import write_parquet

    folder = tempfile.mkdtemp(prefix="ray_scale_")
    start = time.monotonic()
    try:
        with CpuSampler(roots) as cpu:
            written = write_parquet(inputs, folder, workers=workers, detector=detector, **kw)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (t_first, n_first), (t_last, n_last) = written.times[0], written.times[-1]
    used = cpu.seconds()
    busy = t_last - t_first
    return {"workers": workers, "items": written.items, "parts": len(written.times), "rows": written.rows,
            "items_per_s": round((n_last - n_first) / busy, 2), "first_part_s": round(t_first - start, 2),
            "steady_cpu_per_item_ms": round(1000 * cpu.between(t_first, t_last) / (n_last - n_first), 2),
            "wall_s": round(t_last - start, 2), "cpu": used,
            "cpu_utilisation": round((used["actors_s"] + used["ray_s"] + used["driver_s"]) / used["wall_s"], 2)}


def apart(fn, *args):
    """``fn(*args)`` in a fresh process: a driver joins one Ray cluster in its life (a second ``ray.init``
    after ``ray.shutdown`` leaves Ray Data's actors cancelled before they start)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def local_runs(photos: list[str], video: str, args) -> dict:
    """``--ray local`` (Ray started in this process, so its processes are this one's children)."""
    import ray

    t = time.monotonic()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out = {"start_s": round(time.monotonic() - t, 2)}
    try:
        for w in (1, 2):
            out[f"photos_{w}"] = on_ray(photos, [os.getpid()], w, args.detector, images_per_task=args.images_per_task)
        out["video_2"] = on_ray([video], [os.getpid()], 2, args.detector, frames_per_task=args.frames_per_task)
    finally:
        ray.shutdown()
    return out


def two_node_run(photos: list[str], args) -> dict:
    """The same photos on two raylets of one CPU each (benchmarks/ray_cluster.py)."""
    import ray

    with two_node_cluster() as (address, pids, env):
        os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "PYTHONPATH")})
        ray.init(address=address, log_to_driver=False)
        try:
            return on_ray(photos, pids, 2, args.detector, images_per_task=args.images_per_task)
        finally:
            ray.shutdown()


def on_paper(per_core_photo: float, per_core_frame: float, efficiency: float, args) -> list[dict]:
    """Hours and cost for 1M photos and 1,000 h of video on 1 and 100 machines of ``--cores`` cores, from
    the measured per-worker throughputs and scaling efficiency (2 workers / twice one)."""
    frames = 1000 * 3600 * args.video_fps / args.every
    rows = []
    for machines in (1, 100):
        workers = machines * args.cores * efficiency
        for what, n, rate in (("1M photos", 1e6, per_core_photo), (f"1,000 h video (every {args.every}th frame)",
                                                                   frames, per_core_frame)):
            hours = n / (rate * workers) / 3600
            rows.append({"machines": machines, "work": what, "items": n, "hours": round(hours, 4),
                         "machine_hours": round(hours * machines, 1),
                         "cost_usd": round(hours * machines * args.price, 2)})
    return rows


def loaded_note(load) -> list[str]:
    """A warning when other jobs shared the CPUs (load average above their count at the start or the end)."""
    worst = max(load[0], os.getloadavg()[0])
    if worst <= (os.cpu_count() or 1):
        return []
    return [f"**Loaded machine**: a load average of up to {worst:.1f} on {os.cpu_count()} CPUs, so other jobs took "
            "CPU time from every run, unevenly: the wall-time throughputs, their ratios and the wall-time overhead "
            "are not reliable here; the CPU-time overhead is less affected. Rerun on a quiet machine for "
            "the targets.", ""]


def duration(hours: float) -> str:
    return f"{60 * hours:.1f} min" if hours < 2 else f"{hours:.1f} h"


def page(r: dict, command: str, load) -> str:
    p1, p2, two, pl = r["local"]["photos_1"], r["local"]["photos_2"], r["two_nodes"], r["plain"]
    lines = results_page.header("Recognition on a Ray cluster: scaling and overhead", command,
                                f"Ray {r['ray']}, detector {r['detector']}", load)
    lines += [f"{r['photos']} photos (JAFFE copies, 256x256) and one video of {r['video_frames']} frames (640x480). "
              "Throughput: steady state, items between the first and the last part file over the time between "
              "them, start-up apart. CPU: seconds used by the recognizer actors / the rest of Ray (raylet, GCS, "
              "idle workers) / the driver, of the run's wall time; utilisation = all three over wall time.", "",
              *loaded_note(load), 
              "| run | CPUs | images/s | vs 1 worker | first part after | CPU used (actors / Ray / driver) | "
              "CPU utilisation |", "|---|---|---|---|---|---|---|",
              f"| plain recognition, 1 thread | 1 | {pl['one_thread']['images_per_s']:.1f} | | | | |",
              f"| plain, default threads (as `litefer predict`) | {os.cpu_count()} | "
              f"{pl['default']['images_per_s']:.1f} | | | | |"]
    for name, run in (("`--ray local`, 1 worker", p1), ("`--ray local`, 2 workers", p2),
                      ("two nodes of 1 CPU, 2 workers", two)):
        c = run["cpu"]
        lines.append(f"| {name} | {run['workers']} | {run['items_per_s']:.1f} | "
                     f"{run['items_per_s'] / p1['items_per_s']:.2f}x | {run['first_part_s']:.1f} s | "
                     f"{c['actors_s']:.0f} / {c['ray_s']:.0f} / {c['driver_s']:.0f} s of {c['wall_s']:.0f} s | "
                     f"{run['cpu_utilisation']:.2f} |")
    v = r["local"]["video_2"]
    a = r["assume"]
    lines += ["", f"Video, `--ray local` with 2 workers, {v['items']} ranges of {r['frames_per_task']} frames "
              "(steady state over the ranges after the first): "
              f"{a['frame_rate'] * 2:.1f} frames/s; plain recognition on one thread: "
              f"{pl['one_thread']['frames_per_s']:.1f} frames/s.", "", "## Targets", "",
              f"- 2 workers / 1 worker: **{r['speedup']:.2f}x** (target >= 1.7x): "
              f"{'met' if r['speedup'] >= 1.7 else 'not met'}.",
              "- Ray's overhead per image against plain recognition at equal CPUs (1 worker against 1 thread), "
              f"in wall time: **{100 * r['overhead']:+.1f} %** (target <= 10 %): "
              f"{'met' if r['overhead'] <= 0.10 else 'not met'}; in CPU time per image (actors, Ray and driver "
              f"together against the plain loop's process; steady state, less sensitive to other load): "
              f"**{100 * r['overhead_cpu']:+.1f} %** ({p1['steady_cpu_per_item_ms']:.1f} ms against "
              f"{pl['one_thread']['cpu_per_image_ms']:.1f} ms).",
              "", "## On paper", "",
              f"Assumptions: machines of {a['cores']} cores like this machine's, one worker per core at the "
              f"measured one-worker rate ({a['photo_rate']:.1f} photos/s, {a['frame_rate']:.1f} frames/s), "
              f"times the measured 2-worker efficiency ({a['efficiency']:.2f}, at most 1) kept at 100 machines "
              f"(the driver only lists inputs; a task is {r['images_per_task']} photos or {r['frames_per_task']} "
              "frames); video at "
              f"{a['video_fps']:.0f} fps analysed every {a['every']}th frame (`--every {a['every']}`); photos as "
              f"small as JAFFE's; ${a['price']} per machine-hour (a stated price, not a quote); start-up (tens of "
              "seconds) left out.", "",
              "| machines | work | wall time | machine-hours | cost (USD) |", "|---|---|---|---|---|"]
    lines += [f"| {x['machines']} | {x['work']} | {duration(x['hours'])} | {x['machine_hours']:.1f} | "
              f"{x['cost_usd']:.2f} |" for x in r["paper"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000, help="JAFFE copies (default 1000)")
    ap.add_argument("--video-frames", type=int, default=600)
    ap.add_argument("--frames-per-task", type=int, default=25)
    ap.add_argument("--images-per-task", type=int, default=32)
    ap.add_argument("--detector", default="haar")
    ap.add_argument("--jaffe", default=None, help="JAFFE folder (default: shared/data/jaffe above this checkout)")
    ap.add_argument("--cores", type=int, default=16, help="on paper: cores per machine")
    ap.add_argument("--price", type=float, default=0.68, help="on paper: USD per machine-hour")
    ap.add_argument("--video-fps", type=float, default=30.0, help="on paper: frame rate of the video")
    ap.add_argument("--every", type=int, default=5, help="on paper: analyse every N-th frame")
    ap.add_argument("--out", default="results/ray_scale")
    args = ap.parse_args(argv)
    import ray

    load = os.getloadavg()
    jaffe = Path(args.jaffe) if args.jaffe else next(
        d / "shared" / "data" / "jaffe" for d in Path(__file__).resolve().parents if (d / "shared").is_dir())
    tmp = Path(tempfile.mkdtemp(prefix="ray_scale_in_"))
    os.environ.update({k: v for k, v in ray_env().items() if k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED")})
    try:
        photos = copies(jaffe, args.photos, tmp)
        video = str(make_video(tmp / "long.mp4", frames=args.video_frames))
        r = {"command": results_page.command_line("ray_scale.py", argv), "ray": ray.__version__,
             "detector": args.detector, "photos": len(photos), "video_frames": args.video_frames,
             "frames_per_task": args.frames_per_task, "images_per_task": args.images_per_task,
             "plain": {"one_thread": plain(photos, video, args.detector, 1),
                       "default": plain(photos, video, args.detector, None)}}
        r["local"] = apart(local_runs, photos, video, args)
        r["two_nodes"] = apart(two_node_run, photos, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    one, two = r["local"]["photos_1"]["items_per_s"], r["local"]["photos_2"]["items_per_s"]
    r["speedup"] = two / one
    r["overhead"] = r["plain"]["one_thread"]["images_per_s"] / one - 1
    r["overhead_cpu"] = r["local"]["photos_1"]["steady_cpu_per_item_ms"] / r["plain"]["one_thread"]["cpu_per_image_ms"] - 1
    frame_rate = r["local"]["video_2"]["items_per_s"] * args.frames_per_task / 2
    r["assume"] = {"cores": args.cores, "photo_rate": one, "frame_rate": frame_rate,
                   "efficiency": min(1.0, r["speedup"] / 2), "video_fps": args.video_fps, "every": args.every,
                   "price": args.price}
    r["paper"] = on_paper(one, frame_rate, r["assume"]["efficiency"], args)
    results_page.write(args.out, r, page(r, r["command"], load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
