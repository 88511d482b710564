"""Haar against YuNet (issue 25, "faces in the wild"): faces found, time per photo and accuracy.

    python benchmarks/detectors.py            # the full run: 3 rounds, about 3 minutes on 2 idle cores
    python benchmarks/detectors.py --quick    # a check: 12 photos of each set, the 12-MP photo, 1 round
                                              # (written to results/detectors_quick.*, which git ignores)

Photo sets: the 213 JAFFE photos (``../shared/data/jaffe``, 7 posed expressions), the 164 Yale photos
(``../shared/data/yale``; its happy, sad, surprised and normal photos are labelled happiness, sadness,
surprise and neutral, the others count for faces only) and the 12-MP photo ``detect_scale.py`` builds
(9 faces of 40 to 570 px). Each photo is decoded once (BGR) and handed over as an array.

Detectors: ``haar`` and YuNet (``--yunet``, the model ``detector="auto"`` picks when it is on disk),
each in a ``Recognizer(backend="onnxruntime")`` on the packaged model, in this one process. Timed per
photo, after one warm-up call per set: ``Recognizer.recognize`` (detection, crop, model) and
``detector.detect`` alone, at 1 thread (OpenCV and ONNX Runtime pinned to one; no mirrored pass beside)
and at the default threads (OpenCV's own, ONNX Runtime's one plus the mirrored pass on a spare core).
Rounds alternate between the detectors, and which goes first turns each round; a figure is the best
round's mean ms per photo, with the median round beside it (every round is in the JSON).

Accuracy: the largest face's label against the photo's, with ``prior="dataset"`` and
``prior="balanced"`` (from the same probabilities: the prior only shifts the logits); no face, or
``contempt``, counts as wrong. Last, the real faces each detector finds on the project's test photos
(``tests/face_fixtures.py`` and the composites of ``tests/test_detect.py``): a face Haar finds and
YuNet does not is listed by photo and box, and so is each box on no face. Writes
``results/detectors.md`` and ``.json``. The load average at the start and the end goes in both.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
sys.path[:0] = [str(HERE), str(ROOT / "tests")]       # detect_scale / peer_speed, and the test photos

from detect_scale import SETTINGS, YUNET, make_photo, matches  # noqa: E402
from peer_speed import accuracy, jaffe  # noqa: E402
from results_page import command_line, header, table, write  # noqa: E402

YALE_LABELS = {"happy": "happiness", "sad": "sadness", "surprised": "surprise", "normal": "neutral"}
PRIORS = ("dataset", "balanced")


@dataclass
class PhotoSet:
    """Decoded photos with, where known, their expression and person (None: no label)."""

    name: str
    names: list[str]
    photos: list[np.ndarray]
    truth: list[str | None]
    people: list[str]
    faces: list | None = field(default=None)       # known face boxes (the 12-MP photo)


def jaffe_set(root: Path, limit: int | None = None) -> PhotoSet:
    names, truth, photos = jaffe(root)
    n = limit or len(names)
    return PhotoSet("JAFFE", names[:n], list(photos[:n]), truth[:n], [s.split(".")[0] for s in names[:n]])


def yale_set(root: Path, limit: int | None = None) -> PhotoSet:
    """The Yale photos (``subjectNN.condition``, no extension), labelled ones first when ``limit`` cuts."""
    from litefer.inference.inputs import load_image

    paths = sorted((p for p in root.iterdir() if p.name.startswith("subject")),
                   key=lambda p: (p.suffix[1:] not in YALE_LABELS, p.name) if limit else p.name)[:limit]
    return PhotoSet("Yale", [p.name for p in paths], [load_image(p) for p in paths],
                    [YALE_LABELS.get(p.suffix[1:]) for p in paths], [p.stem for p in paths])


def composite_set() -> PhotoSet:
    photo, faces = make_photo()
    return PhotoSet("12-MP photo", ["detect_scale.make_photo()"], [photo], [None], ["-"], faces)


def photo_sets(limit: int | None, jaffe_root: Path, yale_root: Path, composite: bool = True) -> list[PhotoSet]:
    """The sets whose data is on this machine (a missing folder is left out, and said so), ``limit``
    photos of each (None: all)."""
    sets = []
    for root, make in ((jaffe_root, jaffe_set), (yale_root, yale_set)):
        if root.is_dir():
            sets.append(make(root, limit))
        else:
            print(f"left out: {root} is absent", flush=True)
    return [*sets, composite_set()] if composite else sets


def recognizers(yunet: Path, threads: int | None) -> dict:
    """One ``Recognizer`` per detector, named as in the report; ``auto`` is YuNet when its model is on
    disk, so the YuNet row is given that file explicitly."""
    import litefer

    recs = {"haar": litefer.Recognizer(backend="onnxruntime", detector="haar", threads=threads)}
    if yunet.is_file():
        recs["yunet"] = litefer.Recognizer(backend="onnxruntime", detector=str(yunet), threads=threads)
    return recs


# ----------------------------------------------------------------------------- accuracy

def largest_scores(rec, photos) -> tuple[list[int], list[dict | None]]:
    """Faces per photo and the largest face's probabilities (``prior="dataset"``), None without a face."""
    found, scores = [], []
    for bgr in photos:
        faces = rec.recognize(bgr, prior="dataset")
        found.append(len(faces))
        scores.append(dict(faces[0].scores) if faces else None)    # largest first
    return found, scores


