"""benchmarks/attention_maps.py (issue 21's figure and measurements): its pieces on known inputs, and
the whole script on a small generated FERPlus set so that it cannot rot."""
import json

import numpy as np
import pytest
import torch

import attention_maps as am
from face_fixtures import make_checkpoint
from fixtures import write_ferplus


def test_auc_of_known_curves():
    f = np.asarray(am.FRACTIONS)
    assert am.auc(f, np.ones_like(f)) == pytest.approx(1.0)
    assert am.auc(f, 1 - f) == pytest.approx(0.5)                  # trapezoids are exact on a line
    assert am.auc([0, 0.5, 1], [1, 0, 0]) == pytest.approx(0.25)
    assert am.auc([0.2, 0.4], [0.3, 0.3]) == pytest.approx(0.3)    # divided by the range, not by 1


def test_spearman_and_its_ranks():
    assert am.rankdata(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [4.0, 1.0, 2.5, 2.5]
    rng = np.random.default_rng(0)
    a = rng.random((5, 16))
    assert np.allclose(am.spearman(a, np.exp(3 * a)), 1.0)
    assert np.allclose(am.spearman(a, -a), -1.0)
    b = rng.random((5, 16))
    d = np.stack([am.rankdata(r) for r in a]) - np.stack([am.rankdata(r) for r in b])
    assert np.allclose(am.spearman(a, b), 1 - 6 * (d ** 2).sum(1) / (16 * (16 ** 2 - 1)))   # no ties
    tied = np.array([[0.0, 0.0, 1.0, 2.0]])
    ref = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert am.spearman(tied, np.array([[1.0, 2.0, 3.0, 4.0]]))[0] == pytest.approx(ref)
    assert np.isnan(am.spearman(np.zeros((1, 4)), tied)).all()       # a constant (all-zero) map
    assert am.summary(np.array([np.nan, 0.5, 1.0]))["undefined"] == 1


def test_pixel_ranks_put_the_most_salient_first_and_break_ties_at_random():
    sal = np.array([[0.0, 5.0, 1.0, 1.0, 1.0, 3.0]])
    ranks = am.pixel_ranks(sal, np.random.default_rng(0))
    assert sorted(ranks[0]) == list(range(6))
    assert ranks[0, 1] == 0 and ranks[0, 5] == 1 and ranks[0, 0] == 5
    ties = {tuple(am.pixel_ranks(sal, np.random.default_rng(s))[0, 2:5]) for s in range(20)}
    assert len(ties) > 1 and all(sorted(t) == [2, 3, 4] for t in ties)
    centre = am.centre_saliency(4)
    assert centre.argmax() in (5, 6, 9, 10) and centre[0] == centre.min()


def patch_faces(n: int, side: int = 8):
    """Inputs whose label-1 evidence is one bright 2 x 2 patch in a corner, and a classifier that
    says 1 while any pixel is bright: deleting the patch, and nothing else, changes the answer."""
    x = np.zeros((n, 3, side, side), np.float32)
    x[:, :, :2, :2] = 5.0
    saliency = np.zeros((n, side, side), np.float32)
    saliency[:, :2, :2] = 1.0
    return x, np.ones(n, np.int64), saliency, (lambda inp: (inp.max((1, 2, 3)) > 1).astype(np.int64))


def test_deletion_curve_falls_when_the_evidence_goes():
    x, labels, sal, classify = patch_faces(6)
    fractions = np.asarray(am.FRACTIONS)
    rng = np.random.default_rng(0)
    fill = np.zeros(3, np.float32)
    correct, kept = am.deletion_curve(classify, x, labels, sal, fractions, fill, rng)
    assert correct.shape == kept.shape == fractions.shape
    assert correct[0] == 6 and correct[-1] == 0 and (np.diff(correct) <= 0).all()
    assert correct[fractions >= 4 / 64].max() == 0                   # the patch is 4 of 64 pixels
    centre, _ = am.deletion_curve(classify, x, labels, np.broadcast_to(am.centre_saliency(8), (6, 64)),
                                  fractions, fill, rng)
    assert am.auc(fractions, correct) < am.auc(fractions, centre)     # the corner goes last centre-out
    assert (kept == correct).all()                                   # every unperturbed answer was right


def test_grey_fill_is_mid_grey_in_model_units():
    pp = am.Preprocess(input_size=32, in_chans=3)
    fill = am.grey_fill(pp, 3)
    grey = sum(pp.mean) / 3
    assert np.allclose(fill * np.array(pp.std) + np.array(pp.mean), grey)


def test_randomisation_cascade_reinitialises_from_the_top():
    from litefer import create_model

    torch.manual_seed(0)
    model = create_model("litefer_cpsca", num_classes=8).eval()
    fresh = create_model("litefer_cpsca", num_classes=8).eval()
    groups = am.cascade_groups(model, 64)
    assert groups[0] == ("classifier", ["classifier"])
    assert [g[1] for g in groups[1:]] == [[f"features.{i}" for i in r] for r in
                                         (range(13, 17), range(7, 13), range(4, 7), range(2, 4), range(0, 2))]
    assert groups[1][0] == "features.13–16 (2×2)"
    top = am.randomised(model, fresh, ["classifier"], create_model("litefer_cpsca", num_classes=8))
    for k, v in top.state_dict().items():
        ref = (fresh if k.startswith("classifier.") else model).state_dict()[k]
        assert torch.equal(v, ref), k
    every = am.randomised(model, fresh, [n for _, g in groups for n in g], create_model("litefer_cpsca", num_classes=8))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in every.state_dict().items())


