"""Weights files below torch: the card in ONNX metadata read and written on the protobuf (checked
against the ``onnx`` package), the Preprocess object the card carries, the one .pt writer, and the
error a .pt file gives where torch is missing."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from face_fixtures import checkpoint, onnx_file  # noqa: F401

import litefer
from litefer import onnxproto
from litefer.card import CardError, read_card, read_weights, with_onnx_card, write_onnx
from litefer.inference.backends import create_backend
from litefer.preprocess import Preprocess
from litefer.utils import MissingExtra


def props(data: bytes) -> dict:
    return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}


def test_metadata_read_on_the_protobuf_equals_onnx(onnx_file):
    data = onnx_file.read_bytes()
    assert onnxproto.read_metadata(data) == props(data) and "litefer" in props(data)


def test_writing_the_card_replaces_only_its_entry(onnx_file, tmp_path):
    model = onnx.load(str(onnx_file))
    model.metadata_props.add(key="other", value="kept")
    data = model.SerializeToString()
    card = read_card(onnx_file).replace(precision="int8")
    out = write_onnx(with_onnx_card(data, card), card, tmp_path / "w.onnx")    # written twice: still one entry
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert [p.key for p in written.metadata_props].count("litefer") == 1 and props(out.read_bytes())["other"] == "kept"
    assert written.producer_name == "litefer" and read_card(out).precision == "int8"
    assert written.graph == model.graph


@pytest.mark.parametrize("junk", [b"", b"\x0a\xff", b"junk", b"\x08\x01\x12\x03abc"])
def test_bytes_that_are_not_a_model_are_named(junk, tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(junk)
    with pytest.raises(CardError, match="x.onnx: not a readable ONNX file"):
        read_card(path)


def test_preprocess_round_trips_and_names_bad_fields():
    pp = Preprocess(input_size=112, in_chans=3)
    assert Preprocess.from_dict(json.loads(json.dumps(pp.to_dict()))) == pp
    assert Preprocess.from_dict({"input_size": 48, "in_chans": 1}).mean == pp.mean        # ImageNet by default
    with pytest.raises(ValueError, match="input_size"):
        Preprocess.from_dict({"in_chans": 3})
    with pytest.raises(ValueError, match="crops must be uint8"):
        pp(np.zeros((1, 8, 8, 3), np.float32))
    assert pp(np.zeros((2, 48, 48, 1), np.uint8)).shape == (2, 3, 112, 112)


def test_the_packaged_card_carries_the_preprocess_object():
    card = litefer.Recognizer().card
    assert isinstance(card.preprocess, Preprocess) and card.preprocess.input_size == 112
    assert read_card(card.source).to_dict()["preprocess"] == card.preprocess.to_dict()


def test_a_pt_file_without_torch_names_the_extra_and_export(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)           # `import torch` now raises ImportError
    for call in (lambda: create_backend(checkpoint), lambda: read_weights(checkpoint),
                 lambda: create_backend(checkpoint, backend="onnxruntime")):
        with pytest.raises(MissingExtra, match=r"random.pt.*litefer\[train\].*litefer export --weights"):
            call()
    assert create_backend("default").card.class_names       # the packaged ONNX needs no torch


def test_the_pt_writer_is_atomic_and_read_back(checkpoint, tmp_path):
    from litefer.weights import write_weights

    payload = read_weights(checkpoint)
    out = write_weights(tmp_path / "copy.pt", payload)
    assert read_weights(out)["class_names"] == payload["class_names"]
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]
