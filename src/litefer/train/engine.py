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
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import __version__
from ..data import AugmentConfig, BatchSampler, Preprocess, augment, build_datasets
from ..losses import JointLoss
from ..models import create_model
from ..utils import (atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text,
                     hardware_summary, setup_logging)
from ..weights import weights_payload
from .config import dump_config
from .evaluate import class_means, evaluate, plot_confusion, prototype_scores
from .metrics import format_report

log = logging.getLogger("litefer.train")

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_ce", "train_centre", "train_triplet", "train_acc",
                 "val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1", "epoch_seconds", "images_per_s"]


# ---------------------------------------------------------------------------------------------- setup
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device asks for CUDA but no CUDA device is available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def default_run_name(cfg: dict) -> str:
    d = cfg["data"]
    return f"{cfg['model']['name']}_{d['dataset']}_{d['input_size']}px_seed{cfg['run']['seed']}"


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


def _make_optimizer(params, o: dict) -> torch.optim.Optimizer:
    if o["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
    if o["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"])
    return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                           nesterov=True)


def _epoch_lr(o: dict, epoch: int) -> float | None:
    """Learning rate of an epoch for warm-up and cosine schedules (None: plateau decides)."""
    if epoch < o["warmup_epochs"]:
        return o["lr"] * (epoch + 1) / (o["warmup_epochs"] + 1)
    if o["schedule"] == "cosine":
        span = max(1, o["epochs"] - o["warmup_epochs"])
        t = (epoch - o["warmup_epochs"]) / span
        return o["min_lr"] + 0.5 * (o["lr"] - o["min_lr"]) * (1 + math.cos(math.pi * t))
    if o["schedule"] == "none":
        return o["lr"]
    return None