def labels_under(scores: list[dict | None], adjust: np.ndarray | None, class_names: list[str]) -> list[str | None]:
    """Labels under a prior from the ``dataset`` probabilities: ``adjust`` (``litefer.prior.log_weights``)
    added to their logs, which differ from the logits by a constant per face."""
    out = []
    for s in scores:
        if s is None:
            out.append(None)
            continue
        logp = np.log(np.maximum([s[c] for c in class_names], 1e-30))
        out.append(class_names[int(np.argmax(logp if adjust is None else logp + adjust))])
    return out


def labelled_accuracy(labels: list[str | None], truth: list[str | None]) -> tuple[float | None, int]:
    """Accuracy over the photos that have a label, and their count."""
    pairs = [(a, b) for a, b in zip(labels, truth) if b is not None]
    return (accuracy(*zip(*pairs)) if pairs else None), len(pairs)


def accuracy_rows(sets: list[PhotoSet], recs: dict) -> list[dict]:
    from litefer.prior import log_weights

    rows = []
    for s in sets:
        if not any(t is not None for t in s.truth):
            continue
        for det, rec in recs.items():
            _, scores = largest_scores(rec, s.photos)
            row = {"set": s.name, "detector": det}
            for prior in PRIORS:
                labels = labels_under(scores, log_weights(prior, rec.card), rec.class_names)
                row[prior], row["labelled"] = labelled_accuracy(labels, s.truth)
                row[f"labels_{prior}"] = labels
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- time and faces

def per_photo_ms(fn, photos) -> tuple[float, list[int]]:
    """Mean ms per photo of ``fn`` over the photos, and its faces per photo."""
    spent, faces = 0.0, []
    for bgr in photos:
        t = time.perf_counter()
        out = fn(bgr)
        spent += time.perf_counter() - t
        faces.append(len(out))
    return 1000 * spent / len(photos), faces


