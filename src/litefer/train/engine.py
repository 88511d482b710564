"""The training loop: one plain function, resumable at epoch boundaries, DDP-aware.

A run directory holds the resolved config, metadata (versions, git commit, command), per-epoch
metrics (CSV and TensorBoard), plots, ``last.pt`` (everything needed to resume) and ``best.pt``
(weights selected on validation accuracy). The test split, when present, is evaluated once at the
end with the selected weights.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..version import __version__
from ..card import read_torch_file
from ..data import AugmentConfig, BatchSampler, Preprocess, build_datasets
from ..losses import JointLoss
from ..models import create_model
from ..utils import (atomic_write_bytes, atomic_write_json, atomic_write_text,
                     hardware_summary, remove_stale_temp_files, setup_logging)
from ..weights import load_state, torch_device, weights_payload, write_weights
from .config import dump_config, resume_conflicts
from .evaluate import class_means, evaluate, plot_confusion
from .metrics import format_report
from .step import DeviceData, EpochMeter, StepConfig, TrainStep, epoch_generator, graph_unsupported_reason

log = logging.getLogger("litefer.train")

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_ce", "train_centre", "train_triplet", "train_acc",
                 "val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1", "epoch_seconds", "images_per_s",
                 "setup_seconds"]


# ---------------------------------------------------------------------------------------------- setup
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``run.device``: ``auto`` is this process's GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch_device(name, "run.device")
    return torch.device("cuda", local_rank) if name == "cuda" else device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def default_run_name(cfg: dict) -> str:
    data_cfg = cfg["data"]
    return f"{cfg['model']['name']}_{data_cfg['dataset']}_{data_cfg['input_size']}px_seed{cfg['run']['seed']}"


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class ModelEMA:
    """Exponential moving average of parameters and buffers, evaluated instead of the raw model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.mul_(self.decay).add_(src[k].detach(), alpha=1 - self.decay)
            else:
                v.copy_(src[k])


def make_optimizer(params, optim_cfg: dict, device: torch.device) -> torch.optim.Optimizer:
    """The configured optimizer; on CUDA its fused kernels (one launch for all parameters)."""
    kind, lr, wd = optim_cfg["optimizer"], optim_cfg["lr"], optim_cfg["weight_decay"]
    fast = {"fused": True} if device.type == "cuda" else {}
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **fast)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **fast)
    return torch.optim.SGD(params, lr=lr, momentum=optim_cfg["momentum"], weight_decay=wd, nesterov=True, **fast)


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimizer state but keep this run's kernel choice (fused on CUDA, not on the
    CPU): a checkpoint written on one device resumes on the other."""
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, chosen in zip(optimizer.param_groups, kernels):
        group.update(chosen)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _epoch_lr(optim_cfg: dict, epoch: int) -> float | None:
    """Learning rate of an epoch for warm-up and cosine schedules (None: plateau decides)."""
    if epoch < optim_cfg["warmup_epochs"]:
        return optim_cfg["lr"] * (epoch + 1) / (optim_cfg["warmup_epochs"] + 1)
    if optim_cfg["schedule"] == "cosine":
        span = max(1, optim_cfg["epochs"] - optim_cfg["warmup_epochs"])
        t = (epoch - optim_cfg["warmup_epochs"]) / span
        return optim_cfg["min_lr"] + 0.5 * (optim_cfg["lr"] - optim_cfg["min_lr"]) * (1 + math.cos(math.pi * t))
    if optim_cfg["schedule"] == "none":
        return optim_cfg["lr"]
    return None


# ------------------------------------------------------------------------------------------- set-up
@dataclass
class RunContext:
    """Where and as what this process trains: the run folder, device, DDP rank and seed."""

    cfg: dict
    run_dir: Path
    device: torch.device
    rank: int = 0
    world: int = 1
    seed: int = 0
    started: float = field(default_factory=time.time)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


@dataclass
class TrainingParts:
    """Everything a checkpoint holds besides the loop's state: the model and what trains it."""

    model: torch.nn.Module
    train_model: torch.nn.Module         # the model as the step calls it (DDP- or compile-wrapped)
    criterion: JointLoss
    optimizer: torch.optim.Optimizer
    centre_opt: torch.optim.Optimizer | None
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    ema: ModelEMA | None
    model_kwargs: dict
    class_names: tuple
    pp: Preprocess


