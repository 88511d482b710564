"""The registry, the block table of every variant, shapes, the residual rule and gradients."""
import pytest
import torch
from torch import nn

from litefer import create_model, list_models
from litefer.models import CoordAttention, InvertedResidual, SqueezeExcite

PARAMS = {  # name: (params at 7 classes, params at 8 classes)
    "mobilenetv3_large": (4_210_999, 4_212_280),
    "mobilenetv3_large_reduced": (1_932_839, 1_933_480),
    "mobilenetv3_large_reduced_hswish": (1_932_839, 1_933_480),
    "litefer_baseline": (1_287_476, 1_288_117),
    "litefer_ca": (1_297_092, 1_297_733),
    "litefer_maxca": (1_297_092, 1_297_733),
    "litefer_cpsca": (1_297_092, 1_297_733),
}

# the paper's Table 1, its network row by row: (in, k, exp, out, attention, act, stride)
PAPER_TABLE = [
    (16, 3, 16, 16, None, "HS", 1),
    (16, 3, 64, 24, None, "HS", 2),
    (24, 3, 72, 24, None, "HS", 1),
    (24, 5, 72, 40, "se", "HS", 2),
    (40, 5, 120, 40, "se", "HS", 1),
    (40, 5, 120, 40, "se", "HS", 1),
    (40, 3, 240, 80, None, "HS", 2),
    (80, 3, 200, 80, None, "HS", 1),
    (80, 3, 184, 80, "cpsca", "HS", 1),
    (80, 3, 184, 80, "cpsca", "HS", 1),
    (80, 3, 480, 112, "ca", "HS", 1),
    (112, 3, 672, 112, "ca", "HS", 1),
    (112, 5, 672, 80, "ca", "HS", 2),
    (80, 5, 480, 80, "ca", "HS", 1),
    (80, 5, 480, 80, "ca", "HS", 1),
]
RESIDUAL_ROWS = {1, 3, 5, 6, 8, 9, 10, 12, 14, 15}   # stride 1 and in == out


