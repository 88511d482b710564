"""The model card (litefer.card) and class priors (litefer.prior): reading cards from every kind of
weights file, logit adjustment on known logits, and the prior through the API, CLI and evaluation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from face_fixtures import checkpoint, make_checkpoint, onnx_file, photo_dir, rec_torch  # noqa: F401
from fixtures import write_ferplus

import litefer
from litefer.card import Card, CardError, card_from_payload, read_card, write_json
from litefer.cli import main as cli
from litefer.inference.backends import DEFAULT_FILES, packaged_file, softmax
from litefer.inference.inputs import read_image
from litefer.prior import PriorError, log_weights, parse_prior

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
PRIOR = dict(zip(CLASSES, [0.4, 0.3, 0.1, 0.1, 0.05, 0.01, 0.03, 0.01]))


def small_card(prior=None, source="w.pt") -> Card:
    return Card.from_dict({"class_names": ["a", "b", "c"], "preprocess": {"input_size": 48, "in_chans": 3},
                           "class_prior": prior}, source)


@pytest.fixture(scope="module")
def with_prior(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("prior") / "prior.pt", class_prior=PRIOR)


# ----------------------------------------------------------------------------- logit adjustment

def test_balanced_divides_the_stored_prior_out_of_known_logits():
    card = small_card({"a": 0.5, "b": 0.25, "c": 0.25})
    adjust = log_weights("balanced", card)
    np.testing.assert_allclose(adjust, -np.log([0.5, 0.25, 0.25]), rtol=1e-6)
    # equal logits: the model's probabilities are uniform; balanced gives p(c) / prior(c), renormalised
    np.testing.assert_allclose(softmax(np.zeros((1, 3), np.float32) + adjust), [[0.2, 0.4, 0.4]], atol=1e-6)
    logits = np.array([[2.0, 1.0, -1.0]], np.float32)
    p = softmax(logits)[0] / np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(softmax(logits + adjust)[0], p / p.sum(), atol=1e-6)
    assert log_weights("dataset", card) is None and log_weights(None, card) is None


def test_a_mapping_multiplies_the_probabilities():
    card = small_card()
    logits = np.array([[0.3, -0.2, 1.1]], np.float32)
    got = softmax(logits + log_weights({"a": 2, "b": 1, "c": 0.5}, card))[0]
    want = softmax(logits)[0] * [2, 1, 0.5]
    np.testing.assert_allclose(got, want / want.sum(), atol=1e-6)


def test_bad_priors_are_clear_errors_listing_the_classes():
    card = small_card({"a": 0.5, "b": 0.5, "c": 0.0}, source="some/weights.pt")
    for prior, needle in (({"a": 1, "b": 1}, "missing class(es) ['c']"),
                          ({"a": 1, "b": 1, "c": 1, "smirk": 1}, "unknown class(es) ['smirk']"),
                          ({"a": 1, "b": 0, "c": 1}, "positive"), ({"a": 1, "b": -2, "c": 1}, "positive"),
                          ({"a": 1, "b": float("nan"), "c": 1}, "positive"), ("sometimes", "unknown prior")):
        with pytest.raises(PriorError) as e:
            log_weights(prior, card)
        assert needle in str(e.value) and "['a', 'b', 'c']" in str(e.value), str(e.value)
    with pytest.raises(PriorError, match=r"some/weights.pt.*\['c'\] no training examples"):
        log_weights("balanced", card)
    with pytest.raises(PriorError, match=r"old.pt: the weights store no training class prior"):
        log_weights("balanced", small_card(source="old.pt"))


def test_prior_strings_parse():
    assert parse_prior("balanced") == "balanced" and parse_prior(" dataset ") == "dataset"
    assert parse_prior("a=1,b=0.5, c=2") == {"a": 1.0, "b": 0.5, "c": 2.0}
    assert parse_prior('{"a": 1, "b": 3}') == {"a": 1, "b": 3}
    for bad, needle in (("often", "class=weight pairs"), ("a=x", "not a number"), ("{oops", "not a JSON object"),
                        ("[1, 2]", "class=weight pairs")):
        with pytest.raises(PriorError, match=needle):
            parse_prior(bad)


def test_partial_balanced_divides_that_share_of_the_prior_out():
    """balanced:TAU adds TAU times balanced's adjustment: 0 is dataset, 1 is balanced, 0.5 lies between."""
    card = small_card({"a": 0.5, "b": 0.25, "c": 0.25})
    full = log_weights("balanced", card)
    np.testing.assert_allclose(log_weights("balanced:0.5", card), 0.5 * full, rtol=1e-6)
    np.testing.assert_allclose(log_weights("balanced:1", card), full, rtol=1e-6)
    assert log_weights("balanced:0", card) is None
    logits = np.array([[2.0, 1.0, -1.0]], np.float32)
    p = softmax(logits)[0] / np.sqrt([0.5, 0.25, 0.25])
    np.testing.assert_allclose(softmax(logits + log_weights("balanced:0.5", card))[0], p / p.sum(), atol=1e-6)
    with pytest.raises(PriorError, match=r"old.pt: the weights store no training class prior"):
        log_weights("balanced:0.5", small_card(source="old.pt"))


