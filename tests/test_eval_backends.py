"""`litefer eval` through ONNX Runtime scores a split as the torch path does."""
from __future__ import annotations

import json

import numpy as np
import pytest
from face_fixtures import checkpoint, onnx_file  # noqa: F401
from fixtures import write_ferplus

from litefer.cli import main as cli
from litefer.train.evaluate import evaluate_weights


@pytest.fixture(scope="module")
def fer(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer")
    write_ferplus(root, {"Training": 16, "PublicTest": 60})
    return root


def test_the_default_backend_follows_the_weights(checkpoint, onnx_file):
    from litefer.inference.files import resolve_weights

    assert resolve_weights("default", None)[1] == resolve_weights(onnx_file, None)[1] == "onnxruntime"
    assert resolve_weights(checkpoint, None)[1] == "torch"
    assert resolve_weights("default", "torch")[1] == "torch"


def test_backend_logits_equal_torch_on_the_same_faces(checkpoint, onnx_file, fer):
    import torch

    from litefer.data import Preprocess, load_split
    from litefer.inference.backends import create_backend
    from litefer.train.evaluate import backend_logits, predict_logits
    from litefer.weights import load_checkpoint_model

    model, meta = load_checkpoint_model(checkpoint)
    ds = load_split({"dataset": "ferplus", "root": str(fer), "label_mode": "majority"}, "val")
    want = predict_logits(model, ds, Preprocess.from_dict(meta["preprocess"]), tta_flip=True, batch_size=7)
    got = backend_logits(create_backend(onnx_file, "onnxruntime", threads=1), ds, tta=True, batch_size=7)
    assert got.shape == want.shape == (len(ds), 8) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    assert got.std(0).min() > 1e-3                                       # the faces give different logits


@pytest.mark.parametrize("tta", [False, True])
def test_eval_through_onnxruntime_equals_torch(checkpoint, onnx_file, fer, tta):
    kw = {"data": str(fer), "dataset": "ferplus", "tta": tta, "batch_size": 16, "threads": 1}
    torch_report = evaluate_weights(checkpoint, **kw)
    for weights in (onnx_file, checkpoint):                 # an .onnx file, and a .pt exported on the fly
        ort = evaluate_weights(weights, backend="onnxruntime" if weights == checkpoint else None, **kw)
        assert (ort["backend"], torch_report["backend"]) == ("onnxruntime", "torch")
        assert ort["n"] == torch_report["n"] > 0 and ort["tta_flip"] is tta
        assert ort["confusion"] == torch_report["confusion"] and ort["accuracy"] == torch_report["accuracy"]
        assert ort["loss"] == pytest.approx(torch_report["loss"], abs=1e-4)


def test_eval_cli_backend_flag_and_old_spellings(checkpoint, fer, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert cli(["eval", str(checkpoint), "--data", str(fer), "--dataset", "ferplus", "--no-tta-flip",
                "--backend", "onnxruntime", "--threads", "1", "--json", str(out), "--markdown", str(tmp_path / "e.md")]) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "onnxruntime" and report["tta_flip"] is False
    assert "scored by ONNX Runtime " in (tmp_path / "e.md").read_text()
    err = capsys.readouterr().err
    assert "positional WEIGHTS argument is deprecated" in err and "--no-tta-flip is deprecated" in err
    assert cli(["eval", "--weights", str(checkpoint), "--data", str(fer), "--dataset", "rafdb"]) == 2
    assert capsys.readouterr().err.startswith("litefer eval: error: ")


def test_a_prototype_classifier_is_refused_by_onnxruntime(checkpoint, fer, tmp_path):
    import torch

    payload = torch.load(checkpoint, weights_only=True)
    payload.update(prototypes=torch.zeros(8, 640), classifier="nearest_centre")
    torch.save(payload, tmp_path / "proto.pt")
    with pytest.raises(ValueError, match="proto.pt: the model classifies by prototypes"):
        evaluate_weights(tmp_path / "proto.pt", data=str(fer), backend="onnxruntime")
    assert evaluate_weights(tmp_path / "proto.pt", data=str(fer))["classifier"] == "nearest_centre"


def test_eval_on_a_folder_names_and_counts_unreadable_images(tmp_path, capsys):
    """Unreadable images of a folder data set were dropped with one warning naming the first only,
    and the report did not count them."""
    from fixtures import write_image_folder

    root = write_image_folder(tmp_path / "imgs")
    for bad in (root / "happy" / "bad.png", root / "sad" / "cut.png"):
        bad.write_bytes(b"not an image")
    report = tmp_path / "r.json"
    assert cli(["eval", "--weights", "default", "--data", str(root), "--dataset", "folder", "--split", "train",
                "--json", str(report)]) == 0
    skipped = json.loads(report.read_text())["skipped"]
    assert [s.split(":")[0] for s in skipped] == [str(root / "happy" / "bad.png"), str(root / "sad" / "cut.png")]
    shown = capsys.readouterr()
    assert "skipped 2 unreadable file(s)" in shown.out
    assert "skipped unreadable image" in shown.err and "bad.png" in shown.err and "cut.png" in shown.err


def test_eval_on_a_folder_of_photos_frames_each_face_with_the_default_detector(tmp_path, capsys):
    """``--faces photo``: each photo's face is found (``auto``: Haar, no YuNet on disk here) and framed
    as predict frames it; a photo without a face is reported and not counted; train and val are
    carved from the faces found."""
    import cv2
    import numpy as np

    from face_fixtures import astronaut_bgr

    happy = tmp_path / "photos" / "happy"
    happy.mkdir(parents=True)
    for i, gain in enumerate((0.7, 0.8, 0.9, 1.0, 1.1, 1.2)):
        cv2.imwrite(str(happy / f"p{i}.png"), np.clip(astronaut_bgr() * gain, 0, 255).astype(np.uint8))
    cv2.imwrite(str(happy / "blank.png"), np.full((300, 300, 3), 120, np.uint8))
    counted = {}
    for split in ("train", "val"):
        report = tmp_path / f"{split}.json"
        assert cli(["eval", "--weights", "default", "--data", str(tmp_path / "photos"), "--dataset", "folder",
                    "--split", split, "--faces", "photo", "--json", str(report)]) == 0
        got = json.loads(report.read_text())
        assert got["detector"] == "haar" and got["framing"] == {"photo": 7, "crop": 0}
        assert [s.split(":")[0] for s in got["skipped"]] == [str(happy / "blank.png")]
        assert got["accuracy"] == 1.0                 # the astronaut smiles, whatever the exposure
        counted[split] = got["n"]
    assert counted["train"] + counted["val"] == 6 and counted["val"] >= 1
    out = capsys.readouterr().out
    assert "faces found by the haar detector in 7 photo(s)" in out and "without a usable face" in out


def test_faces_photo_needs_a_folder_data_set(fer):
    with pytest.raises(ValueError, match="--faces photo applies to --dataset folder only"):
        evaluate_weights("default", data=str(fer), photos={"faces": "photo"})
