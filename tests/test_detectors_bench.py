"""benchmarks/detectors.py (issue 25: Haar against YuNet): the prior relabelling on the packaged model,
and the benchmark's core on 3 photos of each set, where ../shared holds the photos and YuNet."""
import numpy as np
import pytest

import detectors as bench
from face_fixtures import astronaut_bgr, two_face_composite

DATA = bench.SHARED / "data"


def need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} is absent (../shared is not on this machine)")


def test_labels_under_a_prior_are_the_recognizers_own():
    """Relabelling the ``dataset`` probabilities with a prior's log weights gives the label that
    recognizing with that prior gives."""
    import litefer
    from litefer.prior import log_weights

    rec = litefer.Recognizer(backend="onnxruntime", detector="haar", threads=1)
    photos = [astronaut_bgr(), two_face_composite()[:, 500:]]
    found, scores = bench.largest_scores(rec, photos)
    assert found == [1, 1]
    for prior in bench.PRIORS:
        want = [rec.recognize(p, prior=prior)[0].label for p in photos]
        assert bench.labels_under(scores, log_weights(prior, rec.card), rec.class_names) == want
    assert bench.labels_under([None], None, rec.class_names) == [None]
    assert bench.labelled_accuracy(["happiness", None, "anger"], ["happiness", "sadness", None]) == (0.5, 2)


def test_same_face_allows_yunet_boxes_and_rejects_neighbours():
    assert bench.same_face((100, 100, 80, 80), (108, 118, 68, 70))          # narrower and lower: YuNet's
    assert not bench.same_face((100, 100, 80, 80), (150, 100, 80, 80))
    assert not bench.same_face((100, 100, 80, 80), (110, 110, 40, 40))


def test_the_benchmark_on_three_photos_of_each_set(tmp_path):
    need(DATA / "jaffe", DATA / "yale", bench.YUNET)
    photos = {k: v for k, v in bench.test_photos().items() if k.startswith(("astronaut.jpg (packaged)", "two-face"))}
    result = bench.measure(rounds=1, jaffe_root=DATA / "jaffe", yale_root=DATA / "yale", yunet=bench.YUNET, limit=3,
                           composite=False, photos=photos)
    assert set(result["sets"]) == {"JAFFE", "Yale"} and result["sets"]["Yale"]["labelled"] == 3
    rows = result["timing"]
    assert {(r["set"], r["threads"], r["detector"], r["timed"]) for r in rows} == {
        (s, t, d, w) for s in ("JAFFE", "Yale") for t in bench.SETTINGS for d in ("haar", "yunet")
        for w in ("recognize", "detect")}
    for r in rows:
        assert r["photos"] == 3 and r["photos_with_face"] == 3 and len(r["rounds_ms"]) == 1
        assert 0 < r["ms_best"] == r["ms_median"] and r["faces_per_photo"] == [1, 1, 1]
    assert bench.photos_lost(result, "JAFFE") == bench.photos_lost(result, "Yale") == []
    assert {(a["set"], a["detector"]) for a in result["accuracy"]} == {(s, d) for s in ("JAFFE", "Yale")
                                                                       for d in ("haar", "yunet")}
    for a in result["accuracy"]:
        assert a["labelled"] == 3 and all(0 <= a[p] <= 1 for p in bench.PRIORS)
    tests = {r["photo"]: r for r in result["test_photos"]}
    assert len(tests) == 3
    for r in tests.values():
        assert r["haar"] == r["yunet"] == r["faces"] and r["lost_by_yunet"] == []
    text = bench.report(result, "python benchmarks/detectors.py")
    for head in ("Command: `python benchmarks/detectors.py`", "load average", "## Faces found", "## Accuracy",
                 "## The project's test photos", "No face that Haar finds is lost",
                 "JAFFE: photos where Haar finds a face and YuNet none: none."):
        assert head in text
    assert np.isfinite([r["ms_best"] for r in rows]).all()


def test_prior_sweep_scores_each_tau_as_the_named_prior_would():
    """benchmarks/prior_choice.py: tau = 0.5 of the adjustment is prior="balanced:0.5"; the sweep's
    accuracies, intervals and people counts on a small known set."""
    import prior_choice as pc
    from litefer.card import Card
    from litefer.inference.backends import softmax
    from litefer.prior import log_weights

    card = Card.from_dict({"class_names": ["a", "b"], "preprocess": {"input_size": 48, "in_chans": 3},
                           "class_prior": {"a": 0.8, "b": 0.2}})
    neg = log_weights("balanced", card).astype(np.float64)
    logits = np.log(np.array([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]]))
    half = softmax((logits + log_weights("balanced:0.5", card)).astype(np.float32)).argmax(1)
    assert pc.adjusted(logits, neg, 0.5).tolist() == half.tolist() == [0, 1, 0, 1]
    assert pc.adjusted(logits, neg, 0.0).tolist() == [0, 0, 0, 1]
    assert pc.adjusted(logits, neg, 1.0).tolist() == [1, 1, 0, 1]
    item = {"set": "toy", "logp": np.vstack([logits, np.full((1, 2), -np.inf)]), "truth": np.array([1, 1, 0, 1, 0]),
            "groups": np.array(["p", "p", "q", "q", "q"]), "no_face": 1}
    row = pc.sweep(item, neg, [0.0, 0.5, 1.0], np.random.default_rng(0))
    assert row["accuracy"] == pytest.approx([0.4, 0.6, 0.8])          # the photo without a face is wrong
    assert (row["n"], row["groups"], row["no_face"]) == (5, 2, 1)
    assert row["people_better"] == [0, 1, 1] and row["people_worse"] == [0, 0, 0]
    lo, hi = row["diff_ci"][1]
    assert row["diff_ci"][0] == [0.0, 0.0] and 0 <= lo <= 0.2 <= hi <= 0.5      # 2 people: +0.5, +0 or +0.2