def test_partial_balanced_strings_parse_and_bad_ones_say_the_range():
    assert parse_prior("balanced:0.5") == "balanced:0.5" and parse_prior(" balanced: 0.50 ") == "balanced:0.5"
    assert parse_prior("balanced:1") == "balanced:1" and parse_prior("balanced:0") == "balanced:0"
    for bad in ("balanced:", "balanced:x", "balanced:1.5", "balanced:-0.1", "balanced:nan"):
        with pytest.raises(PriorError, match=r"balanced:TAU with TAU a number from 0 \(dataset\) to 1"):
            parse_prior(bad)
    with pytest.raises(PriorError, match="balanced:TAU"):
        log_weights("balanced:2", small_card({"a": 0.5, "b": 0.25, "c": 0.25}))


# ----------------------------------------------------------------------------- the card's homes

def test_card_from_a_run_checkpoint_a_packaged_file_and_a_sidecar(tmp_path):
    base = {"model_name": "litefer_cpsca", "class_names": CLASSES, "preprocess": {"input_size": 112, "in_chans": 3}}
    run = card_from_payload({**base, "config": {"data": {"dataset": "ferplus"}, "run": {"tta_flip": True}},
                             "epoch": 16, "val": {"accuracy": 0.86}}, "best.pt")
    assert (run.tta_flip, run.epoch, run.val_accuracy, run.crop) == (True, 16, 0.86, {"size": 48, "grayscale": True})
    assert run.class_prior is None
    packaged = card_from_payload({**base, "card": {**run.to_dict(), "class_prior": PRIOR, "note": "hi"}}, "p.pt")
    assert packaged.class_prior == PRIOR and packaged.info["note"] == "hi" and packaged.tta_flip
    write_json(packaged, tmp_path / "p.json")
    again = read_card(tmp_path / "p.json")
    assert again.to_dict() == packaged.to_dict() and again.source == str(tmp_path / "p.json")
    # a card written before litefer-card/1: "model", "classes", TTA read off the validation figure
    old = Card.from_dict({"model": "m", "classes": ["x", "y"], "preprocess": {"input_size": 48, "in_chans": 3},
                          "validation": {"accuracy_tta_flip": 0.7}})
    assert (old.model_name, old.class_names, old.tta_flip, old.val_accuracy) == ("m", ["x", "y"], True, 0.7)
    with pytest.raises(CardError, match=r"bad.json: the model card has no \['preprocess'\]"):
        Card.from_dict({"class_names": ["x"]}, "bad.json")
    with pytest.raises(CardError, match=r"bad.pt: class_prior must name exactly the classes"):
        card_from_payload({**base, "class_prior": {"neutral": 1.0}}, "bad.pt")


