"""The model card: what a weights file says about itself, in one place and without torch.

A card holds the model name, the class names in output order, the preprocessing, the face crop the
model expects, whether its figures use flip TTA, the class frequencies of its training split (the
prior that ``prior="balanced"`` divides out) and, for packaged weights, provenance and validation
figures. Where it lives, and what :func:`read_card` reads:

* a packaged weights file (``litefer package``): the ``card`` entry of the ``.pt``, and the same card
  as a sidecar ``<stem>.json`` beside it;
* a run checkpoint (``best.pt``, ``last.pt``): no card entry; the card is derived from the
  checkpoint's own fields (``class_names``, ``preprocess``, ``config``, ``val``, ``epoch``);
* an exported ONNX file: the ``litefer`` entry of its metadata (else a ``.json`` sidecar), read
  from the protobuf directly (``litefer.onnxproto``), without the ``onnx`` package;
* an exported TorchScript file: its ``extra/litefer.json`` archive member.

Every writer of a card goes through :func:`write_json`, :func:`write_onnx` or
:func:`torchscript_extra_files` (the ``.pt`` writer, which needs torch, is ``litefer.weights``).
Torch is imported only to open a ``.pt`` file; ``preprocess`` is a :class:`litefer.preprocess.Preprocess`.
"""
from __future__ import annotations

import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from .onnxproto import ProtoError, read_metadata, with_metadata
from .preprocess import Preprocess
from .utils import atomic_write_bytes, atomic_write_json, require

FORMAT = "litefer-card/1"
META_KEY = "litefer"                     # ONNX metadata_props key / TorchScript extra file stem
TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit")
FER2013_SIDE = 48                        # FER2013 stores 48 x 48 grey faces
# old spellings of card fields (litefer-export/1 metadata, sidecars written before litefer-card/1)
ALIASES = {"model": "model_name", "classes": "class_names"}
# what every .pt weights file holds besides its optional card (``litefer.weights`` writes them)
WEIGHTS_FIELDS = ("model_name", "num_classes", "class_names", "preprocess", "state_dict")


class CardError(ValueError):
    """A weights file's card is missing or malformed; the message names the file."""


@dataclass
class Card:
    """What a weights file says about itself; ``info`` holds everything else (provenance, figures)."""

    model_name: str | None
    class_names: list[str]
    preprocess: Preprocess
    crop: dict = field(default_factory=dict)      # CropSpec fields; absent ones take CropSpec's defaults
    tta_flip: bool = False
    class_prior: dict[str, float] | None = None   # training split's class frequencies, summing to 1
    precision: str = "fp32"
    epoch: int | None = None
    val_accuracy: float | None = None
    info: dict = field(default_factory=dict)
    source: str = ""                              # the file the card was read from (for messages)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        out = {"format": FORMAT, "model_name": self.model_name, "num_classes": self.num_classes}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("info", "source")})
        out["preprocess"] = self.preprocess.to_dict()
        return {**out, **{k: v for k, v in self.info.items() if k not in out}}

    def replace(self, **changes) -> "Card":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Card(**{**values, **changes})

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "Card":
        """From a card dict of any litefer version (litefer-card/1, litefer-export/1, older sidecars)."""
        if not isinstance(d, dict):
            raise CardError(f"{source}: the model card is a {type(d).__name__}, not a mapping")
        d = {ALIASES.get(k, k): v for k, v in d.items()}
        missing = [k for k in ("class_names", "preprocess") if not d.get(k)]
        if missing:
            raise CardError(f"{source}: the model card has no {missing}")
        known = {f.name for f in fields(cls)} - {"info", "source"}
        info = {k: v for k, v in d.items() if k not in known and k not in ("format", "num_classes")}
        try:
            preprocess = Preprocess.from_dict(d["preprocess"])
        except ValueError as e:
            raise CardError(f"{source}: {e}") from None
        card = cls(model_name=d.get("model_name"), class_names=[str(c) for c in d["class_names"]],
                   preprocess=preprocess, crop=dict(d.get("crop") or {}),
                   tta_flip=bool(d.get("tta_flip", _tta_from_validation(d))),
                   class_prior=d.get("class_prior"), precision=str(d.get("precision") or "fp32"),
                   epoch=d.get("epoch", d.get("selected_epoch")), val_accuracy=_val_accuracy(d),
                   info=info, source=str(source))
        if not card.crop:
            card.crop = infer_crop((d.get("data") or {}), card.preprocess)
        check_prior(card)
        return card


