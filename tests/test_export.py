"""`litefer export`: ONNX, static INT8 ONNX and TorchScript files with their parity checks."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from face_fixtures import astronaut_bgr, checkpoint, photo_dir, rec_torch  # noqa: F401
from fixtures import write_ferplus

import litefer
from litefer.card import read_card
from litefer.inference.align import CropSpec
from litefer.cli import main as cli
from litefer.export import ExportError, astronaut_faces, export

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def probs(faces):
    return np.array([[f.scores[c] for c in CLASSES] for f in faces])


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """A folder of real face crops (48 x 48 PNGs of the astronaut under varied pose and light)
    plus one full photo whose face the export has to detect and crop itself."""
    import cv2

    d = tmp_path_factory.mktemp("calib")
    for i, crop in enumerate(astronaut_faces(CropSpec(), 40)):
        cv2.imwrite(str(d / f"face_{i:02d}.png"), crop[..., 0])
    cv2.imwrite(str(d / "photo.jpg"), astronaut_bgr())
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return d


def test_onnx_export_cli_checks_parity_and_embeds_metadata(checkpoint, rec_torch, photo_dir, tmp_path, capsys):
    out, report = tmp_path / "m.onnx", tmp_path / "report.json"
    assert cli(["export", "--weights", str(checkpoint), "--format", "onnx", "--out", str(out), "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "max abs logit difference vs torch" in text and "Checks: passed" in text
    r = json.loads(report.read_text())
    assert r["parity"]["max_abs_diff"] < 1e-3 and r["parity"]["top1_agreement"] == 1.0 and r["parity"]["faces"] == 48
    model = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["litefer"])
    assert meta["class_names"] == CLASSES and meta["crop"]["size"] == 48 and meta["precision"] == "fp32"
    assert meta["format"] == "litefer-card/1" and read_card(out).class_names == CLASSES
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param        # dynamic batch
    rec = litefer.Recognizer(weights=out)
    np.testing.assert_allclose(probs(rec.recognize(photo_dir / "two_faces.png")),
                               probs(rec_torch.recognize(photo_dir / "two_faces.png")), atol=1e-4)


def test_torchscript_export_runs_in_the_recognizer(checkpoint, rec_torch, photo_dir, tmp_path):
    out = tmp_path / "m.ts"
    report = export(checkpoint, "torchscript", out, parity_size=8)
    assert report["parity"]["max_abs_diff"] < 1e-4 and out.is_file()
    rec = litefer.Recognizer(weights=out)
    assert rec.backend.name == "torch" and rec.class_names == CLASSES
    np.testing.assert_allclose(probs(rec.recognize(photo_dir / "astronaut.png")),
                               probs(rec_torch.recognize(photo_dir / "astronaut.png")), atol=1e-5)


def test_int8_export_with_calibration_on_face_crops(checkpoint, calib_dir, rec_torch, photo_dir, tmp_path):
    out = tmp_path / "m_int8.onnx"
    # random weights give nearly tied classes on variations of one face, so top-1 agreement says
    # little here; the probabilities themselves must stay close
    report = export(checkpoint, "onnx-int8", out, faces=str(calib_dir), calib=str(calib_dir), parity_size=24,
                    min_agreement=0.0)
    assert report["calibration"]["faces"] == 41                    # 40 crops + the photo's face; broken skipped
    assert report["parity"]["max_prob_diff"] < 0.05 and report["checks"]["failures"] == []
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    stem = report["calibration"]["float_nodes"]                      # the first conv stays in float
    weights = {i.name for i in model.graph.initializer}
    assert len(stem) == 1
    node = next(n for n in model.graph.node if n.name == stem[0])
    assert node.op_type == "Conv" and node.input[0] == model.graph.input[0].name and node.input[1] in weights
    assert out.stat().st_size < 0.5 * (5.0e6)                        # int8 weights: well under the fp32 size
    rec = litefer.Recognizer(weights=out)
    assert rec.meta["precision"] == "int8"
    a, b = rec.recognize(photo_dir / "astronaut.png"), rec_torch.recognize(photo_dir / "astronaut.png")
    assert a[0].box == b[0].box and np.abs(probs(a) - probs(b)).max() < 0.1


def test_int8_quantize_stem_option(checkpoint, calib_dir, tmp_path, capsys):
    out = tmp_path / "all_int8.onnx"
    code = cli(["export", "--weights", str(checkpoint), "--format", "onnx-int8", "--out", str(out), "--calib", str(calib_dir),
                "--parity-size", "8", "--min-agreement", "0", "--quantize-stem", "--report", str(tmp_path / "r.json")])
    assert code == 0 and out.is_file()
    assert json.loads((tmp_path / "r.json").read_text())["calibration"]["float_nodes"] == []
    assert "left in float: nothing" in capsys.readouterr().out
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(n.input[0] in dequantized for n in graph.node if n.op_type == "Conv")   # the stem too


def test_int8_accuracy_on_a_ferplus_root(checkpoint, tmp_path):
    root = tmp_path / "ferplus"
    expected = write_ferplus(root, {"Training": 40, "PublicTest": 30})
    report = export(checkpoint, "onnx-int8", tmp_path / "q.onnx", faces=str(root), calib=str(root),
                    eval_data=str(root), max_accuracy_drop=100, min_agreement=0)
    acc = report["accuracy"]
    assert acc["images"] == expected["PublicTest"] and set(acc) >= {"torch", "onnx_fp32", "export"}
    assert acc["torch"] == pytest.approx(acc["onnx_fp32"], abs=0.06)
    with pytest.raises(ExportError, match="accuracy drop .* points > -1"):         # the check can fail
        export(checkpoint, "onnx-int8", tmp_path / "r.onnx", faces=str(root), calib=str(root),
               eval_data=str(root), max_accuracy_drop=-1, min_agreement=0)
    assert not (tmp_path / "r.onnx").exists()


def test_failed_parity_writes_nothing_and_exits_1(checkpoint, tmp_path, capsys):
    out = tmp_path / "never.onnx"
    code = cli(["export", "--weights", str(checkpoint), "--out", str(out), "--max-diff", "0", "--parity-size", "4"])
    assert code == 1 and not out.exists()
    assert "not written, check failed: max abs logit difference" in capsys.readouterr().err


def test_export_usage_errors(checkpoint, tmp_path, capsys):
    assert cli(["export", "--weights", str(checkpoint), "--format", "onnx-int8", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "onnx-int8 needs calibration faces" in capsys.readouterr().err
    assert cli(["export", "--weights", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert cli(["export", "--weights", str(checkpoint), "--faces", str(tmp_path / "emptydir"), "--out", str(tmp_path / "y.onnx")]) == 2
    assert "no image files" in capsys.readouterr().err
