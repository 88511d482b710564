"""The inference form of CA / MAXCA / CPSCA computes the training form's function (the reference):
per module in float64 on a non-square input, per network with random weights and BatchNorm
statistics, and with the packaged trained weights on real face crops, in torch and in ONNX Runtime."""
import warnings

import numpy as np
import onnx
import pytest
import torch

from litefer import create_model
from litefer.export import export_onnx
from litefer.inference.session import ort_session
from litefer.models.attention import POOLING_PLANS, CoordAttention
from litefer.models.inference_form import CoordAttentionInference, inference_form

N, C, H, W = 2, 48, 5, 7                # mip = max(8, 48 // 32) = 8: padded to 16 in the inference form


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random parameters and BatchNorm running statistics (so folding them matters), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module.eval()


def randomize_network(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm affine terms and conv biases, then BatchNorm statistics measured on random
    inputs (as training would leave them): every folded quantity is away from its default and the
    activations, and so the samples' outputs, stay apart."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * 0.2)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.momentum = None                      # cumulative average over the batches below
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 64, 48, generator=g))
    return model.eval()


@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
@pytest.mark.parametrize("kind", sorted(POOLING_PLANS))
def test_module_parity_random_weights(kind, gate):
    m = randomize(CoordAttention(C, pooling=kind, gate=gate)).double()
    fast = CoordAttentionInference(m).double().eval()
    x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), m(x), rtol=1e-10, atol=1e-12)
        # the check can fail: the same fold with the groups' bias counted once is wrong for CPSCA
        if len(m.plan) > 1:
            m.conv1.bias.add_(1.0)
            assert (CoordAttentionInference(m).double()(x) - fast(x)).abs().max() > 1e-3


def test_folding_uses_the_running_statistics():
    m = randomize(CoordAttention(C, pooling="cpsca"))
    x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(2))
    fast = CoordAttentionInference(m)
    with torch.no_grad():
        m.bn1.running_mean.add_(0.5)
        assert (CoordAttentionInference(m)(x) - fast(x)).abs().max() > 1e-3
        torch.testing.assert_close(CoordAttentionInference(m)(x), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["litefer_baseline", "litefer_ca", "litefer_maxca", "litefer_cpsca"])
def test_network_parity_random_weights(name):
    model = randomize_network(create_model(name, num_classes=8), seed=3).double()
    fast = inference_form(model)
    assert not any(isinstance(m, CoordAttention) for m in fast.modules())
    assert sum(isinstance(m, CoordAttentionInference) for m in fast.modules()) == \
        sum(isinstance(m, CoordAttention) for m in model.modules()) > 0
    assert model.training is False and any(isinstance(m, CoordAttention) for m in model.modules())  # untouched
    x = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-9, atol=1e-9)
        expected = model.features(x)            # the feature map, where the samples still differ
        torch.testing.assert_close(fast.features(x), expected, rtol=1e-9, atol=1e-9)
        assert (expected[0] - expected[1]).abs().max() > 1e-3       # far above the tolerance


def test_models_without_coordinate_attention_are_copied():
    model = create_model("mobilenetv3_large", num_classes=8)
    fast = inference_form(model)
    assert fast is not model and not fast.training and model.training


def test_onnx_graph_has_no_reduce_concat_split_or_transpose(tmp_path):
    model = randomize_network(create_model("litefer_cpsca", num_classes=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the fixed pooling windows must not make the tracer warn
        fast = export_onnx(model, tmp_path / "fast.onnx", 64)
    slow = export_onnx(model, tmp_path / "slow.onnx", 64, inference=False)
    ops = {n.op_type for n in onnx.load(str(fast)).graph.node}
    assert not ops & {"ReduceMean", "ReduceMax", "Concat", "Split", "Slice", "Transpose"}, ops
    assert {"ReduceMean", "Concat"} <= {n.op_type for n in onnx.load(str(slow)).graph.node}
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32)
    got, ref = (ort_session(p).run(None, {"input": x})[0] for p in (fast, slow))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() < 1e-4 and np.abs(ref - expected).max() < 1e-4


def test_trained_weights_on_real_faces_torch_and_onnx(tmp_path):
    """The packaged (trained) model: logits of the inference form within 1e-4 of the training form
    on real face crops, in torch and in its ONNX export run by ONNX Runtime."""
    from litefer.export import astronaut_faces, load_torch
    from litefer.inference.align import CropSpec

    model, card, _ = load_torch("default")
    assert any(isinstance(m, CoordAttention) for m in model.modules())
    pp = card.preprocess
    x = pp(astronaut_faces(CropSpec.from_card(card), 16))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        fast = inference_form(model)(torch.from_numpy(x)).numpy()
    assert np.abs(fast - expected).max() < 1e-4
    path = export_onnx(model, tmp_path / "default.onnx", pp.input_size, pp.in_chans)
    got = ort_session(path).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
