"""Issue 25: framing a face by YuNet's five landmarks against today's framing, on JAFFE and Yale.

    python benchmarks/landmark_framing.py --jaffe ../shared/data/jaffe --yale ../shared/data/yale \\
        --yunet ../shared/models/face_detection_yunet.onnx --fer ../shared/data/fer2013

Framings of each photo's largest face (every YuNet row crops the same YuNet detection):

* ``haar``: the Haar box enlarged 48/47 about its centre, levelled by the eye cascade's eyes when
  they tilt beyond 10 degrees (litefer's default path);
* ``yunet box``: YuNet's box framed the same way, landmarks unused (today's box framing applied to
  YuNet faces); ``yunet box + eyes``: levelled by YuNet's two eye landmarks beyond 10 degrees;
* ``5 points``: the least-squares similarity of the five landmarks onto ``FER2013_TEMPLATE``, its
  rotation kept only beyond 10 degrees (below, scale and centre of the fit, upright); ``always
  levelled`` / ``never levelled`` change only that rule; ``eyes + nose``, ``eyes + mouth`` and
  ``eyes`` fit the similarity to those landmarks only (``frame_transform(points=...)``); ``found
  again levelled``: YuNet run a second time on the face levelled by its first landmarks
  (``Refiner``), then the five-point fit on the second landmarks.

Sets: JAFFE's 213 photos (7 labels); the same photos turned by 25 degrees, alternately either way
(padded, turned about the centre, edges replicated: in-plane rotation); Yale's 164 photos (framing
measures), of which the 60 expression photos are scored (happy, sad, surprised, normal = neutral).

Crop agreement, measured on each 48 x 48 crop the way ``benchmarks/framing.py`` measured FER2013's
own faces (upscaled 4x, padded 48 px), so that FER2013's stored validation faces give a reference
row: YuNet's landmarks found again on the crop (mean distance of the five from
``FER2013_TEMPLATE``, px of 48, and the eye line's tilt), the Haar cascade's box found on the crop
(found share, its centre's distance from FER2013's median box centre, its side against FER2013's),
and, against the ``haar`` framing of the same photo, the overlap (IoU) of the two crop squares in
the photo and the pixel correlation of the two crops.

Accuracy: the packaged default model (``Recognizer()``, flip averaging as its card says) on each
framing's crops, argmax over its 8 classes (``contempt``, posed by neither set, counts as wrong).
Photos repeat people (10 women in JAFFE, 15 people in Yale), so each framing is compared with
``5 points`` (today's YuNet path) on the photos both framed: photos right only by one or the other,
the exact McNemar p, and a 95 % interval of the accuracy difference from a bootstrap over people.
Eval on stored FER2013/FERPlus crops detects nothing and frames nothing: no row here changes it.

Writes ``results/landmark_framing.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from framing import PAD, UP, pct, staged, to_frame
from peer_speed import jaffe
from results_page import command_line, header, load_text, table, write
from litefer.inference.align import FER2013_TEMPLATE, FER_SIZE, frame_transform, warp_crop
from litefer.inference.detect import Detection, HaarDetector, YuNetDetector
from litefer.inference.inputs import load_image
from litefer.utils import hardware_summary

YALE_CODES = {"happy": "happiness", "sad": "sadness", "surprised": "surprise", "normal": "neutral"}
TURN_DEGREES = 25.0
# FER2013's median Haar box on its own (staged) training faces, 48-px frame units (results/framing.md).
FER_HAAR_BOX = (0.50, 0.25, 46.75, 46.75)
REFERENCE = "5 points"


@dataclass(frozen=True)
class Framing:
    """One candidate: which detection it crops and how ``frame_transform`` is called on it."""

    name: str
    detector: str                               # "haar" or "yunet"
    use: str = "landmarks"                      # yunet: "landmarks", "box" or "box+eyes"
    points: tuple[int, ...] = (0, 1, 2, 3, 4)
    rotate: bool = True
    level_above: float = 10.0

    def transform(self, det: Detection, bgr: np.ndarray, refiner: "Refiner") -> np.ndarray:
        if self.detector == "yunet" and self.use in ("box", "box+eyes"):
            det = Detection(det.box, det.score, None, None if self.use == "box" else det.landmarks[:2])
        elif self.use == "refined":
            det = refiner(bgr, det)
        return frame_transform(det, FER_SIZE, self.rotate, self.level_above, self.points)[0]


class Refiner:
    """YuNet's landmarks found again on the face levelled by its first ones: the face (its 48-px frame
    at 96 px, centred in a 288-px patch of the photo) turned upright by the five-point fit, searched
    again, the landmarks of the face nearest the patch's centre mapped back to the photo. YuNet
    undershoots in-plane turns (JAFFE turned 30 degrees: its eye line says about 22), so a face it
    levelled is still partly tilted; on the levelled face its landmarks are nearly upright, and right."""

    def __init__(self, yunet_model: Path, frame: int = 96, side: int = 288):
        self.frame, self.side = frame, side
        self.net = cv2.FaceDetectorYN.create(str(yunet_model), "", (side, side), 0.5, 0.3, 50)

    def __call__(self, bgr: np.ndarray, det: Detection) -> Detection:
        M = frame_transform(det, self.frame, True, 0.0)[0]
        M[:, 2] += (self.side - self.frame) / 2
        patch = cv2.cvtColor(warp_crop(bgr, M, self.side, False, det.box)[0], cv2.COLOR_RGB2BGR)
        _, found = self.net.detect(patch)
        if found is None or not len(found):
            return det
        centre = np.array([self.side / 2] * 2)
        f = min(found, key=lambda r: np.hypot(*(r[:2] + r[2:4] / 2 - centre)))
        inv = cv2.invertAffineTransform(M)
        lm = (f[4:14].reshape(5, 2).astype(np.float64) @ inv[:, :2].T + inv[:, 2]).astype(np.float32)
        return Detection(det.box, det.score, lm, lm[:2].copy())


FRAMINGS = (
    Framing("haar", "haar"),
    Framing("yunet box", "yunet", "box"),
    Framing("yunet box + eyes", "yunet", "box+eyes"),
    Framing("5 points", "yunet"),
    Framing("5 points, always levelled", "yunet", level_above=0.0),
    Framing("5 points, never levelled", "yunet", rotate=False),
    Framing("eyes + nose", "yunet", points=(0, 1, 2)),
    Framing("eyes + mouth", "yunet", points=(0, 1, 3, 4)),
    Framing("eyes", "yunet", points=(0, 1)),
    Framing("5 points, found again levelled", "yunet", "refined"),
)


@dataclass
class Photo:
    name: str
    person: str
    label: str | None                            # None: measured for framing only
    bgr: np.ndarray


def jaffe_photos(root: Path) -> list[Photo]:
    names, truth, images = jaffe(root)
    return [Photo(n, n.split(".")[0], t, img) for n, t, img in zip(names, truth, images)]


def yale_photos(root: Path) -> list[Photo]:
    paths = sorted(p for p in root.iterdir() if p.name.startswith("subject") and "." in p.name)
    return [Photo(p.name, p.name.split(".")[0], YALE_CODES.get(p.name.split(".", 1)[1]), load_image(p)) for p in paths]


def turned(photos: list[Photo], degrees: float = TURN_DEGREES) -> list[Photo]:
    """Each photo padded by a quarter of its side and turned by +-``degrees`` (alternately) about its centre."""
    out = []
    for i, p in enumerate(photos):
        pad = p.bgr.shape[0] // 4
        big = cv2.copyMakeBorder(p.bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        h, w = big.shape[:2]
        a = degrees if i % 2 == 0 else -degrees
        rot = cv2.warpAffine(big, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), a, 1.0), (w, h),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(Photo(p.name, p.person, p.label, rot))
    return out


class CropMeter:
    """The framing measures of ``benchmarks/framing.py`` on one 48 x 48 grey crop: YuNet landmarks and
    the Haar box, both found on the crop upscaled 4x and padded. The cascade (5 neighbours, as
    litefer runs it) searches faces of half the frame and more only: the same boxes as from 24 px on
    these crops, in a fifth of the time."""

    def __init__(self, yunet_model: Path):
        side = 48 * UP + 2 * PAD
        self.yunet = cv2.FaceDetectorYN.create(str(yunet_model), "", (side, side), 0.5, 0.3, 50)
        self.haar = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        self.min_face = 24 * UP

    def __call__(self, crop48: np.ndarray) -> dict:
        img = staged(crop48)
        _, found = self.yunet.detect(img)
        out = {"lm_err": math.nan, "tilt": math.nan, "haar_found": False, "haar_offset": math.nan,
               "haar_side": math.nan}
        if found is not None and len(found):
            lm = to_frame(found[0][4:14].reshape(5, 2).astype(np.float64))
            out["lm_err"] = float(np.linalg.norm(lm - FER2013_TEMPLATE, axis=1).mean())
            d = lm[1] - lm[0]
            out["tilt"] = float(np.degrees(np.arctan2(d[1], d[0])))
        boxes = self.haar.detectMultiScale(img[..., 0], 1.1, 5, minSize=(self.min_face, self.min_face))
        if len(boxes):
            x, y, w, h = (float(v) for v in max(boxes, key=lambda b: b[2] * b[3]))
            x, y, w, h = (x - PAD) / UP, (y - PAD) / UP, w / UP, h / UP
            fx, fy, fw, fh = FER_HAAR_BOX
            out.update(haar_found=True, haar_side=w / fw,
                       haar_offset=float(np.hypot(x + w / 2 - (fx + fw / 2), y + h / 2 - (fy + fh / 2))))
        return out


def footprint(M: np.ndarray, size: int = FER_SIZE) -> np.ndarray:
    """The crop square's corners in the photo (OpenCV pixel-centre coordinates), float32 (4, 2)."""
    inv = cv2.invertAffineTransform(M)
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    return (corners @ inv[:, :2].T + inv[:, 2]).astype(np.float32)


