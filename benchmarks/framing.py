"""Measure FER2013's face framing and check that litefer's crops reproduce it.

    .venv/bin/python benchmarks/framing.py --data ../shared/data/fer2013 --yunet ../shared/models/face_detection_yunet.onnx

1. Measurement (FER2013 ``Training`` rows): each 48 x 48 face is upscaled 4x and padded, then the
   Haar cascade and YuNet are run on it. The Haar box relative to the 48-pixel frame gives
   ``HAAR_FRAME_SCALE``; YuNet's landmarks give ``FER2013_TEMPLATE`` (medians, mirrored to be
   symmetric); the eye-line angle shows whether FER2013 faces are upright; intensity statistics give
   the quality-flag thresholds.
2. Round trip (FER2013 ``PublicTest`` rows, not used in 1): the same upscaled, padded faces go
   through litefer's detector + crop, and the frame litefer recovers is compared with the true one
   (centre offset and scale in 48-pixel units, pixel correlation of the crop with the original).
3. A real photo: the astronaut's face (the packaged sample photo, public domain) cropped by both detectors, its
   own landmarks and intensity statistics placed within the FER2013 distributions, and a picture
   (``results/framing.png``) of FER2013 faces next to litefer's crops.

Writes ``results/framing.md`` and ``results/framing.png``.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import cv2
import numpy as np

from litefer.inference.align import FER2013_TEMPLATE, HAAR_FRAME_SCALE, CropSpec, crop_face, frame_transform
from litefer.data.ferplus import load_arrays, majority_labels
from litefer.inference.detect import HaarDetector, YuNetDetector
from litefer.utils import atomic_write_bytes
from results_page import command_line, header, table, write

UP, PAD = 4, 48          # FER faces are measured at 4x (192 px) with a 48 px replicated border


def staged(face48: np.ndarray) -> np.ndarray:
    g = cv2.resize(face48, (48 * UP, 48 * UP), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(cv2.copyMakeBorder(g, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2BGR)


def to_frame(points: np.ndarray) -> np.ndarray:
    """Staged-image pixel coordinates (OpenCV centres) -> continuous 48-pixel frame coordinates."""
    return (points - PAD + 0.5) / UP


def measure(images: np.ndarray, haar: HaarDetector, yunet: YuNetDetector | None) -> dict:
    boxes, lms = [], []
    for face in images:
        img = staged(face)
        h = haar.detect(img)
        if h:
            x, y, w, hh = h[0].box
            boxes.append([(x - PAD) / UP, (y - PAD) / UP, w / UP, hh / UP])
        if yunet is not None:
            y_ = yunet.detect(img)
            if y_:
                lms.append(to_frame(y_[0].landmarks))
    out = {"n": len(images), "haar_boxes": np.array(boxes), "landmarks": np.array(lms)}
    g = images.astype(np.float32)
    out["mean"], out["std"] = g.mean((1, 2)), g.std((1, 2))
    out["lap"] = np.array([cv2.Laplacian(f, cv2.CV_32F).var() for f in g])
    return out


def round_trip(images: np.ndarray, detector, spec: CropSpec) -> dict:
    """Crop the staged faces with litefer and compare the recovered frame with the true one."""
    offsets, scales, corrs, crops, kept = [], [], [], [], []
    true_centre = np.array([PAD + 24 * UP, PAD + 24 * UP]) - 0.5        # OpenCV centre coordinates
    for i, face in enumerate(images):
        img = staged(face)
        dets = detector.detect(img)
        if not dets:
            continue
        d = dets[0]
        M, _, _ = frame_transform(d, spec.size, spec.rotate, spec.level_above)
        inv = cv2.invertAffineTransform(M)
        centre = inv[:, :2] @ np.array([spec.size / 2 - 0.5] * 2) + inv[:, 2]
        side = spec.size / np.sqrt(abs(np.linalg.det(M[:, :2])))
        offsets.append(np.linalg.norm(centre - true_centre) / UP)
        scales.append(side / (48 * UP))
        crop = crop_face(img, d, spec)[0]
        crops.append(crop)
        kept.append(i)
        corrs.append(np.corrcoef(crop[..., 0].astype(np.float64).ravel(), face.astype(np.float64).ravel())[0, 1])
    return {"n": len(images), "found": len(kept), "offset": np.array(offsets), "scale": np.array(scales),
            "corr": np.array(corrs), "crops": np.stack(crops) if crops else None, "kept": np.array(kept, int)}


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def rank(value, dist) -> float:
    """Percentile of ``value`` within ``dist``."""
    return 100.0 * float(np.mean(np.asarray(dist) <= value))


def figure(fer: np.ndarray, fer_mean: np.ndarray, crops: list[tuple[str, np.ndarray]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(crops), 8)
    fig, axes = plt.subplots(2, n, figsize=(1.35 * n, 3.2))
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(min(n - 1, len(fer))):
        axes[0, i].imshow(fer[i], cmap="gray", vmin=0, vmax=255)
    axes[0, n - 1].imshow(fer_mean, cmap="gray")
    axes[0, n - 1].plot(*FER2013_TEMPLATE.T - 0.5, "r+", ms=4, mew=0.8)
    axes[0, n - 1].set_title("FER2013 mean face", fontsize=7)
    axes[0, 0].set_title("FER2013 training faces", fontsize=7, loc="left")
    for i, (name, c) in enumerate(crops):
        axes[1, i].imshow(c, cmap="gray", vmin=0, vmax=255)
        axes[1, i].plot(*FER2013_TEMPLATE.T - 0.5, "r+", ms=4, mew=0.8)
        axes[1, i].set_title(name, fontsize=6)
    fig.suptitle("top: FER2013 as stored; bottom: litefer crops of a real photo (red: FER2013 landmark template)",
                 fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/fer2013", help="FERPlus/FER2013 root")
    p.add_argument("--yunet", default="../shared/models/face_detection_yunet.onnx", help="YuNet model (optional)")
    p.add_argument("--n", type=int, default=2000, help="training faces to measure")
    p.add_argument("--n-check", type=int, default=600, help="validation faces for the round trip")
    p.add_argument("--weights", default=None, help="also classify stored vs re-cropped faces with these weights "
                                                   "('default' or a path); FERPlus majority labels")
    p.add_argument("--out", default="results", help="output folder")
    args = p.parse_args(argv)

    arrays = load_arrays(args.data)
    labels = majority_labels(arrays["votes"])
    rng = np.random.default_rng(0)
    train = arrays["images"][rng.choice(np.flatnonzero(arrays["usage"] == "Training"), args.n, replace=False)]
    val_idx = rng.choice(np.flatnonzero((arrays["usage"] == "PublicTest") & (labels >= 0)), args.n_check, replace=False)
    val, val_labels = arrays["images"][val_idx], labels[val_idx]
    rec = None
    if args.weights:
        from litefer import Recognizer
        rec = Recognizer(weights=args.weights)
    # measurement: the cascade at full resolution (min_size 24 = its window), largest box taken;
    # round trip: the detectors as litefer runs them by default
    haar_full = HaarDetector(min_size=24)
    haar = HaarDetector()
    yunet = YuNetDetector(args.yunet, score_threshold=0.6) if Path(args.yunet).is_file() else None
    if yunet is None:
        print(f"YuNet model {args.yunet} not found: landmark measurements skipped", file=sys.stderr)

    m = measure(train, haar_full, yunet)
    hb = m["haar_boxes"]
    command = command_line("framing.py", argv)
    lines = [*header("FER2013 framing: measured, and reproduced by litefer's crops", command),
             (f"Weights `{args.weights}` ({rec.card.model_name}, {rec.card.preprocess.input_size} px input)."
              if rec else "No weights: the accuracy comparison is left out."), "",
             f"## 1. FER2013 training faces ({args.n} random `Training` rows, upscaled {UP}x, padded)", "",
             f"- Haar cascade finds a face in {len(hb)} ({100 * len(hb) / args.n:.0f} %); its box in 48-px frame units: "
             f"median x, y, w, h = {', '.join(f'{v:.2f}' for v in np.median(hb, 0))} "
             f"(interquartile range of w: {pct(hb[:, 2], 25):.1f}-{pct(hb[:, 2], 75):.1f}). "
             f"So the frame is the Haar box itself, enlarged {48 / np.median(hb[:, 2]):.3f}x about its centre "
             f"(litefer: `HAAR_FRAME_SCALE` = {HAAR_FRAME_SCALE:.3f})."]
    if len(m["landmarks"]):
        lm = m["landmarks"]
        med = np.median(lm, 0)
        sym = med.copy()
        for a, b in ((0, 1), (3, 4)):
            half = (med[b, 0] - med[a, 0]) / 2
            yy = (med[a, 1] + med[b, 1]) / 2
            sym[a], sym[b] = (24 - half, yy), (24 + half, yy)
        sym[2, 0] = 24
        d = lm[:, 1] - lm[:, 0]
        angle = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
        iod = np.linalg.norm(d, axis=1)
        names = ["right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner"]
        lines += [f"- YuNet finds landmarks in {len(lm)} ({100 * len(lm) / args.n:.0f} %). Median positions "
                  "(48-px frame, pixel i spans [i, i+1)), the mirrored template, and litefer's `FER2013_TEMPLATE`:", ""]
        iqr = np.percentile(lm, 75, 0) - np.percentile(lm, 25, 0)
        lines += table(["landmark", "median", "interquartile range x / y", "symmetric", "litefer"],
                       [[n, f"{med[i, 0]:.1f}, {med[i, 1]:.1f}", f"{iqr[i, 0]:.1f} / {iqr[i, 1]:.1f}",
                         f"{sym[i, 0]:.1f}, {sym[i, 1]:.1f}", f"{FER2013_TEMPLATE[i, 0]:.1f}, {FER2013_TEMPLATE[i, 1]:.1f}"]
                        for i, n in enumerate(names)])
        lines += ["", f"- Eye line: median {np.median(angle):.1f} degrees, standard deviation {angle.std():.1f}: "
                  "FER2013 faces are upright on average but keep their tilt; litefer keeps tilts up to 10 degrees "
                  "(this spread plus the training rotations) and levels larger ones. "
                  f"Inter-ocular distance: median {np.median(iod):.1f} px of 48."]
    lines += [f"- Intensity of the stored faces: mean grey level 1st / 50th / 99th percentile "
              f"{pct(m['mean'], 1):.0f} / {pct(m['mean'], 50):.0f} / {pct(m['mean'], 99):.0f}; standard deviation "
              f"{pct(m['std'], 1):.0f} / {pct(m['std'], 50):.0f} / {pct(m['std'], 99):.0f}; Laplacian variance "
              f"(sharpness) 1st / 50th percentile {pct(m['lap'], 1):.0f} / {pct(m['lap'], 50):.0f} "
              "(litefer's quality flags: dark < 50, bright > 205, low_contrast < 25, blurry < 400).", ""]

    lines += [f"## 2. Round trip on {args.n_check} validation faces (`PublicTest`, not used above)", "",
              "Each stored face, upscaled and padded, is cropped again by litefer; the recovered frame is "
              "compared with the true one" + (f", and both crops are classified by `{args.weights}` "
                                              "(FERPlus majority labels)." if rec else "."), ""]
    trips = []
    spec = CropSpec()
    variants = (("haar (litefer: levelled beyond 10°)", haar, CropSpec()),
                ("haar, never levelled", haar, CropSpec(rotate=False)),
                ("haar, always levelled", haar, CropSpec(level_above=0.0)),
                ("yunet (litefer: levelled beyond 10°)", yunet, CropSpec()),
                ("yunet, never levelled", yunet, CropSpec(rotate=False)),
                ("yunet, always levelled", yunet, CropSpec(level_above=0.0)))
    for name, det, variant in variants:
        if det is None:
            continue
        r = round_trip(val, det, variant)
        acc = []
        if rec is not None:
            acc = [""]
            if r["found"]:
                y = val_labels[r["kept"]]
                stored = rec.classify_crops(val[r["kept"]][..., None]).argmax(1)
                ours = rec.classify_crops(r["crops"]).argmax(1)
                acc = [f"{100 * np.mean(stored == y):.1f} % / {100 * np.mean(ours == y):.1f} % "
                       f"({100 * np.mean(stored == ours):.0f} %)"]
        trips.append([name, f"{r['found']} / {r['n']}", f"{pct(r['offset'], 50):.2f} / {pct(r['offset'], 90):.2f}",
                      f"{pct(r['scale'], 50):.3f} ({pct(r['scale'], 25):.3f}-{pct(r['scale'], 75):.3f})",
                      f"{pct(r['corr'], 50):.3f}", *acc])
    lines += table(["detector", "faces found", "centre offset, median / 90th pct (px of 48)", "scale, median (IQR)",
                    "pixel correlation with the original, median",
                    *(["accuracy: stored crops / litefer crops (agreement)"] if rec else [])], trips)

    from litefer.inference.samples import sample_bgr
    photo = sample_bgr()
    crops = []
    lines += ["", "## 3. A real photo: the astronaut (packaged sample photo, public domain)", ""]
    astronaut = []
    yn_on_crop = cv2.FaceDetectorYN.create(args.yunet, "", (288, 288), 0.5, 0.3, 50) if yunet else None
    for name, det in (("haar", HaarDetector()), ("yunet", YuNetDetector(args.yunet) if yunet else None)):
        if det is None:
            continue
        f = det.detect(photo)[0]
        crop = crop_face(photo, f, spec)[0][..., 0]
        crops.append((f"litefer {name}", crop))
        eyes = "-"
        if yn_on_crop is not None:
            _, found = yn_on_crop.detect(staged(crop))
            if found is not None:
                e = to_frame(found[0][4:8].reshape(2, 2))
                eyes = f"({e[0, 0]:.1f}, {e[0, 1]:.1f}), ({e[1, 0]:.1f}, {e[1, 1]:.1f})"
        g = crop.astype(np.float32)
        lap = cv2.Laplacian(g, cv2.CV_32F).var()
        astronaut.append([name, eyes, f"{g.mean():.0f} ({rank(g.mean(), m['mean']):.0f})",
                          f"{g.std():.0f} ({rank(g.std(), m['std']):.0f})", f"{lap:.0f} ({rank(lap, m['lap']):.0f})"])
    lines += table(["crop", "eyes at (48-px frame)", "mean grey (FER percentile)", "std (FER percentile)",
                    "sharpness (FER percentile)"], astronaut)
    # the same face turned, darker and smaller: what alignment and the flags do
    rot = cv2.warpAffine(photo, cv2.getRotationMatrix2D((224, 113), 15, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    f = HaarDetector().detect(rot)[0]
    crops.append(("turned 15°, levelled", crop_face(rot, f, spec)[0][..., 0]))
    crops.append(("turned 15°, not levelled", crop_face(rot, type(f)(f.box, f.score), CropSpec(rotate=False))[0][..., 0]))
    small = cv2.resize(photo, (160, 160), interpolation=cv2.INTER_AREA)
    f = HaarDetector(min_size=24).detect(small)
    if f:
        crops.append((f"{int(f[0].box[2])} px face", crop_face(small, f[0], spec)[0][..., 0]))
    lines += ["", "FER2013 eye template: " + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in FER2013_TEMPLATE[:2]) + ".",
              "", "![FER2013 faces and litefer crops](framing.png)", ""]
    out = Path(args.out)
    figure(train[:12], train.astype(np.float32).mean(0), crops, out / "framing.png")
    measured = {"haar_found": len(hb), "haar_box_median": np.median(hb, 0).round(3).tolist(),
                "landmarks_median": np.median(m["landmarks"], 0).round(3).tolist() if len(m["landmarks"]) else None}
    write(out / "framing", {"command": command, "n": args.n, "n_check": args.n_check, "weights": args.weights,
                            **measured}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
