"""Shuffled index batches over an in-memory data set, reproducible per (seed, epoch), sharded per rank."""
from __future__ import annotations

import math

import torch


class BatchSampler:
    """Yields index tensors. The order depends only on (seed, epoch), so a resumed run sees the same
    batches it would have seen; with ``world_size`` > 1 each rank takes an equal, disjoint share."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n < 1:
            raise ValueError("cannot sample batches from an empty data set")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        if self.world_size > 1:
            per_rank = math.ceil(self.n / self.world_size)
            idx = torch.cat([idx, idx[: per_rank * self.world_size - self.n]])  # pad to equal shares
            idx = idx[self.rank::self.world_size]
        return idx

    def __len__(self) -> int:
        n = math.ceil(self.n / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        return iter(self.batches())

    def batches(self, device=None) -> list[torch.Tensor]:
        """This epoch's index batches, moved to ``device`` in one transfer (slices of one tensor)."""
        idx = self._indices()
        if device is not None:
            idx = idx.to(device)
        return [idx[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]
