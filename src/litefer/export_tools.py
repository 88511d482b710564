"""``litefer export``: ONNX, static INT8 ONNX and TorchScript files, each checked against torch.

Every exported file carries the weights' metadata (class names, preprocessing, crop framing), so
``litefer.Recognizer`` can run it alone, and every export is compared with the torch model on real
face crops (largest absolute logit difference, top-1 agreement) before it is written.

INT8 uses ONNX Runtime static quantization (QDQ, per-channel signed 8-bit weights, unsigned 8-bit
activations) calibrated on real face crops: dynamic quantization would leave the convolutions in
float and make them about 10x slower on x86. Face sources for calibration, parity and accuracy:

* a FERPlus root (``fer2013.csv[.gz]`` + ``fer2013new.csv``): calibration samples the training
  split, parity samples the validation split, ``--eval-data`` scores the whole validation split;
* a folder of images: small images (at most twice the crop side) are taken as face crops as they
  are, larger ones as photos whose faces are detected and cropped like the recognizer does;
* ``astronaut`` (the default parity source): the face of scikit-image's public-domain astronaut
  photo with a few deterministic variations (mirror, rotation, shift, light, blur).
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .card import Card, card_from_payload, torchscript_extra_files, with_onnx_card
from .inference.align import CropSpec, crop_face
from .inference.backends import OnnxBackend, preprocess_numpy, resolve_weights, softmax
from .inference.inputs import IMAGE_SUFFIXES, InputError, read_image
from .utils import atomic_write_bytes, atomic_write_json, atomic_write_text, hardware_summary

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8", "torchscript")
SUFFIX = {"onnx": ".onnx", "onnx-int8": "_int8.onnx", "torchscript": ".ts"}


class ExportError(RuntimeError):
    """An export failed its parity or accuracy check (message says which and by how much)."""


# ----------------------------------------------------------------------------- face sources

def _is_ferplus_root(path: Path) -> bool:
    return path.is_dir() and (path / "fer2013new.csv").is_file() and any(
        (path / n).is_file() for n in ("fer2013.csv", "fer2013.csv.gz"))


def _to_spec(img_bgr: np.ndarray, spec: CropSpec) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY) if spec.grayscale else cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
    if g.shape[:2] != (spec.size, spec.size):
        shrink = max(g.shape[:2]) > spec.size
        g = cv2.resize(g, (spec.size, spec.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return g[..., None] if g.ndim == 2 else g


def astronaut_faces(spec: CropSpec, n: int = 32) -> np.ndarray:
    """``n`` crops of the astronaut photo's face under deterministic variations of pose and light."""
    import cv2
    from skimage import data

    from .inference.detect import HaarDetector
    from .inference.inputs import array_to_bgr

    photo = array_to_bgr(data.astronaut(), "rgb")
    det = HaarDetector().detect(photo)[0]
    rng = np.random.default_rng(0)
    out = []
    h, w = photo.shape[:2]
    for i in range(n):
        img = photo[:, ::-1] if i % 2 else photo
        d = det
        if i % 2:
            x, y, bw, bh = det.box
            d = type(det)((w - x - bw, y, bw, bh), det.score, None,
                          None if det.eyes is None else np.array([[w - 1 - det.eyes[1][0], det.eyes[1][1]],
                                                                  [w - 1 - det.eyes[0][0], det.eyes[0][1]]]))
        angle = float(rng.uniform(-12, 12)) if i >= 2 else 0.0
        if angle:
            cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
            img = cv2.warpAffine(img, cv2.getRotationMatrix2D((cx, cy), angle, 1.0), (w, h),
                                 borderMode=cv2.BORDER_REFLECT)
        dx, dy, ds = (rng.uniform(-0.06, 0.06, 3) * d.box[2]) if i >= 2 else (0, 0, 0)
        box = (d.box[0] + dx, d.box[1] + dy, d.box[2] + ds, d.box[3] + ds)
        crop, _ = crop_face(np.ascontiguousarray(img), type(det)(box, det.score), spec)
        if i >= 4:
            gain, bias = rng.uniform(0.6, 1.3), rng.uniform(-30, 30)
            crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        if i % 5 == 4:
            crop = cv2.GaussianBlur(crop, (3, 3), 0.8).reshape(crop.shape)
        out.append(crop)
    return np.stack(out)


