"""End-to-end frames per second on a 640x480 video with one face: decoding, face detection,
alignment/crop and recognition, with 1 and 2 threads, for each backend and detector, detecting on
every frame and with the tracker (``--detect-every`` k, ``--detect-scale`` s: detection on every k-th
frame of a downscaled frame, template tracking between; ``litefer.inference.track``).

    .venv/bin/python benchmarks/video_fps.py --weights default --calib ../shared/data/fer2013 \
        --yunet ../shared/models/face_detection_yunet.onnx

The video (300 frames, 30 fps) is made from the packaged public-domain astronaut photo: the face
moves and zooms slowly over a 640x480 frame. Two numbers per configuration:

* ``recognize_video`` fps: the whole API call over the file (crops of several frames batched);
* per-frame stage times (decode, detect, crop, classify) of a frame-by-frame loop, as a live
  webcam would run, and the fps they add up to (detect = the tracker's call when tracking);

and, for the tracked runs, the label agreement: the share of frames whose face label (largest face;
no face counts as a label) equals that of the same backend detecting on every frame.

INT8: the packaged ``default-int8`` file when ``--weights default`` and it exists, else an INT8
export of the weights calibrated on ``--calib`` faces. Writes ``results/video_fps.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from litefer import Recognizer
from litefer.inference.backends import DEFAULT_FILES, packaged_file
from litefer.inference.inputs import iter_frames
from results_page import command_line, header, table, write


def make_video(path: Path, frames: int = 300, fps: float = 30.0) -> Path:
    from litefer.inference.samples import sample_bgr

    photo = sample_bgr()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    for i in range(frames):
        t = i / frames
        scale = 0.75 + 0.25 * np.sin(2 * np.pi * t)                  # face ~70-120 px
        M = cv2.getRotationMatrix2D((224, 113), 6 * np.sin(4 * np.pi * t), scale)
        M[:, 2] += [320 - 224 + 120 * np.sin(2 * np.pi * t), 200 - 113]
        writer.write(cv2.warpAffine(photo, M, (640, 480), borderMode=cv2.BORDER_CONSTANT, borderValue=(60, 60, 60)))
    writer.release()
    return path


def int8_weights(weights: str, calib: str, tmp: Path) -> str:
    if weights == "default":
        try:
            return str(packaged_file(DEFAULT_FILES["default-int8"]["onnxruntime"]))
        except FileNotFoundError:
            pass
    from litefer.export import export

    out = tmp / "int8.onnx"
    export(weights, "onnx-int8", out, calib=calib, calib_size=500, parity_size=64, force=True)
    return str(out)


def fp32_onnx(weights: str, tmp: Path) -> str:
    if weights == "default":
        try:
            return str(packaged_file(DEFAULT_FILES["default"]["onnxruntime"]))
        except FileNotFoundError:
            pass
    from litefer.export import export_with_metadata

    return str(export_with_metadata(weights, tmp / "fp32.onnx"))


def stage_times(rec: Recognizer, video: Path, k: int = 1, scale: float = 1.0) -> dict:
    """Frame-by-frame loop (batch = the faces of one frame): mean ms per stage."""
    from litefer.inference.align import crop_face
    from litefer.inference.track import FaceTracker

    detector = FaceTracker(rec.detector, k, scale) if (k, scale) != (1, 1.0) else rec.detector
    t = {"decode": 0.0, "detect": 0.0, "crop": 0.0, "classify": 0.0}
    n, faces = 0, 0
    frames = iter_frames(video)
    while True:
        s = time.perf_counter()
        item = next(frames, None)
        t["decode"] += time.perf_counter() - s
        if item is None:
            break
        frame = item[2]
        s = time.perf_counter()
        dets = detector.detect(frame)
        t["detect"] += time.perf_counter() - s
        s = time.perf_counter()
        crops = [crop_face(frame, d, rec.crop_spec)[0] for d in dets]
        t["crop"] += time.perf_counter() - s
        s = time.perf_counter()
        if crops:
            rec.classify_crops(np.stack(crops))
        t["classify"] += time.perf_counter() - s
        n += 1
        faces += len(dets)
    out = {k: 1e3 * v / n for k, v in t.items()}
    out["fps"] = 1e3 / sum(out.values())
    out["frames"], out["faces_per_frame"] = n, faces / n
    return out


def labels(results) -> list[str | None]:
    """The largest face's label per frame (None: no face)."""
    return [r.faces[0].label if r.faces else None for r in results]


def agreement(a: list, b: list) -> float:
    return float(np.mean([x == y for x, y in zip(a, b)])) if a else float("nan")


