"""``litefer finetune``: adapt a model to a user's own folder of faces, on a CPU in minutes.

Recipe (every choice a key of ``configs/finetune.yaml``; measured against the alternatives in
results/finetune_candidates.md): the classifier head is fitted first on cached features of the
frozen backbone (seconds, and the new rows start where the old head's geometry is), then the whole
network for a fixed schedule (warm-up, cosine decay, layer-wise rate decay, an L2-SP pull toward
the base weights, mixup, the paper's augmentation with scaling and erasing), BatchNorm statistics
kept, a class-weighted loss. Validation (carved by group, i.e. person, when the user names groups)
reports; with ``select: loss`` or ``accuracy`` it also chooses the epochs. With groups, the report's
grouped k-fold estimate says what to expect on new people. Nothing is written
in the output folder but a resume checkpoint until the end, when every file moves in at once.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..card import Card, read_card, read_torch_file
from ..data import FaceDataset, Preprocess
from ..data.base import stratified_split
from ..data.transforms import AugmentConfig, augment, preprocess
from ..models import create_model
from ..weights import load_checkpoint_model, write_weights
from .config import RANGES as TRAIN_RANGES
from .config import ConfigError, _merge, check_values, parse_override, read_yaml
from .evaluate import predict_logits
from .faces_folder import FaceFolder, frame_folder, read_groups
from .metrics import classification_report

DEFAULTS = {
    "seed": 0, "val_fraction": 0.2, "min_per_class": 2, "balance": "loss", "label_smoothing": 0.1,
    "freeze_bn": True, "batch_size": 32, "threads": None, "refit": True, "select": "fixed", "select_tol": 0.0,
    "estimate_folds": 5,
    "head": {"epochs": 60, "lr": 0.001, "weight_decay": 0.0001},
    "full": {"epochs": 20, "lr": 0.001, "weight_decay": 0.0001, "patience": 20, "warmup": 2, "schedule": "cosine",
             "l2sp": 0.01, "layer_decay": 0.7, "mixup": 0.4},
    "augment": dict(vars(AugmentConfig()), scale=0.1, erase_p=0.25),
}
BALANCE = ("loss", "sampler", "none")
SELECT = ("fixed", "loss", "accuracy")
SCHEDULES = ("constant", "cosine")
CHECKPOINT = Path(".finetune") / "checkpoint.pt"
MIXED_WARNING = ("no groups given (--group-by, --groups or --val): validation images were drawn per class "
                 "at random, so the same person is likely on both sides and the figures are inflated")


# Allowed values of the recipe's keys, in litefer.train.config's interval notation and checked by
# its check_values (every numeric key of DEFAULTS is here: tests/test_finetune.py holds that); the
# augmentation keys are training's own
RANGES = {
    "seed": "[0, 4294967295]", "val_fraction": "(0, 1)", "min_per_class": "[2, inf)", "label_smoothing": "[0, 1)",
    "batch_size": "[1, inf)", "threads": "[1, 1024]", "select_tol": "[0, inf)", "estimate_folds": "[0, inf)",
    "head.epochs": "[0, inf)", "head.lr": "(0, inf)", "head.weight_decay": "[0, inf)",
    "full.epochs": "[0, inf)", "full.lr": "(0, inf)", "full.weight_decay": "[0, inf)", "full.patience": "[1, inf)",
    "full.warmup": "[0, inf)", "full.l2sp": "[0, inf)", "full.layer_decay": "(0, 1]", "full.mixup": "[0, inf)",
    **{k: v for k, v in TRAIN_RANGES.items() if k.startswith("augment.")},
}
CHOICES = {"balance": BALANCE, "select": SELECT, "full.schedule": SCHEDULES}


def finetune_config(path=None, overrides=()) -> dict:
    """Defaults <- YAML file <- ``key.sub=value`` overrides, with strict keys and every value checked
    (:data:`RANGES`, :data:`CHOICES`): a bad value stops the run before any photo is framed."""
    cfg = _merge(DEFAULTS, read_yaml(path) if path else {}, "")
    for item in overrides:
        cfg = _merge(cfg, parse_override(item) if isinstance(item, str) else item, "")
    check_values(cfg, DEFAULTS, RANGES, CHOICES, whole=("threads",))
    if not cfg["head"]["epochs"] + cfg["full"]["epochs"] > 0:
        raise ConfigError("head.epochs and full.epochs are both 0: nothing to train")
    return cfg


def parse_budget(text) -> float | None:
    """Seconds of a budget: ``10m``, ``90s``, ``1.5h``, a bare number of seconds; None or ``none``: no limit."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "0")):
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        t = text.strip().lower()
        unit = {"s": 1, "m": 60, "h": 3600}.get(t[-1])
        try:
            seconds = float(t[:-1] if unit else t) * (unit or 1)
        except ValueError:
            raise ValueError(f"budget {text!r}: give seconds, or a number with s, m or h (10m, 90s, 1.5h)") from None
    if seconds <= 0:
        raise ValueError(f"budget {text!r} must be positive")
    return seconds


