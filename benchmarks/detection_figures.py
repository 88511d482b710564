"""The figures that docs/guides/pipeline.md (Detection) and docs/guides/export.md (Speed) and the detector's and Recognizer's
docstrings quote about the face search and the threads, measured on FER2013 and JAFFE.

    python benchmarks/detection_figures.py --fer ../shared/data/fer2013 --jaffe ../shared/data/jaffe

1. Search by octaves: ``HaarDetector(min_size=48)`` searches the copy 32 px needs and skips the
   sizes under 48. On FER2013's ``PublicTest`` faces (upscaled 4x and padded, as
   ``benchmarks/framing.py`` stages them) and the JAFFE photos: of the default's (32 px) boxes of
   48 px and more, how many 48 px gives unchanged, and the search's time at each.
2. Quick eye look: ``HaarDetector()`` against ``HaarDetector(quick_eyes=False)``: faces whose crop
   (the packaged model's) is the same, crops levelled by one and not the other, ``aligned`` gained;
   on JAFFE, the faces whose quick pair is level (kept) and the cost of one quick look against one
   full search.
3. The mirrored pass of flip averaging: ``Recognizer(backend="onnxruntime")`` (no ``threads``: ONNX
   Runtime on one thread, the mirrored pass beside it on a spare core) against ``threads=1`` (both
   passes in one call), ms per face on JAFFE's crops alone and in batches of 64, and the largest
   logit difference.
4. ONNX Runtime on two threads: time per JAFFE photo with ``Recognizer(threads=2)`` (and OpenCV on 2)
   against the default, each in its own worker process (``peer_worker.py``), rounds alternating.

Writes ``results/detection_figures.md`` and ``.json``. ``--fer-n`` takes the first N PublicTest
faces instead of all 3,589 (the report says how many).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from framing import staged
from peer_speed import Worker, jaffe
from results_page import command_line, header, table, write
from litefer import Recognizer
from litefer.data.ferplus import load_arrays
from litefer.inference.align import crop_face
from litefer.inference.detect import FULL_EYES, QUICK_EYES, QUICK_LEVEL_DEGREES, HaarDetector, _tilt


def searched(det: HaarDetector, images) -> tuple[list[list], float]:
    """Each image's detections and the total seconds of the search."""
    out, spent = [], 0.0
    for img in images:
        t0 = time.perf_counter()
        out.append(det.detect(img))
        spent += time.perf_counter() - t0
    return out, spent


def octaves(images, default: list[list], default_s: float) -> dict:
    """Section 1 on one set of images, given the default detector's detections and time."""
    at48, s48 = searched(HaarDetector(min_size=48), images)
    big = [(i, d) for i, found in enumerate(default) for d in found if min(d.box[2:]) >= 48]
    same = sum(any(d.box == e.box for e in at48[i]) for i, d in big)
    moved = [{"image": i, "box": [round(v, 1) for v in d.box]} for i, d in big if not any(d.box == e.box for e in at48[i])]
    return {"images": len(images), "default_boxes_48_up": len(big), "unchanged_at_48": same, "changed": moved,
            "boxes_at_48": sum(map(len, at48)), "search_s_32": round(default_s, 2), "search_s_48": round(s48, 2),
            "time_saved": round(1 - s48 / default_s, 3)}


def quick_eyes(images, spec, quick: list[list]) -> dict:
    """Section 2 on one set: crops with the quick look against the full search, face by face."""
    full, _ = searched(HaarDetector(quick_eyes=False), images)
    pairs = [(img, d, e) for img, q, f in zip(images, quick, full) for d in q for e in f if d.box == e.box]
    same = levelled_differently = aligned_gained = 0
    for img, d, e in pairs:
        (cq, qq), (cf, qf) = crop_face(img, d, spec), crop_face(img, e, spec)
        same += bool(np.array_equal(cq, cf))
        levelled_differently += bool((qq["angle"] != 0) != (qf["angle"] != 0))
        aligned_gained += bool(qq["aligned"] and not qf["aligned"])
    return {"faces_quick": sum(map(len, quick)), "faces_full": sum(map(len, full)), "same_box": len(pairs),
            "same_crop": same, "levelled_by_one_only": levelled_differently, "aligned_only_with_quick": aligned_gained}