def blocks(model):
    return [m for m in model.features if isinstance(m, InvertedResidual)]


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_variant():
    assert set(PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_counts(name):
    assert (count(create_model(name, num_classes=7)), count(create_model(name, num_classes=8))) == PARAMS[name]


def test_paper_network_matches_the_spec_table():
    model = create_model("litefer_cpsca")
    rows = [(b_in, b.kernel, b.expanded, b.out, b.attention, b.act, b.stride)
            for b_in, b in zip([model.spec.stem] + [b.out for b in model.spec.blocks], model.spec.blocks)]
    assert rows == PAPER_TABLE
    assert (model.spec.stem, model.spec.last_conv, model.spec.head) == (16, 480, 640)
    assert model.features[0][0].stride == (2, 2) and isinstance(model.features[0][2], nn.Hardswish)
    assert model.features[-1][0].out_channels == 480
    head = model.classifier
    assert [type(m) for m in head] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (480, 640, 8)


@pytest.mark.parametrize("name,middle", [("litefer_baseline", None), ("litefer_ca", CoordAttention),
                                         ("litefer_maxca", CoordAttention), ("litefer_cpsca", CoordAttention)])
def test_litefer_rows(name, middle):
    """SE in rows 4-6, the variant's attention in rows 9-10, CA in rows 11-15, h-swish everywhere."""
    model = create_model(name)
    kind = name.split("_")[1]
    for i, block in enumerate(blocks(model), 1):
        attention = [m for m in block.block if isinstance(m, (SqueezeExcite, CoordAttention))]
        expected = (SqueezeExcite if i in (4, 5, 6) else middle if i in (9, 10)
                    else CoordAttention if i >= 11 else None)
        assert [type(a) for a in attention] == ([expected] if expected else []), f"row {i}"
        if i in (9, 10) and middle:
            assert attention[0].pooling == kind
        if i >= 11:
            assert attention[0].pooling == "ca"
        acts = [c[2] for c in block.block if isinstance(c, nn.Sequential) and len(c) == 3]
        assert acts and all(isinstance(a, nn.Hardswish) for a in acts), f"row {i}"
    relus = {id(m) for m in model.modules() if isinstance(m, nn.ReLU)}
    assert relus == {id(m.relu) for m in model.modules() if isinstance(m, SqueezeExcite)}  # only SE's


@pytest.mark.parametrize("name,hswish_from", [("mobilenetv3_large", 7), ("mobilenetv3_large_reduced", 7),
                                              ("mobilenetv3_large_reduced_hswish", 1)])
def test_mobilenetv3_rows(name, hswish_from):
    """SE in rows 4-6 and 11-15; ReLU in rows 1-6 unless h-swish everywhere."""
    spec = create_model(name).spec
    assert [i for i, b in enumerate(spec.blocks, 1) if b.attention == "se"] == [4, 5, 6, 11, 12, 13, 14, 15]
    assert [b.act for b in spec.blocks] == ["RE"] * (hswish_from - 1) + ["HS"] * (16 - hswish_from)
    assert (spec.last_conv, spec.head) == ((960, 1280) if name == "mobilenetv3_large" else (480, 640))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_residual_rule(name):
    model = create_model(name)
    assert len(blocks(model)) == 15
    assert {i for i, b in enumerate(blocks(model), 1) if b.use_residual} == RESIDUAL_ROWS


def test_residual_block_behaviour():
    model = create_model("litefer_cpsca").eval()
    feats = model.features
    for row, expect_identity in ((9, True), (11, False)):        # 80->80 s1 vs 80->112 s1
        block = feats[row]                                       # features[0] is the stem
        with torch.no_grad():
            last_bn = block.block[-1][1]
            last_bn.weight.zero_()
            last_bn.bias.zero_()
            x = torch.randn(2, 80, 6, 5)
            y = block(x)
        if expect_identity:
            torch.testing.assert_close(y, x)
        else:
            assert y.shape[1] == 112 and y.abs().max() == 0


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("size", [48, 112, 224])
def test_output_shapes(size, in_chans):
    model = create_model("litefer_cpsca", num_classes=7, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        logits = model(x)
        embedding = model.forward_features(x)
        both = model(x, return_embedding=True)
    assert logits.shape == (2, 7) and embedding.shape == (2, 640)
    torch.testing.assert_close(both[0], logits)
    torch.testing.assert_close(both[1], embedding)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_variant_runs_at_48(name):
    model = create_model(name, in_chans=1).eval()
    with torch.no_grad():
        logits, embedding = model(torch.randn(1, 1, 48, 48), return_embedding=True)
    assert logits.shape == (1, 8) and embedding.shape == (1, 1280 if name == "mobilenetv3_large" else 640)


def test_hard_sigmoid_gate_option():
    model = create_model("litefer_cpsca", attention_gate="hardsigmoid")
    assert count(model) == PARAMS["litefer_cpsca"][1]
    gates = [m.gate for m in model.modules() if isinstance(m, (CoordAttention, SqueezeExcite))]
    assert len(gates) == 10 and all(isinstance(g, nn.Hardsigmoid) for g in gates)
    default = create_model("litefer_cpsca")
    assert all(isinstance(m.gate, nn.Sigmoid) for m in default.modules() if isinstance(m, CoordAttention))
    default.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():   # train-mode BN: fresh running stats would shrink the signal to ~1e-12
        a, b = default.train().forward_features(x), model.train().forward_features(x)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = create_model("litefer_cpsca").train()
    logits, embedding = model(torch.randn(4, 3, 64, 64), return_embedding=True)
    (nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])) + embedding.pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_bad_model_name():
    with pytest.raises(ValueError, match="unknown model 'nope'.*litefer_cpsca"):
        create_model("nope")


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_classes": 0}, ValueError, "num_classes"),
    ({"num_classes": 2.5}, ValueError, "num_classes"),
    ({"in_chans": 2}, ValueError, "in_chans"),
    ({"dropout": 1.5}, ValueError, "dropout"),
    ({"attention_gate": "tanh"}, ValueError, "gate"),
    ({"pretrained": True}, TypeError, "unknown argument.*pretrained"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        create_model("litefer_cpsca", **kwargs)