class Clock:
    """The run's time budget: seconds left, and whether one more whole-network epoch still fits with
    the refit after it (``refit_ratio`` faces per training face, for as many epochs as ran)."""

    def __init__(self, budget: float | None, refit_ratio: float = 0.0, reserve: float = 15.0):
        self.t0, self.budget, self.refit_ratio, self.reserve = time.perf_counter(), budget, refit_ratio, reserve

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.elapsed()

    def fits(self, epoch_seconds: float, epochs_done: int) -> bool:
        if self.budget is None:
            return True
        # before the first epoch its time is unknown: it runs when more than the reserve is left
        return self.left() >= epoch_seconds * (1 + self.refit_ratio * (epochs_done + 1)) + self.reserve

    def plan(self, epoch_seconds: float, epochs_done: int, wanted: int) -> int:
        """The most whole-network epochs (at most ``wanted``, at least those done) whose rest, with the
        refit of as many, fits the budget: the schedule is planned to end, not cut mid-decay."""
        if self.budget is None or epoch_seconds <= 0:
            return wanted
        n = wanted
        while n > epochs_done and self.left() < epoch_seconds * (n - epochs_done + self.refit_ratio * n) + self.reserve:
            n -= 1
        return n


def resolve_base(weights) -> Path:
    """A ``.pt`` to start from: "default" is the shipped model's torch weights."""
    from ..inference.files import DEFAULT_FILES, packaged_file

    path = packaged_file(DEFAULT_FILES["default"]["torch"]) if weights in (None, "default") else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix != ".pt":
        raise ValueError(f"{path}: fine-tuning starts from .pt weights (a packaged file or run checkpoint)")
    return path


# ----------------------------------------------------------------------------- splits

