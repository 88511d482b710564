"""Evaluation: batched prediction (optionally with flip TTA) and metrics, through torch or an inference
backend (ONNX Runtime); ``litefer eval`` (:mod:`litefer.cli.eval`) is :func:`evaluate_weights`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import FaceDataset, Preprocess, preprocess
from .metrics import classification_report

log = logging.getLogger(__name__)


@torch.no_grad()
def _predict(model: torch.nn.Module, dataset: FaceDataset, pp: Preprocess, forward, width: int,
             batch_size: int = 256, device="cpu", tta_flip: bool = False, channels_last: bool = False,
             autocast_dtype=None) -> torch.Tensor:
    """``forward(model, x)`` for every image of ``dataset`` in order (mean over image and mirror when
    ``tta_flip``), in eval mode, as float32 on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        x = preprocess(dataset.images[start:start + batch_size], pp, device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            y = forward(model, x).float()
            if tta_flip:
                y = (y + forward(model, x.flip(3)).float()) / 2
        out.append(y)                     # stays on the device: one copy to the host at the end
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0, width)


def predict_logits(model: torch.nn.Module, dataset: FaceDataset, pp: Preprocess, **kwargs) -> torch.Tensor:
    """Logits for every image of ``dataset`` in order (mean of image and mirror when ``tta_flip``)."""
    return _predict(model, dataset, pp, lambda m, x: m(x), dataset.num_classes, **kwargs)


def predict_embeddings(model: torch.nn.Module, dataset: FaceDataset, pp: Preprocess, **kwargs) -> torch.Tensor:
    """The head's embedding (where the centre and triplet losses act) for every image, in order."""
    return _predict(model, dataset, pp, lambda m, x: m.forward_features(x), model.embedding_dim, **kwargs)


def class_means(model: torch.nn.Module, dataset: FaceDataset, pp: Preprocess, normalize: bool = False,
                **kwargs) -> torch.Tensor:
    """Per-class mean embedding of ``dataset`` (K, D), no augmentation; NaN rows for absent classes.

    The prototypes of a model trained without the softmax loss (triplet alone, Table 6);
    ``normalize`` averages unit-length embeddings, the space a normalised triplet loss shapes."""
    emb = predict_embeddings(model, dataset, pp, **kwargs)
    if normalize:
        emb = F.normalize(emb, dim=1)
    k = dataset.num_classes
    sums = torch.zeros(k, emb.shape[1]).index_add_(0, dataset.labels, emb)
    counts = torch.bincount(dataset.labels, minlength=k).float().unsqueeze(1)
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))