def _val_accuracy(d: dict) -> float | None:
    if d.get("val_accuracy") is not None:
        return d["val_accuracy"]
    validation = d.get("validation") or {}
    return validation.get("accuracy_tta_flip", validation.get("accuracy"))


def _tta_from_validation(d: dict) -> bool:
    """Cards written before ``tta_flip`` was a field named their TTA accuracy ``accuracy_tta_flip``."""
    return "accuracy_tta_flip" in (d.get("validation") or {})


def infer_crop(data: dict, preprocess: Preprocess) -> dict:
    """The crop a model trained on ``data`` (a config's data section) expects: FERPlus faces are
    FER2013's 48 x 48 grey crops; other data sets are held at ``image_size``, in colour unless the
    model takes one channel."""
    if data.get("dataset", "ferplus") == "ferplus":
        return {"size": FER2013_SIDE, "grayscale": True}
    return {"size": int(data.get("image_size", preprocess.input_size)), "grayscale": preprocess.in_chans == 1}


def check_prior(card: Card) -> None:
    """A stored prior names exactly the card's classes with non-negative finite frequencies."""
    prior = card.class_prior
    if prior is None:
        return
    if not isinstance(prior, dict) or sorted(prior) != sorted(card.class_names):
        raise CardError(f"{card.source}: class_prior must name exactly the classes {card.class_names}, "
                        f"found {sorted(prior) if isinstance(prior, dict) else prior!r}")
    bad = [k for k, v in prior.items() if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0]
    if bad:
        raise CardError(f"{card.source}: class_prior has invalid frequencies for {bad}")


# ----------------------------------------------------------------------------- from weights payloads

def card_from_payload(payload: dict, source: str = "") -> Card:
    """The card of a weights file's contents (``torch.load`` of a ``.pt``, state dict ignored).

    A packaged file carries a ``card``; a run checkpoint's card is derived from its config and
    validation report. The payload's own class names and preprocessing always win.
    """
    base = {k: payload[k] for k in ("model_name", "class_names", "preprocess") if k in payload}
    if isinstance(payload.get("card"), dict):
        return Card.from_dict({**payload["card"], **base}, source)
    config = payload.get("config") or {}
    val = payload.get("val") if isinstance(payload.get("val"), dict) else {}
    d = {**base, "data": config.get("data") or {}, "epoch": payload.get("epoch"),
         "val_accuracy": val.get("accuracy"),
         "tta_flip": payload.get("tta_flip", (config.get("run") or {}).get("tta_flip", False))}
    for key in ("crop", "class_prior"):
        if key in payload:
            d[key] = payload[key]
    return Card.from_dict(d, source)


# ----------------------------------------------------------------------------- reading files

