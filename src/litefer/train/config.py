"""Experiment configuration: nested defaults, YAML files, ``key.sub=value`` overrides, strict keys."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "model": {
        "name": "litefer_cpsca",
        "in_chans": 3,
        "dropout": 0.4,
        "attention_gate": None,        # None = the paper's sigmoid; "hardsigmoid" for mobile/INT8
        "init": None,                  # path to torchvision ImageNet MobileNetV3-Large weights (by name)
    },
    "data": {
        "dataset": "ferplus",          # ferplus | rafdb | folder
        "root": "../shared/data/fer2013",
        "label_mode": "majority",      # FERPlus: majority | probability | crossentropy
        "majority_rows": False,        # FERPlus: only rows with a majority label (the paper's split), any label_mode
        "input_size": 224,             # model input side, 48..224
        "image_size": 100,             # rafdb/folder: side at which images are held in memory
        "val_fraction": 0.1,           # rafdb/folder: stratified validation carve-out from train
        "split_seed": 0,
        "val_root": None,              # folder: optional separate validation folder
        "test_root": None,             # folder: optional separate test folder
    },
    "augment": {
        "flip": 0.5, "translate": 0.1, "rotate": 10.0, "scale": 0.0, "contrast": 0.3, "contrast_p": 0.5,
        "noise_std": 0.03, "noise_p": 0.5, "erase_p": 0.0,
    },
    "loss": {
        "softmax": 1.0,
        "centre": 0.4,                 # lambda of the joint loss (0.4 FERPlus, 0.1 RAF-DB)
        "triplet": 0.0,
        "triplet_margin": 0.3,
        "triplet_normalize": True,     # triplet distances on L2-normalised embeddings (False collapsed)
        "centre_lr": 0.5,              # SGD lr of the centres (gradient rescaled by 1/lambda)
        "label_smoothing": 0.0,
    },
    "optim": {
        "optimizer": "adam",           # adam | adamw | sgd
        "lr": 0.01,
        "weight_decay": 0.0,
        "momentum": 0.9,               # sgd only
        "batch_size": 64,
        "epochs": 100,
        "schedule": "plateau",         # plateau (x factor when val loss stalls) | cosine | none
        "plateau_patience": 10,
        "plateau_factor": 0.1,
        "warmup_epochs": 0,
        "min_lr": 0.0,
        "grad_clip": 0.0,
    },
    "run": {
        "out_dir": "runs",
        "name": None,                  # run folder name; default derived from config + seed
        "seed": 0,
        "deterministic": False,
        "device": "auto",              # auto | cpu | cuda | cuda:N
        "amp": True,                   # bf16 autocast on CUDA (ignored on CPU)
        "channels_last": True,
        "compile": False,
        "cuda_graph": False,           # CUDA: replay forward + backward from a CUDA graph (see train/step.py)
        "time_limit_s": 0.0,           # >0: start no epoch that would end after this many seconds of the run
        "threads": 0,                  # torch intra-op threads; 0 = torch default
        "ema_decay": 0.0,              # model EMA; 0 = off
        "tta_flip": False,             # horizontal-flip test-time augmentation at evaluation
        "eval_batch_size": 256,
        "eval_test": True,             # evaluate the test split once, with the selected checkpoint
        "tensorboard": True,
        "progress": "auto",            # auto (bar on a terminal) | always | never
        "max_batches": 0,              # >0: stop each epoch after this many batches (smoke tests)
        "classifier": "logits",        # logits | nearest_centre (centre loss alone) | class_mean (triplet
                                       # alone): how validation, selection and test classify (Table 6)
    },
}


CLASSIFIERS = ("logits", "nearest_centre", "class_mean")


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a config or an override."""


