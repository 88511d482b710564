"""Losses of the paper (§3.3, Table 6): softmax (cross-entropy), centre loss, batch-hard triplet,
and their weighted sum.

The centre loss follows Wen et al. (ECCV 2016): persistent, learnable class centres on the embedding,
moved by their own optimizer. Eq. 3 sums over the batch; like Wen et al.'s reference code we divide
by the batch size so that lambda does not depend on it. ``JointLoss.centre_grad_scale`` gives the
1/lambda factor that keeps the centres' speed independent of lambda, as in Wen et al.'s update rule,
whose centre rate alpha does not involve lambda.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class CenterLoss(nn.Module):
    """L_c = 1/(2m) * sum_i ||x_i - c_{y_i}||^2 with one learnable centre per class."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.shape[1] != self.centers.shape[1]:
            raise ValueError(f"embedding dim {embeddings.shape[1]} != centre dim {self.centers.shape[1]}")
        diff = embeddings - self.centers[labels]
        return 0.5 * diff.pow(2).sum(1).mean()

    @torch.no_grad()
    def nearest_center(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class index of the closest centre: how a model trained with centre loss alone classifies."""
        return torch.cdist(embeddings, self.centers).argmin(1)


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                       normalize: bool = True) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): hardest positive and negative per anchor.

    ``normalize`` puts the embeddings on the unit sphere first (as FaceNet does). Without it the loss
    can fall to the margin by shrinking every embedding towards zero, and on our h-swish embedding
    that shrinking stalled the whole network at majority-class accuracy (a Table 6 budget run).
    """
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    dist = torch.cdist(embeddings, embeddings)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = (same & ~eye)
    valid = pos.any(1) & (~same).any(1)
    if not valid.any():
        return embeddings.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class JointLoss(nn.Module):
    """softmax_weight * CE + centre_weight * L_c + triplet_weight * L_triplet.

    ``targets`` may be hard labels (N,) or label distributions (N,K) (FERPlus soft modes); the
    centre and triplet terms use the arg-max class.
    """

    def __init__(self, num_classes: int, embedding_dim: int, softmax: float = 1.0, centre: float = 0.0,
                 triplet: float = 0.0, triplet_margin: float = 0.3, triplet_normalize: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__()
        if min(softmax, centre, triplet) < 0 or softmax + centre + triplet <= 0:
            raise ValueError("loss weights must be >= 0 and not all zero "
                             f"(softmax={softmax}, centre={centre}, triplet={triplet})")
        self.softmax_weight, self.centre_weight, self.triplet_weight = softmax, centre, triplet
        self.triplet_margin, self.triplet_normalize = triplet_margin, triplet_normalize
        self.label_smoothing = label_smoothing
        self.center = CenterLoss(num_classes, embedding_dim) if centre > 0 else None

    @property
    def centre_grad_scale(self) -> float:
        """Multiply the centres' gradient by this before their optimizer step (1/lambda)."""
        return 1.0 / self.centre_weight if self.centre_weight > 0 else 0.0

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor, targets: torch.Tensor):
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        parts: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        if self.softmax_weight > 0:
            parts["ce"] = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
            total = total + self.softmax_weight * parts["ce"]
        if self.center is not None:
            parts["centre"] = self.center(embeddings.float(), hard)
            total = total + self.centre_weight * parts["centre"]
        if self.triplet_weight > 0:
            parts["triplet"] = batch_hard_triplet(embeddings.float(), hard, self.triplet_margin,
                                                  self.triplet_normalize)
            total = total + self.triplet_weight * parts["triplet"]
        return total, parts