def read_card(path: str | os.PathLike) -> Card:
    """The card of a weights file (``.pt``), an export (``.onnx``, TorchScript) or a sidecar ``.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json_card(path)
    if suffix == ".onnx":
        meta = onnx_metadata(path)
        if meta is None:
            return _sidecar_or_error(path, "ONNX file has no litefer metadata (class names, preprocessing); "
                                           "export it with `litefer export`")
        return Card.from_dict(meta, str(path))
    if suffix in TORCHSCRIPT_SUFFIXES:
        return Card.from_dict(_torchscript_metadata(path), str(path))
    return card_from_payload(read_weights(path), str(path))


def _read_json_card(path: Path) -> Card:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CardError(f"{path}: not a readable model card ({e})") from None
    return Card.from_dict(d, str(path))


def _sidecar_or_error(path: Path, message: str) -> Card:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return _read_json_card(sidecar)
    raise CardError(f"{path}: {message}")


def onnx_metadata(path: str | os.PathLike) -> dict | None:
    """The litefer metadata embedded in an ONNX file, or None; the one reader of ONNX metadata."""
    try:
        props = read_metadata(Path(path).read_bytes())
    except (OSError, ProtoError) as e:
        raise CardError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    if META_KEY not in props:
        return None
    try:
        return json.loads(props[META_KEY])
    except ValueError as e:
        raise CardError(f"{path}: its litefer metadata is not JSON ({e})") from None


def require_torch(path: str | os.PathLike):
    """torch, or :class:`litefer.utils.MissingExtra` naming the weights file that needs it and the way out."""
    return require("torch", "train", f"{path}: this weights file",
                   f"or turn it into an .onnx file once where torch is installed (`litefer export --weights {path}`)")


def read_torch_file(path: str | os.PathLike, what: str = "weights file", trusted: bool = False):
    """``torch.load`` of a ``.pt`` file onto the CPU, the one place litefer calls it: a file that
    cannot be read is a one-line ValueError naming it, not torch's paragraphs of advice. Only
    ``trusted`` files (a run's own ``last.pt``, which holds RNG states) may hold Python objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    torch = require_torch(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:  # torch raises several types for corrupt archives
        raise ValueError(f"{path}: not a readable PyTorch {what} ({_torch_load_failure(path, e)})") from None


def _torch_load_failure(path: Path, e: Exception) -> str:
    """Why ``torch.load`` failed, in a few words."""
    if not zipfile.is_zipfile(path):                # torch.save writes zip archives
        return "not a PyTorch archive: truncated, corrupt or another kind of file"
    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return f"it holds Python objects{what} besides tensors and plain data, which litefer does not load: they could run code"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


def read_weights(path: str | os.PathLike) -> dict:
    """The payload of a ``.pt`` weights file or run checkpoint (a run's ``last.pt`` gives its selected
    weights); the one reader of litefer's weights files. Needs torch (``litefer[train]``)."""
    payload = read_torch_file(path)
    state = payload.get("state") if isinstance(payload, dict) else None
    if isinstance(state, dict) and isinstance(state.get("best"), dict):
        payload = state["best"]         # a run's last.pt holds the selected weights in its loop state
    missing = [k for k in WEIGHTS_FIELDS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ValueError(f"{path}: not a litefer weights file (missing {missing})")
    return payload


def _torchscript_metadata(path: Path) -> dict:
    """``extra/litefer.json`` of a TorchScript archive (a zip file), read without torch."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CardError(f"{path}: not a readable TorchScript file ({type(e).__name__}: {e})") from None
    with archive:
        member = next((n for n in archive.namelist() if n.endswith(f"/extra/{META_KEY}.json")), None)
        if member is None:
            raise CardError(f"{path}: TorchScript file has no litefer metadata (export it with `litefer export`)")
        try:
            return json.loads(archive.read(member))
        except ValueError as e:
            raise CardError(f"{path}: its litefer metadata is not JSON ({e})") from None


# ----------------------------------------------------------------------------- writing

def write_json(card: Card, path: str | os.PathLike) -> None:
    """The card as a ``.json`` file (the sidecar of a packaged ``.pt``), written atomically."""
    atomic_write_json(path, card.to_dict())


def with_onnx_card(model_bytes: bytes, card: Card) -> bytes:
    """ONNX model bytes with ``card`` embedded as the ``litefer`` metadata entry (replacing any)."""
    return with_metadata(model_bytes, META_KEY, json.dumps(card.to_dict(), default=str), producer="litefer")


def write_onnx(model_bytes: bytes, card: Card, path: str | os.PathLike) -> Path:
    """An ``.onnx`` file with ``card`` embedded, written atomically; every ONNX writer goes through here."""
    atomic_write_bytes(path, with_onnx_card(model_bytes, card))
    return Path(path)


def torchscript_extra_files(card: Card) -> dict:
    """The ``_extra_files`` that carry ``card`` inside a TorchScript file."""
    return {f"{META_KEY}.json": json.dumps(card.to_dict(), default=str)}
