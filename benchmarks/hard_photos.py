"""Faces in the wild (issue 25): hard photos made of real faces, Haar against YuNet.

    python benchmarks/hard_photos.py [--every 2] [--out results/hard_photos]

Five figures, each on real faces (JAFFE, ``../shared/data/jaffe``; Yale, ``../shared/data/yale``) or
composites of them:

1. small faces in a large photo: distinct faces of 40 to 120 px pasted on a 4032 x 3024 grey photo;
2. faces turned in the image plane by 0, +-15, +-30, +-45 degrees (a JAFFE photo turned on a 512-px
   grey canvas): found, landmark (YuNet) or eye (Haar) error over the eye distance, and how level the
   crop's eye line comes out; YuNet as before issue 25 (no turned copies, no re-placed landmarks) and now;
3. many faces in one photo: 32 distinct JAFFE and Yale photos of 48 to 180 px in one 2400 x 1600 photo:
   found, each exactly once, nothing else;
4. the 164 Yale photos by condition (side lighting, glasses): one face found, quality flags raised,
   and whether the crop is usable: the packaged model's label on the conditions with a known expression
   (the lighting and glasses photos are neutral faces);
5. the quality flags ``turned``, ``occluded`` and ``partial``: how often they are raised on the real
   frontal faces of JAFFE and Yale (false flags), and on composited hard cases (half the face covered
   by a patch of real background, the face squeezed sideways or warped in perspective to imitate yaw,
   the face cut by the image's edge).

The truth of a face is YuNet's detection on its upright, uncovered photo (face box and landmarks),
moved with the photo: a box is the face's when its centre lies within half the face's width of the
truth's centre and its width is 0.5 to 2 times the truth's. ``--every k`` (default 6) takes every k-th JAFFE photo
for items 2 and 5 (the false-flag rates use all of them). The pieces (``turned_photo``, ``paste_faces``,
``covered`` ...) are imported by ``tests/test_hard_photos.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from results_page import command_line, header, table, write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# ../shared beside the checkout, or beside a folder above it (a worktree in a folder of worktrees)
SHARED = next((d / "shared" for d in ROOT.parents if (d / "shared").is_dir()), ROOT.parent / "shared")
JAFFE, YALE = SHARED / "data" / "jaffe", SHARED / "data" / "yale"
YUNET = SHARED / "models" / "face_detection_yunet.onnx"
ANGLES = (0, 15, -15, 30, -30, 45, -45)
# Yale's conditions with a known expression (lighting and glasses photos are of neutral faces)
YALE_LABELS = {"normal": "neutral", "centerlight": "neutral", "leftlight": "neutral", "rightlight": "neutral",
               "glasses": "neutral", "noglasses": "neutral", "happy": "happiness", "surprised": "surprise",
               "sad": "sadness"}


def read_bgr(path) -> np.ndarray:
    """A grey JAFFE TIFF or Yale GIF (no extension) as BGR uint8."""
    from PIL import Image

    with Image.open(path) as im:
        return cv2.cvtColor(np.asarray(im.convert("L")), cv2.COLOR_GRAY2BGR)


def jaffe_paths(every: int = 1) -> list[Path]:
    return sorted(JAFFE.glob("*.tiff"))[::every]


def yale_paths() -> list[Path]:
    return sorted(p for p in YALE.glob("subject*") if p.is_file())


def person(path: Path) -> str:
    return path.name.split(".")[0]


def truth_of(yunet, bgr):
    """The face of an upright photo of one face: YuNet's largest detection (None when it finds none)."""
    found = yunet.detect(bgr)
    return found[0] if found else None


def centre(box) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2.0, y + h / 2.0])


def is_face(box, truth_box) -> bool:
    return bool(np.linalg.norm(centre(box) - centre(truth_box)) < truth_box[2] / 2 and
                0.5 <= box[2] / truth_box[2] <= 2.0)


def count_matches(found, truths) -> tuple[list[int], int]:
    """Boxes matching each truth, and boxes matching none."""
    per = [sum(is_face(d.box, t.box) for d in found) for t in truths]
    return per, sum(not any(is_face(d.box, t.box) for t in truths) for d in found)