def test_bad_runs_argument_is_one_line_exit_2(capsys, tmp_path):
    for bad in ("no-equals-sign", f"ca={tmp_path / 'missing.pt'}"):
        with pytest.raises(SystemExit) as e:
            am.parse_args(["--runs", bad])
        assert e.value.code == 2
        assert "--runs" in capsys.readouterr().err


def write_ca_run(path):
    from litefer import create_model
    from litefer.weights import weights_payload, write_weights

    torch.manual_seed(1)
    names = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    model = create_model("litefer_ca", num_classes=8)
    return write_weights(path, weights_payload(model, "litefer_ca", names, am.Preprocess(48, 3).to_dict()))


def test_the_whole_benchmark_on_a_small_generated_set(tmp_path):
    root = tmp_path / "fer"
    write_ferplus(root, {"Training": 4, "PublicTest": 36, "PrivateTest": 2})
    weights = make_checkpoint(tmp_path / "model.pt", input_size=64)
    run = write_ca_run(tmp_path / "ca.pt")
    out = tmp_path / "res" / "explain"
    am.main(["--data", str(root), "--weights", str(weights), "--runs", f"ca_seed0={run}",
             "--table5", str(tmp_path / "none.json"), "--shared-runs", str(tmp_path / "none"),
             "--deletion-faces", "12", "--sanity-faces", "6", "--cost-reps", "3", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    text = out.with_suffix(".md").read_text()
    for head in ("Command: `python benchmarks/attention_maps.py --data", "Machine:", "## 1.", "## 2.", "## 3.",
                 "## 4.", "## 5."):
        assert head in text
    n = data["n_faces"]
    assert n == sum(data["maps"]["n_true"]) == sum(data["maps"]["n_pred"]) > 20
    assert data["cam_resolution"] == [2, 2] and data["fine_resolution"] == [4, 4]   # 64 px input
    curves = data["deletion"]["curves"]
    assert set(curves) == {"Grad-CAM in-graph", data["fine_label"], "random", "centre-out"}
    for c in curves.values():
        assert len(c["accuracy"]) == len(am.FRACTIONS) and 0 <= c["auc"] <= 1
    assert len({c["accuracy"][-1] for c in curves.values()}) == 1   # all grey: the same input for every order
    assert [r["down_to"] for r in data["sanity"]["rows"]][0] == "classifier"
    assert {(r["runtime"], r["variant"], r["batch"]) for r in data["cost"]["rows"]} >= {
        ("torch", "in-graph Grad-CAM", 1), ("onnxruntime", "in-graph Grad-CAM", 16)}
    assert data["runs"] == {"ca_seed0": str(run)} and data["cost"]["onnx_parity"] < 1e-4
    for png in data["figures"].values():
        assert (out.parent / png).stat().st_size > 1000