def eye_looks(images, found: list[list]) -> dict:
    """On JAFFE: faces whose quick pair is level enough to keep, and the time of each kind of look."""
    det = HaarDetector()
    import cv2

    level = kept = n = 0
    t_quick = t_full = 0.0
    for img, faces in zip(images, found):
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        for d in faces:
            box = tuple(int(v) for v in d.box)
            t0 = time.perf_counter()
            eyes = det._search_eyes(gray, box, QUICK_EYES)
            t1 = time.perf_counter()
            det._search_eyes(gray, box, FULL_EYES)
            t_quick, t_full, n = t_quick + t1 - t0, t_full + time.perf_counter() - t1, n + 1
            is_level = eyes is not None and abs(_tilt(eyes)) < QUICK_LEVEL_DEGREES
            level += is_level
            kept += is_level and d.score >= det.min_score_without_eyes      # what HaarDetector._eyes keeps
    return {"faces": n, "quick_pair_level": level, "quick_pair_kept": kept, "quick_ms": round(1000 * t_quick / n, 3),
            "full_ms": round(1000 * t_full / n, 3), "quick_over_full": round(t_quick / t_full, 3)}


def mirrored_pass(crops: np.ndarray, rounds: int) -> dict:
    """Section 3: ms per face with the mirrored pass beside the plain one and in the same call."""
    beside, together = Recognizer(backend="onnxruntime"), Recognizer(backend="onnxruntime", threads=1)
    assert beside.tta and beside._mirror_pool is not None, "needs flip averaging and 2 or more CPUs"
    diff = float(np.abs(beside._logits(crops) - together.backend.logits(crops, True)).max())
    out = {"faces": len(crops), "max_logit_difference": diff}
    for name, batch in (("alone", 1), ("batch 64", 64)):
        times = {"beside": [], "one call": []}
        for r in range(rounds):
            for key, rec in ((("beside", beside), ("one call", together))[::(-1) ** r]):
                t0 = time.perf_counter()
                for i in range(0, len(crops), batch):
                    rec._logits(crops[i:i + batch])
                times[key].append(1000 * (time.perf_counter() - t0) / len(crops))
        out[name] = {k: round(min(v), 3) for k, v in times.items()} | {"rounds_ms": times}
    return out


def two_threads(photos_npy: Path, rounds: int) -> dict:
    """Section 4: time per photo with ONNX Runtime and OpenCV on 2 threads against the defaults."""
    workers = {"threads=2": Worker(Path(sys.executable), "litefer", photos_npy, 2),
               "default": Worker(Path(sys.executable), "litefer", photos_npy, 0)}
    runs = {k: [] for k in workers}
    try:
        for r in range(rounds):
            for k in list(workers)[::(-1) ** r]:
                runs[k].append(workers[k].round()["ms_per_photo"])
    finally:
        for w in workers.values():
            w.close()
    best = {k: min(v) for k, v in runs.items()}
    return {"ms_per_photo": best, "rounds_ms": runs, "ratio": round(best["threads=2"] / best["default"], 3),
            "default_setup": workers["default"].versions, "two_thread_setup": workers["threads=2"].versions}


def measure(fer: Path, jaffe_dir: Path, fer_n: int | None, rounds: int) -> dict:
    arrays = load_arrays(fer)
    faces48 = arrays["images"][arrays["usage"] == "PublicTest"][:fer_n]
    fer_images = [staged(f) for f in faces48]
    names, _, photos = jaffe(jaffe_dir)
    spec = Recognizer(backend="onnxruntime").crop_spec
    out = {}
    for name, images in (("FER2013 PublicTest", fer_images), ("JAFFE", list(photos))):
        default, s32 = searched(HaarDetector(), images)
        out[name] = {"octaves": octaves(images, default, s32), "quick_eyes": quick_eyes(images, spec, default)}
        if name == "JAFFE":
            out[name]["eye_looks"] = eye_looks(images, default)
            crops = np.stack([crop_face(img, d, spec)[0] for img, found in zip(images, default) for d in found])
        print(f"{name}: detection figures done", flush=True)
    out["mirrored_pass"] = mirrored_pass(crops, rounds)
    print("mirrored pass done", flush=True)
    with tempfile.TemporaryDirectory(prefix="detection-figures-") as tmp:
        np.save(Path(tmp) / "photos.npy", photos)
        out["two_threads"] = two_threads(Path(tmp) / "photos.npy", rounds)
    out["jaffe_photos"] = len(names)
    return out