def moved(det, M: np.ndarray):
    """A truth detection moved with its photo by the 2 x 3 similarity ``M`` (box: centre moved, size scaled)."""
    from litefer.inference.detect import Detection

    k = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    c = M[:, :2] @ centre(det.box) + M[:, 2]
    w, h = det.box[2] * k, det.box[3] * k
    lm = (np.asarray(det.landmarks, np.float64) @ M[:, :2].T + M[:, 2]).astype(np.float32)
    return Detection((float(c[0] - w / 2), float(c[1] - h / 2), float(w), float(h)), det.score, lm, lm[:2].copy())


# ----------------------------------------------------------------------------- composites

def turned_photo(bgr: np.ndarray, truth, angle: float, side: int = 512):
    """The photo turned by ``angle`` degrees (counter-clockwise) about its centre on a ``side``-px grey
    canvas, and its face's truth moved with it."""
    h, w = bgr.shape[:2]
    M = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    M[:, 2] += ((side - w) / 2.0, (side - h) / 2.0)
    photo = cv2.warpAffine(bgr, M, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(128, 128, 128))
    return photo, moved(truth, M)


def paste_faces(faces, sizes, shape, cols: int, seed: int = 0, grey: int = 128):
    """Photos of one face each (``faces``: (bgr, truth) pairs) resized so that each face is ``sizes[i]`` px
    wide and pasted one per cell of a ``cols``-column grid on a grey ``shape`` photo, at a random place
    in the cell; the photo and the faces' truths. A photo larger than its cell is cut to the cell around
    its face."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows = int(np.ceil(len(faces) / cols))
    ch, cw = h // rows, w // cols
    photo = np.full((h, w, 3), grey, np.uint8)
    truths = []
    for i, ((bgr, truth), size) in enumerate(zip(faces, sizes)):
        k = size / truth.box[2]
        small = cv2.resize(bgr, (max(1, round(bgr.shape[1] * k)), max(1, round(bgr.shape[0] * k))),
                           interpolation=cv2.INTER_AREA)
        fc = centre(truth.box) * [small.shape[1] / bgr.shape[1], small.shape[0] / bgr.shape[0]]
        # cut to the cell, keeping the face's centre in the middle where it must be cut
        x0 = int(np.clip(round(fc[0] - cw / 2), 0, max(0, small.shape[1] - cw)))
        y0 = int(np.clip(round(fc[1] - ch / 2), 0, max(0, small.shape[0] - ch)))
        part = small[y0:y0 + ch, x0:x0 + cw]
        r, c = divmod(i, cols)
        ox = c * cw + int(rng.integers(0, cw - part.shape[1] + 1))
        oy = r * ch + int(rng.integers(0, ch - part.shape[0] + 1))
        photo[oy:oy + part.shape[0], ox:ox + part.shape[1]] = part
        sx, sy = small.shape[1] / bgr.shape[1], small.shape[0] / bgr.shape[0]
        truths.append(moved(truth, np.array([[sx, 0, ox - x0], [0, sy, oy - y0]])))
    return photo, truths


def background_patch() -> np.ndarray:
    """A patch of real background without a face: the flag beside the astronaut (litefer's sample photo)."""
    from litefer.inference.samples import sample_bgr

    return sample_bgr()[0:200, 0:140]


def covered(bgr: np.ndarray, truth, part: str = "left") -> np.ndarray:
    """The photo with one half of its face (``left``, ``right`` or ``lower``, the image's sides) covered
    by the background patch, from the face's middle to a fifth of a face beyond its edge."""
    out = bgr.copy()
    x, y, w, h = truth.box
    cx, cy = centre(truth.box)
    if part == "left":
        x0, y0, x1, y1 = x - 0.2 * w, y - 0.2 * h, cx, y + 1.2 * h
    elif part == "right":
        x0, y0, x1, y1 = cx, y - 0.2 * h, x + 1.2 * w, y + 1.2 * h
    else:
        x0, y0, x1, y1 = x - 0.2 * w, truth.landmarks[2][1], x + 1.2 * w, y + 1.2 * h
    H, W = bgr.shape[:2]
    x0, y0 = int(max(0, x0)), int(max(0, y0))
    x1, y1 = int(min(W, x1)), int(min(H, y1))
    out[y0:y1, x0:x1] = cv2.resize(background_patch(), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


def squeezed(bgr: np.ndarray, truth, factor: float = 0.6, side: int = 320):
    """The photo squeezed sideways to ``factor`` of its width (a face turned away by about arccos(factor))
    on a grey ``side``-px canvas; the truth moved with it."""
    h, w = bgr.shape[:2]
    M = np.array([[factor, 0, (side - w * factor) / 2], [0, 1, (side - h) / 2]])
    photo = cv2.warpAffine(bgr, M, (side, side), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(128, 128, 128))
    return photo


def perspective(bgr: np.ndarray, truth, near: float = 1.0, far: float = 0.55, side: int = 320) -> np.ndarray:
    """The photo warped as a face turned about its vertical axis would look: the face's left half (image
    side) kept, its right half squeezed, its far edge shortened; on a grey ``side``-px canvas."""
    h, w = bgr.shape[:2]
    x, y, fw, fh = truth.box
    cx = x + fw / 2
    o = (side - w) / 2
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    right = cx + (w - cx) * far
    shrink = (1 - far) * h / 10
    dst = np.float32([[0, 0], [right, shrink], [right, h - shrink], [0, h]]) + o
    H = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(bgr, H, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(128, 128, 128))


def cut(bgr: np.ndarray, truth, share: float = 0.4, edge: str = "left") -> np.ndarray:
    """The photo cut so that ``share`` of its face's width (``left``/``right``) or height (``top``/``bottom``)
    lies beyond the image's edge."""
    x, y, w, h = truth.box
    if edge == "left":
        return bgr[:, int(round(x + share * w)):].copy()
    if edge == "right":
        return bgr[:, :int(round(x + (1 - share) * w))].copy()
    if edge == "top":
        return bgr[int(round(y + share * h)):].copy()
    return bgr[:int(round(y + (1 - share) * h))].copy()


# ----------------------------------------------------------------------------- measurements

def tilt(points) -> float:
    (rx, ry), (lx, ly) = np.asarray(points, np.float64)[:2]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def crop_tilt(det, truth) -> float:
    """Degrees of the truth's eye line in the crop the detection gives (0: levelled)."""
    from litefer.inference.align import frame_transform

    M = frame_transform(det)[0]
    return tilt(np.asarray(truth.landmarks[:2], np.float64) @ M[:, :2].T + M[:, 2])


def timed_detect(det, photo):
    t0 = time.perf_counter()
    found = det.detect(photo)
    return found, 1000 * (time.perf_counter() - t0)


def detectors(yunet_path) -> dict:
    """The searches compared: Haar and YuNet as they are, each with turned copies, and YuNet before issue
    25 (no turned copies, no landmarks placed again)."""
    from litefer.inference.detect import HaarDetector, YuNetDetector

    before = YuNetDetector(yunet_path, turned="none")
    before.level_landmarks = False
    return {"Haar": HaarDetector(), "Haar, turned=empty": HaarDetector(turned="empty"),
            "YuNet before": before, "YuNet": YuNetDetector(yunet_path),
            "YuNet, turned=empty": YuNetDetector(yunet_path, turned="empty")}


def jaffe_faces(yunet, every: int = 1) -> list[tuple[str, np.ndarray, object]]:
    out = []
    for p in jaffe_paths(every):
        bgr = read_bgr(p)
        t = truth_of(yunet, bgr)
        if t is not None:
            out.append((p.name, bgr, t))
    return out


def small_faces(dets: dict, faces) -> dict:
    """Item 1: 24 distinct faces of 40-120 px in a 4032 x 3024 photo."""
    picked = distinct(faces, 24)
    sizes = np.linspace(40, 120, len(picked)).round()
    photo, truths = paste_faces([(b, t) for _, b, t in picked], sizes, (3024, 4032), cols=6, seed=1)
    return {name: scored(det, photo, truths) for name, det in dets.items() if "turned" not in name}


def distinct(faces, n: int):
    """``n`` faces, people taken in turn (a person's next photo once every person has one)."""
    by = {}
    for f in faces:
        by.setdefault(f[0].split(".")[0], []).append(f)
    order = [fs[i] for i in range(max(len(v) for v in by.values())) for fs in by.values() if i < len(fs)]
    return order[:n]


def scored(det, photo, truths) -> dict:
    found, ms = timed_detect(det, photo)
    per, others = count_matches(found, truths)
    return {"faces": len(truths), "found": sum(p > 0 for p in per), "once": sum(p == 1 for p in per),
            "other_boxes": others, "ms": round(ms, 1),
            "missed_px": [round(t.box[2]) for t, p in zip(truths, per) if p == 0]}


def turned_faces(dets: dict, faces) -> dict:
    """Item 2: each face turned by each angle; per detector and angle."""
    rows = {}
    for name, det in dets.items():
        for angle in ANGLES:
            n = found = others = 0
            errs, tilts, ms = [], [], []
            for _, bgr, truth in faces:
                photo, t = turned_photo(bgr, truth, angle)
                got, took = timed_detect(det, photo)
                ms.append(took)
                mine = [d for d in got if is_face(d.box, t.box)]
                n += 1
                others += len(got) - len(mine)
                if not mine:
                    continue
                found += 1
                d = mine[0]
                iod = np.linalg.norm(t.landmarks[0] - t.landmarks[1])
                pts = d.landmarks if d.landmarks is not None else d.eyes
                ref = t.landmarks if d.landmarks is not None else t.landmarks[:2]
                if pts is not None:
                    errs.append(float(np.linalg.norm(pts - ref, axis=1).mean() / iod))
                tilts.append(abs(crop_tilt(d, t)))
            rows[f"{name} {angle}"] = {
                "detector": name, "angle": angle, "faces": n, "found": found, "other_boxes": others,
                "point_error_median": round(float(np.median(errs)), 3) if errs else None,
                "point_error_p90": round(float(np.percentile(errs, 90)), 3) if errs else None,
                "with_points": len(errs),
                "crop_tilt_median": round(float(np.median(tilts)), 1) if tilts else None,
                "crop_level_within_10": int(sum(t <= 10 for t in tilts)),
                "ms_median": round(float(np.median(ms)), 1)}
    return rows


def crowd(dets: dict, faces, yale) -> dict:
    """Item 3: 32 distinct photos (16 JAFFE, 16 Yale), faces of 48-180 px, in one 2400 x 1600 photo."""
    picked = [(b, t) for _, b, t in distinct(faces, 16)] + [(b, t) for _, b, t in distinct(yale, 16)]
    rng = np.random.default_rng(3)
    sizes = rng.permutation(np.linspace(48, 180, len(picked)).round())
    photo, truths = paste_faces(picked, sizes, (1600, 2400), cols=8, seed=2)
    return {name: scored(det, photo, truths) for name, det in dets.items() if "turned" not in name}


def yale_conditions(dets: dict, yunet, weights: str = "default") -> dict:
    """Item 4: per Yale condition and detector: photos, one face found, flags raised, right labels."""
    import litefer
    from litefer.inference.align import crop_face, quality_issues

    rec = litefer.Recognizer(weights=weights, backend="onnxruntime", threads=1)
    rows = {}
    for p in yale_paths():
        bgr = read_bgr(p)
        cond = p.name.split(".", 1)[1]
        for name, det in dets.items():
            if "before" in name or "turned" in name:
                continue
            r = rows.setdefault(f"{name} {cond}", {"detector": name, "condition": cond, "photos": 0, "found": 0,
                                                   "one": 0, "flagged": {}, "scored": 0, "right": 0, "labels": {}})
            got = det.detect(bgr)
            r["photos"] += 1
            r["found"] += bool(got)
            r["one"] += len(got) == 1
            if not got:
                continue
            crop, q = crop_face(bgr, got[0], rec.crop_spec)
            for flag in quality_issues(q):
                r["flagged"][flag] = r["flagged"].get(flag, 0) + 1
            if cond in YALE_LABELS:
                probs = rec.classify_crops(crop[None])[0]
                r["scored"] += 1
                label = rec.class_names[int(np.argmax(probs))]
                r["right"] += label == YALE_LABELS[cond]
                r["labels"][label] = r["labels"].get(label, 0) + 1
    return rows


def flag_rates(yunet, haar, faces_all, yale_all, faces) -> dict:
    """Item 5: the share of faces each new flag is raised on, real frontal faces and hard composites."""
    from litefer.inference.align import crop_face

    new = ("turned", "occluded", "partial")

    def rate(name, photos, det):
        n, raised, missed = 0, {f: 0 for f in (*new, "any")}, 0
        for photo in photos:
            got = det.detect(photo)
            if not got:
                missed += 1
                continue
            n += 1
            q = crop_face(photo, got[0])[1]
            for f in new:
                raised[f] += bool(q.get(f))
            raised["any"] += any(q.get(f) for f in new)
        return {"set": name, "photos": len(photos), "found": n, "missed": missed, **raised}

    rows = []
    for dname, det in (("YuNet", yunet), ("Haar", haar)):
        rows.append({"detector": dname, **rate("JAFFE, all (frontal)", [b for _, b, _ in faces_all], det)})
        rows.append({"detector": dname, **rate("Yale, all (frontal)", [b for _, b, _ in yale_all], det)})
        for label, make in [("left half covered", lambda b, t: covered(b, t, "left")),
                            ("right half covered", lambda b, t: covered(b, t, "right")),
                            ("lower half covered", lambda b, t: covered(b, t, "lower")),
                            ("squeezed to 0.6 (yaw ~53°)", lambda b, t: squeezed(b, t, 0.6)),
                            ("squeezed to 0.8 (yaw ~37°)", lambda b, t: squeezed(b, t, 0.8)),
                            ("perspective, far side 0.55", lambda b, t: perspective(b, t)),
                            ("cut 40 % by the left edge", lambda b, t: cut(b, t, 0.4, "left")),
                            ("cut 40 % by the bottom edge", lambda b, t: cut(b, t, 0.4, "bottom")),
                            ("cut 25 % by the right edge", lambda b, t: cut(b, t, 0.25, "right"))]:
            rows.append({"detector": dname, **rate(label, [make(b, t) for _, b, t in faces], det)})
    return {"rows": rows}


def faceless(shape) -> np.ndarray:
    """A real photo without a face: the lower part of litefer's sample photo (the astronaut's suit and
    hands) resized to ``shape``."""
    from litefer.inference.samples import sample_bgr

    return cv2.resize(sample_bgr()[300:512], (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def costs(dets: dict, faces, repeat: int = 5) -> dict:
    """What the turned search costs: ms per photo (best of ``repeat`` calls, 2 on the 12-MP photo) of each
    search on photos it adds nothing to (an upright face, no face) and on a face turned by 45 degrees,
    where the landmarks are placed again."""
    _, bgr, truth = faces[0]
    photos = {"upright face, 512 px": turned_photo(bgr, truth, 0)[0], "face turned 45°, 512 px": turned_photo(bgr, truth, 45)[0],
              "no face, 640 x 480": faceless((480, 640)), "no face, 4032 x 3024": faceless((3024, 4032))}
    rows = []
    for pname, photo in photos.items():
        for name, det in dets.items():
            runs = [timed_detect(det, photo) for _ in range(repeat if photo.size < 4e6 else 2)]
            rows.append({"photo": pname, "detector": name, "ms": round(min(ms for _, ms in runs), 1),
                         "faces": len(runs[-1][0])})
    return {"rows": rows}


def measure(yunet_path=YUNET, every: int = 6) -> dict:
    from litefer.inference.detect import YuNetDetector

    yunet = YuNetDetector(yunet_path)
    dets = detectors(yunet_path)
    faces_all = jaffe_faces(yunet)
    faces = faces_all[::every]
    yale_all = [(p.name, b, truth_of(yunet, b)) for p in yale_paths() for b in [read_bgr(p)]]
    yale_ok = [f for f in yale_all if f[2] is not None and f[0].endswith((".normal", ".noglasses", ".happy"))]
    out = {"jaffe_photos": len(faces_all), "jaffe_sample": len(faces), "yale_photos": len(yale_all)}
    for key, fn in [("small", lambda: small_faces(dets, faces_all)), ("turned", lambda: turned_faces(dets, faces)),
                    ("crowd", lambda: crowd(dets, faces_all, yale_ok)),
                    ("yale", lambda: yale_conditions(dets, yunet)),
                    ("costs", lambda: costs(dets, faces)),
                    ("flags", lambda: flag_rates(dets["YuNet"], dets["Haar"], faces_all, yale_all, faces))]:
        t0 = time.perf_counter()
        out[key] = fn()
        print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- report

def found_table(rows: dict) -> list[str]:
    """The lines of a table of ``scored`` rows, one per detector."""
    return table(["detector", "faces", "found", "each once", "other boxes", "ms", "missed (px)"],
                 [[name, x["faces"], x["found"], x["once"], x["other_boxes"], f"{x['ms']:.0f}",
                   ", ".join(map(str, x["missed_px"])) or "-"] for name, x in rows.items()], "lrrrrrl")


def _turned_row(x: dict) -> list:
    err = "-" if x["point_error_median"] is None else f"{x['point_error_median']:.3f} / {x['point_error_p90']:.3f}"
    tilt = "-" if x["crop_tilt_median"] is None else f"{x['crop_tilt_median']:.1f}"
    return [x["detector"], f"{x['angle']:+d}°", f"{x['found']} / {x['faces']}", x["other_boxes"], err, tilt,
            x["crop_level_within_10"], f"{x['ms_median']:.1f}"]


def _yale_row(x: dict) -> list:
    flags = ", ".join(f"{k} {v}" for k, v in sorted(x["flagged"].items())) or "-"
    right = f"{x['right']} / {x['scored']}" if x["scored"] else "-"
    given = ", ".join(f"{k} {v}" for k, v in sorted(x.get("labels", {}).items()) if k != YALE_LABELS.get(x["condition"]))
    return [x["condition"], x["detector"], x["photos"], x["found"], x["one"], flags, right, given or "-"]


def markdown(r: dict) -> str:
    L = ["## 1. Small faces in a large photo", "",
         "24 distinct JAFFE faces of 40 to 120 px (one per cell of a 6 x 4 grid) on a 4032 x 3024 grey photo; "
         "`detect` with the defaults (`max_side` 1280: the whole photo at 1280 px, then tiles).", "",
         *found_table(r["small"])]
    L += ["", "## 2. Faces turned in the image plane", "",
          f"{r['jaffe_sample']} JAFFE photos, each turned about its centre on a 512-px grey canvas. Point error: "
          "YuNet's five landmarks (Haar: its two eyes) from the truth turned with the photo, mean over the points, "
          "in eye distances (median / 90th percentile). Crop tilt: the truth's eye line in the crop the detection "
          "gives (the crop levels tilts over 10°), median degrees, and the faces whose crop is level within 10°. "
          "\"YuNet before\": no landmarks placed again on upright copies (the detector before issue 25); "
          "\"turned=empty\": with the turned copies searched where the upright search finds nothing, which "
          "neither detector does by default.", "",
          *table(["detector", "angle", "found", "other boxes", "point error", "crop tilt", "level within 10°",
                  "ms (median)"], [_turned_row(x) for x in r["turned"].values()], "lrrrrrrr")]
    L += ["", "What the turned search costs (ms per photo, best of 5 calls, 2 for the 12-MP photo; the faceless "
          "photos are the lower part of litefer's sample photo, resized):", "",
          *table(["photo", *dict.fromkeys(x["detector"] for x in r["costs"]["rows"])],
                 [[pname, *(f"{x['ms']:.1f} ({x['faces']} found)" for x in r["costs"]["rows"] if x["photo"] == pname)]
                  for pname in dict.fromkeys(x["photo"] for x in r["costs"]["rows"])], "l" + "r" * 8)]
    L += ["", "## 3. Many faces in one photo", "",
          "32 distinct photos (16 JAFFE, the 10 women first; 16 Yale `normal`, `noglasses` and `happy` photos, the 15 "
          "people first), faces of 48 to 180 px in random order, one per cell of an 8 x 4 grid of a 2400 x 1600 "
          "photo.", "", *found_table(r["crowd"])]
    L += ["", "## 4. Yale: side lighting and glasses", "",
          f"All {r['yale_photos']} Yale photos (one face each), by condition. Found: a face; one: exactly one box. Flags: "
          "the quality flags of the largest face's crop. Right label: the packaged model (ONNX Runtime) on that "
          "crop, for the conditions whose expression is known (the lighting and glasses photos are neutral faces; "
          "`sleepy` and `wink` are not scored).", "",
          *table(["condition", "detector", "photos", "found", "one", "flags raised", "right label",
                  "labels given where wrong"],
                 [_yale_row(x) for x in sorted(r["yale"].values(), key=lambda x: (x["condition"], x["detector"]))],
                 "llrrrlrl")]
    tot = {}
    for x in r["yale"].values():
        t = tot.setdefault(x["detector"], [0, 0, 0, 0])
        t[0] += x["found"]
        t[1] += x["photos"]
        t[2] += x["right"]
        t[3] += x["scored"]
    L += ["", "Totals: " + "; ".join(f"{k} found {a} / {b}, right label {c} / {d}" for k, (a, b, c, d) in tot.items()) + "."]
    L += ["", "## 5. Quality flags `turned`, `occluded`, `partial`", "",
          "The share of found faces each flag is raised on (the largest face of each photo). The frontal sets are "
          "every JAFFE and Yale photo (false flags); the hard cases are composites of "
          f"{r['jaffe_sample']} JAFFE photos: half of the face covered (from its middle to a fifth of a face beyond "
          "its edge) by a patch of real background (the flag beside the astronaut in litefer's sample photo); the "
          "photo squeezed sideways (a flat imitation of a face turned away by about arccos of the factor); warped in "
          "perspective (the face's right half squeezed to 0.55 and shortened); cut by the image's edge. The flags "
          "are computed from landmarks, so Haar (no landmarks) raises `turned` and `occluded` never and `partial` "
          "only from its crop's share outside the image.", "",
          *table(["detector", "photos", "found", "turned", "occluded", "partial", "any of the three"],
                 [[f"{x['detector']}: {x['set']}", x["photos"], x["found"],
                   *(f"{x.get(f, 0)} ({100 * x.get(f, 0) / max(1, x['found']):.0f} %)"
                     for f in ("turned", "occluded", "partial", "any"))] for x in r["flags"]["rows"]], "llrrrrr")]
    L += ["", "## Limits of these figures", "",
          "* The truth is YuNet's own detection on the upright photo, so YuNet's point error at 0° is a floor of "
          "0.02 eye distances, not 0, and Haar's eye error is measured against YuNet's eye landmarks.",
          "* Turned faces are turned in the image plane only; the flags' `turned` is for faces turned away "
          "(yaw), which JAFFE and Yale do not have: the squeezed and perspective composites only imitate it, "
          "flatly. A flat perspective warp and a mild squeeze (0.8) are not caught; real profiles, where the "
          "nose leaves the face's midline, were not available to measure.",
          "* A covered mouth (lower half) mostly goes unflagged: YuNet places plausible mouth corners on the "
          "background patch.",
          "* Yale's `sad` photos are read as neutral by the packaged model on both detectors' crops alike: a "
          "matter of the model (or of Yale's mild `sad`), not of the crop.",
          "* ms columns were timed on a shared 2-core machine: compare within a table."]
    return "\n".join(L)


def report(r: dict, command: str) -> str:
    return "\n".join([*header("Faces in the wild: hard photos (issue 25)", command, f"OpenCV {cv2.__version__}"),
                      "Data: JAFFE (213 photos, 10 women) and Yale (164 photos, 15 people), real photos, composited "
                      "as each section says; the truth of a face is YuNet's detection on its upright, whole photo. "
                      "Timings shared the 2-core machine with other work: compare rows within a table.", "",
                      markdown(r), ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=int, default=6, help="every k-th JAFFE photo for items 2 and 5 (default: %(default)s)")
    p.add_argument("--yunet", default=str(YUNET))
    p.add_argument("--out", default="results/hard_photos", help="report path without suffix (.md and .json)")
    args = p.parse_args(argv)
    if not JAFFE.is_dir() or not YALE.is_dir() or not Path(args.yunet).is_file():
        print(f"needs {JAFFE}, {YALE} and {args.yunet}", file=sys.stderr)
        return 2
    result = measure(args.yunet, args.every)
    command = command_line("hard_photos.py", argv)
    write(args.out, {"command": command, **result}, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