def _merge(base: dict, update: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            raise ConfigError(f"unknown config key {path!r}; known keys here: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, path)
        else:
            out[key] = _coerce(value, base[key], path)
    return out


def _coerce(value, default, path):
    if isinstance(default, str) or path in OPTIONAL_TEXT:
        return _text(value, path, optional=default is None)
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key {path!r} must be true/false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        try:
            return type(default)(value) if not (isinstance(default, int) and isinstance(value, float)
                                                and not value.is_integer()) else value
        except (TypeError, ValueError):
            raise ConfigError(f"config key {path!r} must be a number, got {value!r}") from None
    return value


# keys whose default is None but whose value, when set, is text (a name or a path)
OPTIONAL_TEXT = {"model.attention_gate", "model.init", "data.val_root", "data.test_root", "run.name"}


def _text(value, path: str, optional: bool) -> str | None:
    """Names and paths are text: ``--set data.root=123`` reads as a number in YAML, and would only
    fail later, deep in the data loader, without naming the key."""
    if isinstance(value, str) or (value is None and optional):
        return value
    hint = f" (write \"{value}\" in quotes if that is the name)" if isinstance(value, (int, float)) else ""
    raise ConfigError(f"{path} must be text (a name or a path), got {value!r}{hint}")


def parse_override(text: str) -> dict:
    """``optim.lr=0.001`` -> {"optim": {"lr": 0.001}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults <- YAML file (which may name a ``base`` file relative to itself) <- overrides."""
    return build_config(read_yaml(path) if path is not None else {}, overrides)


def build_config(data: dict, overrides: list[str | dict] | tuple = ()) -> dict:
    """Defaults <- ``data`` (a config mapping, ``base`` already resolved) <- overrides, each either
    ``key.sub=value`` text or a nested mapping; validated, strict keys."""
    cfg = _merge(copy.deepcopy(DEFAULTS), data, "")
    for item in overrides:
        cfg = _merge(cfg, parse_override(item) if isinstance(item, str) else item, "")
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict:
    """Read a config file, resolving ``base: other.yaml`` chains (later files win)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f", line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = read_yaml(path.parent / base)
    return _deep_update(parent, data)


def _deep_update(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Allowed values of the numeric keys, one line each, in interval notation ("[" includes the bound,
# "(" excludes it; inf for none). A key whose default is an int must also be a whole number.
RANGES = {
    "model.in_chans": "[1, 3]",
    "model.dropout": "[0, 1)",
    "data.input_size": "[32, 512]",            # paper: 224; 48..224 tested
    "data.image_size": "[16, 4096]",
    "data.val_fraction": "(0, 1)",
    "augment.flip": "[0, 1]", "augment.translate": "[0, 1)", "augment.rotate": "[0, 180]",
    "augment.scale": "[0, 1)", "augment.contrast": "[0, 1]", "augment.contrast_p": "[0, 1]",
    "augment.noise_std": "[0, inf)", "augment.noise_p": "[0, 1]", "augment.erase_p": "[0, 1]",
    "loss.softmax": "[0, inf)", "loss.centre": "[0, inf)", "loss.triplet": "[0, inf)",
    "loss.triplet_margin": "[0, inf)", "loss.centre_lr": "(0, inf)", "loss.label_smoothing": "[0, 1)",
    "optim.lr": "(0, inf)", "optim.min_lr": "[0, inf)", "optim.weight_decay": "[0, inf)",
    "optim.momentum": "[0, 1)", "optim.batch_size": "[1, inf)", "optim.epochs": "[1, inf)",
    "optim.plateau_patience": "[0, inf)", "optim.plateau_factor": "(0, 1)", "optim.warmup_epochs": "[0, inf)",
    "optim.grad_clip": "[0, inf)",
    "run.seed": "[0, 4294967295]", "run.threads": "[0, inf)", "run.ema_decay": "[0, 1)",
    "run.eval_batch_size": "[1, inf)", "run.max_batches": "[0, inf)", "run.time_limit_s": "[0, inf)",
}

CHOICES = {
    "data.dataset": ("ferplus", "rafdb", "folder"),
    "optim.optimizer": ("adam", "adamw", "sgd"),
    "optim.schedule": ("plateau", "cosine", "none"),
    "run.progress": ("auto", "always", "never"),
    "run.classifier": CLASSIFIERS,
}


# run.device: "auto" (CUDA when there is one), or a device torch names; whether it exists here is
# checked when the run starts (litefer.weights.torch_device)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _in_interval(value: float, interval: str) -> bool:
    lo_bracket, lo, hi, hi_bracket = interval[0], *interval[1:-1].split(","), interval[-1]
    lo, hi = float(lo), float(hi)
    return (lo <= value if lo_bracket == "[" else lo < value) and (value <= hi if hi_bracket == "]" else value < hi)


def _lookup(tree: dict, key: str):
    for name in key.split("."):
        tree = tree[name]
    return tree


def check_values(cfg: dict, defaults: dict, ranges: dict, choices: dict, whole: tuple = ()) -> None:
    """Every key of ``ranges`` (interval notation) and ``choices`` in ``cfg``; ConfigError naming the
    key, its allowed values and what it got. A key is a whole number when its default is an int or
    it is in ``whole``; one whose default is None may stay None (off). NaN and inf are in no range."""
    for key, interval in ranges.items():
        value, default = _lookup(cfg, key), _lookup(defaults, key)
        if value is None and default is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a number in {interval}, got {value!r}")
        if (isinstance(default, int) or key in whole) and not float(value).is_integer():
            raise ConfigError(f"{key} must be a whole number in {interval}, got {value!r}")
        if not _in_interval(float(value), interval):
            raise ConfigError(f"{key} must be in {interval}, got {value!r}")
    for key, allowed in choices.items():
        value = _lookup(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def validate(cfg: dict) -> None:
    """Check every key of :data:`RANGES` and :data:`CHOICES`, and the rules that tie keys together;
    raises :class:`ConfigError` naming the key, its allowed values and what it got."""
    check_values(cfg, DEFAULTS, RANGES, CHOICES)
    if not DEVICE.fullmatch(cfg["run"]["device"]):
        raise ConfigError(f"run.device must be auto, cpu, cuda, cuda:N or mps, got {cfg['run']['device']!r}")
    loss, optim = cfg["loss"], cfg["optim"]
    if not loss["softmax"] + loss["centre"] + loss["triplet"] > 0:
        raise ConfigError("loss.softmax, loss.centre and loss.triplet are all 0: nothing to train on")
    if optim["min_lr"] > optim["lr"]:
        raise ConfigError(f"optim.min_lr ({optim['min_lr']}) must not exceed optim.lr ({optim['lr']})")
    if cfg["run"]["cuda_graph"] and cfg["run"]["compile"]:
        raise ConfigError("run.cuda_graph and run.compile exclude each other; choose one")
    if cfg["run"]["classifier"] == "nearest_centre" and not loss["centre"] > 0:
        raise ConfigError("run.classifier nearest_centre needs learned centres: set loss.centre > 0")


# what the weights of a run are: a resumed run keeps them (litefer.train.engine checks)
RESUME_FIXED = ("model.name", "model.in_chans", "model.attention_gate", "data.dataset", "data.input_size")


def resume_conflicts(saved: dict, cfg: dict) -> list[str]:
    """``key (old -> new)`` for each :data:`RESUME_FIXED` key that ``cfg`` changes from the
    checkpoint's ``saved`` config (keys an older checkpoint lacks are not compared)."""
    out = []
    for key in RESUME_FIXED:
        section, name = key.split(".")
        old, new = (saved.get(section) or {}).get(name, cfg[section][name]), cfg[section][name]
        if old != new:
            out.append(f"{key} ({old} -> {new})")
    return out


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