def setup_run(cfg: dict, run_dir, resume: bool) -> tuple[RunContext, bool]:
    """Device, process group, run folder, logging and seeds; returns the context and whether a
    checkpoint is resumed (a run killed before its first checkpoint restarts from its config)."""
    rank, local_rank, world = _dist_info()
    device = resolve_device(cfg["run"]["device"], local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg["run"]["threads"]:
        torch.set_num_threads(int(cfg["run"]["threads"]))
    run_dir = Path(run_dir or Path(cfg["run"]["out_dir"]) / (cfg["run"]["name"] or default_run_name(cfg)))
    last_path = run_dir / "last.pt"
    if resume and not last_path.is_file():
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
        log.warning("%s has no checkpoint yet (stopped in its first epoch): starting it again", run_dir)
        resume = False
    elif not resume and last_path.is_file():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                              "another run.name")
    ctx = RunContext(cfg, run_dir, device, rank, world, int(cfg["run"]["seed"]))
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(file=run_dir / "train.log")
        for stale in remove_stale_temp_files(run_dir):
            log.info("removed %s, left by a run killed while writing it", stale.name)
    seed_everything(ctx.seed + rank)
    if cfg["run"]["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return ctx, resume


def load_data(cfg: dict, ctx: RunContext) -> dict:
    data_channels = 1 if cfg["data"]["dataset"] == "ferplus" else cfg["model"]["in_chans"]
    data = build_datasets(cfg["data"], channels=data_channels)
    train_ds, val_ds, test_ds = data["train"], data["val"], data["test"]
    if len(train_ds) == 0:
        raise ValueError(f"{train_ds.name}: the training split is empty")
    empty = [c for c, n in zip(train_ds.class_names, train_ds.class_counts()) if n == 0]
    if empty:
        log.warning("training split has no images of class(es) %s", empty)
    if cfg["run"]["classifier"] != "logits" and val_ds is None:
        raise ValueError(f"run.classifier {cfg['run']['classifier']} selects epochs on a validation split, and "
                         f"{train_ds.name} has none")
    if ctx.is_main:
        log.info("data: train %d, val %s, test %s images; classes %s", len(train_ds),
                 len(val_ds) if val_ds else "none", len(test_ds) if test_ds else "none", list(train_ds.class_names))
    return data


def build_parts(cfg: dict, class_names, ctx: RunContext, resume: bool) -> TrainingParts:
    model_cfg, loss_cfg, optim_cfg = cfg["model"], cfg["loss"], cfg["optim"]
    model_kwargs = {"in_chans": model_cfg["in_chans"], "dropout": model_cfg["dropout"]}
    if model_cfg["attention_gate"]:
        model_kwargs["attention_gate"] = model_cfg["attention_gate"]
    model = create_model(model_cfg["name"], num_classes=len(class_names), **model_kwargs)
    if model_cfg["init"] and not resume:
        from ..models.pretrained import load_by_name
        load_by_name(model, model_cfg["init"])
    model.to(ctx.device)
    if cfg["run"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    criterion = JointLoss(len(class_names), model.embedding_dim, softmax=loss_cfg["softmax"],
                          centre=loss_cfg["centre"], triplet=loss_cfg["triplet"],
                          triplet_margin=loss_cfg["triplet_margin"], triplet_normalize=loss_cfg["triplet_normalize"],
                          label_smoothing=loss_cfg["label_smoothing"]).to(ctx.device)
    optimizer = make_optimizer(model.parameters(), optim_cfg, ctx.device)
    centre_opt = (torch.optim.SGD(criterion.center.parameters(), lr=loss_cfg["centre_lr"])
                  if criterion.center is not None else None)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=optim_cfg["plateau_factor"],
                                                          patience=optim_cfg["plateau_patience"])
               if optim_cfg["schedule"] == "plateau" else None)
    ema = ModelEMA(model, cfg["run"]["ema_decay"]) if cfg["run"]["ema_decay"] > 0 else None
    train_model = model
    if ctx.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if cfg["run"]["compile"]:
        train_model = torch.compile(train_model)
    pp = Preprocess(input_size=int(cfg["data"]["input_size"]), in_chans=int(model_cfg["in_chans"]))
    return TrainingParts(model, train_model, criterion, optimizer, centre_opt, plateau, ema, model_kwargs,
                         tuple(class_names), pp)