def test_onnx_and_torchscript_cards_are_read_without_torch(with_prior, tmp_path):
    from litefer.export import export

    onnx_path, ts_path = tmp_path / "m.onnx", tmp_path / "m.ts"
    export(with_prior, "onnx", onnx_path, parity_size=4)
    export(with_prior, "torchscript", ts_path, parity_size=4)
    code = ("import sys; from litefer.card import read_card; cards = [read_card(p) for p in sys.argv[1:]]; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "print(__import__('json').dumps([c.to_dict() for c in cards]))")
    out = subprocess.run([sys.executable, "-c", code, str(onnx_path), str(ts_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    pt = read_card(with_prior).to_dict()
    for got, precision in zip(json.loads(out.stdout), ("fp32", "fp32")):
        assert got["class_prior"] == PRIOR and got["class_names"] == CLASSES and got["precision"] == precision
        assert {k: v for k, v in got.items() if k != "precision"} == {k: v for k, v in pt.items() if k != "precision"}


def test_an_onnx_file_without_metadata_uses_its_sidecar_or_names_itself(onnx_file, tmp_path):
    import onnx

    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(onnx_file))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    with pytest.raises(CardError, match=r"bare.onnx: ONNX file has no litefer metadata"):
        read_card(bare)
    write_json(read_card(onnx_file), tmp_path / "bare.json")
    assert read_card(bare).class_names == CLASSES
    (tmp_path / "junk.ts").write_bytes(b"not a zip")
    with pytest.raises(CardError, match="junk.ts: not a readable TorchScript file"):
        read_card(tmp_path / "junk.ts")


# ----------------------------------------------------------------------------- the prior in use

def test_recognizer_prior_dataset_balanced_and_mapping(with_prior, photo_dir):
    rec = litefer.Recognizer(weights=with_prior, backend="torch", prior="dataset")
    crops = rec.detect_and_crop(read_image(photo_dir / "astronaut.png"))[1]
    logits = rec.backend.logits(np.stack(crops), rec.tta)
    np.testing.assert_allclose(rec.classify_crops(np.stack(crops)), softmax(logits), atol=1e-6)
    freq = np.array([PRIOR[c] for c in CLASSES])
    want = softmax(logits) / freq
    balanced = litefer.Recognizer(weights=with_prior, prior="balanced")
    np.testing.assert_allclose(balanced.classify_crops(np.stack(crops)), want / want.sum(1, keepdims=True), atol=1e-5)
    face = balanced.recognize(photo_dir / "astronaut.png")[0]
    assert face.scores == pytest.approx(dict(zip(CLASSES, (want / want.sum())[0])), abs=1e-5)
    # a per-call prior overrides the recognizer's own
    assert rec.recognize(photo_dir / "astronaut.png", prior="balanced")[0].scores == pytest.approx(face.scores)
    half = softmax(logits) / np.sqrt(freq)
    got = rec.recognize(photo_dir / "astronaut.png", prior="balanced:0.5")[0].scores
    assert got == pytest.approx(dict(zip(CLASSES, (half / half.sum())[0])), abs=1e-5)
    default = litefer.Recognizer(weights=with_prior, backend="torch")      # weights with a stored prior: half of it
    assert default.prior == "balanced:0.5"
    assert default.recognize(photo_dir / "astronaut.png")[0].scores == pytest.approx(got, abs=1e-6)
    weights = dict(zip(CLASSES, range(1, 9)))
    got = rec.recognize(photo_dir / "astronaut.png", prior=weights)[0].scores
    w = softmax(logits)[0] * np.arange(1, 9)
    assert got == pytest.approx(dict(zip(CLASSES, w / w.sum())), abs=1e-5)


def test_weights_without_a_prior_work_with_dataset_and_name_the_file_for_balanced(checkpoint, photo_dir):
    assert len(litefer.Recognizer(weights=checkpoint, prior="dataset").recognize(photo_dir / "astronaut.png")) == 1
    assert litefer.Recognizer(weights=checkpoint).prior == "dataset"      # the default, with nothing to divide out
    with pytest.raises(PriorError, match=rf"{checkpoint}: the weights store no training class prior"):
        litefer.Recognizer(weights=checkpoint, prior="balanced")
    with pytest.raises(PriorError, match=r"missing class\(es\) \['contempt'\].*'neutral', 'happiness'"):
        litefer.Recognizer(weights=checkpoint, prior={c: 1 for c in CLASSES[:-1]})


def test_predict_cli_prior(with_prior, photo_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    for prior in ("balanced", "balanced:0.5"):
        assert cli(["predict", str(photo_dir / "astronaut.png"), "--weights", str(with_prior), "--prior", prior,
                    "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["summary"]["prior"] == prior
        want = litefer.Recognizer(weights=with_prior, prior=prior).recognize(photo_dir / "astronaut.png")[0]
        assert result["inputs"][0]["faces"][0]["scores"] == pytest.approx(want.scores, abs=1e-5)
    capsys.readouterr()
    assert cli(["predict", str(photo_dir / "astronaut.png"), "--weights", str(with_prior), "--prior",
                "neutral=1,smirk=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown class(es) ['smirk']" in err and str(CLASSES) in err


# ----------------------------------------------------------------------------- data and evaluation

def test_majority_rows_keep_soft_targets_on_the_papers_rows(tmp_path):
    from litefer.data import load_split
    from litefer.data.ferplus import load_ferplus

    expected = write_ferplus(tmp_path / "fer")
    soft_all = load_ferplus(tmp_path / "fer", "train", "crossentropy")
    soft = load_split({"dataset": "ferplus", "root": str(tmp_path / "fer"), "label_mode": "crossentropy",
                       "majority_rows": True}, "train")
    hard = load_ferplus(tmp_path / "fer", "train", "majority")
    assert len(soft) == len(hard) == expected["Training"] < len(soft_all)
    assert soft.soft_targets is not None and torch.equal(soft.labels, hard.labels)
    assert torch.equal(soft.images, hard.images) and torch.equal(soft.soft_targets.argmax(1), hard.labels)
    assert torch.allclose(soft.soft_targets.sum(1), torch.ones(len(soft)))


def test_eval_scores_majority_rows_and_both_priors(with_prior, tmp_path, capsys):
    expected = write_ferplus(tmp_path / "fer", {"Training": 40, "PublicTest": 30})
    report = tmp_path / "e.json"
    assert cli(["eval", "--weights", str(with_prior), "--data", str(tmp_path / "fer"), "--dataset", "ferplus",
                "--json", str(report), "--markdown", str(tmp_path / "e.md")]) == 0
    r = json.loads(report.read_text())
    md = (tmp_path / "e.md").read_text()
    assert "| | prior=dataset | prior=balanced:0.5 | prior=balanced |" in md and "- hardware: " in md and "- command: `" in md
    assert f"| contempt | {r['per_class'][7]['support']} | 1.00 % |" in md
    assert r["n"] == expected["PublicTest"] and r["label_mode"] == "majority"
    assert set(r["priors"]) == {"dataset", "balanced:0.5", "balanced"} and r["priors"]["dataset"]["accuracy"] == r["accuracy"]
    assert set(r["priors"]["balanced"]["per_class_recall"]) == set(CLASSES)
    text = capsys.readouterr().out
    assert "prior=balanced: accuracy" in text and "recall: neutral" in text
    assert cli(["eval", "--weights", str(with_prior), "--data", str(tmp_path / "fer"), "--dataset", "ferplus",
                "--label-mode", "crossentropy", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["n"] > expected["PublicTest"]        # ties are kept as distributions


# ----------------------------------------------------------------------------- the shipped model and its run

SHARED = Path(__file__).resolve().parents[2] / "shared"
RUN = SHARED / "runs" / "ferplus_cpsca112_gpu"
FER = SHARED / "data" / "fer2013"


def test_the_gpu_config_is_the_runs_recipe():
    from litefer.train.config import load_config

    if not (RUN / "config.yaml").is_file():
        pytest.skip(f"{RUN} is absent on this machine (../shared/runs): nothing to compare the config with")
    config = Path(__file__).parents[1] / "configs" / "ferplus_gpu_112.yaml"
    ours, theirs = load_config(config), load_config(RUN / "config.yaml")
    assert ours["data"]["majority_rows"] is True and ours["run"]["device"] == "auto"
    # what may differ: the device and run name, the progress bar, and the rows: the GPU machine held the
    # majority-label rows only, which majority_rows selects from the full files
    for section, key in (("run", "device"), ("run", "name"), ("run", "progress"), ("data", "majority_rows")):
        ours[section].pop(key)
        theirs[section].pop(key)
    assert ours == theirs


def test_the_packaged_default_card_states_its_provenance_and_prior():
    card = read_card(packaged_file(DEFAULT_FILES["default"]["torch"]))
    t = card.info["training"]
    assert "H200" in t["hardware"] and t["epochs_trained"] == 17 and 250 < t["training_seconds"] < 320
    assert t["resumed_with_changes"][0]["changes"] == {"optim.epochs": [100, 17]}
    assert card.preprocess.input_size == 112 and card.tta_flip and card.info["data"]["majority_rows"]
    assert sum(card.class_prior.values()) == pytest.approx(1, abs=1e-5) and min(card.class_prior.values()) > 0
    v = card.info["validation"]
    assert v["images"] == 3199 and v["label_mode"] == "majority"
    assert abs(v["prior"]["dataset"]["accuracy"] - card.info["run_val_accuracy"]) <= 0.001     # within 0.1 point
    assert v["prior"]["balanced"]["mean_class_accuracy"] > v["prior"]["dataset"]["mean_class_accuracy"]
    onnx_card = read_card(packaged_file(DEFAULT_FILES["default"]["onnxruntime"]))
    assert onnx_card.class_prior == card.class_prior and onnx_card.info["training"] == t


def test_eval_on_the_packaged_default_reproduces_its_card(tmp_path):
    """`litefer eval default` on the 3,199 validation faces: the card's figures, both priors (about a
    minute of CPU at 112 px with flip TTA)."""
    if not (FER / "fer2013new.csv").is_file():
        pytest.skip(f"FERPlus is absent on this machine ({FER})")
    card = read_card(packaged_file(DEFAULT_FILES["default"]["torch"]))
    report = tmp_path / "val.json"
    assert cli(["eval", "--weights", "default", "--data", str(FER), "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["n"] == 3199 and r["tta_flip"] is True
    for prior, figures in card.info["validation"]["prior"].items():
        assert r["priors"][prior]["accuracy"] == pytest.approx(figures["accuracy"], abs=1e-9)
        assert r["priors"][prior]["per_class_recall"] == pytest.approx(figures["per_class_recall"], abs=1e-9)


@pytest.mark.parametrize("preprocess, message", [
    ({"input_size": 112, "in_chans": 3, "std": [0, 0, 0]}, r"preprocess\.std must be finite numbers > 0"),
    ({"input_size": 112, "in_chans": 3, "std": [0.2, -0.2, 0.2]}, r"preprocess\.std must be finite numbers > 0"),
    ({"input_size": 112, "in_chans": 3, "std": [0.2, float("inf"), 0.2]}, r"preprocess\.std must be finite"),
    ({"input_size": 112, "in_chans": 3, "mean": [0.5, float("nan"), 0.5]}, r"preprocess\.mean must be finite"),
    ({"input_size": 100000, "in_chans": 3}, r"preprocess\.input_size must be 8\.\.1024 pixels, got 100000"),
    ({"input_size": 0, "in_chans": 3}, r"preprocess\.input_size must be 8\.\.1024 pixels, got 0"),
    ({"input_size": 112, "in_chans": 4}, r"preprocess\.in_chans must be 1 or 3, got 4"),
    ({"in_chans": 3}, r"preprocess has no input_size$"),
    ({"input_size": "big", "in_chans": 3}, r"preprocess: input_size and in_chans must be numbers"),
    ([112, 3], r"preprocess must be a mapping, got list"),
])
def test_card_preprocess_values_are_checked_when_the_card_is_read(tmp_path, preprocess, message):
    """A std of 0 gave NaN scores with a label; input_size 100000 tried to allocate 120 GB."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model_name": "m", "class_names": CLASSES, "preprocess": preprocess}))
    with pytest.raises(CardError, match=f"^{path}: {message}") as e:
        read_card(path)
    assert "\n" not in str(e.value)