def footprint_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = cv2.contourArea(a) + cv2.contourArea(b) - inter
    return float(inter / union) if union > 0 else math.nan


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def detect_all(photos: list[Photo], haar: HaarDetector, yunet: YuNetDetector) -> list[dict]:
    """Each photo's largest Haar and YuNet face (None where none is found)."""
    out = []
    for p in photos:
        h, y = haar.detect(p.bgr), yunet.detect(p.bgr)
        out.append({"haar": h[0] if h else None, "yunet": y[0] if y else None})
    return out


def evaluate(photos: list[Photo], dets: list[dict], rec, meter: CropMeter, refiner: Refiner,
             framings=FRAMINGS) -> dict:
    """Per framing and photo: crop measures and the predicted label (None where its detector found nothing)."""
    per: dict[str, list[dict | None]] = {}
    haar_ref: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(photos)
    for f in framings:
        rows, crops, where = [], [], []
        for i, (p, d) in enumerate(zip(photos, dets)):
            det = d[f.detector]
            if det is None:
                rows.append(None)
                continue
            M = f.transform(det, p.bgr, refiner)
            crop = warp_crop(p.bgr, M, FER_SIZE, True, det.box)[0]
            row = meter(crop[..., 0])
            poly = footprint(M)
            if f.detector == "haar" and f.name == "haar":
                haar_ref[i] = (poly, crop)
            if haar_ref[i] is not None:
                row["iou_haar"] = footprint_iou(poly, haar_ref[i][0])
                row["corr_haar"] = corr(crop, haar_ref[i][1])
            rows.append(row)
            crops.append(crop)
            where.append(i)
        if crops:
            probs = rec.classify_crops(np.stack(crops))
            for i, k in zip(where, probs.argmax(1)):
                rows[i]["pred"] = rec.class_names[int(k)]
        per[f.name] = rows
    return per


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def person_bootstrap(people: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple:
    """95 % interval of mean(a) - mean(b) (percentage points), resampling people with replacement."""
    rng = np.random.default_rng(seed)
    names = np.unique(people)
    groups = [np.flatnonzero(people == g) for g in names]
    diffs = []
    for _ in range(n):
        idx = np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
        diffs.append(100 * (a[idx].mean() - b[idx].mean()))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def summarise(photos: list[Photo], per: dict, ref: str = REFERENCE) -> dict:
    """Framing measures and accuracy of each framing on one set, accuracy paired against ``ref``."""
    labelled = np.array([p.label is not None for p in photos])
    truth = np.array([p.label or "" for p in photos])
    people = np.array([p.person for p in photos])
    out = {}
    ref_rows = per.get(ref)
    for name, rows in per.items():
        found = [r for r in rows if r is not None]
        col = lambda k: np.array([r.get(k, math.nan) for r in found], float)  # noqa: E731
        lm, tilt, off, side = col("lm_err"), col("tilt"), col("haar_offset"), col("haar_side")
        s = {"found": len(found), "photos": len(rows),
             "lm_found": int(np.isfinite(lm).sum()), "lm_err_median": pct(lm[np.isfinite(lm)], 50),
             "lm_err_p90": pct(lm[np.isfinite(lm)], 90), "tilt_abs_p90": pct(np.abs(tilt[np.isfinite(tilt)]), 90),
             "haar_found": int(sum(r["haar_found"] for r in found)),
             "haar_offset_median": pct(off[np.isfinite(off)], 50), "haar_side_median": pct(side[np.isfinite(side)], 50),
             "iou_haar_median": pct(col("iou_haar")[np.isfinite(col("iou_haar"))], 50),
             "corr_haar_median": pct(col("corr_haar")[np.isfinite(col("corr_haar"))], 50)}
        scored = [i for i, r in enumerate(rows) if r is not None and labelled[i]]
        right = np.array([rows[i]["pred"] == truth[i] for i in scored], bool)
        s.update(scored=len(scored), labelled=int(labelled.sum()), right=int(right.sum()),
                 accuracy=100 * float(right.mean()) if len(right) else math.nan)
        per_person = {}
        for g in np.unique(people[scored]) if scored else []:
            m = people[scored] == g
            per_person[str(g)] = 100 * float(right[m].mean())
        s["per_person"] = per_person
        s["per_person_sd"] = float(np.std(list(per_person.values()))) if per_person else math.nan
        if ref_rows is not None:
            both = [i for i in scored if ref_rows[i] is not None]
            a = np.array([rows[i]["pred"] == truth[i] for i in both], float)
            b = np.array([ref_rows[i]["pred"] == truth[i] for i in both], float)
            wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
            lo, hi = person_bootstrap(people[both], a, b) if both else (math.nan, math.nan)
            s["vs_ref"] = {"paired": len(both), "diff": 100 * float(a.mean() - b.mean()) if both else math.nan,
                           "only_this": wins, "only_ref": losses, "p": mcnemar_p(wins, losses), "ci95": [lo, hi]}
        out[name] = s
    return out


def fer_reference(root: Path, meter: CropMeter, n: int, seed: int = 0) -> dict:
    """The same crop measures on stored FER2013 validation faces (what 'framed like FER2013' looks like)."""
    from litefer.data.ferplus import load_arrays

    arrays = load_arrays(root)
    idx = np.random.default_rng(seed).choice(np.flatnonzero(arrays["usage"] == "PublicTest"), n, replace=False)
    rows = [meter(arrays["images"][i]) for i in idx]
    lm = np.array([r["lm_err"] for r in rows])
    tilt = np.array([r["tilt"] for r in rows])
    off, side = np.array([r["haar_offset"] for r in rows]), np.array([r["haar_side"] for r in rows])
    ok = np.isfinite(lm)
    return {"faces": n, "lm_found": int(ok.sum()), "lm_err_median": pct(lm[ok], 50), "lm_err_p90": pct(lm[ok], 90),
            "tilt_abs_p90": pct(np.abs(tilt[ok]), 90), "haar_found": int(np.isfinite(off).sum()),
            "haar_offset_median": pct(off[np.isfinite(off)], 50), "haar_side_median": pct(side[np.isfinite(side)], 50)}


def f1(v, digits=1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _crop_row(name: str, r: dict) -> list:
    found = r["faces"] if "faces" in r else f"{r['found']} / {r['photos']}"
    pair = [f1(r[k], 3) if r[k] is not None else "-" for k in ("iou_haar_median", "corr_haar_median")]
    return [name, found, f"{f1(r['lm_err_median'], 2)} / {f1(r['lm_err_p90'], 2)}", f1(r["tilt_abs_p90"]), r["haar_found"],
            f1(r["haar_offset_median"], 2), f1(r["haar_side_median"], 3), *pair]


def _accuracy_row(name: str, r: dict) -> list:
    v = r.get("vs_ref") or {}
    ci = v.get("ci95", [math.nan, math.nan])
    return [name, f"{r['right']} / {r['scored']}", f"{f1(r['accuracy'])} %", f1(r["per_person_sd"]),
            f"{f1(v.get('diff'))} (n={v.get('paired', 0)})", f"{v.get('only_this', 0)} / {v.get('only_ref', 0)}",
            f1(v.get("p"), 2), f"{f1(ci[0])} to {f1(ci[1])}"]


def report(result: dict) -> str:
    lines = [*header("Framing from YuNet's landmarks against today's framing (issue 25)", result["command"]),
             f"Whole benchmark {result['seconds']:.0f} s. Model: the packaged default ({result['model']}), flip averaging: {result['tta']}", "",
             "Framings: `haar` = Haar box x 48/47 + eye-cascade levelling beyond 10° (default path); `yunet box` = "
             "YuNet's box framed like a Haar box, no landmarks; `+ eyes` = levelled by YuNet's eye landmarks beyond "
             "10°; `5 points` = similarity of the 5 landmarks onto `FER2013_TEMPLATE`, rotation kept beyond 10° "
             "(today's YuNet path, the reference of the paired columns); `eyes + nose`, `eyes + mouth`, `eyes` = the "
             "same fit to those landmarks only; `found again levelled` = YuNet run a second time on the face levelled by "
             "its first landmarks, the 5-point fit made on the second landmarks. See the script's docstring for the "
             "measures.", ""]
    ref = result.get("fer_reference")
    for key, s in result["sets"].items():
        rows = s["framings"]
        lines += [f"## {s['title']}", "",
                  "Crop agreement: on each crop (upscaled 4x, padded) YuNet's landmarks (mean distance from the "
                  "template, px of 48, median / 90th pct; |eye tilt| 90th pct) and the Haar box (found; centre offset "
                  "from FER2013's median box, px; side / FER2013's); against the `haar` crop of the same photo: "
                  "footprint IoU and pixel correlation (medians).", "",
                  *table(["framing", "faces", "landmark error", "abs. tilt p90 (°)", "Haar box found", "Haar centre offset",
                          "Haar side ratio", "IoU with haar", "corr. with haar"],
                         ([_crop_row("*FER2013 stored validation faces*", {**ref, "iou_haar_median": None,
                                                                             "corr_haar_median": None})] if ref else [])
                         + [_crop_row(name, r) for name, r in rows.items()])]
        lines += ["", f"Accuracy on the {next(iter(rows.values()))['labelled']} labelled photos ({s['labels']}); "
                  f"paired with `{REFERENCE}` on the photos both framed: photos right only with this framing / only "
                  "with the reference, exact McNemar p, 95 % bootstrap interval over people of the difference.", "",
                  *table(["framing", "right / framed", "accuracy", "per-person SD", "difference vs 5 points",
                          "only this / only 5 points", "McNemar p", "95 % interval (people)"],
                         [_accuracy_row(name, r) for name, r in rows.items()])]
        lines.append("")
    lines += ["FERPlus validation (`litefer eval`) classifies the stored 48 x 48 crops: it detects and frames nothing, "
              "so no framing here changes it.", ""]
    return "\n".join(lines)


def run(args) -> dict:
    from litefer import Recognizer

    t0 = time.perf_counter()
    rec = Recognizer()
    haar, yunet = HaarDetector(), YuNetDetector(args.yunet)
    meter, refiner = CropMeter(Path(args.yunet)), Refiner(Path(args.yunet))
    base = jaffe_photos(Path(args.jaffe))[: args.limit or None]
    sets = {"jaffe": ("JAFFE (213 photos, 10 women, 7 labels)", base, "JAFFE's 7 labels"),
            "jaffe_turned": (f"JAFFE turned by {TURN_DEGREES:.0f}° (alternately either way)", turned(base),
                             "JAFFE's 7 labels")}
    if args.yale:
        yale = yale_photos(Path(args.yale))[: args.limit or None]
        sets["yale"] = ("Yale (164 photos, 15 people; 60 with an expression label)", yale,
                        "happy, sad, surprised, normal = happiness, sadness, surprise, neutral")
    out = {}
    for key, (title, photos, labels) in sets.items():
        per = evaluate(photos, detect_all(photos, haar, yunet), rec, meter, refiner)
        out[key] = {"title": title.replace("213", str(len(photos))) if args.limit else title, "labels": labels,
                    "framings": summarise(photos, per),
                    "predictions": {name: [None if r is None else r.get("pred") for r in rows]
                                    for name, rows in per.items()},
                    "photos": [p.name for p in photos]}
        print(f"{key}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    result = {"sets": out, "model": rec.card.model_name, "tta": rec.tta}
    if args.fer:
        result["fer_reference"] = fer_reference(Path(args.fer), meter, args.fer_n)
    result["seconds"] = time.perf_counter() - t0
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jaffe", default="../shared/data/jaffe")
    p.add_argument("--yale", default="../shared/data/yale", help="'' to leave Yale out")
    p.add_argument("--yunet", default="../shared/models/face_detection_yunet.onnx")
    p.add_argument("--fer", default="../shared/data/fer2013", help="FER2013 root for the reference row ('' to skip)")
    p.add_argument("--fer-n", type=int, default=500, help="stored validation faces in the reference row")
    p.add_argument("--limit", type=int, default=0, help="first N photos of each set (0: all)")
    p.add_argument("--out", default="results/landmark_framing", help="output path without suffix")
    args = p.parse_args(argv)
    result = run(args)
    result.update(command=command_line("landmark_framing.py", argv),
                  date=f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
                  machine=f"{hardware_summary()}, Python {platform.python_version()}, OpenCV {cv2.__version__}, "
                          f"{load_text()}")
    write(args.out, result, report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