SETS = ("FER2013 PublicTest", "JAFFE")


def report(r: dict, command: str) -> str:
    fer, jf = r["FER2013 PublicTest"], r["JAFFE"]
    lines = [*header("Detection and thread figures quoted in the docs", command),
             f"FER2013: the first {fer['octaves']['images']} `PublicTest` faces, upscaled 4x and padded (288 px). "
             f"JAFFE: {jf['octaves']['images']} photos (256 px).", "",
             "## 1. Search by octaves: `min_face=48` against the default 32", "",
             *table(["images", "default boxes >= 48 px", "unchanged at 48", "search s at 32", "at 48", "time saved"],
                    [[name, f"{o['default_boxes_48_up']:,}", f"{o['unchanged_at_48']:,}", o["search_s_32"], o["search_s_48"],
                      f"{100 * o['time_saved']:.0f} %"] for name, o in ((n, r[n]["octaves"]) for n in SETS)], "lrrrrr")]
    lines += ["", "Changed boxes (default detector): " + (", ".join(
        f"image {c['image']} {c['box']}" for c in fer["octaves"]["changed"] + jf["octaves"]["changed"]) or "none"), "",
              "## 2. Quick eye look against the full search", "",
              *table(["images", "faces", "same box", "same crop", "levelled by one only",
                      "`aligned` only with the quick look"],
                     [[name, f"{q['faces_quick']:,}", f"{q['same_box']:,}", f"{q['same_crop']:,}", q["levelled_by_one_only"],
                       q["aligned_only_with_quick"]] for name, q in ((n, r[n]["quick_eyes"]) for n in SETS)], "lrrrrr")]
    e, m, t = jf["eye_looks"], r["mirrored_pass"], r["two_threads"]
    lines += ["", f"On JAFFE's {e['faces']} faces the quick look finds a pair within {QUICK_LEVEL_DEGREES:g} degrees "
              f"on {e['quick_pair_level']}, {e['quick_pair_kept']} of them on faces kept with or without eyes, where the "
              f"pair is kept; the full search runs on the other {e['faces'] - e['quick_pair_kept']}. "
              f"One quick look: {e['quick_ms']} ms, one full search: {e['full_ms']} ms "
              f"({e['quick_over_full']:.2f} of it).", "",
              "## 3. The mirrored pass of flip averaging beside the plain one", "",
              f"{m['faces']} JAFFE crops, packaged model, ONNX Runtime, best of {len(m['alone']['rounds_ms']['beside'])} rounds; "
              f"largest logit difference between the two ways: {m['max_logit_difference']:.1e}.", "",
              *table(["faces per call", "beside (default), ms / face", "one call (`threads=1`), ms / face"],
                     [[name, m[name]["beside"], m[name]["one call"]] for name in ("alone", "batch 64")], "lrr")]
    ms = t["ms_per_photo"]
    lines += ["", "## 4. ONNX Runtime on two threads, per JAFFE photo", "",
              f"`Recognizer(backend=\"onnxruntime\", threads=2)` with OpenCV on 2 threads: {ms['threads=2']:.1f} ms per "
              f"photo; the default (ONNX Runtime on 1 thread, mirrored pass beside it): {ms['default']:.1f} ms: "
              f"**{t['ratio']:.2f}x**. Best of {len(t['rounds_ms']['default'])} alternating rounds "
              f"(2 threads: {', '.join(f'{v:.1f}' for v in t['rounds_ms']['threads=2'])}; default: "
              f"{', '.join(f'{v:.1f}' for v in t['rounds_ms']['default'])}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fer", default="../shared/data/fer2013", help="folder of fer2013.csv(.gz) and fer2013new.csv")
    p.add_argument("--jaffe", default="../shared/data/jaffe", help="folder of the 213 JAFFE .tiff photos")
    p.add_argument("--fer-n", type=int, default=None, help="first N PublicTest faces only (default: all 3,589)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="results/detection_figures", help="report path without suffix (.md and .json)")
    args = p.parse_args(argv)
    for d in (args.fer, args.jaffe):
        if not Path(d).is_dir():
            print(f"skipped: {d} is absent (the data sets live outside the repository)")
            return 0
    result = measure(Path(args.fer), Path(args.jaffe), args.fer_n, args.rounds)
    command = command_line("detection_figures.py", argv)
    write(args.out, {"command": command, **result}, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