def prototype_scores(embeddings: torch.Tensor, prototypes: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Class scores -1/2 ||e - p_k||^2: the arg-max is the nearest prototype, and a softmax over them
    gives a cross-entropy (the validation loss the plateau schedule watches). Prototypes with NaN
    rows (classes absent from training) score -inf. ``normalize`` scores unit-length embeddings."""
    protos = prototypes.float()
    if normalize:
        embeddings = F.normalize(embeddings.float(), dim=1)
    missing = torch.isnan(protos).any(1)
    scores = -0.5 * torch.cdist(embeddings.float(), torch.nan_to_num(protos)).pow(2)
    return scores.masked_fill(missing.unsqueeze(0), float("-inf"))


def evaluate(model, dataset: FaceDataset, pp: Preprocess, prototypes: torch.Tensor | None = None,
             normalize: bool = False, **kwargs) -> dict:
    """Metrics report plus the cross-entropy on the data set (the scheduler's validation loss).

    With ``prototypes`` (K, D) the model is a nearest-prototype classifier on its embedding (learned
    centres or training class means; unit-length embeddings with ``normalize``) instead of its logits."""
    if prototypes is None:
        logits = predict_logits(model, dataset, pp, **kwargs)
    else:
        logits = prototype_scores(predict_embeddings(model, dataset, pp, **kwargs), prototypes, normalize)
    report = classification_report(dataset.labels.numpy(), logits.argmax(1).numpy(), dataset.class_names)
    report["loss"] = float(F.cross_entropy(logits, dataset.labels)) if len(dataset) else float("nan")
    return report


def plot_confusion(report: dict, path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from ..utils import atomic_write_bytes

    cm = np.asarray(report["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(names), 1 + 0.7 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or f"accuracy {report['accuracy']:.3f}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def prior_reports(logits: torch.Tensor, labels, class_names, priors: dict) -> dict:
    """One classification report per prior: ``priors`` maps a name to what it adds to the logits
    (None: the model's own probabilities)."""
    out = {}
    for name, adjust in priors.items():
        scores = logits if adjust is None else logits + torch.as_tensor(adjust, dtype=logits.dtype)
        out[name] = classification_report(np.asarray(labels), scores.argmax(1).numpy(), class_names)
    return out


def prior_summary(report: dict) -> dict:
    """The figures a model card keeps from a report: accuracy, mean class accuracy, macro-F1, recall."""
    return {"accuracy": report["accuracy"], "mean_class_accuracy": report["mean_class_accuracy"],
            "macro_f1": report["macro_f1"], "per_class_recall": {r["class"]: r["recall"] for r in report["per_class"]}}


def eval_data_config(meta: dict, card, data: str | None, dataset: str | None, label_mode: str | None) -> dict:
    """The data section ``litefer eval`` reads: the checkpoint's (or its card's) with the command's
    overrides; FERPlus is scored on majority labels (the paper's split) unless told otherwise."""
    data_cfg = dict(meta.get("config", {}).get("data") or card.info.get("data") or {})
    data_cfg.pop("majority_rows", None)
    if data:
        data_cfg["root"] = data
    if dataset:
        data_cfg["dataset"] = dataset
    if data_cfg.get("dataset") == "ferplus":
        data_cfg["label_mode"] = label_mode or "majority"
    elif label_mode:
        raise ValueError(f"--label-mode applies to FERPlus only, not {data_cfg.get('dataset')!r}")
    for key, value in (("image_size", 100), ("val_fraction", 0.1), ("split_seed", 0)):
        data_cfg.setdefault(key, value)
    return data_cfg


def _priors(card, model_classifier: str) -> tuple[dict, str | None]:
    """The priors to score: always ``dataset``; recognition's default ``balanced:0.5`` and ``balanced``
    when the card stores a training prior."""
    from ..prior import log_weights, offered_priors

    if model_classifier != "logits":
        return {"dataset": None}, "the model classifies by prototypes, not logits: no prior adjustment"
    if not card.class_prior:
        return {"dataset": None}, f"{card.source}: no stored training class prior, so no 'balanced' figures"
    return {name: log_weights(name, card) for name in offered_priors(card)}, None


def eval_split(card, data_cfg: dict, split: str, channels: int):
    """The split to score, checked to hold the model's classes in its output order."""
    from ..data import load_split

    if data_cfg["dataset"] == "folder" and data_cfg.get("faces", "crop") != "crop":
        return photo_split(card, data_cfg, split)
    ds = load_split(data_cfg, split, channels=1 if data_cfg["dataset"] == "ferplus" else channels)
    if tuple(ds.class_names) != tuple(card.class_names):
        raise ValueError(f"data classes {ds.class_names} differ from the model's {list(card.class_names)}")
    return ds


def photo_split(card, data_cfg: dict, split: str) -> FaceDataset:
    """A class folder of whole photos (``faces``: ``photo``, or ``auto`` for photos and crops mixed)
    framed as ``litefer predict`` frames them, with the detector ``data_cfg["detector"]`` names; the
    validation split is carved from the faces found, stratified like a folder of crops. Files without
    one face (``pick="largest"``: at least one) are skipped and reported."""
    from ..data import folder_split_root
    from ..data.base import stratified_split
    from ..inference.detect import create_detector
    from .faces_folder import frame_folder

    root, carve = folder_split_root(data_cfg, split)
    detector = create_detector(data_cfg.get("detector", "auto"), min_size=data_cfg.get("min_face"),
                               model_path=data_cfg.get("yunet_model"))
    folder = frame_folder(root, card, detector, data_cfg["faces"], data_cfg.get("pick", "none"),
                          classes=list(card.class_names))
    index = np.arange(len(folder.labels))
    if carve and split in ("train", "val"):
        keep, held = stratified_split(folder.labels, data_cfg["val_fraction"], data_cfg["split_seed"])
        index = held if split == "val" else keep
    skipped = [f"{s['file']}: {s['reason']}" for s in folder.skipped]
    return folder.subset(index, f"folder/{split}", {"skipped": skipped, "detector": detector.name,
                                                    "decisions": dict(folder.decisions)})


def split_report(logits: torch.Tensor, ds: FaceDataset, card, classifier: str, data_cfg: dict, split: str,
                 tta: bool) -> dict:
    """Report on one split's logits: prior=dataset figures at the top level, every prior under ``priors``."""
    priors, note = _priors(card, classifier)
    reports = prior_reports(logits, ds.labels.numpy(), ds.class_names, priors)
    report = dict(reports["dataset"])
    report["loss"] = float(F.cross_entropy(logits, ds.labels)) if len(ds) else float("nan")
    report.update({"classifier": classifier, "split": split, "tta_flip": tta, "data": data_cfg["root"],
                   "label_mode": data_cfg.get("label_mode"),
                   "priors": {k: {**prior_summary(r), "confusion": r["confusion"]} for k, r in reports.items()},
                   "prior_note": note, "skipped": list(ds.info.get("skipped", [])),
                   "detector": ds.info.get("detector"), "framing": ds.info.get("decisions")})
    return report


def score_split(model, meta: dict, card, data_cfg: dict, split: str, tta: bool, batch_size: int = 256,
                device="cpu") -> dict:
    """Report on one split, scored by the torch ``model`` (logits, or its prototypes when it has them)."""
    pp = Preprocess.from_dict(meta["preprocess"])
    ds = eval_split(card, data_cfg, split, pp.in_chans)
    kwargs = {"batch_size": batch_size, "device": device, "tta_flip": tta}
    prototypes = meta.get("prototypes")        # models trained without the softmax loss (Table 6)
    if prototypes is None:
        logits = predict_logits(model, ds, pp, **kwargs)
    else:
        emb = predict_embeddings(model, ds, pp, **kwargs)
        logits = prototype_scores(emb, prototypes, bool(meta.get("prototypes_normalized")))
    return split_report(logits, ds, card, meta.get("classifier", "logits"), data_cfg, split, tta)


def backend_logits(backend, ds: FaceDataset, tta: bool, batch_size: int = 256) -> torch.Tensor:
    """An inference backend's logits for every face of ``ds`` (its uint8 images as stored), in order."""
    images = ds.images.numpy()
    out = [backend.logits(images[i:i + batch_size], tta_flip=tta) for i in range(0, len(images), batch_size)]
    return torch.from_numpy(np.concatenate(out)).float() if out else torch.zeros(0, ds.num_classes)


def score_split_backend(backend, data_cfg: dict, split: str, tta: bool, batch_size: int = 256) -> dict:
    """Report on one split, scored through an inference backend as ``litefer predict`` runs the model.

    Faces load in RGB (grey for FERPlus); the backend's own preprocessing maps them to the model's
    channels, as it does for crops from photos."""
    ds = eval_split(backend.card, data_cfg, split, 3)
    return split_report(backend_logits(backend, ds, tta, batch_size), ds, backend.card, "logits", data_cfg,
                        split, tta)


def evaluate_weights(weights="default", data: str | None = None, dataset: str | None = None, split: str = "val",
                     label_mode: str | None = None, tta: bool | None = None, backend: str | None = None,
                     batch_size: int = 256, device: str = "cpu", threads: int | None = None,
                     photos: dict | None = None) -> dict:
    """Score weights on a data set split (``tta=None``: as the model card says); the ``litefer eval``
    report. ``backend=None``: onnxruntime for the packaged model and .onnx files, torch for .pt files
    (:func:`litefer.inference.files.resolve_weights`, as for recognition). ``photos``: how a class
    folder of whole photos is framed (:func:`photo_split`: ``faces``, ``detector``, ``yunet_model``,
    ``min_face``, ``pick``); None or ``faces="crop"``: its images are the face crops."""
    from ..inference.files import resolve_weights

    _, backend = resolve_weights(weights, backend)
    if backend == "torch":
        return _evaluate_torch(weights, data, dataset, split, label_mode, tta, batch_size, device, threads, photos)
    from ..inference.backends import create_backend

    _check_logits_model(weights)
    runner = create_backend(weights, backend, device, threads)
    card = runner.card
    data_cfg = _data_config({}, card, data, dataset, label_mode, photos)
    tta = card.tta_flip if tta is None else tta
    report = score_split_backend(runner, data_cfg, split, tta, batch_size)
    return _describe(report, weights, card.source, card, backend)


def _check_logits_model(weights) -> None:
    """ONNX Runtime runs the network's logits: a model that classifies by prototypes (Table 6) needs torch."""
    from ..card import read_weights

    path = Path(str(weights))
    if path.suffix.lower() in (".pt", ".pth") and read_weights(path).get("prototypes") is not None:
        raise ValueError(f"{path}: the model classifies by prototypes, which only --backend torch scores")


def _evaluate_torch(weights, data, dataset, split, label_mode, tta, batch_size, device, threads, photos) -> dict:
    from ..card import card_from_payload
    from ..inference.files import resolve_weights
    from ..weights import load_checkpoint_model

    if threads:
        torch.set_num_threads(int(threads))
    path, _ = resolve_weights(weights, "torch")         # "default" is the packaged model
    model, meta = load_checkpoint_model(path, device=device)
    card = card_from_payload(meta, str(path))
    data_cfg = _data_config(meta, card, data, dataset, label_mode, photos)
    tta = card.tta_flip if tta is None else tta
    report = score_split(model, meta, card, data_cfg, split, tta, batch_size, device)
    return _describe(report, weights, path, card, "torch")


def _data_config(meta: dict, card, data, dataset, label_mode, photos: dict | None = None) -> dict:
    data_cfg = eval_data_config(meta, card, data, dataset, label_mode)
    if "root" not in data_cfg or "dataset" not in data_cfg:
        raise ValueError(f"{card.source}: the weights name no data set; pass --data and --dataset")
    if photos and photos.get("faces", "crop") != "crop":
        if data_cfg["dataset"] != "folder":
            raise ValueError(f"--faces {photos['faces']} applies to --dataset folder only, not {data_cfg['dataset']!r}")
        data_cfg.update(photos)
    return data_cfg


def _describe(report: dict, weights, path, card, backend: str) -> dict:
    report.update(checkpoint=str(weights), weights=str(path), model_name=card.model_name, backend=backend,
                  input_size=card.preprocess.input_size, class_prior=card.class_prior)
    return report


def format_priors(report: dict) -> str:
    lines = []
    for name, r in report["priors"].items():
        recall = "  ".join(f"{c} {v:.3f}" for c, v in r["per_class_recall"].items())
        lines.append(f"prior={name}: accuracy {r['accuracy']:.4f}  mean class acc {r['mean_class_accuracy']:.4f}  "
                     f"macro-F1 {r['macro_f1']:.4f}\n  recall: {recall}")
    if report.get("prior_note"):
        lines.append(f"({report['prior_note']})")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _runtime(backend: str) -> str:
    if backend == "onnxruntime":
        import onnxruntime

        return f"ONNX Runtime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def markdown_report(report: dict, command: str, hardware: str) -> str:
    """The per-prior figures of a report as a results page: overall accuracy, mean class accuracy,
    macro-F1 and per-class recall for every prior, with the command and hardware that made them."""
    names = list(report["priors"])
    support = {r["class"]: r["support"] for r in report["per_class"]}
    prior = report.get("class_prior") or {}
    head = [f"# `litefer eval`: {report.get('model_name')} on {report['split']}, every prior", "",
            f"- command: `{command}`",
            f"- weights: `{report['weights']}` ({report.get('model_name')}, {report.get('input_size')} px input)",
            f"- data: `{report['data']}`, split `{report['split']}`, labels `{report.get('label_mode')}`, "
            f"{report['n']} images, flip TTA {'on' if report['tta_flip'] else 'off'}",
            f"- hardware: {hardware}; scored by {_runtime(report.get('backend', 'torch'))}", "",
            "`prior=dataset` is the model's own probabilities; `prior=balanced` divides the training split's "
            "class frequencies (stored in the model card, column *train share*) out of them (logit "
            "adjustment: softmax(logits - log prior)); `prior=balanced:0.5`, recognition's default, half of that "
            "(softmax(logits - 0.5 log prior)).", ""]
    rows = ["| | " + " | ".join(f"prior={n}" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in (("accuracy", "accuracy"), ("mean_class_accuracy", "mean class accuracy")):
        rows.append(f"| {label} | " + " | ".join(_pct(report["priors"][n][key]) for n in names) + " |")
    rows.append("| macro-F1 | " + " | ".join(f"{report['priors'][n]['macro_f1']:.3f}" for n in names) + " |")
    rows += ["", "Recall per class:", "", "| class | images | train share | " +
             " | ".join(f"prior={n}" for n in names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    for c in report["class_names"]:
        share = _pct(prior[c]) if c in prior else "–"
        rows.append(f"| {c} | {support[c]} | {share} | " +
                    " | ".join(_pct(report["priors"][n]["per_class_recall"][c]) for n in names) + " |")
    note = ["", f"({report['prior_note']})"] if report.get("prior_note") else []
    return "\n".join(head + rows + note) + "\n"
