"""``detector="auto"``, the default everywhere: YuNet when its model is on disk, else Haar with one hint,
and every output naming the detector that ran."""
import json
import logging
import shutil
import subprocess
import sys

import pytest

from face_fixtures import yunet_path
from litefer.inference import detect
from litefer.inference.detect import (
    FETCH_HINT,
    HaarDetector,
    YuNetDetector,
    create_detector,
    resolve_detector,
)
from litefer.utils import YUNET_FILENAME, models_dir


@pytest.fixture
def fresh_hint(monkeypatch):
    """The once-per-process hint as if nothing had been said yet in this process."""
    monkeypatch.setattr(detect, "_hinted", type(detect._hinted)())


def test_auto_without_a_model_is_haar_and_hints_once(fresh_hint, caplog):
    with caplog.at_level(logging.WARNING, logger="litefer"):
        first, second = create_detector("auto"), create_detector()
    assert isinstance(first, HaarDetector) and isinstance(second, HaarDetector)
    hints = [r for r in caplog.records if r.getMessage() == FETCH_HINT]
    assert len(hints) == 1 and "\n" not in FETCH_HINT and "litefer fetch yunet" in FETCH_HINT


def test_haar_asked_for_by_name_gives_no_hint(fresh_hint, caplog):
    with caplog.at_level(logging.WARNING, logger="litefer"):
        create_detector("haar")
    assert not caplog.records


def test_auto_picks_the_cached_model(fresh_hint, caplog):
    shutil.copy(yunet_path(), models_dir() / YUNET_FILENAME)       # as `litefer fetch yunet` leaves it
    with caplog.at_level(logging.WARNING, logger="litefer"):
        det = create_detector("auto", min_size=40)
    assert isinstance(det, YuNetDetector) and det.min_size == 40 and not caplog.records
    assert resolve_detector("auto") == ("yunet", models_dir() / YUNET_FILENAME)


def test_litefer_yunet_names_the_model_and_a_missing_one_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEFER_YUNET", str(yunet_path()))
    assert isinstance(create_detector("auto"), YuNetDetector)
    assert isinstance(create_detector("yunet"), YuNetDetector)
    missing = tmp_path / "nope.onnx"
    monkeypatch.setenv("LITEFER_YUNET", str(missing))
    with pytest.raises(FileNotFoundError, match=f"LITEFER_YUNET={missing}: no such YuNet model file"):
        create_detector("auto")


def test_a_given_model_path_wins_and_haar_ignores_it():
    assert resolve_detector("auto", yunet_path()) == ("yunet", yunet_path())
    assert resolve_detector("haar", yunet_path()) == ("haar", None)
    with pytest.raises(ValueError, match="unknown detector 'cnn'"):
        resolve_detector("cnn")


def _predict(args, env_extra, tmp_path):
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "litefer", "predict", "--sample", "--no-progress", *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("with_yunet", [False, True], ids=["offline-haar", "yunet-cached"])
def test_predict_says_which_detector_ran(tmp_path, with_yunet):
    import os

    env = {"LITEFER_CACHE": os.environ["LITEFER_CACHE"]}
    if with_yunet:
        env["LITEFER_YUNET"] = str(yunet_path())
    out = _predict(["--json", "out.json", "--csv", "out.csv"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    name = "yunet" if with_yunet else "haar"
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["summary"]["detector"] == name
    assert report["inputs"][0]["detector"] == name and report["inputs"][0]["faces"]
    header, row = (tmp_path / "out.csv").read_text().splitlines()[:2]
    assert header.split(",")[-1] == "detector" and row.split(",")[-1] == name
    assert f"found by {name}" in out.stderr
    hints = [line for line in out.stderr.splitlines() if "litefer fetch yunet" in line]
    assert len(hints) == (0 if with_yunet else 1)


def test_the_table_keeps_its_column_order_when_the_first_image_has_no_face():
    from litefer.inference.recognizer import COLUMNS, TAIL_COLUMNS, FaceResult, ImageResult, table

    face = FaceResult((1, 2, 3, 4), "happiness", 0.9, {"neutral": 0.1, "happiness": 0.9}, 0.95, {"face_px": 3})
    columns, rows = table([ImageResult("empty.jpg", detector="yunet"), ImageResult("a.jpg", [face], detector="yunet")])
    video_only = ("frame", "time", "track", "valence")
    assert columns == [c for c in COLUMNS if c not in video_only] + ["neutral", "happiness"] + TAIL_COLUMNS
    assert [r["detector"] for r in rows] == ["yunet", "yunet"]
