"""ONNX export + ONNX Runtime parity, and ``litefer profile`` through the CLI."""
import json

import pytest
import torch

from litefer import cli, create_model
from litefer.export import export_onnx, onnx_parity
from litefer.profile import flop_counter_gmac


def test_onnx_export_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = create_model("litefer_cpsca", num_classes=7, in_chans=1)
    for bn in model.modules():                # BN statistics of real activations: fresh ones would
        if isinstance(bn, torch.nn.BatchNorm2d):  # make the logits ~1e-12 and the comparison empty
            bn.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 64, 64))
        model.classifier[3].weight.normal_(0, 0.1)
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx", input_size=64)
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))
    inputs = torch.randn(3, 1, 64, 64)        # batch 3: the batch axis is dynamic
    with torch.no_grad():
        scale = model(inputs).abs().max().item()
    diff = onnx_parity(model, path, inputs)
    print(f"ONNX Runtime vs torch: max abs diff {diff:.2e} (logits up to {scale:.2f})")
    assert scale > 0.1
    assert diff < 1e-4


def test_gmac_at_224_matches_the_paper_network():
    assert flop_counter_gmac(create_model("litefer_cpsca"), 224) == pytest.approx(0.183, abs=0.002)


def test_profile_cli(tmp_path, capsys):
    out_json, out_md = tmp_path / "profile.json", tmp_path / "profile.md"
    rc = cli.main(["profile", "litefer_cpsca", "--sizes", "48", "--no-latency",
                   "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    assert "litefer_cpsca" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    (row,) = report["rows"]
    assert row["params"] == 1_297_733 and row["input_size"] == 48
    assert row["gmac_torch"] == pytest.approx(0.183 * (48 / 224) ** 2, rel=0.15)
    assert row["gmac_ptflops"] > row["gmac_torch"]
    assert row["fp32_params_bytes"] == 4 * 1_297_733
    # weights + two Adam moments: about three times the weights
    assert 2.9 < row["checkpoint_adam_bytes"] / row["fp32_params_bytes"] < 3.2
    assert 0 < row["onnx_bytes"] and "latency_torch_ms" not in row
    text = out_md.read_text()
    assert "litefer profile litefer_cpsca --sizes 48" in text and "torch " in text
    assert "| litefer_cpsca | 1,297,733 |" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_profile_cli_rejects_unknown_model(capsys):
    assert cli.main(["profile", "nope", "--no-latency"]) == 2
    assert "litefer profile: error: unknown model(s) nope; available: " in capsys.readouterr().err