# ------------------------------------------------------------------------------- start, resume, save
def start_run(ctx: RunContext, parts: TrainingParts) -> dict:
    """A fresh run: write its config and metadata; return the loop's initial state."""
    if ctx.is_main:
        atomic_write_text(ctx.run_dir / "config.yaml", dump_config(ctx.cfg))
        atomic_write_json(ctx.run_dir / "meta.json", {
            "litefer": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "git_commit": _git_commit(), "command": " ".join(sys.argv), "hardware": hardware_summary(),
            "device": _device_name(ctx.device), "world_size": ctx.world, "seed": ctx.seed,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "params": sum(p.numel() for p in parts.model.parameters())})
    return {"epoch": 0, "best_acc": -1.0, "best_epoch": -1, "history": [], "best": None}


CHECKPOINT_FIELDS = ("model", "optimizer", "criterion", "state", "rng")


def read_last_checkpoint(ctx: RunContext) -> dict:
    """``last.pt``, read before the data: a corrupt file, or overrides that change what its weights
    are (:data:`~litefer.train.config.RESUME_FIXED`), stop the resume with one line naming it."""
    path = ctx.run_dir / "last.pt"
    ckpt = read_torch_file(path, "run checkpoint", trusted=True)     # the run's own file: RNG states
    missing = [k for k in CHECKPOINT_FIELDS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a litefer run checkpoint (missing {missing})")
    conflicts = resume_conflicts(ckpt.get("config") or {}, ctx.cfg)
    if conflicts:
        raise ValueError(f"{path}: --resume keeps what its weights are, so cannot change {', '.join(conflicts)}; "
                         f"start a new run instead (model.init={ctx.run_dir / 'best.pt'} starts it from these weights)")
    return ckpt


def resume_run(ctx: RunContext, parts: TrainingParts, ckpt: dict) -> dict:
    """Load the checkpoint into ``parts`` and the RNGs; return the loop's state where it stopped."""
    path = ctx.run_dir / "last.pt"
    saved_classes = (ckpt["state"].get("best") or {}).get("class_names")
    if saved_classes is not None and tuple(saved_classes) != tuple(parts.class_names):
        raise ValueError(f"{path}: trained on the classes {list(saved_classes)}, and the data now has "
                         f"{list(parts.class_names)}; resume on the same data, or start a new run")
    load_state(parts.model, ckpt["model"], f"{path}: its tensors do not fit {ctx.cfg['model']['name']}")
    _load_optimizer(parts.optimizer, ckpt["optimizer"])
    parts.criterion.load_state_dict(ckpt["criterion"])
    if parts.centre_opt is not None:
        parts.centre_opt.load_state_dict(ckpt["centre_optimizer"])
    if parts.plateau is not None:
        parts.plateau.load_state_dict(ckpt["plateau"])
    if parts.ema is not None:
        parts.ema.module.load_state_dict(ckpt["ema"])
    state = ckpt["state"]
    if ctx.is_main and ckpt.get("config") != ctx.cfg:
        _record_resume_changes(ctx.run_dir, ckpt.get("config") or {}, ctx.cfg, state["epoch"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(_numpy_rng_state(ckpt["rng"]["numpy"], saving=False))
    random.setstate(ckpt["rng"]["python"])
    if ctx.is_main:
        log.info("resumed %s at epoch %d (best val acc %.4f at epoch %d)", ctx.run_dir, state["epoch"],
                 state["best_acc"], state["best_epoch"])
    return state


def save_checkpoint(ctx: RunContext, parts: TrainingParts, state: dict) -> None:
    """``last.pt``: everything ``resume_run`` needs, written atomically."""
    ckpt = {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "criterion": parts.criterion.state_dict(),
            "centre_optimizer": parts.centre_opt.state_dict() if parts.centre_opt is not None else None,
            "plateau": parts.plateau.state_dict() if parts.plateau is not None else None,
            "ema": parts.ema.module.state_dict() if parts.ema is not None else None,
            "state": state, "config": ctx.cfg,
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(np.random.get_state(), saving=True),
                    "python": random.getstate()}}
    write_weights(ctx.run_dir / "last.pt", ckpt)


def _numpy_rng_state(state: tuple, saving: bool) -> tuple:
    """NumPy's RNG state with its key array as a tensor when saving (so that ``last.pt`` holds only
    tensors and plain data, and loads as weights), as an array when restoring (older checkpoints
    hold the array itself)."""
    name, keys, *rest = state
    return (name, torch.from_numpy(np.array(keys)) if saving else np.asarray(keys), *rest)


# ------------------------------------------------------------------------------------ the main loop
def train(cfg: dict, run_dir: str | os.PathLike | None = None, resume: bool = False) -> dict:
    """Train as ``cfg`` says; with ``resume`` continue the run in ``run_dir`` from its ``last.pt``."""
    ctx, resume = setup_run(cfg, run_dir, resume)
    ckpt = read_last_checkpoint(ctx) if resume else None
    data = load_data(cfg, ctx)
    parts = build_parts(cfg, data["train"].class_names, ctx, resume)
    state = resume_run(ctx, parts, ckpt) if resume else start_run(ctx, parts)
    loop = EpochLoop(ctx, parts, data, state["epoch"])
    limit = float(cfg["run"]["time_limit_s"])
    for epoch in range(state["epoch"], cfg["optim"]["epochs"]):
        if limit and loop.would_exceed(limit):
            state["stopped"] = f"run.time_limit_s: epoch {epoch + 1} would end after {limit:.0f} s"
            log.warning("stopping before epoch %d: %s", epoch + 1, state["stopped"])
            break
        loop.run_epoch(epoch, state)
    if ctx.is_main:
        loop.plot_curves(state["history"])                # if the last plot is behind
    result = _finish(ctx, state, data["test"], parts.pp, time.time() - ctx.started)
    loop.close()
    if ctx.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result


class EpochLoop:
    """One epoch at a time: train, validate, select, record, checkpoint."""

    def __init__(self, ctx: RunContext, parts: TrainingParts, data: dict, start_epoch: int = 0):
        self.ctx, self.parts, self.cfg = ctx, parts, ctx.cfg
        run_cfg, optim_cfg = self.cfg["run"], self.cfg["optim"]
        self.train_ds, self.val_ds = data["train"], data["val"]
        self.device_data = DeviceData(self.train_ds, ctx.device)
        classifier = run_cfg["classifier"]
        # class means of a triplet-trained model live where its loss measured distances
        unit_protos = classifier == "class_mean" and bool(self.cfg["loss"]["triplet_normalize"])
        amp_dtype = torch.bfloat16 if (ctx.device.type == "cuda" and run_cfg["amp"]) else None
        self.settings = StepConfig(parts.pp, AugmentConfig(**self.cfg["augment"]), self.cfg["data"]["label_mode"],
                                   bool(run_cfg["channels_last"]), amp_dtype, optim_cfg["grad_clip"],
                                   classifier, unit_protos, ctx.world)
        self.step = TrainStep(parts.model, parts.train_model, parts.criterion, parts.optimizer, parts.centre_opt,
                              parts.ema, self.settings)
        self.want_graph = bool(run_cfg["cuda_graph"])
        if self.want_graph:
            reason = graph_unsupported_reason(self.cfg, ctx.device, ctx.distributed)
            if reason:
                log.warning("run.cuda_graph is off for this run: %s", reason)
                self.want_graph = False
        self.sampler = BatchSampler(len(self.train_ds), optim_cfg["batch_size"], shuffle=True, seed=ctx.seed,
                                    drop_last=True, rank=ctx.rank, world_size=ctx.world)
        self.writer = _tensorboard_writer(ctx, run_cfg["tensorboard"], start_epoch)
        self.epoch_wall: list[float] = []
        self.plotted_at, self.plotted_epochs = 0.0, -1      # when curves.png was drawn, and of how many epochs

    def would_exceed(self, limit: float) -> bool:
        """Would one more epoch, as long as the slowest of the last two, end past ``limit`` seconds?"""
        if not self.epoch_wall:
            return False
        return time.time() - self.ctx.started + max(self.epoch_wall[-2:]) > limit

    def run_epoch(self, epoch: int, state: dict) -> None:
        t_start = time.time()
        sums, seconds = self.train_one_epoch(epoch, state)
        val, prototypes = self.validate(state)
        row = self.epoch_row(epoch, sums, seconds, val)
        parts = self.parts
        if parts.plateau is not None and val is not None and epoch + 1 >= self.cfg["optim"]["warmup_epochs"]:
            parts.plateau.step(val["loss"])
        state["history"].append(row)
        state["epoch"] = epoch + 1
        improved = self.select(state, row, val, prototypes)
        if self.ctx.is_main:
            self.record(row, improved, state)
            save_checkpoint(self.ctx, parts, state)
        if self.ctx.distributed:
            dist.barrier()
        self.epoch_wall.append(time.time() - t_start)

    def train_one_epoch(self, epoch: int, state: dict) -> tuple[dict, float]:
        ctx, optim_cfg = self.ctx, self.cfg["optim"]
        # Every epoch's randomness derives from (seed, epoch, rank): a resumed run repeats it exactly.
        epoch_seed = ctx.seed * 1000 + epoch * 10 + ctx.rank
        torch.manual_seed(epoch_seed)
        gen = epoch_generator(ctx.device, epoch_seed + 7)
        self.sampler.set_epoch(epoch)
        lr = _epoch_lr(optim_cfg, epoch)
        if lr is not None:
            for g in self.parts.optimizer.param_groups:
                g["lr"] = lr
        self.parts.train_model.train()
        prototypes = None
        if self.settings.classifier == "nearest_centre":
            prototypes = self.parts.criterion.center.centers.detach()
        elif self.settings.classifier == "class_mean":
            prototypes = state.get("prototypes")          # class means of the previous epoch
        max_batches = int(self.cfg["run"]["max_batches"])
        batches = self.sampler.batches(ctx.device)
        if max_batches:
            batches = batches[:max_batches]
        meter = EpochMeter(ctx.device)
        progress = _Progress(ctx, epoch, self.cfg, len(batches), meter)
        t0 = time.time()
        for step_no, idx in enumerate(batches):
            x, target = self.step.batch(self.device_data, idx, gen)
            if self.want_graph and not self.step.graphed:
                self.step.capture_graph(x)
            self.step(x, target, meter, prototypes)
            if not self.epoch_wall and step_no == 0:
                self.step.time_first_step(t0)             # autotuning and capture: logged, once
            progress.update(step_no, len(idx))
        sums = meter.read()                                # the epoch's one host synchronisation
        seconds = time.time() - t0
        progress.close()
        return sums, seconds

    def validate(self, state: dict) -> tuple[dict | None, torch.Tensor | None]:
        parts, run_cfg = self.parts, self.cfg["run"]
        eval_model = parts.ema.module if parts.ema is not None else parts.model
        eval_kw = dict(batch_size=run_cfg["eval_batch_size"], device=self.ctx.device, tta_flip=run_cfg["tta_flip"],
                       channels_last=self.settings.channels_last, autocast_dtype=self.settings.amp_dtype)
        prototypes = None
        if self.settings.classifier == "nearest_centre":
            prototypes = parts.criterion.center.centers.detach().float().cpu().clone()
        elif self.settings.classifier == "class_mean":
            prototypes = class_means(eval_model, self.train_ds, parts.pp, normalize=self.settings.unit_protos,
                                     **eval_kw)
            state["prototypes"] = prototypes
        val = (evaluate(eval_model, self.val_ds, parts.pp, prototypes=prototypes, normalize=self.settings.unit_protos,
                        **eval_kw) if self.val_ds is not None else None)
        return val, prototypes

    def epoch_row(self, epoch: int, sums: dict, seconds: float, val: dict | None) -> dict:
        n = max(sums["n"], 1)
        nan = float("nan")
        return {"epoch": epoch + 1, "lr": float(self.parts.optimizer.param_groups[0]["lr"]),
                "train_loss": sums["loss"] / n, "train_ce": sums["ce"] / n, "train_centre": sums["centre"] / n,
                "train_triplet": sums["triplet"] / n, "train_acc": sums["correct"] / n,
                "val_loss": val["loss"] if val else nan, "val_acc": val["accuracy"] if val else nan,
                "val_mean_class_acc": val["mean_class_accuracy"] if val else nan,
                "val_macro_f1": val["macro_f1"] if val else nan,
                "epoch_seconds": seconds, "images_per_s": sums["n"] * self.ctx.world / max(seconds, 1e-9),
                "setup_seconds": self.step.pop_setup_seconds()}

    def select(self, state: dict, row: dict, val: dict | None, prototypes) -> bool:
        """Keep the epoch's weights as ``best`` if validation accuracy improved (train accuracy when
        there is no validation split); the test split plays no part."""
        score = val["accuracy"] if val is not None else row["train_acc"]
        if not score > state["best_acc"]:
            return False
        parts, settings = self.parts, self.settings
        eval_model = parts.ema.module if parts.ema is not None else parts.model
        state["best_acc"], state["best_epoch"] = score, row["epoch"]
        state["best"] = weights_payload(eval_model, self.cfg["model"]["name"], parts.class_names, parts.pp,
                                        parts.model_kwargs, config=self.cfg, epoch=row["epoch"], val=val)
        if parts.criterion.center is not None:
            state["best"]["centers"] = parts.criterion.center.centers.detach().cpu().clone()
        if prototypes is not None:
            state["best"]["classifier"], state["best"]["prototypes"] = settings.classifier, prototypes
            state["best"]["prototypes_normalized"] = settings.unit_protos
        return True

    def record(self, row: dict, improved: bool, state: dict) -> None:
        log.info("epoch %d/%d  lr %.2e  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.0f img/s%s",
                 row["epoch"], self.cfg["optim"]["epochs"], row["lr"], row["train_loss"], row["train_acc"],
                 row["val_loss"], row["val_acc"], row["images_per_s"], "  *best*" if improved else "")
        _write_metrics(self.ctx.run_dir, state["history"])
        if time.time() - self.plotted_at > 30:             # a plot costs about as much as a short GPU epoch
            self.plot_curves(state["history"])
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and not (isinstance(v, float) and math.isnan(v)):
                    self.writer.add_scalar(k, v, row["epoch"])
            self.writer.flush()
        if improved:
            write_weights(self.ctx.run_dir / "best.pt", state["best"])

    def plot_curves(self, history: list[dict]) -> None:
        """curves.png of ``history``, unless it already shows all of it."""
        if history and self.plotted_epochs != len(history):
            _plot_curves(self.ctx.run_dir / "curves.png", history)
            self.plotted_at, self.plotted_epochs = time.time(), len(history)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _Progress:
    """A tqdm bar on a terminal, else a log line a minute. Reading the running loss synchronises with
    the device, so it happens at most every few seconds, never per step."""

    def __init__(self, ctx: RunContext, epoch: int, cfg: dict, n_batches: int, meter: EpochMeter):
        self.ctx, self.meter, self.n_batches = ctx, meter, n_batches
        self.batch_size = cfg["optim"]["batch_size"]
        self.t0 = self.last_read = time.time()
        mode = cfg["run"]["progress"]
        self.bar = None
        if ctx.is_main and (mode == "always" or (mode == "auto" and sys.stderr.isatty())):
            from tqdm import tqdm
            self.bar = tqdm(total=n_batches * self.batch_size * ctx.world, unit="img",
                            desc=f"epoch {epoch + 1}/{cfg['optim']['epochs']}", dynamic_ncols=True, leave=False)
        self.epoch = epoch

    def update(self, step_no: int, batch: int) -> None:
        if not self.ctx.is_main:
            return
        now = time.time()
        if self.bar is not None:
            self.bar.update(batch * self.ctx.world)
            if now - self.last_read > 2:
                self.last_read = now
                sums = self.meter.read()
                n = max(sums["n"], 1)
                self.bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", acc=f"{sums['correct'] / n:.3f}")
        elif now - self.last_read > 60:
            # no terminal (a background run): a progress line in the log every minute instead
            self.last_read = now
            sums = self.meter.read()
            rate = sums["n"] * self.ctx.world / (now - self.t0)
            eta = (self.n_batches - step_no - 1) * self.batch_size * self.ctx.world / max(rate, 1e-9)
            log.info("epoch %d: batch %d/%d, loss %.4f, %.0f img/s, epoch ETA %.0f s", self.epoch + 1, step_no + 1,
                     self.n_batches, sums["loss"] / max(sums["n"], 1), rate, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tensorboard_writer(ctx: RunContext, enabled: bool, purge_step: int):
    if not (ctx.is_main and enabled):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; metrics go to metrics.csv only")
        return None
    return SummaryWriter(ctx.run_dir / "tb", purge_step=purge_step)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _record_resume_changes(run_dir: Path, old: dict, new: dict, epoch: int) -> None:
    """A resume with ``--set`` overrides: keep config.yaml current and log what changed, and when."""
    a, b = _flatten(old), _flatten(new)
    changes = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    log.info("resuming with changed settings at epoch %d: %s", epoch, changes)
    atomic_write_text(run_dir / "config.yaml", dump_config(new))
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.setdefault("resumed_with_changes", []).append(
        {"at_epoch": epoch, "changes": changes, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
         "command": " ".join(sys.argv)})
    atomic_write_json(meta_path, meta)


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def _plot_curves(path: Path, history: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [r["train_loss"] for r in history], label="train (joint)")
    a.plot(ep, [r["val_loss"] for r in history], label="val (CE)")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(ep, [r["train_acc"] for r in history], label="train")
    b.plot(ep, [r["val_acc"] for r in history], label="val")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _finish(ctx: RunContext, state: dict, test_ds, pp: Preprocess, seconds: float) -> dict:
    """Evaluate the selected weights: validation report + the test split once, if it exists."""
    from ..weights import load_checkpoint_model

    cfg, run_dir = ctx.cfg, ctx.run_dir
    result = {"run_dir": str(run_dir), "best_epoch": state["best_epoch"], "best_val_acc": state["best_acc"],
              "epochs": state["epoch"], "train_seconds_this_session": seconds}
    if state.get("stopped"):
        result["stopped"] = state["stopped"]
    if not ctx.is_main or state["best"] is None:
        return result
    model, _ = load_checkpoint_model(run_dir / "best.pt", device=ctx.device)
    val = state["best"].get("val")
    if val is not None:
        result["val"] = val
        plot_confusion(val, run_dir / "confusion_val.png", f"validation: accuracy {val['accuracy']:.4f}")
    if test_ds is not None and cfg["run"]["eval_test"]:
        test = evaluate(model, test_ds, pp, prototypes=state["best"].get("prototypes"),
                        normalize=bool(state["best"].get("prototypes_normalized")),
                        batch_size=cfg["run"]["eval_batch_size"], device=ctx.device, tta_flip=cfg["run"]["tta_flip"])
        result["test"] = test
        plot_confusion(test, run_dir / "confusion_test.png", f"test: accuracy {test['accuracy']:.4f}")
        log.info("test split (evaluated once, selected epoch %d):\n%s", state["best_epoch"], format_report(test))
    result["total_train_seconds"] = float(sum(r["epoch_seconds"] for r in state["history"]))
    atomic_write_json(run_dir / "final.json", result)
    if val is not None:
        log.info("selected epoch %d on validation:\n%s", state["best_epoch"], format_report(val))
    for stale in remove_stale_temp_files(run_dir):
        log.info("removed %s, left by a run killed while writing it", stale.name)
    return result