def timing_rows(sets: list[PhotoSet], yunet: Path, rounds: int) -> tuple[list[dict], dict]:
    """ms per photo of ``recognize`` and of ``detect``, per set, detector and thread setting; rounds
    alternate between the detectors. Also the boxes found (from the last round's detect)."""
    import cv2

    default_cv = cv2.getNumThreads()
    rows, boxes = [], {}
    try:
        for setting, threads in SETTINGS.items():
            cv2.setNumThreads(threads or default_cv)
            recs = recognizers(yunet, threads or None)
            for s in sets:
                runs = {(d, what): [] for d in recs for what in ("recognize", "detect")}
                found = {}
                for rec in recs.values():                           # warm-up
                    rec.recognize(s.photos[0])
                for r in range(rounds):
                    names = list(recs)
                    for det in names[r % len(names):] + names[:r % len(names)]:
                        rec = recs[det]
                        ms, found[det] = per_photo_ms(rec.recognize, s.photos)
                        runs[(det, "recognize")].append(ms)
                        ms, _ = per_photo_ms(rec.detector.detect, s.photos)
                        runs[(det, "detect")].append(ms)
                        print(f"{setting}, {s.name}, round {r + 1}: {det} {runs[(det, 'recognize')][-1]:.1f} / "
                              f"{ms:.1f} ms per photo (recognize / detect)", flush=True)
                for (det, what), ms in runs.items():
                    rows.append({"set": s.name, "photos": len(s.photos), "threads": setting, "detector": det,
                                 "timed": what, "ms_best": min(ms), "ms_median": statistics.median(ms),
                                 "rounds_ms": [round(v, 2) for v in ms],
                                 "photos_with_face": int(sum(n > 0 for n in found[det])),
                                 "faces": int(sum(found[det])), "faces_per_photo": found[det]})
                if s.faces is not None and setting == "1 thread":
                    for det, rec in recs.items():
                        got = [d.box for d in rec.detector.detect(s.photos[0])]
                        hit, other = matches(got, s.faces)
                        boxes[(s.name, det)] = {"found": hit, "of": len(s.faces), "other_boxes": other}
    finally:
        cv2.setNumThreads(default_cv)
    return rows, boxes


# ----------------------------------------------------------------------------- the test photos

def test_photos() -> dict[str, tuple[np.ndarray, list[tuple[float, float, float, float]]]]:
    """The project's test photos, each with the boxes of its real faces: the packaged astronaut photo
    (its face where Haar puts it, ``face_fixtures.FACE_CENTRE``) and what the tests composite from it."""
    import io

    import cv2
    from PIL import Image

    from face_fixtures import FACE_CENTRE, astronaut_bgr, face_patch, two_face_composite
    from test_detect import mosaic, twelve_mp_photo

    bgr = astronaut_bgr()
    face = (FACE_CENTRE[0] - 47.5, FACE_CENTRE[1] - 47.5, 95.0, 95.0)
    jpeg = io.BytesIO()
    Image.fromarray(bgr[:, :, ::-1]).save(jpeg, "JPEG", quality=92)      # photo_dir's astronaut.jpg
    comp = two_face_composite()
    # the composite's second face: the photo at half size, mirrored, its corner at (600, 100)
    comp_faces = [face, (600 + 256 - (face[0] + face[2]) / 2, 100 + face[1] / 2, face[2] / 2, face[3] / 2)]
    big, small = twelve_mp_photo(60)
    cells, (px, py, pw, ph) = 3000 // 150, face_patch(48)[1]

    def scaled(boxes, k):
        return [tuple(v * k for v in b) for b in boxes]

    return {
        "astronaut.jpg (packaged)": (bgr, [face]),
        "astronaut.jpg re-encoded at quality 92 (photo_dir)": (np.asarray(Image.open(jpeg))[:, :, ::-1].copy(), [face]),
        "grey astronaut (photo_dir grey.png)": (
            cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR), [face]),
        "two-face composite (95 + 56 px)": (comp, comp_faces),
        "two-face composite x0.75 (~39 px face)": (
            cv2.resize(comp, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA), scaled(comp_faces, 0.75)),
        "astronaut turned 8 degrees about its face": (
            cv2.warpAffine(bgr, cv2.getRotationMatrix2D(FACE_CENTRE, 8, 1.0), (512, 512),
                           borderMode=cv2.BORDER_REFLECT), [face]),
        "astronaut x3 (1536 px)": (cv2.resize(bgr, (1536, 1536), interpolation=cv2.INTER_CUBIC), scaled([face], 3)),
        "12 MP with a 60-px face (test_detect)": (big, [*scaled([face], 3024 / 512), small]),
        "mosaic of 400 faces of 48 px (test_detect)": (
            mosaic(3000, 150, 48)[0], [(j * 150 + 4 + px, i * 150 + 4 + py, pw, ph)
                                       for i in range(cells) for j in range(cells)]),
    }


