"""Where the network looks: Grad-CAM computed inside the forward graph, and the attention gates.

The networks end in global average pooling and a two-layer classifier (Linear -> h-swish -> dropout
-> Linear). For features A (N, C, h, w), pooled p = mean(A), hidden u = W1 p + b1 and logits
z = W2 hswish(u) + b2, the gradient of class k's logit with respect to A[c, i, j] is the same at
every position:

    dz_k / dA[c, i, j] = (1 / hw) * sum_m W2[k, m] * hswish'(u_m) * W1[m, c]

so Grad-CAM's channel weights are forward quantities, and the map of class k is
``relu(sum_c alpha[k, c] * A[c])``. ``ExplainedNet`` computes it for every class in the same pass as
the logits, with no autograd: the same graph exports to ONNX (``litefer export --explain``) and runs
in ONNX Runtime and in the browser. Its resolution is the last feature map's: 4 x 4 at 112 px.

``gradcam_autograd`` is the textbook form through torch's autograd, for any layer (an earlier one
gives a finer map, 7 x 7 at 112 px for the stride-16 blocks); ``attention_gates`` returns what each
coordinate-attention block (CA, MAXCA, CPSCA) computes: its height and width gates, as their outer
product averaged over channels, at the block's own resolution.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..inference.explain import CAM_OUTPUT, ExplainError  # noqa: F401 (torch-free home, public here too)
from .attention import CoordAttention


def hardswish_grad(u: torch.Tensor) -> torch.Tensor:
    """d hardswish(u) / du, as torch's own backward: 0 below -3, (2u + 3) / 6 up to 3, 1 above."""
    mid = (2.0 * u + 3.0) / 6.0
    return torch.where(u < -3.0, torch.zeros_like(u), torch.where(u > 3.0, torch.ones_like(u), mid))


def _classifier_layers(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The two Linear layers of a ``features -> avgpool -> [Linear, Hardswish, Dropout, Linear]``
    network, or ExplainError saying what is missing."""
    head = getattr(model, "classifier", None)
    pool = getattr(model, "avgpool", None)
    ok = (isinstance(getattr(model, "features", None), nn.Module)
          and isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
          and isinstance(head, nn.Sequential) and len(head) == 4
          and isinstance(head[0], nn.Linear) and isinstance(head[1], nn.Hardswish)
          and isinstance(head[2], nn.Dropout) and isinstance(head[3], nn.Linear))
    if not ok:
        raise ExplainError(f"{type(model).__name__} has no pooled two-layer classifier (features -> global "
                           "average pool -> Linear, h-swish, dropout, Linear); its Grad-CAM is not analytic")
    return head[0], head[3]


class ExplainedNet(nn.Module):
    """``forward(x) -> (logits, cam)``: the wrapped network's logits and, for every class, its
    Grad-CAM map on the last feature map, (N, classes, h, w), non-negative and not normalised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = _classifier_layers(model)
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.features(x)                                  # N, C, h, w
        n, c, h, w = feats.shape
        hidden = self.fc1(torch.flatten(self.model.avgpool(feats), 1))  # N, M
        logits = self.fc2(F.hardswish(hidden))                          # dropout is identity in eval
        # d logits / d pooled: (W2 * hswish'(u)) @ W1 -> N, K, C; per position it is 1/hw of that
        slope = self.fc2.weight.unsqueeze(0) * hardswish_grad(hidden).unsqueeze(1)
        alpha = torch.matmul(slope, self.fc1.weight) / float(h * w)
        cam = torch.matmul(alpha, feats.reshape(n, c, h * w)).reshape(n, -1, h, w)
        return logits, torch.relu(cam)


def feature_resolution(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(h, w) of the last feature map for a square input: the resolution of the in-graph map."""
    _classifier_layers(model)
    with torch.no_grad():
        was = model.training
        model.eval()
        try:
            shape = model.features(torch.zeros(1, getattr(model, "in_chans", 3), input_size, input_size)).shape
        finally:
            model.train(was)
    return int(shape[-2]), int(shape[-1])


def gradcam_autograd(model: nn.Module, x: torch.Tensor, layer: nn.Module, classes: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Grad-CAM at any ``layer`` through autograd: (N, h, w) maps of ``classes`` (default: each
    input's top class), non-negative and not normalised; ``model`` is run in eval mode."""
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("a", out))
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = model(x)
            acts = kept["a"]
            if classes is None:
                classes = logits.argmax(1)
            score = logits.gather(1, classes.view(-1, 1)).sum()
            grads, = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        model.train(was)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * acts).sum(1)).detach()


def attention_gates(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each coordinate-attention block of ``model`` (training form), the outer product of its
    height and width gates averaged over channels: {module name: (N, H, W)}, in forward order."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, CoordAttention):
            def hook(mod, inputs, _out, name=name):
                a_h, a_w = mod.gates(inputs[0])
                found[name] = (a_h * a_w).mean(1)
            handles.append(m.register_forward_hook(hook))
    if not handles:
        raise ExplainError(f"{type(model).__name__} has no coordinate-attention (CA, MAXCA or CPSCA) block")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return found
