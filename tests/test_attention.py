"""CA, MAXCA, CPSCA and SE against direct computations of their definitions (paper-facts §2).

The references below are written from the definitions with einsum and explicit formulas, not with
the modules' code, on a non-square input so that an H/W mix-up cannot pass.
"""
import pytest
import torch

from litefer.models.attention import CoordAttention, SqueezeExcite

N, C, H, W = 2, 16, 5, 7          # mip = max(8, 16 // 32) = 8
EPS = 1e-3


def hswish(t):
    return t * torch.clamp(t + 3, 0, 6) / 6


def hsigmoid(t):
    return torch.clamp(t / 6 + 0.5, 0, 1)


def reduce(x, how, dim):
    return x.mean(dim=dim) if how == "mean" else x.max(dim=dim).values


def randomize(module, seed=0):
    """Random weights, biases and BatchNorm running stats; eval mode (BN uses running stats)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return module.double().eval()


def coord_reference(x, m, groups, gate=torch.sigmoid, mode="spec"):
    """Coordinate attention from its definition.

    groups: list of (pool over W giving the H descriptor, pool over H giving the W descriptor).
    mode "spec": conv1 on each group's concat (shared weights), outputs summed, then bn1.
    Wrong variants for the negative checks: "sum_then_conv" (descriptors summed, one conv1) and
    "bn_per_group" (bn1 + act applied per group, then summed).
    """
    w1, b1 = m.conv1.weight[:, :, 0, 0], m.conv1.bias
    bn = m.bn1
    wh, bh = m.conv_h.weight[:, :, 0, 0], m.conv_h.bias
    ww, bw = m.conv_w.weight[:, :, 0, 0], m.conv_w.bias

    def conv1(d):                                   # d: N, C, L -> N, mip, L
        return torch.einsum("mc,ncl->nml", w1, d) + b1[None, :, None]

    def bn1(z):
        return ((z - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + EPS)
                * bn.weight[None, :, None] + bn.bias[None, :, None])

    descs = [torch.cat([reduce(x, pw, dim=3), reduce(x, ph, dim=2)], dim=2) for pw, ph in groups]
    if mode == "spec":
        y = hswish(bn1(sum(conv1(d) for d in descs)))
    elif mode == "sum_then_conv":
        y = hswish(bn1(conv1(sum(descs))))
    elif mode == "bn_per_group":
        y = sum(hswish(bn1(conv1(d))) for d in descs)
    else:
        raise ValueError(mode)
    y_h, y_w = y[:, :, :H], y[:, :, H:]
    a_h = gate(torch.einsum("cm,nml->ncl", wh, y_h) + bh[None, :, None])     # N, C, H
    a_w = gate(torch.einsum("cm,nml->ncl", ww, y_w) + bw[None, :, None])     # N, C, W
    return x * a_h[:, :, :, None] * a_w[:, :, None, :]


SPEC_GROUPS = {
    "ca": [("mean", "mean")],
    "maxca": [("max", "max")],
    "cpsca": [("max", "mean"), ("mean", "max")],
}
# Plausible mistakes that a correct test must reject.
WRONG_GROUPS = {
    "ca": [("max", "max")],                          # max instead of mean
    "maxca": [("mean", "mean")],                     # mean instead of max
    "cpsca": [("mean", "max"), ("mean", "max")],     # group 1's max/mean swapped
}


@pytest.fixture
def x():
    return torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["ca", "maxca", "cpsca"])
def test_coordinate_attention_matches_definition(kind, x):
    m = randomize(CoordAttention(C, pooling=kind))
    assert m.conv1.out_channels == 8
    with torch.no_grad():
        out = m(x)
        expected = coord_reference(x, m, SPEC_GROUPS[kind])
        wrong = coord_reference(x, m, WRONG_GROUPS[kind])
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    assert (out - wrong).abs().max() > 1e-3, "the check cannot tell the wrong pooling apart"


def test_cpsca_groups_share_conv1_and_sum_before_bn(x):
    m = randomize(CoordAttention(C, pooling="cpsca"))
    with torch.no_grad():
        out = m(x)
        for mode in ("sum_then_conv", "bn_per_group"):
            wrong = coord_reference(x, m, SPEC_GROUPS["cpsca"], mode=mode)
            assert (out - wrong).abs().max() > 1e-3, mode
    assert sum(isinstance(c, torch.nn.Conv2d) for c in m.modules()) == 3   # conv1, conv_h, conv_w


def test_cpsca_depends_only_on_the_pooled_sums(x):
    """conv1 is linear and the groups are summed before bn1, so CPSCA equals any grouping that gives
    each direction one max and one mean, e.g. ((max, max), (mean, mean)): CA and MAXCA descriptors
    summed before bn1. A property of the definition, recorded so nobody "fixes" it by accident."""
    m = randomize(CoordAttention(C, pooling="cpsca"))
    with torch.no_grad():
        torch.testing.assert_close(m(x), coord_reference(x, m, [("max", "max"), ("mean", "mean")]),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["ca", "cpsca"])
def test_hard_sigmoid_gate(kind, x):
    m = randomize(CoordAttention(C, pooling=kind, gate="hardsigmoid"))
    assert isinstance(m.gate, torch.nn.Hardsigmoid)
    with torch.no_grad():
        out = m(x)
        torch.testing.assert_close(out, coord_reference(x, m, SPEC_GROUPS[kind], gate=hsigmoid),
                                   rtol=1e-10, atol=1e-12)
        assert (out - coord_reference(x, m, SPEC_GROUPS[kind])).abs().max() > 1e-3


def test_squeeze_excite_matches_definition(x):
    m = randomize(SqueezeExcite(C))
    assert m.fc1.out_channels == 8                               # make_divisible(16 / 4, 8)
    w1, b1 = m.fc1.weight[:, :, 0, 0], m.fc1.bias
    w2, b2 = m.fc2.weight[:, :, 0, 0], m.fc2.bias
    s = x.mean(dim=(2, 3))                                       # N, C
    s = hsigmoid(torch.relu(s @ w1.T + b1) @ w2.T + b2)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * s[:, :, None, None], rtol=1e-10, atol=1e-12)


def test_bad_attention_arguments():
    with pytest.raises(ValueError, match="pooling"):
        CoordAttention(C, pooling="minca")
    with pytest.raises(ValueError, match="gate"):
        CoordAttention(C, gate="tanh")