def same_face(a, b) -> bool:
    """Two boxes of one face: centres within half the smaller side, sides within a factor of 1.6
    (YuNet's box is about 0.85 of Haar's wide and sits lower)."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return (np.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2) < min(aw, bw) / 2
            and 1 / 1.6 <= aw / bw <= 1.6)


def test_photo_rows(yunet: Path, photos: dict | None = None) -> list[dict]:
    """Per test photo: the real faces Haar and YuNet find (default detectors, ``min_size`` 32), the
    real faces Haar finds and YuNet misses (the issue's "no face lost"), and each one's boxes on no
    real face."""
    from litefer.inference.detect import HaarDetector, YuNetDetector

    dets = {"haar": HaarDetector(), "yunet": YuNetDetector(yunet)}
    rows = []
    for name, (bgr, faces) in (photos or test_photos()).items():
        row = {"photo": name, "size": f"{bgr.shape[1]} x {bgr.shape[0]}", "faces": len(faces)}
        hits = {}
        for det_name, det in dets.items():
            boxes = [tuple(round(v, 1) for v in d.box) for d in det.detect(bgr)]
            hits[det_name] = [any(same_face(f, b) for b in boxes) for f in faces]
            row[det_name] = sum(hits[det_name])
            row[f"{det_name}_other_boxes"] = [b for b in boxes if not any(same_face(f, b) for f in faces)]
        row["lost_by_yunet"] = [tuple(round(v) for v in f) for f, h, y in zip(faces, hits["haar"], hits["yunet"])
                                if h and not y]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the report

def measure(quick: bool = False, rounds: int = 3, jaffe_root: Path = SHARED / "data" / "jaffe",
            yale_root: Path = SHARED / "data" / "yale", yunet: Path = YUNET, limit: int | None = None,
            composite: bool = True, photos: dict | None = None) -> dict:
    """Every figure of the report (see the module's docstring); ``quick``: 12 photos of each set and one
    round; ``limit``, ``composite`` and ``photos`` (the test photos) cut it further, for the tests."""
    load_start = os.getloadavg()
    rounds = 1 if quick else rounds
    sets = photo_sets(limit or (12 if quick else None), Path(jaffe_root), Path(yale_root), composite)
    yunet = Path(yunet)
    times, boxes = timing_rows(sets, yunet, rounds)
    acc = accuracy_rows(sets, recognizers(yunet, None))
    tests = test_photo_rows(yunet, photos) if yunet.is_file() else []
    return {"quick": quick, "rounds": rounds, "yunet": str(yunet),
            "sets": {s.name: {"photos": len(s.photos), "labelled": sum(t is not None for t in s.truth),
                              "names": s.names} for s in sets},
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
            "timing": times, "composite": [{"set": k[0], "detector": k[1], **v} for k, v in boxes.items()],
            "accuracy": acc, "test_photos": tests}


def photos_lost(result: dict, set_name: str) -> list[str] | None:
    """The photos of a set in which Haar finds a face and YuNet none (1-thread run), or None without YuNet."""
    found = {r["detector"]: r["faces_per_photo"] for r in result["timing"]
             if r["set"] == set_name and r["timed"] == "recognize" and r["threads"] == "1 thread"}
    if "yunet" not in found:
        return None
    names = result["sets"][set_name]["names"]
    return [n for n, h, y in zip(names, found["haar"], found["yunet"]) if h and not y]


def _photo_row(r: dict) -> list:
    other = {d: ", ".join(str(tuple(round(v) for v in b)) for b in r[f"{d}_other_boxes"]) or "none" for d in ("haar", "yunet")}
    return [r["photo"], r["size"], r["faces"], r["haar"], r["yunet"], ", ".join(str(b) for b in r["lost_by_yunet"]) or "none",
            other["haar"], other["yunet"]]


def markdown(result: dict) -> list[str]:
    t = result["timing"]
    timed = []
    for r in (r for r in t if r["timed"] == "recognize"):
        d = next(x for x in t if x["timed"] == "detect" and all(x[k] == r[k] for k in ("set", "threads", "detector")))
        timed.append([r["set"], r["detector"], f"{r['photos_with_face']} / {r['photos']}", r["faces"], r["threads"],
                      f"{r['ms_best']:.1f} / {r['ms_median']:.1f}", f"{d['ms_best']:.1f} / {d['ms_median']:.1f}"])
    lines = ["## Faces found and ms per photo", "",
             *table(["set", "detector", "photos with a face", "faces", "threads", "recognize ms (best / median)",
                     "detect ms (best / median)"], timed, "llrrlrr")]
    for s in result["sets"]:
        lost = photos_lost(result, s)
        if lost is not None:
            lines += ["", f"{s}: photos where Haar finds a face and YuNet none: {', '.join(lost) or 'none'}."]
    for c in result["composite"]:
        lines.append("")
        lines.append(f"{c['set']}, {c['detector']}: {c['found']} of its {c['of']} faces found, "
                     f"{c['other_boxes']} other boxes.")
    lines += ["", "## Accuracy (largest face)", "",
              *table(["set", "detector", "labelled photos", "prior=dataset", "prior=balanced"],
                     [[a["set"], a["detector"], a["labelled"], f"{100 * a['dataset']:.1f} %", f"{100 * a['balanced']:.1f} %"]
                      for a in result["accuracy"]], "llrrr"),
              "", "## The project's test photos: Haar's faces and YuNet's", "",
              *table(["photo", "size", "faces", "Haar finds", "YuNet finds", "Haar finds, YuNet misses (x, y, w, h)",
                      "Haar boxes on no face", "YuNet boxes on no face"],
                     [_photo_row(r) for r in result["test_photos"]], "llrrr")]
    lost = [r for r in result["test_photos"] if r["lost_by_yunet"]]
    lines += ["", "A face is found when a box's centre lies within half the smaller side of the face's box and "
              "the sides are within a factor of 1.6. " +
              ("No face that Haar finds is lost by YuNet on these photos." if not lost else
               f"Faces Haar finds and YuNet does not: {sum(len(r['lost_by_yunet']) for r in lost)}, on "
               + "; ".join(f"{r['photo']} ({len(r['lost_by_yunet'])})" for r in lost) + ".")]
    return lines


def report(result: dict, command: str) -> str:
    sets = ", ".join(f"{k} ({v['photos']} photos, {v['labelled']} labelled)" for k, v in result["sets"].items())
    head = [*header("Haar against YuNet: faces found, ms per photo, accuracy", command,
                    load_start=result["loadavg_start"]),
            ("**Quick check: few photos and one round; not figures to quote.**" if result["quick"] else
             f"{result['rounds']} rounds alternating between the detectors."), "",
            f"Sets: {sets}. Detectors: `haar` and YuNet (`{Path(result['yunet']).name}`, what "
            "`detector=\"auto\"` picks when the model is on disk), each in `Recognizer(backend=\"onnxruntime\")` "
            "with the packaged model. ms per photo: the mean over the set's photos of one round, best round / "
            "median round; recognize is the whole `Recognizer.recognize` on the decoded array, detect the "
            "detector's `detect` alone. 1 thread: OpenCV and ONNX Runtime on one thread, no mirrored pass "
            "beside; default threads: OpenCV's own, ONNX Runtime's one and the mirrored pass on a spare core.", ""]
    return "\n".join(head + markdown(result)) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 photos of each set and 1 round: a check, not figures")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jaffe", default=str(SHARED / "data" / "jaffe"))
    p.add_argument("--yale", default=str(SHARED / "data" / "yale"))
    p.add_argument("--yunet", default=str(YUNET), help="the YuNet model (its rows are left out when absent)")
    p.add_argument("--out", default=None, help="report path without suffix (default: results/detectors, "
                                               "results/detectors_quick with --quick)")
    args = p.parse_args(argv)
    out = args.out or str(ROOT / "results" / ("detectors_quick" if args.quick else "detectors"))
    result = measure(args.quick, args.rounds, Path(args.jaffe), Path(args.yale), Path(args.yunet))
    result["command"] = command = command_line("detectors.py", argv)
    write(out, result, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