def folder_faces(folder: Path, spec: CropSpec, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Face crops from a folder: small images are crops already, larger ones are photos to detect in."""
    from .inference.detect import HaarDetector

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no image files to take faces from")
    if n is not None and len(files) > n:
        files = sorted(np.random.default_rng(seed).choice(files, n, replace=False).tolist())
    detector, out, skipped = None, [], []
    for p in files:
        try:
            img = read_image(p)
        except InputError as e:
            skipped.append(str(e))
            continue
        if max(img.shape[:2]) <= 2 * spec.size:
            out.append(_to_spec(img, spec))
            continue
        detector = detector or HaarDetector()
        for d in detector.detect(img):
            out.append(crop_face(img, d, spec)[0])
    if skipped:
        log.warning("%s: skipped %d unreadable image(s); first: %s", folder, len(skipped), skipped[0])
    if not out:
        raise InputError(f"{folder}: no faces found in {len(files)} image(s)")
    out = np.stack(out)
    return out[:n] if n is not None else out


def ferplus_faces(root: Path, split: str, spec: CropSpec, n: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(crops, labels) from a FERPlus split (majority labels); a seeded random sample of ``n``."""
    from .data import load_split

    ds = load_split({"dataset": "ferplus", "root": str(root), "label_mode": "majority"}, split)
    idx = np.arange(len(ds))
    if n is not None and n < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    images = ds.images[idx].numpy()
    if images.shape[1:3] != (spec.size, spec.size) or (images.shape[3] == 1) != spec.grayscale:
        images = np.stack([_to_spec(im if im.shape[2] == 3 else np.repeat(im, 3, 2), spec) for im in images])
    return images, ds.labels[idx].numpy()


def load_faces(source: str, spec: CropSpec, split: str, n: int | None, seed: int = 0) -> np.ndarray:
    if source == "astronaut":
        return astronaut_faces(spec, min(n or 48, 48))
    path = Path(source)
    if _is_ferplus_root(path):
        return ferplus_faces(path, split, spec, n, seed)[0]
    if path.is_dir():
        return folder_faces(path, spec, n, seed)
    raise InputError(f"{source}: not a folder of face images, a FERPlus root or 'astronaut'")


# ----------------------------------------------------------------------------- exports

def load_torch(weights) -> tuple[object, Card, Path]:
    """(model in eval mode, model card, weights path) for ``"default"`` or a weights path."""
    from .weights import load_checkpoint_model

    path, _ = resolve_weights(weights, "torch")
    model, meta = load_checkpoint_model(path)
    return model, card_from_payload(meta, str(path)), path


def export_with_metadata(weights, out: str | os.PathLike, opset: int = 17) -> Path:
    """fp32 ONNX (dynamic batch) with the model card embedded, written atomically."""
    from .export import export_onnx

    model, card, _ = load_torch(weights)
    with tempfile.TemporaryDirectory(prefix="litefer-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        export_onnx(model, raw, card.preprocess["input_size"], card.preprocess["in_chans"], opset=opset)
        atomic_write_bytes(out, with_onnx_card(raw.read_bytes(), card.replace(precision="fp32")))
    return Path(out)


def _LogitsOnly(model):
    """The model called with its input alone (keyword defaults would otherwise be traced as inputs)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return LogitsOnly(model)


def torchscript_bytes(model, card: Card) -> bytes:
    import torch

    pp = card.preprocess
    example = torch.randn(2, pp["in_chans"], pp["input_size"], pp["input_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # torch 2.9+ marks TorchScript deprecated
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(_LogitsOnly(model).eval(), example, check_trace=False))
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files=torchscript_extra_files(card))
    return buf.getvalue()


class _Reader:
    """CalibrationDataReader over preprocessed face crops, in batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32):
        batch = max(1, min(batch, len(x)))
        if len(x) % batch:      # equal batches: the histogram calibrators cannot stack ragged ones
            x = np.concatenate([x, x[: batch - len(x) % batch]])
        self._batches = iter([x[i:i + batch] for i in range(0, len(x), batch)])
        self.input_name = input_name

    def get_next(self):
        b = next(self._batches, None)
        return None if b is None else {self.input_name: b}

    def rewind(self):  # pragma: no cover - unused by MinMax calibration
        pass


def quantize_int8(fp32_onnx: Path, out: Path, calib: np.ndarray, method: str = "minmax",
                  per_channel: bool = True) -> None:
    """Static QDQ INT8 quantization of ``fp32_onnx`` calibrated on preprocessed inputs ``calib``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):
        pass

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="litefer-int8-") as tmp:
        prep = Path(tmp) / "prep.onnx"
        # ONNX's own shape inference (the symbolic one cannot follow the inference form's Resize)
        quant_pre_process(str(fp32_onnx), str(prep), skip_symbolic_shape=True)
        import onnx

        model = onnx.load(str(prep))
        seen: set[str] = set()
        for node in model.graph.node:   # pre-processing inlines HardSwish as unnamed nodes; the quantizer keys on names
            if not node.name or node.name in seen:
                node.name = f"{node.op_type}_{node.output[0]}"
            seen.add(node.name)
        onnx.save(model, str(prep))
        name = model.graph.input[0].name
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)    # the quantizer warns (via the root logger) about 1-D BatchNorm scales
        try:
            quantize_static(str(prep), str(out), Reader(calib.astype(np.float32), name), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method])
        finally:
            root.setLevel(level)


def compare(reference: np.ndarray, got: np.ndarray) -> dict:
    """Largest absolute logit difference, top-1 agreement and largest probability difference."""
    return {"faces": int(len(reference)), "max_abs_diff": float(np.abs(reference - got).max()) if len(got) else 0.0,
            "top1_agreement": float(np.mean(reference.argmax(1) == got.argmax(1))) if len(got) else 1.0,
            "max_prob_diff": float(np.abs(softmax(reference) - softmax(got)).max()) if len(got) else 0.0}


def _torch_logits(model, crops: np.ndarray, pp: dict, batch: int = 256) -> np.ndarray:
    import torch

    from .data.transforms import Preprocess, preprocess

    cfg = Preprocess.from_dict(pp)
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            out.append(model(preprocess(torch.from_numpy(np.ascontiguousarray(crops[i:i + batch])), cfg)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _onnx_logits(path: Path, crops: np.ndarray, batch: int = 256, threads: int | None = None) -> np.ndarray:
    backend = OnnxBackend(path, threads=threads)
    return np.concatenate([backend.logits(crops[i:i + batch]) for i in range(0, len(crops), batch)])


def _ts_logits(data: bytes, crops: np.ndarray, pp: dict, batch: int = 256) -> np.ndarray:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return _torch_logits(model, crops, pp, batch)


def export(weights, fmt: str, out: str | os.PathLike | None = None, faces: str = "astronaut",
           calib: str | None = None, calib_size: int = 1000, parity_size: int = 512, eval_data: str | None = None,
           calib_method: str = "minmax", opset: int = 17, max_diff: float | None = None,
           min_agreement: float | None = None, max_accuracy_drop: float = 1.0, force: bool = False,
           threads: int | None = None) -> dict:
    """Export, check, write. Returns a report dict; raises ExportError when a check fails (nothing
    is written then, unless ``force``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    from .export import export_onnx

    t0 = time.time()
    model, card, src = load_torch(weights)
    spec = CropSpec.from_card(card)
    pp = card.preprocess
    out = Path(out) if out else src.with_name(src.stem + SUFFIX[fmt])
    max_diff = max_diff if max_diff is not None else (None if fmt == "onnx-int8" else 1e-3)
    min_agreement = min_agreement if min_agreement is not None else (0.9 if fmt == "onnx-int8" else 0.99)
    report = {"weights": str(src), "format": fmt, "output": str(out), "model_name": card.model_name,
              "hardware": hardware_summary(),
              "input_size": pp["input_size"], "opset": opset if fmt != "torchscript" else None}

    parity_faces = load_faces(faces, spec, "val", parity_size, seed=1)
    reference = _torch_logits(model, parity_faces, pp)
    with tempfile.TemporaryDirectory(prefix="litefer-export-") as tmp:
        tmp = Path(tmp)
        if fmt == "torchscript":
            data = torchscript_bytes(model, card.replace(precision="fp32"))
            got = _ts_logits(data, parity_faces, pp)
        else:
            fp32 = tmp / "fp32.onnx"
            export_onnx(model, fp32, pp["input_size"], pp["in_chans"], opset=opset)
            fp32.write_bytes(with_onnx_card(fp32.read_bytes(), card.replace(precision="fp32")))
            final = fp32
            if fmt == "onnx-int8":
                if not calib:
                    raise ValueError("onnx-int8 needs calibration faces: --calib FERPLUS_ROOT or a folder of face "
                                     "images/photos (real faces; a few hundred to a thousand)")
                calib_faces = load_faces(calib, spec, "train", calib_size, seed=2)
                report["calibration"] = {"source": calib, "faces": int(len(calib_faces)), "method": calib_method}
                final = tmp / "int8.onnx"
                quantize_int8(fp32, final, preprocess_numpy(calib_faces, pp), calib_method)
                final.write_bytes(with_onnx_card(final.read_bytes(), card.replace(precision="int8")))
            data = final.read_bytes()
            got = _onnx_logits(final, parity_faces, threads=threads)
        report["parity"] = {"source": faces, **compare(reference, got)}
        report["bytes"] = len(data)
        if eval_data:
            report["accuracy"] = _accuracy(model, card, Path(eval_data), fmt, tmp, data, threads)
        failures = _check(report, max_diff, min_agreement, max_accuracy_drop)
        report["checks"] = {"max_diff": max_diff, "min_agreement": min_agreement,
                            "max_accuracy_drop_points": max_accuracy_drop if eval_data else None,
                            "failures": failures}
        report["seconds"] = round(time.time() - t0, 1)
        if failures and not force:
            raise ExportError(f"{out}: not written, check failed: " + "; ".join(failures))
        atomic_write_bytes(out, data)
    return report


def _accuracy(model, card: Card, root: Path, fmt: str, tmp: Path, data: bytes, threads) -> dict:
    """Top-1 accuracy of torch and of the export on the FERPlus validation split (model card TTA)."""
    if not _is_ferplus_root(root):
        raise InputError(f"{root}: --eval-data must be a FERPlus root (fer2013.csv[.gz] + fer2013new.csv)")
    spec, pp, tta = CropSpec.from_card(card), card.preprocess, card.tta_flip
    crops, labels = ferplus_faces(root, "val", spec)

    def score(logit_fn):
        logits = logit_fn(crops)
        if tta:
            logits = (logits + logit_fn(np.ascontiguousarray(crops[:, :, ::-1]))) / 2
        return float(np.mean(logits.argmax(1) == labels))

    acc = {"split": "FERPlus val (PublicTest, majority labels)", "images": int(len(labels)), "tta_flip": tta,
           "torch": score(lambda c: _torch_logits(model, c, pp))}
    if fmt == "torchscript":
        acc["export"] = score(lambda c: _ts_logits(data, c, pp))
    else:
        path = tmp / "eval.onnx"
        path.write_bytes(data)
        if fmt == "onnx-int8":
            fp32 = tmp / "fp32.onnx"
            acc["onnx_fp32"] = score(lambda c: _onnx_logits(fp32, c, threads=threads))
        acc["export"] = score(lambda c: _onnx_logits(path, c, threads=threads))
    return acc


def _check(report: dict, max_diff, min_agreement, max_drop) -> list[str]:
    p, failures = report["parity"], []
    if max_diff is not None and p["max_abs_diff"] > max_diff:
        failures.append(f"max abs logit difference {p['max_abs_diff']:.2e} > {max_diff:.0e}")
    if min_agreement is not None and p["top1_agreement"] < min_agreement:
        failures.append(f"top-1 agreement {p['top1_agreement']:.3f} < {min_agreement}")
    acc = report.get("accuracy")
    if acc and max_drop is not None:
        base = acc.get("onnx_fp32", acc["torch"])
        drop = 100 * (base - acc["export"])
        if drop > max_drop:
            failures.append(f"accuracy drop {drop:.2f} points > {max_drop} (fp32 {100 * base:.2f} %, "
                            f"export {100 * acc['export']:.2f} %)")
    return failures


def markdown(report: dict) -> str:
    p = report["parity"]
    lines = [f"# litefer export: {report['format']}", "",
             f"- command: `litefer {' '.join(sys.argv[1:])}`" if sys.argv[1:2] == ["export"] else
             "- made by `litefer.export_tools.export`",
             f"- weights: `{report['weights']}` ({report['model_name']}, input {report['input_size']} px)",
             f"- output: `{report['output']}` ({report['bytes'] / 1e6:.2f} MB)",
             f"- hardware: {report.get('hardware', 'not recorded')}"]
    if "calibration" in report:
        c = report["calibration"]
        lines.append(f"- calibration: {c['faces']} face crops from `{c['source']}`, {c['method']}")
    lines += ["", "| check | value |", "|---|---|",
              f"| parity faces (`{p['source']}`) | {p['faces']} |",
              f"| max abs logit difference vs torch | {p['max_abs_diff']:.3g} |",
              f"| max probability difference | {p['max_prob_diff']:.3g} |",
              f"| top-1 agreement with torch | {100 * p['top1_agreement']:.2f} % |"]
    acc = report.get("accuracy")
    if acc:
        lines += [f"| accuracy, {acc['split']}, {acc['images']} images{' (flip TTA)' if acc['tta_flip'] else ''}: "
                  f"torch fp32 | {100 * acc['torch']:.2f} % |"]
        if "onnx_fp32" in acc:
            lines.append(f"| accuracy: ONNX Runtime fp32 | {100 * acc['onnx_fp32']:.2f} % |")
        lines.append(f"| accuracy: this export | {100 * acc['export']:.2f} % |")
    fails = report["checks"]["failures"]
    lines += ["", f"Checks: {'FAILED: ' + '; '.join(fails) if fails else 'passed'} "
              f"(limits: max diff {report['checks']['max_diff']}, min agreement {report['checks']['min_agreement']}, "
              f"max accuracy drop {report['checks']['max_accuracy_drop_points']} points).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="weights file or run checkpoint (.pt), or 'default' for the packaged model")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    p.add_argument("--out", default=None, help="output file (default: next to the checkpoint, "
                                                "<stem>.onnx / <stem>_int8.onnx / <stem>.ts)")
    p.add_argument("--faces", default="astronaut",
                   help="real faces for the parity check: a FERPlus root, a folder of face images or photos, "
                        "or 'astronaut' (built in; default)")
    p.add_argument("--calib", default=None, help="onnx-int8: calibration faces (FERPlus root or folder)")
    p.add_argument("--calib-size", type=int, default=1000, help="calibration faces to sample (default 1000)")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--parity-size", type=int, default=512, help="parity faces to sample (default 512)")
    p.add_argument("--eval-data", default=None,
                   help="FERPlus root: also report accuracy of torch and the export on the validation split")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--max-diff", type=float, default=None,
                   help="fail when the max abs logit difference exceeds this (default 1e-3; none for INT8)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="fail below this top-1 agreement with torch (default 0.99; 0.90 for INT8)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="with --eval-data: fail when the export loses more accuracy points than this (default 1)")
    p.add_argument("--force", action="store_true", help="write the file even when a check fails")
    p.add_argument("--report", default=None, help="also write the report here (.md or .json)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for the checks")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export(args.checkpoint, args.format, args.out, faces=args.faces, calib=args.calib,
                        calib_size=args.calib_size, parity_size=args.parity_size, eval_data=args.eval_data,
                        calib_method=args.calib_method, opset=args.opset, max_diff=args.max_diff,
                        min_agreement=args.min_agreement, max_accuracy_drop=args.max_accuracy_drop,
                        force=args.force, threads=args.threads)
    except ExportError as e:
        print(f"litefer export: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, InputError) as e:
        print(f"litefer export: error: {e}", file=sys.stderr)
        return 2
    text = markdown(report)
    print(text)
    if args.report:
        if str(args.report).endswith(".json"):
            atomic_write_json(args.report, report)
        else:
            atomic_write_text(args.report, text)
    return 1 if report["checks"]["failures"] else 0
