"""One training step, and what it needs to keep an accelerator busy.

The data set lives on the training device as uint8 (FERPlus Training is 58 MB), batches are indexed
there, augmentation draws its randomness there, and the epoch's loss parts and correct counts are
summed into a device tensor that is read once per epoch. On CUDA the model's forward and backward
can be replayed from a CUDA graph (``run.cuda_graph``): one launch each instead of hundreds, which is
what a 1.3 M-parameter network needs for the GPU, not Python, to set the pace. On the CPU the step
is the plain eager step, with the same randomness as before, so CPU runs and resumes are unchanged.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..data import AugmentConfig, FaceDataset, Preprocess, augment
from .evaluate import prototype_scores

log = logging.getLogger("litefer.train")

# Order of the per-epoch sums kept on the device.
SUM_KEYS = ("loss", "ce", "centre", "triplet", "correct")


class DeviceData:
    """A training split's images, hard labels and soft targets held on the training device."""

    def __init__(self, dataset: FaceDataset, device: torch.device):
        self.device = device
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.soft = None if dataset.soft_targets is None else dataset.soft_targets.to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def targets(self, idx: torch.Tensor, label_mode: str, generator: torch.Generator | None) -> torch.Tensor:
        """Training targets of a batch: distributions (``crossentropy``), one label sampled from the
        distribution (``probability``) or the hard labels."""
        if self.soft is not None and label_mode == "crossentropy":
            return self.soft[idx]
        if self.soft is not None and label_mode == "probability":
            soft = self.soft[idx]
            return torch.multinomial(soft.to(_generator_device(generator)), 1, generator=generator).squeeze(1).to(
                self.device)
        return self.labels[idx]


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def epoch_generator(device: torch.device, seed: int) -> torch.Generator:
    """The augmentation generator of one epoch: on the CPU as always (so CPU runs repeat exactly),
    on the accelerator itself elsewhere, so that drawing random numbers never waits for the device."""
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    return torch.Generator(device=gen_device).manual_seed(seed)


class EpochMeter:
    """Running sums of loss parts and correct predictions as one device tensor: adding is a few
    kernels and no host synchronisation; ``read()`` synchronises, once per epoch (or per progress line)."""

    def __init__(self, device: torch.device):
        dtype = torch.float64 if device.type != "mps" else torch.float32
        self.sums = torch.zeros(len(SUM_KEYS), dtype=dtype, device=device)
        self.n = 0                       # images seen: known on the host, never synchronised
        self.correct_known = True        # False when a prototype classifier had no prototypes yet

    def add(self, loss: torch.Tensor, parts: dict, correct: torch.Tensor | None, batch: int) -> None:
        zero = loss.new_zeros(())
        values = [loss, *(parts.get(k, zero) for k in ("ce", "centre", "triplet"))]
        step = torch.stack([v.detach().float() for v in values]).to(self.sums.dtype) * batch
        self.sums[:4] += step
        if correct is None:
            self.correct_known = False
        else:
            self.sums[4] += correct
        self.n += batch

    def read(self) -> dict:
        values = self.sums.tolist()
        out = {k: v for k, v in zip(SUM_KEYS, values)}
        if not self.correct_known:
            out["correct"] = float("nan")
        out["n"] = self.n
        return out


class EmbeddingForward(torch.nn.Module):
    """``model(x, return_embedding=True)`` as a plain one-argument module, the form a CUDA graph takes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, return_embedding=True)


@dataclass
class StepConfig:
    """What a step needs besides the modules: preprocessing, augmentation and the loop's settings."""

    pp: Preprocess
    aug: AugmentConfig
    label_mode: str
    channels_last: bool
    amp_dtype: torch.dtype | None
    grad_clip: float
    classifier: str = "logits"
    unit_protos: bool = False
    world: int = 1


