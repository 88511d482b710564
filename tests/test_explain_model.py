"""The in-graph Grad-CAM (``litefer.models.explain``) against captum's LayerGradCam and torch's
autograd, for every registered network, in torch and through ONNX Runtime; and the attention gates."""
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from litefer.models import create_model, list_models
from litefer.models.attention import CoordAttention
from litefer.models.explain import (ExplainError, ExplainedNet, attention_gates, feature_resolution,
                                    gradcam_autograd, hardswish_grad)

SIZE = 112


def trained_like(name: str, seed: int = 0) -> nn.Module:
    """A registered network with weights large enough that its maps are not all ~0 (the default init
    gives Linear layers std 0.01), BatchNorm running statistics set, in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=8, in_chans=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 1.0 / m.in_features ** 0.5)
                m.bias.normal_(0, 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_hardswish_grad_is_torch_backward():
    u = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    u = u[(u - 3).abs().gt(1e-6) & (u + 3).abs().gt(1e-6)].requires_grad_(True)
    grad, = torch.autograd.grad(F.hardswish(u).sum(), u)
    assert torch.allclose(hardswish_grad(u.detach()), grad, atol=1e-12)


@pytest.mark.parametrize("name", list_models())
def test_in_graph_map_matches_captum_layer_gradcam(name):
    captum = pytest.importorskip("captum.attr", reason="captum (the independent Grad-CAM) is in litefer[test]")
    model = trained_like(name)
    x = inputs()
    with torch.no_grad():
        logits, cam = ExplainedNet(model).eval()(x)
        assert torch.equal(logits, model(x))
    assert cam.shape == (3, 8, *feature_resolution(model, SIZE)) == (3, 8, 4, 4)
    assert (cam >= 0).all()
    scale = float(cam.max())
    assert scale > 1e-3, "degenerate maps would make the comparison meaningless"
    for target in (logits.argmax(1), torch.full((3,), 5), logits.argmin(1)):
        ref = captum.LayerGradCam(model, model.features).attribute(x, target=target, relu_attributions=True)
        mine = cam[torch.arange(3), target]
        assert torch.allclose(mine, ref.squeeze(1), atol=1e-5 * scale, rtol=1e-4)
        assert torch.allclose(mine, gradcam_autograd(model, x, model.features, target), atol=1e-5 * scale)


def test_a_network_without_a_pooled_two_layer_head_is_refused():
    model = trained_like("litefer_cpsca")
    model.classifier = nn.Sequential(nn.Linear(model.spec.last_conv, 8))
    with pytest.raises(ExplainError, match="no pooled two-layer classifier"):
        ExplainedNet(model)


def test_onnx_map_matches_torch(tmp_path):
    from litefer.export.graph import export_onnx
    from litefer.inference.session import ort_session

    model = trained_like("litefer_cpsca")
    path = export_onnx(model, tmp_path / "m.onnx", SIZE, 1, explain=True)
    session = ort_session(path, 1)
    assert [o.name for o in session.get_outputs()] == ["logits", "cam"]
    x = inputs(5)
    logits, cam = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref_logits, ref_cam = ExplainedNet(model).eval()(x)
    scale = float(ref_cam.abs().max())
    assert np.abs(logits - ref_logits.numpy()).max() < 1e-3
    assert np.abs(cam - ref_cam.numpy()).max() < 1e-4 * scale


@pytest.mark.parametrize("kind", ["ca", "maxca", "cpsca"])
def test_attention_gates_are_what_each_block_multiplies_by(kind):
    model = trained_like(f"litefer_{kind}")
    x = inputs(2)
    gates = attention_gates(model, x)
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, CoordAttention)}
    assert list(gates) == list(blocks) and len(gates) >= 3
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o))) for n, m in blocks.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for n, (inp, out) in seen.items():
        a_h, a_w = blocks[n].gates(inp)
        assert torch.allclose(inp * a_h * a_w, out)
        assert gates[n].shape == (2, *inp.shape[-2:])
        assert torch.allclose(gates[n], (a_h * a_w).mean(1))
    with pytest.raises(ExplainError, match="no coordinate-attention"):
        attention_gates(trained_like("mobilenetv3_large"), x)