# ------------------------------------------------------------------------------------------ main loop
def train(cfg: dict, run_dir: str | os.PathLike | None = None, resume: bool = False) -> dict:
    """Train as ``cfg`` says; with ``resume`` continue the run in ``run_dir`` from its ``last.pt``."""
    rank, local_rank, world = _dist_info()
    distributed = world > 1
    device = resolve_device(cfg["run"]["device"], local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg["run"]["threads"]:
        torch.set_num_threads(int(cfg["run"]["threads"]))

    run_dir = Path(run_dir or Path(cfg["run"]["out_dir"]) / (cfg["run"]["name"] or default_run_name(cfg)))
    last_path = run_dir / "last.pt"
    if resume and not last_path.is_file():
        raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
    if not resume and last_path.is_file():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                              "another run.name")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(file=run_dir / "train.log")
    seed = int(cfg["run"]["seed"])
    seed_everything(seed + rank)
    if cfg["run"]["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- data
    mcfg = cfg["model"]
    data_channels = 1 if cfg["data"]["dataset"] == "ferplus" else mcfg["in_chans"]
    data = build_datasets(cfg["data"], channels=data_channels)
    train_ds, val_ds, test_ds = data["train"], data["val"], data["test"]
    if len(train_ds) == 0:
        raise ValueError(f"{train_ds.name}: the training split is empty")
    empty = [c for c, n in zip(train_ds.class_names, train_ds.class_counts()) if n == 0]
    if empty:
        log.warning("training split has no images of class(es) %s", empty)
    pp = Preprocess(input_size=int(cfg["data"]["input_size"]), in_chans=int(mcfg["in_chans"]))
    aug = AugmentConfig(**cfg["augment"])
    class_names = train_ds.class_names
    if is_main:
        log.info("data: train %d, val %s, test %s images; classes %s", len(train_ds),
                 len(val_ds) if val_ds else "none", len(test_ds) if test_ds else "none", list(class_names))

    # How the model classifies at validation, selection and test: its logits, or (trained without the
    # softmax loss, Table 6) the nearest learned centre or the nearest training class mean.
    classifier = cfg["run"]["classifier"]
    # class means of a triplet-trained model live where its loss measured distances
    unit_protos = classifier == "class_mean" and bool(cfg["loss"]["triplet_normalize"])
    if classifier != "logits" and val_ds is None:
        raise ValueError(f"run.classifier {classifier} selects epochs on a validation split, and "
                         f"{train_ds.name} has none")

    # ---- model, loss, optimizers
    model_kwargs = {"in_chans": mcfg["in_chans"], "dropout": mcfg["dropout"]}
    if mcfg["attention_gate"]:
        model_kwargs["attention_gate"] = mcfg["attention_gate"]
    model = create_model(mcfg["name"], num_classes=len(class_names), **model_kwargs)
    if mcfg["init"] and not resume:
        from ..models.pretrained import load_by_name
        load_by_name(model, mcfg["init"])
    model.to(device)
    channels_last = bool(cfg["run"]["channels_last"])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lcfg = cfg["loss"]
    criterion = JointLoss(len(class_names), model.embedding_dim, softmax=lcfg["softmax"], centre=lcfg["centre"],
                          triplet=lcfg["triplet"], triplet_margin=lcfg["triplet_margin"],
                          triplet_normalize=lcfg["triplet_normalize"],
                          label_smoothing=lcfg["label_smoothing"]).to(device)
    o = cfg["optim"]
    optimizer = _make_optimizer(model.parameters(), o)
    centre_opt = (torch.optim.SGD(criterion.center.parameters(), lr=lcfg["centre_lr"])
                  if criterion.center is not None else None)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o["plateau_factor"],
                                                          patience=o["plateau_patience"])
               if o["schedule"] == "plateau" else None)
    ema = ModelEMA(model, cfg["run"]["ema_decay"]) if cfg["run"]["ema_decay"] > 0 else None
    amp_dtype = torch.bfloat16 if (device.type == "cuda" and cfg["run"]["amp"]) else None

    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": -1, "history": [], "best": None}
    if resume:
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        criterion.load_state_dict(ckpt["criterion"])
        if centre_opt is not None:
            centre_opt.load_state_dict(ckpt["centre_optimizer"])
        if plateau is not None:
            plateau.load_state_dict(ckpt["plateau"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
        state = ckpt["state"]
        if is_main and ckpt.get("config") != cfg:
            _record_resume_changes(run_dir, ckpt.get("config") or {}, cfg, state["epoch"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        if is_main:
            log.info("resumed %s at epoch %d (best val acc %.4f at epoch %d)", run_dir, state["epoch"],
                     state["best_acc"], state["best_epoch"])
    elif is_main:
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        atomic_write_json(run_dir / "meta.json", {
            "litefer": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "git_commit": _git_commit(), "command": " ".join(sys.argv), "hardware": hardware_summary(),
            "device": str(device), "world_size": world, "seed": seed,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "params": sum(p.numel() for p in model.parameters())})

    train_model = model
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["run"]["compile"]:
        train_model = torch.compile(train_model)

    sampler = BatchSampler(len(train_ds), o["batch_size"], shuffle=True, seed=seed, drop_last=True,
                           rank=rank, world_size=world)
    writer = None
    if is_main and cfg["run"]["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(run_dir / "tb", purge_step=state["epoch"])
        except ImportError:
            log.warning("tensorboard is not installed; metrics go to metrics.csv only")
    show_bar = is_main and (cfg["run"]["progress"] == "always" or
                            (cfg["run"]["progress"] == "auto" and sys.stderr.isatty()))
    soft = train_ds.soft_targets is not None and cfg["data"].get("label_mode") == "crossentropy"
    probability = train_ds.soft_targets is not None and cfg["data"].get("label_mode") == "probability"
    max_batches = int(cfg["run"]["max_batches"])
    run_start = time.time()

    for epoch in range(state["epoch"], o["epochs"]):
        # Every epoch's randomness derives from (seed, epoch, rank): a resumed run repeats it exactly.
        epoch_seed = seed * 1000 + epoch * 10 + rank
        torch.manual_seed(epoch_seed)
        gen = torch.Generator().manual_seed(epoch_seed + 7)
        sampler.set_epoch(epoch)
        lr = _epoch_lr(o, epoch)
        if lr is not None:
            for g in optimizer.param_groups:
                g["lr"] = lr
        train_model.train()
        sums = {"loss": 0.0, "ce": 0.0, "centre": 0.0, "triplet": 0.0, "correct": 0, "n": 0}
        t0 = time.time()
        n_batches = min(len(sampler), max_batches) if max_batches else len(sampler)
        bar = None
        last_note = t0
        if show_bar:
            from tqdm import tqdm
            bar = tqdm(total=n_batches * o["batch_size"] * world, unit="img", desc=f"epoch {epoch + 1}/{o['epochs']}",
                       dynamic_ncols=True, leave=False)
        for step, idx in enumerate(sampler):
            if step >= n_batches:
                break
            x = augment(train_ds.images[idx], pp, aug, generator=gen, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if soft:
                target = train_ds.soft_targets[idx].to(device)
            elif probability:
                target = torch.multinomial(train_ds.soft_targets[idx], 1, generator=gen).squeeze(1).to(device)
            else:
                target = train_ds.labels[idx].to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, emb = train_model(x, return_embedding=True)
            loss, parts = criterion(logits.float(), emb.float(), target)
            optimizer.zero_grad(set_to_none=True)
            if centre_opt is not None:
                centre_opt.zero_grad(set_to_none=True)
            loss.backward()
            if o["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
            optimizer.step()
            if centre_opt is not None:
                centers = criterion.center.centers
                if distributed:
                    dist.all_reduce(centers.grad)
                    centers.grad /= world
                centers.grad.mul_(criterion.centre_grad_scale)
                centre_opt.step()
            if ema is not None:
                ema.update(model)
            hard = target.argmax(1) if target.ndim == 2 else target
            b = len(idx)
            sums["loss"] += float(loss.detach()) * b
            for k in ("ce", "centre", "triplet"):
                if k in parts:
                    sums[k] += float(parts[k].detach()) * b
            if classifier == "logits":
                sums["correct"] += int((logits.argmax(1) == hard).sum())
            else:
                protos = (criterion.center.centers.detach() if classifier == "nearest_centre"
                          else state.get("prototypes"))        # class means of the previous epoch
                if protos is None:
                    sums["correct"] = float("nan")
                else:
                    pred = prototype_scores(emb.detach().float(), protos.to(emb.device), unit_protos).argmax(1)
                    sums["correct"] += int((pred == hard).sum())
            sums["n"] += b
            if bar is not None:
                bar.update(b * world)
                bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", acc=f"{sums['correct'] / sums['n']:.3f}")
            elif is_main and time.time() - last_note > 60:
                # no terminal (a background run): a progress line in the log every minute instead
                last_note = time.time()
                rate = sums["n"] * world / (last_note - t0)
                eta = (n_batches - step - 1) * o["batch_size"] * world / max(rate, 1e-9)
                log.info("epoch %d: batch %d/%d, loss %.4f, %.0f img/s, epoch ETA %.0f s", epoch + 1, step + 1,
                         n_batches, sums["loss"] / sums["n"], rate, eta)
        if bar is not None:
            bar.close()
        seconds = time.time() - t0
        throughput = sums["n"] * world / max(seconds, 1e-9)
        eval_model = ema.module if ema is not None else model
        eval_kw = dict(batch_size=cfg["run"]["eval_batch_size"], device=device, tta_flip=cfg["run"]["tta_flip"],
                       channels_last=channels_last, autocast_dtype=amp_dtype)
        prototypes = None
        if classifier == "nearest_centre":
            prototypes = criterion.center.centers.detach().float().cpu().clone()
        elif classifier == "class_mean":
            prototypes = class_means(eval_model, train_ds, pp, normalize=unit_protos, **eval_kw)
            state["prototypes"] = prototypes
        val = (evaluate(eval_model, val_ds, pp, prototypes=prototypes, normalize=unit_protos, **eval_kw)
               if val_ds is not None else None)
        n = max(sums["n"], 1)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": sums["loss"] / n,
               "train_ce": sums["ce"] / n, "train_centre": sums["centre"] / n, "train_triplet": sums["triplet"] / n,
               "train_acc": sums["correct"] / n,
               "val_loss": val["loss"] if val else float("nan"), "val_acc": val["accuracy"] if val else float("nan"),
               "val_mean_class_acc": val["mean_class_accuracy"] if val else float("nan"),
               "val_macro_f1": val["macro_f1"] if val else float("nan"),
               "epoch_seconds": seconds, "images_per_s": throughput}
        if plateau is not None and val is not None and epoch + 1 >= o["warmup_epochs"]:
            plateau.step(val["loss"])
        state["history"].append(row)
        state["epoch"] = epoch + 1
        # Selection uses the validation split only (train accuracy when there is no validation split).
        score = val["accuracy"] if val is not None else row["train_acc"]
        improved = score > state["best_acc"]
        if improved:
            state["best_acc"], state["best_epoch"] = score, epoch + 1
            state["best"] = weights_payload(eval_model, mcfg["name"], class_names, pp.to_dict(), model_kwargs,
                                            config=cfg, epoch=epoch + 1, val=val)
            if criterion.center is not None:
                state["best"]["centers"] = criterion.center.centers.detach().cpu().clone()
            if prototypes is not None:
                state["best"]["classifier"], state["best"]["prototypes"] = classifier, prototypes
                state["best"]["prototypes_normalized"] = unit_protos
        if is_main:
            log.info("epoch %d/%d  lr %.2e  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.0f img/s%s",
                     epoch + 1, o["epochs"], row["lr"], row["train_loss"], row["train_acc"], row["val_loss"],
                     row["val_acc"], throughput, "  *best*" if improved else "")
            _write_metrics(run_dir, state["history"])
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and not (isinstance(v, float) and math.isnan(v)):
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            if improved:
                atomic_torch_save(state["best"], run_dir / "best.pt")
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "criterion": criterion.state_dict(),
                    "centre_optimizer": centre_opt.state_dict() if centre_opt is not None else None,
                    "plateau": plateau.state_dict() if plateau is not None else None,
                    "ema": ema.module.state_dict() if ema is not None else None,
                    "state": state, "config": cfg,
                    "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                            "python": random.getstate()}}
            atomic_torch_save(ckpt, last_path)
        if distributed:
            dist.barrier()

    result = _finish(run_dir, state, test_ds, pp, cfg, device, channels_last, amp_dtype, is_main,
                     time.time() - run_start)
    if writer is not None:
        writer.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result


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
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    _plot_curves(run_dir / "curves.png", history)


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


def _finish(run_dir, state, test_ds, pp, cfg, device, channels_last, amp_dtype, is_main, seconds) -> dict:
    """Evaluate the selected weights: validation report + the test split once, if it exists."""
    from ..weights import load_checkpoint_model

    result = {"run_dir": str(run_dir), "best_epoch": state["best_epoch"], "best_val_acc": state["best_acc"],
              "epochs": state["epoch"], "train_seconds_this_session": seconds}
    if not is_main or state["best"] is None:
        return result
    model, _ = load_checkpoint_model(run_dir / "best.pt", device=device)
    val = state["best"].get("val")
    if val is not None:
        result["val"] = val
        plot_confusion(val, run_dir / "confusion_val.png", f"validation: accuracy {val['accuracy']:.4f}")
    if test_ds is not None and cfg["run"]["eval_test"]:
        test = evaluate(model, test_ds, pp, prototypes=state["best"].get("prototypes"),
                        normalize=bool(state["best"].get("prototypes_normalized")),
                        batch_size=cfg["run"]["eval_batch_size"], device=device, tta_flip=cfg["run"]["tta_flip"])
        result["test"] = test
        plot_confusion(test, run_dir / "confusion_test.png", f"test: accuracy {test['accuracy']:.4f}")
        log.info("test split (evaluated once, selected epoch %d):\n%s", state["best_epoch"], format_report(test))
    result["total_train_seconds"] = float(sum(r["epoch_seconds"] for r in state["history"]))
    atomic_write_json(run_dir / "final.json", result)
    if val is not None:
        log.info("selected epoch %d on validation:\n%s", state["best_epoch"], format_report(val))
    return result