class TrainStep:
    """Forward, joint loss, backward, optimizer and centre steps, EMA; metrics into an ``EpochMeter``."""

    def __init__(self, model, train_model, criterion, optimizer, centre_opt, ema, settings: StepConfig):
        self.model, self.criterion = model, criterion
        self.forward = lambda x: train_model(x, return_embedding=True)
        self.optimizer, self.centre_opt, self.ema, self.s = optimizer, centre_opt, ema, settings
        self.graphed = False
        self.setup_seconds = 0.0

    def batch(self, data: DeviceData, idx: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = augment(data.images[idx], self.s.pp, self.s.aug, generator=generator, device=data.device)
        if self.s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, data.targets(idx, self.s.label_mode, generator)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, meter: EpochMeter, prototypes=None) -> None:
        with torch.autocast(device_type=x.device.type, dtype=self.s.amp_dtype, enabled=self.s.amp_dtype is not None):
            logits, emb = self.forward(x)
        loss, parts = self.criterion(logits.float(), emb.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        if self.centre_opt is not None:
            self.centre_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        self.optimizer.step()
        if self.centre_opt is not None:
            self._centre_step()
        if self.ema is not None:
            self.ema.update(self.model)
        meter.add(loss, parts, self._correct(logits, emb, target, prototypes), len(x))

    def _centre_step(self) -> None:
        centers = self.criterion.center.centers
        if self.s.world > 1:
            dist.all_reduce(centers.grad)
            centers.grad /= self.s.world
        centers.grad.mul_(self.criterion.centre_grad_scale)
        self.centre_opt.step()

    def _correct(self, logits, emb, target, prototypes) -> torch.Tensor | None:
        hard = target.argmax(1) if target.ndim == 2 else target
        if self.s.classifier == "logits":
            return (logits.detach().argmax(1) == hard).sum()
        if prototypes is None:
            return None
        pred = prototype_scores(emb.detach().float(), prototypes.to(emb.device), self.s.unit_protos).argmax(1)
        return (pred == hard).sum()

    def time_first_step(self, t0: float) -> None:
        """Wait for the first step and count its time (cuDNN autotuning, graph warm-up) as set-up."""
        if self.model_device.type == "cuda":
            torch.cuda.synchronize(self.model_device)
        first = time.time() - t0
        self.setup_seconds += first
        log.info("first training step done after %.2f s (includes one-off autotuning and capture)", first)

    def pop_setup_seconds(self) -> float:
        """One-off set-up seconds since the last call (0 once the loop runs steadily)."""
        seconds, self.setup_seconds = self.setup_seconds, 0.0
        return seconds

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def capture_graph(self, x: torch.Tensor) -> None:
        """Replace the eager forward/backward by CUDA-graph replays (``torch.cuda.make_graphed_callables``).

        ``x`` is a real batch of the training shape. Capture runs a few warm-up passes, which would move
        BatchNorm's running statistics; they are put back, so the graphed run starts where eager would."""
        t0 = time.perf_counter()
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        wrapper = EmbeddingForward(self.model).train()
        with torch.autocast(device_type="cuda", dtype=self.s.amp_dtype, enabled=self.s.amp_dtype is not None,
                            cache_enabled=False):
            self.forward = torch.cuda.make_graphed_callables(wrapper, (x.detach(),), allow_unused_input=True)
        with torch.no_grad():
            for k, v in self.model.named_buffers():
                v.copy_(buffers[k])
        torch.cuda.synchronize(x.device)
        self.graphed = True
        log.info("CUDA graph of the forward and backward captured for input %s in %.2f s (one-off)",
                 tuple(x.shape), time.perf_counter() - t0)


def graph_unsupported_reason(cfg: dict, device: torch.device, distributed: bool) -> str | None:
    """Why ``run.cuda_graph`` cannot be used for this run (None: it can)."""
    if device.type != "cuda":
        return f"the device is {device.type}, not CUDA"
    if distributed:
        return "DistributedDataParallel synchronises inside backward"
    if cfg["run"]["compile"]:
        return "run.compile is on (torch.compile makes its own graphs)"
    return None