def split(folder: FaceFolder, groups: list[str] | None, cfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train, val) indices and how they were drawn: whole groups to validation when groups are
    known (no group on both sides), else a stratified draw with the warning of :data:`MIXED_WARNING`."""
    counts = folder.counts()
    small = {c: n for c, n in counts.items() if n < cfg["min_per_class"]}
    if small:
        raise ValueError(f"{folder.root}: class(es) {small} have too few usable faces to split "
                         f"(at least {cfg['min_per_class']} each)")
    if groups is None:
        train, val = stratified_split(folder.labels, cfg["val_fraction"], cfg["seed"])
        return np.sort(train), np.sort(val), {"how": "stratified", "warning": MIXED_WARNING}
    return group_split(folder, np.asarray(groups), cfg)


def group_split(folder: FaceFolder, groups: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(f"{folder.root}: all images are in one group ({names[0]}); a group split needs two or more")
    order = np.random.default_rng(cfg["seed"]).permutation(names)
    target, held = cfg["val_fraction"] * len(groups), []
    for g in order[:-1]:                         # at least one group stays for training
        if (np.isin(groups, held).sum()) >= target:
            break
        held.append(g)
    val_mask = np.isin(groups, held)
    train, val = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    missing = [c for i, c in enumerate(folder.class_names) if not (folder.labels[train] == i).any()]
    if missing:
        raise ValueError(f"{folder.root}: with validation groups {held}, class(es) {missing} have no training "
                         f"image; add images of other people or change val_fraction")
    return train, val, {"how": "by group", "val_groups": sorted(map(str, held)),
                        "train_groups": sorted(map(str, set(groups) - set(held)))}


# ----------------------------------------------------------------------------- the model

def adapt_head(base: torch.nn.Module, base_classes: list[str], classes: list[str], model_name: str,
               model_kwargs: dict) -> torch.nn.Module:
    """The base network with one output row per class of ``classes``: rows of classes the base knows
    are copied from its head, new ones start fresh (the architecture's initialisation)."""
    model = create_model(model_name, num_classes=len(classes), **model_kwargs)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier.3.")}
    model.load_state_dict(state, strict=False)
    old, new = base.classifier[3], model.classifier[3]
    with torch.no_grad():
        for i, c in enumerate(classes):
            if c in base_classes:
                new.weight[i] = old.weight[base_classes.index(c)]
                new.bias[i] = old.bias[base_classes.index(c)]
    return model


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse class frequency, mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / k, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def score(model, ds: FaceDataset, pp: Preprocess, tta: bool, columns: list[int | None] | None = None) -> dict:
    """Classification report on ``ds``; ``columns`` picks the model's output per class of ``ds``
    (None: a class the model lacks, never predicted), for the base model's 'before' figures."""
    logits = predict_logits(model, ds, pp, tta_flip=tta, batch_size=64)
    if columns is not None:
        cols = [logits[:, c] if c is not None else torch.full((len(ds),), -float("inf")) for c in columns]
        return classification_report(ds.labels.numpy(), torch.stack(cols, 1).argmax(1).numpy(), ds.class_names)
    return logits_report(logits, ds)


def logits_report(logits: torch.Tensor, ds: FaceDataset) -> dict:
    """Classification report with ``loss``: the class-balanced log-loss (the mean over classes of
    each class's mean negative log-likelihood), a selection score that keeps moving when every
    validation face is already right."""
    rep = classification_report(ds.labels.numpy(), logits.argmax(1).numpy(), ds.class_names)
    nll = F.cross_entropy(logits.float(), ds.labels.long(), reduction="none")
    per = [nll[ds.labels == c].mean() for c in range(len(ds.class_names)) if (ds.labels == c).any()]
    rep["loss"] = round(float(torch.stack(per).mean()), 5)
    return rep


def history_row(stage: str, epoch: int, rep: dict, **extra) -> dict:
    return {"stage": stage, "epoch": epoch, **extra, "val_accuracy": rep["accuracy"],
            "val_mean_class_accuracy": rep["mean_class_accuracy"], "val_loss": rep["loss"]}


def selection_score(row: dict, cfg: dict) -> float:
    """Higher is better: minus the validation log-loss (``select: loss``) or the mean class accuracy."""
    return -row["val_loss"] if cfg["select"] == "loss" else row["val_mean_class_accuracy"]


def accepts(value: float, best: float, cfg: dict) -> bool:
    """An epoch is kept when it scores within ``select_tol`` of the best so far: ties (and near
    ties) go to the longer schedule, so a full validation set never stops training by itself.
    ``select: fixed`` keeps every epoch: the recipe's schedule runs in full and validation only
    reports (on small folders its score is noise: results/finetune_candidates.md)."""
    return cfg["select"] == "fixed" or value >= best - cfg["select_tol"]


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


# ----------------------------------------------------------------------------- stage 1: head

@torch.no_grad()
def pooled_features(model, ds: FaceDataset, pp: Preprocess) -> torch.Tensor:
    """Backbone features (pooled, before the head) of each image and its mirror: (2N, D)."""
    model.eval()
    out = []
    for flip in (False, True):
        for i in range(0, len(ds), 64):
            x = preprocess(ds.images[i:i + 64], pp)
            x = x.flip(3) if flip else x
            out.append(torch.flatten(model.avgpool(model.features(x)), 1))
    return torch.cat(out)


def head_epoch(model, feats, labels, opt, gen, cfg: dict, weight) -> None:
    model.classifier.train()
    for idx in torch.randperm(len(labels), generator=gen).split(cfg["batch_size"]):
        loss = F.cross_entropy(model.classifier(feats[idx]), labels[idx], weight=weight,
                               label_smoothing=cfg["label_smoothing"])
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def head_report(model, vfeats: torch.Tensor, val: FaceDataset, tta: bool) -> dict:
    model.classifier.eval()
    n = len(val)
    logits = model.classifier(vfeats)
    return logits_report((logits[:n] + logits[n:]) / 2 if tta else logits[:n], val)


def train_head(model, train: FaceDataset, val: FaceDataset | None, pp: Preprocess, cfg: dict, weight, tta: bool,
               epochs: int | None = None) -> list[dict]:
    """Fit the classifier on cached frozen features (mirrors included); with ``val``, keep the epoch
    with the best validation mean class accuracy, else run ``epochs`` epochs (the refit)."""
    hc = cfg["head"]
    feats, labels = pooled_features(model, train, pp), train.labels.repeat(2)
    vfeats = pooled_features(model, val, pp) if val is not None else None
    opt = torch.optim.AdamW(model.classifier.parameters(), lr=hc["lr"], weight_decay=hc["weight_decay"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    best, best_state, history = -float("inf"), None, []
    for epoch in range(hc["epochs"] if epochs is None else epochs):
        head_epoch(model, feats, labels, opt, gen, cfg, weight)
        if vfeats is None:
            continue
        history.append(history_row("head", epoch + 1, head_report(model, vfeats, val, tta)))
        value = selection_score(history[-1], cfg)
        if accepts(value, best, cfg):
            best_state = copy.deepcopy(model.classifier.state_dict())
        best = max(best, value)
    if best_state is not None:
        model.classifier.load_state_dict(best_state)
    return history


def best_epochs(history: list[dict], cfg: dict) -> tuple[int, int]:
    """(head epochs, whole-network epochs) the selection run kept: the last epoch of each stage that
    :func:`accepts` took, in order (a whole-network epoch competes with the best head epoch)."""
    kept, best = {"head": 0, "full": 0}, -float("inf")
    for h in history:
        value = selection_score(h, cfg)
        if accepts(value, best, cfg):
            kept[h["stage"]] = h["epoch"]
        best = max(best, value)
    return kept["head"], kept["full"]


def refit(base, card, meta: dict, classes: list[str], data: FaceDataset, cfg: dict, history: list[dict]):
    """The final model: the same recipe on training and validation faces together, for the epochs
    the selection run chose (small folders cannot spare a person for validation only)."""
    head, full = best_epochs(history, cfg)
    return train_for(base, card, meta, classes, data, cfg, head, full), {"head_epochs": head, "full_epochs": full,
                                                                          "faces": len(data)}


def train_for(base, card, meta: dict, classes: list[str], data: FaceDataset, cfg: dict, head: int, full: int):
    """The recipe without validation: ``head`` head epochs, then ``full`` whole-network epochs, on ``data``."""
    model = adapt_head(base, card.class_names, classes, meta["model_name"], meta.get("model_kwargs") or {})
    weight = class_weights(data.labels.numpy(), data.num_classes) if cfg["balance"] == "loss" else None
    train_head(model, data, None, card.preprocess, cfg, weight, card.tta_flip, epochs=head)
    anchor = l2sp_anchor(model, cfg)
    opt = full_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    for epoch in range(full):
        set_epoch_lr(opt, epoch, cfg["full"])
        full_epoch(model, opt, data, card.preprocess, cfg, weight, gen, anchor)
    return model.eval()


def group_folds(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of whole groups (indices of each fold's faces), the largest groups placed first,
    each into the fold with the fewest faces so far; group order ties are broken by a seeded shuffle."""
    names = np.random.default_rng(seed).permutation(sorted(set(groups)))
    sizes = {g: int((groups == g).sum()) for g in names}
    folds: list[list] = [[] for _ in range(k)]
    for g in sorted(names, key=lambda g: -sizes[g]):
        min(folds, key=lambda f: sum(sizes[x] for x in f)).append(g)
    return [np.flatnonzero(np.isin(groups, f)) for f in folds if f]


def fold_estimate(base, card, meta: dict, folder: FaceFolder, groups, cfg: dict, epochs: tuple[int, int],
                  clock: Clock, fold_seconds: float | None) -> dict:
    """Grouped k-fold estimate of the recipe on new people: for each fold of whole groups, the
    recipe for the chosen ``epochs`` on the other groups, scored on the fold's faces, beside the
    base model on the same faces. Folds stop where the budget would be overrun (``fold_seconds``:
    one fold's expected time, e.g. the refit's); fewer than two folds gives no estimate."""
    if groups is None:
        return {"folds": 0, "reason": "no groups given (--group-by or --groups)"}
    groups = np.asarray(groups)
    k = min(cfg["estimate_folds"], len(set(groups)))
    if k < 2:
        return {"folds": 0, "reason": "estimate_folds is below 2" if cfg["estimate_folds"] < 2 else "one group only"}
    classes = folder.class_names
    columns = [card.class_names.index(c) if c in card.class_names else None for c in classes]
    rows = []
    for fold in group_folds(groups, k, cfg["seed"]):
        if fold_seconds is not None and clock.left() is not None and clock.left() < fold_seconds + clock.reserve:
            break
        t = time.perf_counter()
        train = np.setdiff1d(np.arange(len(groups)), fold)
        if len(set(folder.labels[train].tolist())) < len(classes):
            continue                                   # a class only these people show: no fold here
        model = train_for(base, card, meta, classes, folder.subset(train, "train"), cfg, *epochs)
        val = folder.subset(fold, "fold")
        tuned, shipped = score(model, val, card.preprocess, card.tta_flip), score(base, val, card.preprocess,
                                                                                  card.tta_flip, columns)
        rows.append({"groups": sorted(map(str, set(groups[fold]))), "n": len(fold), "accuracy": tuned["accuracy"],
                     "mean_class_accuracy": tuned["mean_class_accuracy"], "shipped_accuracy": shipped["accuracy"],
                     "shipped_mean_class_accuracy": shipped["mean_class_accuracy"]})
        fold_seconds = max(fold_seconds or 0.0, time.perf_counter() - t)
    if len(rows) < 2:
        return {"folds": len(rows), "reason": "the time budget or the classes left fewer than two folds",
                "per_fold": rows}
    out = {"folds": len(rows), "planned_folds": k, "per_fold": rows}
    for key in ("accuracy", "mean_class_accuracy", "shipped_accuracy", "shipped_mean_class_accuracy"):
        vals = [r[key] for r in rows]
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


# ----------------------------------------------------------------------------- stage 2: whole network

def batches(labels: torch.Tensor, cfg: dict, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of index batches: a permutation, or class-balanced draws with ``balance: sampler``."""
    if cfg["balance"] == "sampler":
        w = class_weights(labels.numpy(), int(labels.max()) + 1)[labels]
        order = torch.multinomial(w, len(labels), replacement=True, generator=gen)
    else:
        order = torch.randperm(len(labels), generator=gen)
    return list(order.split(cfg["batch_size"]))


def full_optimizer(model, cfg: dict) -> torch.optim.Optimizer:
    """AdamW over every layer: block i of ``features`` (of n) at ``lr * layer_decay ** (n - i)``, the
    head at ``lr``; with ``l2sp`` the backbone has no weight decay (the pull is toward the base weights)."""
    fc, n = cfg["full"], len(model.features)
    groups: dict[tuple, list] = {}
    for name, param in model.named_parameters():
        if name.startswith("features."):
            key = (fc["lr"] * fc["layer_decay"] ** (n - int(name.split(".")[1])), 0.0 if fc["l2sp"] else fc["weight_decay"])
        else:
            key = (fc["lr"], fc["weight_decay"])
        groups.setdefault(key, []).append(param)
    return torch.optim.AdamW([{"params": ps, "lr": lr, "base_lr": lr, "weight_decay": wd}
                              for (lr, wd), ps in groups.items()])


def set_epoch_lr(opt, epoch: int, fc: dict) -> None:
    """Epoch ``epoch``'s (0-based) rates: a linear warm-up over ``warmup`` epochs, then constant or a
    cosine decay to zero at ``epochs`` (the refit follows the same rates for its shorter run)."""
    warm = fc["warmup"]
    if epoch < warm:
        factor = (epoch + 1) / (warm + 1)
    elif fc["schedule"] == "cosine":
        factor = 0.5 * (1 + np.cos(np.pi * (epoch - warm) / max(1, fc["epochs"] - warm)))
    else:
        factor = 1.0
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def l2sp_anchor(model, cfg: dict) -> dict | None:
    """The backbone's starting weights that ``l2sp`` pulls toward (None when it is 0)."""
    if not cfg["full"]["l2sp"]:
        return None
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("features.")}


def full_epoch(model, opt, train: FaceDataset, pp: Preprocess, cfg: dict, weight, gen, anchor=None) -> float:
    aug = AugmentConfig(**cfg["augment"])
    set_train_mode(model, cfg["freeze_bn"])
    params = dict(model.named_parameters())
    total = 0.0
    for idx in batches(train.labels, cfg, gen):
        x, y = augment(train.images[idx], pp, aug, generator=gen), train.labels[idx]
        if cfg["full"]["mixup"] > 0:                   # mixup: a Beta(a, a) blend of the batch and a shuffle of it
            a = cfg["full"]["mixup"]
            lam = float(np.random.default_rng(int(torch.randint(2 ** 31, (1,), generator=gen))).beta(a, a))
            perm = torch.randperm(len(idx), generator=gen)
            out = model(lam * x + (1 - lam) * x[perm])
            loss = sum(w * F.cross_entropy(out, t, weight=weight, label_smoothing=cfg["label_smoothing"])
                       for w, t in ((lam, y), (1 - lam, y[perm])))
        else:
            loss = F.cross_entropy(model(x), y, weight=weight, label_smoothing=cfg["label_smoothing"])
        if anchor is not None:
            loss = loss + cfg["full"]["l2sp"] / 2 * sum(((params[n] - a) ** 2).sum() for n, a in anchor.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(train)


def train_full(model, train, val, pp, cfg, weight, tta, state: dict, save, bar=None, anchor=None,
               clock: Clock | None = None) -> None:
    """Fine-tune every layer; ``state`` (resumable) holds the epoch, the best weights and history.
    With ``clock``, the stage stops before an epoch that would leave no time for the refit."""
    fc = cfg["full"]
    opt = full_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    if state.get("optimizer"):
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
    epoch_seconds = 0.0
    state.setdefault("horizon", fc["epochs"])
    while state["epoch"] < state["horizon"] and state["stale"] < fc["patience"]:
        if clock is not None and not clock.fits(epoch_seconds, state["epoch"]):
            state["stopped_by_budget"] = state["epoch"]
            break
        t = time.perf_counter()
        set_epoch_lr(opt, state["epoch"], dict(fc, epochs=state["horizon"]))
        loss = full_epoch(model, opt, train, pp, cfg, weight, gen, anchor)
        rep = score(model, val, pp, tta)
        state["epoch"] += 1
        state["history"].append(history_row("full", state["epoch"], rep, train_loss=round(loss, 4)))
        value = selection_score(state["history"][-1], cfg)
        better = accepts(value, state["best_score"], cfg)
        if better:
            state["best"] = copy.deepcopy(model.state_dict())
        state.update(best_score=max(value, state["best_score"]), stale=0 if better else state["stale"] + 1)
        epoch_seconds = max(epoch_seconds, time.perf_counter() - t)
        if clock is not None and state["epoch"] == 1:     # the first epoch's time plans the schedule's length
            state["horizon"] = clock.plan(epoch_seconds, 1, state["horizon"])
        state.update(model=model.state_dict(), optimizer=opt.state_dict(), generator=gen.get_state())
        save(state)
        if bar is not None:
            bar.update(1)
            left = {} if clock is None or clock.left() is None else {"left": f"{clock.left():.0f}s"}
            bar.set_postfix(val_loss=f"{rep['loss']:.3f}", val_mca=f"{rep['mean_class_accuracy']:.3f}", **left)
    model.load_state_dict(state["best"])


def load_base(weights):
    """(model, payload without tensors, card, path) of the weights to start from."""
    path = resolve_base(weights)
    model, meta = load_checkpoint_model(path)
    return model, meta, read_card(path), path


def checkpoint_path(out: Path) -> Path:
    return out / CHECKPOINT


def save_checkpoint(out: Path, state: dict) -> None:
    path = checkpoint_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_weights(path, state)


def load_state(out: Path, fingerprint: dict, resume: bool) -> dict | None:
    """The saved run state when resuming; ValueError when it belongs to other data or settings."""
    path = checkpoint_path(out)
    if not resume or not path.is_file():
        return None
    state = read_torch_file(path, "finetune checkpoint", trusted=True)     # our own file
    if state.get("fingerprint") != fingerprint:
        raise ValueError(f"{path}: this checkpoint is from another folder, base model or recipe; "
                         f"remove it or run without --resume")
    return state


def set_threads(cfg: dict) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))


def run_stages(model, train, val, pp, cfg, tta, out: Path, fingerprint: dict, resume: bool, progress: bool,
               clock: Clock | None = None) -> dict:
    """Head then whole network, resuming from ``out``'s checkpoint when asked; returns the state."""
    weight = class_weights(train.labels.numpy(), train.num_classes) if cfg["balance"] == "loss" else None
    state = load_state(out, fingerprint, resume)
    anchor = l2sp_anchor(model, cfg)                   # the base's backbone (the head stage leaves it as it is)
    if state is None:
        history = train_head(model, train, val, pp, cfg, weight, tta)
        state = {"fingerprint": fingerprint, "epoch": 0, "stale": 0, "history": history,
                 "best_score": max((selection_score(h, cfg) for h in history), default=-float("inf")),
                 "best": copy.deepcopy(model.state_dict()),
                 "model": model.state_dict(), "optimizer": None, "generator": None}
        save_checkpoint(out, state)
    else:
        model.load_state_dict(state["model"])
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg["full"]["epochs"], initial=state["epoch"], desc="fine-tune", unit="epoch")
    try:
        train_full(model, train, val, pp, cfg, weight, tta, state, lambda s: save_checkpoint(out, s), bar, anchor, clock)
    finally:
        if bar is not None:
            bar.close()
    return state


def prepare(root, val_root, card: Card, detector, args: dict, cfg: dict) -> tuple:
    """(folder, train index, val folder, val index, split info) from the user's folders."""
    folder = frame_folder(root, card, detector, args["faces"], args["pick"], args["classes_must_exist"],
                          progress=args["progress"])
    if val_root is not None:
        vfolder = frame_folder(val_root, card, detector, args["faces"], args["pick"], classes=folder.class_names,
                               progress=args["progress"])
        return (folder, np.arange(len(folder.labels)), vfolder, np.arange(len(vfolder.labels)),
                {"how": f"explicit validation folder {val_root}", "groups": None})
    groups = read_groups(folder, args["group_by"], args["groups"])
    train, val, info = split(folder, groups, cfg)
    return folder, train, folder, val, dict(info, groups=groups)


def finetune(root, out, weights="default", val=None, group_by: str | None = None, groups: str | None = None,
             faces: str = "auto", pick: str = "none", config=None, overrides=(), resume: bool = False,
             classes_must_exist: bool = False, detector="auto", min_face: int | None = None,
             yunet_model=None, progress: bool = False, command: str | None = None, budget="10m") -> dict:
    """Fine-tune ``weights`` on ``root/<class>/*`` and write model.pt/.onnx/.json and report.md/.json
    with confusion.png into ``out``; returns the report (a dict). ``budget`` (``10m``, ``90s``, None:
    no limit) caps the whole run: the whole-network stage stops where the refit would no longer fit.
    See :mod:`litefer.train.finetune`."""
    t0 = time.perf_counter()
    seconds = parse_budget(budget)
    cfg = finetune_config(config, overrides)
    out = Path(out)
    check_out(out, root, val)
    if resume and not checkpoint_path(out).is_file():
        raise ValueError(f"--resume: {out} holds no checkpoint to resume ({checkpoint_path(out)}): the earlier run "
                         f"finished, or stopped before its first epoch; run without --resume")
    with out_lock(out):
        return _run(root, out, cfg, t0, seconds, weights=weights, val=val, group_by=group_by, groups=groups,
                    faces=faces, pick=pick, resume=resume, classes_must_exist=classes_must_exist, detector=detector,
                    min_face=min_face, yunet_model=yunet_model, progress=progress, command=command)


def _run(root, out: Path, cfg: dict, t0: float, seconds: float | None, *, weights, val, group_by, groups, faces,
         pick, resume, classes_must_exist, detector, min_face, yunet_model, progress, command) -> dict:
    """:func:`finetune`'s work, once its arguments are checked and ``out`` is locked."""
    from ..inference.detect import create_detector
    from ..utils import hardware_summary
    from .finetune_output import OUTPUTS, make_card, write_outputs

    set_threads(cfg)
    torch.manual_seed(cfg["seed"])
    base, meta, card, base_path = load_base(weights)
    det = create_detector(detector, min_size=min_face, model_path=yunet_model)
    args = dict(faces=faces, pick=pick, classes_must_exist=classes_must_exist, group_by=group_by, groups=groups,
                progress=progress)
    folder, tr, vfolder, va, split_info = prepare(root, val, card, det, args, cfg)
    groups = split_info.pop("groups")
    train, valid = folder.subset(tr, "train"), vfolder.subset(va, "val")
    pp, classes = card.preprocess, folder.class_names
    columns = [card.class_names.index(c) if c in card.class_names else None for c in classes]
    before = score(base, valid, pp, card.tta_flip, columns)
    model = adapt_head(base, card.class_names, classes, meta["model_name"], meta.get("model_kwargs") or {})
    fingerprint = {"listing": folder.listing_sha256, "val": vfolder.listing_sha256, "base": str(base_path),
                   "recipe": cfg, "classes": classes, "split": split_info}
    # the budget keeps time after the selection run for the refit and the k-fold estimate's folds
    # (each fold about a refit on (k - 1) / k of the faces: k - 1 refits in all)
    folds = min(cfg["estimate_folds"], len(set(groups))) if groups is not None and vfolder is folder else 0
    refits = (1 if cfg["refit"] and vfolder is folder else 0) + max(0, folds - 1)
    clock = Clock(None if seconds is None else seconds - (time.perf_counter() - t0),
                  refit_ratio=refits * len(folder.labels) / max(1, len(train)))
    state = run_stages(model, train, valid, pp, cfg, card.tta_flip, out, fingerprint, resume, progress, clock)
    after = score(model.eval(), valid, pp, card.tta_flip)
    # the refit and the folds follow the schedule as the budget planned it (its cosine ends where theirs does)
    planned = dict(cfg, full=dict(cfg["full"], epochs=state.get("horizon", cfg["full"]["epochs"])))
    final = {"refit": None}
    refit_seconds = None
    if cfg["refit"] and vfolder is folder:
        t = time.perf_counter()
        model, final["refit"] = refit(base, card, meta, classes, folder.subset(np.arange(len(folder.labels)), "all"),
                                      planned, state["history"])
        refit_seconds = time.perf_counter() - t
    final["estimate"] = (fold_estimate(base, card, meta, folder, groups, planned, best_epochs(state["history"], cfg),
                                       clock, refit_seconds) if vfolder is folder else
                         {"folds": 0, "reason": "an explicit validation folder was given (--val)"})
    counts = lambda ds: dict(zip(classes, ds.class_counts()))  # noqa: E731
    report = {"root": str(root), "command": command or f"litefer.train.finetune.finetune({str(root)!r}, {str(out)!r})",
              "base_weights": str(base_path), "split": split_info, "recipe": cfg, "before": before, "after": after,
              "history": state["history"], **final, "hardware": hardware_summary(),
              "budget": {"seconds": seconds, "stopped_whole_network_at": state.get("stopped_by_budget"),
                         "planned_whole_network_epochs": planned["full"]["epochs"]},
              "data": {"faces": faces, "detector": det.name, "decisions": _merge_counts(folder, vfolder), "train_counts": counts(train),
                       "val_counts": counts(valid), "listing_sha256": folder.listing_sha256,
                       "skipped": folder.skipped + (vfolder.skipped if vfolder is not folder else []),
                       "duplicates": folder.duplicates + (vfolder.duplicates if vfolder is not folder else [])}}
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    provenance = {"finetuned_from": {"weights": str(base_path), "sha256": card.info.get("sha256")},
                  "data": {"root": str(root), "counts": counts(train), "val_counts": counts(valid),
                           "listing_sha256": folder.listing_sha256, "split": split_info},
                  "recipe": cfg, "validation": {k: after[k] for k in ("n", "accuracy", "mean_class_accuracy")},
                  "validation_before": {k: before[k] for k in ("n", "accuracy", "mean_class_accuracy")},
                  "training": {"wall_seconds": report["wall_seconds"], "hardware": report["hardware"],
                               "command": report["command"]}}
    report["replaced"] = [name for name in OUTPUTS if (out / name).exists()]      # an earlier run's files
    report["files"] = write_outputs(out, model, meta, make_card(card, classes, counts(train), after, provenance), report)
    shutil.rmtree(checkpoint_path(out).parent, ignore_errors=True)     # the run is complete: no resume state
    return report


@contextlib.contextmanager
def out_lock(out: Path):
    """An exclusive lock on the folder ``out`` while a run writes there: a second run into it is
    refused instead of both saying "wrote" and the last one's files winning. An ``flock`` on the
    folder itself leaves no lock file behind and ends with the process, however that ends."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out}: another litefer finetune is writing there now; wait for it to end "
                             f"or choose another folder") from None
        yield
    finally:
        os.close(fd)


def check_out(out: Path, *roots) -> None:
    """ValueError when ``out`` is a file, or one of the image folders or inside one: the next run on
    that folder would read the outputs as a class of faces."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    where = out.resolve()
    for root in filter(None, roots):
        top = Path(root).resolve()
        if where == top or top in where.parents:
            raise ValueError(f"--out {out} is inside the image folder {root}: the next run would read it as a "
                             f"class; write the model outside {root}")


def _merge_counts(a: FaceFolder, b: FaceFolder) -> dict:
    if a is b:
        return dict(a.decisions)
    return {k: a.decisions[k] + b.decisions[k] for k in a.decisions}