def run_config(rec: Recognizer, video: Path, k: int, scale: float) -> tuple[dict, list]:
    """(row of figures, per-frame labels) for one recognizer and detection setting."""
    list(rec.recognize_video(video, max_frames=10, detect_every=k, detect_scale=scale))       # warm-up
    s = time.perf_counter()
    results = list(rec.recognize_video(video, detect_every=k, detect_scale=scale))
    api_fps = len(results) / (time.perf_counter() - s)
    st = stage_times(rec, video, k, scale)
    return {"detect_every": k, "detect_scale": scale, "api_fps": round(api_fps, 1),
            **{key: round(v, 3) for key, v in st.items()}}, labels(results)


BACKENDS = ("torch", "ort", "int8")


def measure_all(args, video: Path, tmp: Path) -> list[dict]:
    """One row per (threads, detector, backend, detection mode); tracked rows carry their agreement."""
    makers = {"torch": lambda: ("torch fp32", args.weights, "torch"),
              "ort": lambda: ("ORT fp32", fp32_onnx(args.weights, tmp), "onnxruntime"),
              "int8": lambda: ("ORT INT8", int8_weights(args.weights, args.calib, tmp), "onnxruntime")}
    backends = [makers[b]() for b in args.backends]
    detectors = [("haar", "haar")] + ([("yunet", args.yunet)] if args.yunet else [])
    rows = []
    for threads in args.threads:
        cv2.setNumThreads(threads)
        for det_name, det in detectors:
            for label, weights, backend in backends:
                rec = Recognizer(weights=weights, backend=backend, detector=det, threads=threads)
                base = {"threads": threads, "detector": det_name, "backend": label, "tta": rec.tta}
                every, every_labels = run_config(rec, video, 1, 1.0)
                tracked, tracked_labels = run_config(rec, video, args.detect_every, args.detect_scale)
                tracked["agreement"] = round(agreement(every_labels, tracked_labels), 4)
                tracked["faces_found"] = round(float(np.mean([x is not None for x in tracked_labels])), 4)
                every["faces_found"] = round(float(np.mean([x is not None for x in every_labels])), 4)
                for row in ({**base, **every}, {**base, **tracked}):
                    rows.append(row)
                    print(row, flush=True)
    return rows


def report(rows: list[dict], args, command: str, load) -> str:
    lines = [*header("End-to-end speed on a 640×480 video with one face", command, load_start=load),
             f"Weights: `{args.weights}`; flip TTA {'on' if rows and rows[0]['tta'] else 'off'} (as the model card says).",
             "", "Video: " + (f"`{args.video}`" if args.video else f"{args.frames} frames, 640×480, generated from the "
                              "astronaut photo (one face, ~70-120 px, moving)") + ". `recognize_video` fps = frames / "
             "wall time of the API call; stage columns = mean ms per frame in a frame-by-frame loop (detect = "
             "the tracker's call when tracking). Detection k / s: detector run on every k-th frame, on the frame "
             "downscaled by s, template tracking between (k = 1, s = 1: detection on every full frame). "
             "Label agreement: share of frames whose label (largest face; no face counts as a label) equals "
             "that of the same backend detecting on every frame; faces found: share of frames with a face.", "",
             *table(["threads", "detector", "backend", "detection k / s", "recognize_video fps", "frame-by-frame fps",
                     "decode ms", "detect ms", "crop ms", "classify ms", "faces found", "label agreement"],
                    [_fps_row(r) for r in rows], "rlllrrrrrrrr")]
    return "\n".join(lines) + "\n"


def _fps_row(r: dict) -> list:
    agree = f"{100 * r['agreement']:.1f} %" if "agreement" in r else "(reference)"
    return [r["threads"], r["detector"], r["backend"], f"{r['detect_every']} / {r['detect_scale']:g}", f"{r['api_fps']:.1f}",
            f"{r['fps']:.1f}", f"{r['decode']:.2f}", f"{r['detect']:.2f}", f"{r['crop']:.2f}", f"{r['classify']:.2f}",
            f"{100 * r['faces_found']:.0f} %", agree]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="default", help="'default' or a .pt weights file / run checkpoint")
    p.add_argument("--calib", default="astronaut", help="INT8 calibration faces when exporting INT8 here")
    p.add_argument("--yunet", default=None, help="YuNet model path (adds the yunet detector)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--detect-every", type=int, default=10, help="tracked runs: detect on every k-th frame")
    p.add_argument("--detect-scale", type=float, default=0.5, help="tracked runs: detection/tracking scale")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--video", default=None, help="use this video instead of the generated one")
    p.add_argument("--out", default="results/video_fps", help="output path without suffix")
    args = p.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="litefer-fps-") as tmp:
        tmp = Path(tmp)
        video = Path(args.video) if args.video else make_video(tmp / "one_face_640x480.mp4", args.frames)
        rows = measure_all(args, video, tmp)
    command = command_line("video_fps.py", argv)
    write(args.out, {"command": command, "rows": rows}, report(rows, args, command, load), load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
