"""``litefer finetune``: class mapping, group splits, bad input, resume, and an end-to-end run on a tiny
real-format folder (face crops and whole photos) whose outputs work in Recognizer, predict and serve."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from face_fixtures import astronaut_bgr, make_checkpoint, two_face_composite
from litefer.card import read_card
from litefer.inference.align import CropSpec, crop_face
from litefer.inference.detect import HaarDetector
from litefer.train import finetune as ft
from litefer.train.faces_folder import FaceFolder, map_classes, read_groups

REPO = Path(__file__).resolve().parents[1]
FAST = ["head.epochs=3", "full.epochs=2", "full.patience=2", "batch_size=8"]
MODEL = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ft_base") / "base.pt", input_size=32, packaged=True, tta=True)


def face_crop() -> np.ndarray:
    bgr = astronaut_bgr()
    return crop_face(bgr, HaarDetector().detect(bgr)[0], CropSpec())[0]


def write_crops(folder: Path, n: int, seed: int, prefix: str = "s") -> None:
    """``n`` 48 x 48 grey PNG crops of the sample face, each with its own brightness and noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    crop = face_crop().astype(np.float32)
    for i in range(n):
        img = np.clip(crop * rng.uniform(0.7, 1.3) + rng.normal(0, 12, crop.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{prefix}{i % 3}_{i}.png"), img)


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory) -> Path:
    """happy/ and sad/ crops of three 'people' (s0, s1, s2 in the names), and in happy/ one whole photo,
    one photo with two faces, one without a face and one unreadable file."""
    root = tmp_path_factory.mktemp("ft_faces")
    write_crops(root / "happy", 9, 1)
    write_crops(root / "sad", 9, 2)
    cv2.imwrite(str(root / "happy" / "s0_photo.jpg"), astronaut_bgr())
    cv2.imwrite(str(root / "happy" / "s1_two.jpg"), two_face_composite())
    cv2.imwrite(str(root / "happy" / "s2_blank.jpg"), np.full((300, 300, 3), 127, np.uint8))
    (root / "happy" / "s0_broken.jpg").write_bytes(b"not an image")
    return root


def test_class_mapping_subset_synonyms_and_new_classes(tmp_path):
    assert map_classes(["happy", "Angry", "sad"], MODEL, tmp_path) == ["happiness", "anger", "sadness"]
    assert map_classes(["surprised", "bored"], MODEL, tmp_path) == ["surprise", "bored"]
    with pytest.raises(ValueError, match="bored"):
        map_classes(["happy", "bored"], MODEL, tmp_path, must_exist=True)
    with pytest.raises(ValueError, match="both mean 'happiness'"):
        map_classes(["happy", "happiness"], MODEL, tmp_path)
    with pytest.raises(ValueError, match="map to no class"):
        map_classes(["happy", "_tmp"], MODEL, tmp_path)


def test_new_class_row_starts_fresh_and_known_rows_are_copied():
    from litefer import create_model

    base = create_model("litefer_cpsca", num_classes=len(MODEL))
    model = ft.adapt_head(base, MODEL, ["sadness", "bored", "happiness"], "litefer_cpsca", {})
    old, new = base.classifier[3].weight, model.classifier[3].weight
    assert torch.equal(new[0], old[MODEL.index("sadness")]) and torch.equal(new[2], old[MODEL.index("happiness")])
    assert not any(torch.equal(new[1], row) for row in old)
    assert torch.equal(model.classifier[0].weight, base.classifier[0].weight)


def test_group_split_keeps_each_group_on_one_side(tmp_path):
    names = [f"p{i % 5}_{i}.png" for i in range(40)]
    folder = FaceFolder(tmp_path, ["a", "b"], np.zeros((40, 4, 4, 1), np.uint8), np.arange(40) % 2,
                        [tmp_path / n for n in names])
    groups = read_groups(folder, r"^(p\d)_", None)
    for seed in range(5):
        cfg = ft.finetune_config(overrides=[f"seed={seed}", "val_fraction=0.3"])
        train, val, info = ft.split(folder, groups, cfg)
        g_train, g_val = {groups[i] for i in train}, {groups[i] for i in val}
        assert g_train and g_val and not g_train & g_val
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
        assert info["how"] == "by group" and set(info["val_groups"]) == g_val
    csv = tmp_path / "groups.csv"
    csv.write_text("".join(f"{n},{n[:2]}\n" for n in names))
    assert read_groups(folder, None, str(csv)) == groups
    _, _, info = ft.split(folder, None, ft.finetune_config())
    assert "same person" in info["warning"]


def test_config_file_holds_the_defaults():
    assert yaml.safe_load((REPO / "configs" / "finetune.yaml").read_text()) == ft.DEFAULTS
    with pytest.raises(ValueError, match="nosuch"):
        ft.finetune_config(overrides=["nosuch=1"])


def test_end_to_end_on_crops_and_photos(faces_root, base, tmp_path):
    out = tmp_path / "out"
    report = ft.finetune(faces_root, out, weights=base, group_by=r"^(s\d)_", overrides=FAST)
    assert sorted(p.name for p in out.iterdir()) == sorted(ft_outputs())
    assert report["after"]["class_names"] == ["happiness", "sadness"]
    assert report["data"]["decisions"] == {"photo": 3, "crop": 18}
    reasons = {Path(s["file"]).name: s["reason"] for s in report["data"]["skipped"]}
    assert reasons["s2_blank.jpg"] == "no face found" and "2 faces" in reasons["s1_two.jpg"]
    assert "s0_broken.jpg" in reasons and len(reasons) == 3
    assert report["split"]["how"] == "by group" and "warning" not in report["split"]
    est = report["estimate"]
    assert est["folds"] == 3 and sorted(g for f in est["per_fold"] for g in f["groups"]) == ["s0", "s1", "s2"]
    assert 0 <= est["accuracy"]["mean"] <= 1 and "shipped_accuracy" in est and "groups" not in report["split"]
    card = json.loads((out / "model.json").read_text())
    assert card["class_names"] == ["happiness", "sadness"] and card["finetuned_from"]["weights"] == str(base)
    assert card["data"]["listing_sha256"] == report["data"]["listing_sha256"] and card["recipe"]["seed"] == 0
    assert read_card(out / "model.onnx").class_names == ["happiness", "sadness"]
    md = (out / "report.md").read_text()
    assert "| accuracy |" in md and "s2_blank.jpg" in md and "no face found" in md
    assert "Grouped 3-fold estimate" in md
    from litefer import Recognizer

    for w in ("model.pt", "model.onnx"):
        faces = Recognizer(weights=out / w).recognize(astronaut_bgr())
        assert len(faces) == 1 and set(faces[0].scores) == {"happiness", "sadness"}


def ft_outputs() -> list[str]:
    from litefer.train.finetune_output import OUTPUTS
    return list(OUTPUTS)


def test_pick_largest_keeps_the_two_face_photo(faces_root, base, tmp_path):
    report = ft.finetune(faces_root, tmp_path / "out", weights=base, pick="largest", faces="auto",
                         overrides=FAST + ["refit=false"])
    names = {Path(s["file"]).name for s in report["data"]["skipped"]}
    assert names == {"s2_blank.jpg", "s0_broken.jpg"}
    assert report["data"]["detector"] == "haar"           # auto, with no YuNet model on disk
    assert "face detector: haar" in (tmp_path / "out" / "report.md").read_text()
    assert "same person" in report["split"]["warning"]
    assert report["estimate"]["folds"] == 0 and "no groups" in report["estimate"]["reason"]


def test_cli_then_predict_and_serve_take_the_output(faces_root, base, tmp_path, capsys):
    from litefer.cli import main

    out = tmp_path / "cli_out"
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), astronaut_bgr())
    args = ["finetune", str(faces_root), "--out", str(out), "--weights", str(base), "--faces", "auto",
            "--group-by", r"^(s\d)_", "--no-progress"] + [x for s in FAST for x in ("--set", s)]
    assert main(args) == 0
    assert "mean class accuracy" in capsys.readouterr().out
    assert main(["predict", str(photo), "--weights", str(out / "model.onnx"), "--json"]) == 0
    assert '"happiness"' in capsys.readouterr().out
    import warnings

    from litefer.serve import create_app
    from litefer.serve.engine import ServeConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from fastapi.testclient import TestClient
    with TestClient(create_app(ServeConfig(weights=str(out / "model.pt"), workers=1, queue=2))) as client:
        body = client.post("/v1/recognize", content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"}).json()
    assert set(body["faces"][0]["scores"]) == {"happiness", "sadness"}


def test_resume_after_a_failure_leaves_nothing_half_written(faces_root, base, tmp_path, monkeypatch):
    import litefer.train.finetune_output as fo

    out = tmp_path / "out"

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fo, "write_outputs", broken)
    with pytest.raises(OSError):
        ft.finetune(faces_root, out, weights=base, group_by=r"^(s\d)_", overrides=FAST)
    assert [p.name for p in out.iterdir()] == [".finetune"]            # only the resume checkpoint
    saved = torch.load(ft.checkpoint_path(out), weights_only=False)
    assert saved["epoch"] >= 1
    monkeypatch.undo()
    with pytest.raises(ValueError, match="another folder"):
        ft.finetune(faces_root, out, weights=base, group_by=r"^(s\d)_", overrides=FAST + ["seed=3"], resume=True)
    report = ft.finetune(faces_root, out, weights=base, group_by=r"^(s\d)_", overrides=FAST, resume=True)
    assert len([h for h in report["history"] if h["stage"] == "full"]) == saved["epoch"]
    assert not (out / ".finetune").exists() and (out / "model.onnx").is_file()


def test_bad_input_names_the_folder_and_writes_nothing(tmp_path, base, capsys):
    from litefer.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one"
    write_crops(one / "happy", 4, 1)
    few = tmp_path / "few"
    write_crops(few / "happy", 4, 1)
    write_crops(few / "sad", 1, 2)
    unknown = tmp_path / "unknown"
    write_crops(unknown / "happy", 4, 1)
    write_crops(unknown / "bored", 4, 2)
    noface = tmp_path / "noface"
    for c in ("happy", "sad"):
        (noface / c).mkdir(parents=True)
        cv2.imwrite(str(noface / c / "blank.jpg"), np.full((300, 300, 3), 127, np.uint8))
    cases = [(empty, [], "no class sub-folders"), (one, [], "only one class"), (few, [], "too few usable faces"),
             (unknown, ["--classes-must-exist"], "bored"), (noface, [], "no usable face"),
             (tmp_path / "missing", [], "no such folder")]
    for root, extra, message in cases:
        out = tmp_path / f"out_{root.name}"
        code = main(["finetune", str(root), "--out", str(out), "--weights", str(base), "--no-progress", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (root, err)
        assert message in err[0] and str(root) in err[0], err
        assert not out.exists() or not any(out.iterdir())


def test_explicit_validation_folder(faces_root, base, tmp_path):
    val = tmp_path / "val"
    write_crops(val / "happy", 3, 5)
    write_crops(val / "sad", 3, 6)
    report = ft.finetune(faces_root, tmp_path / "out", weights=base, val=val, overrides=FAST)
    assert report["after"]["n"] == 6 and report["refit"] is None
    assert report["estimate"]["folds"] == 0 and "--val" in report["estimate"]["reason"]
    assert report["data"]["train_counts"] == {"happiness": 10, "sadness": 9}
    write_crops(val / "bored", 2, 7)
    with pytest.raises(ValueError, match="bored"):
        ft.finetune(faces_root, tmp_path / "out2", weights=base, val=val, overrides=FAST)


def test_selection_breaks_ties_toward_the_longer_schedule_and_loss_keeps_moving():
    def row(stage, epoch, mca, loss):
        return {"stage": stage, "epoch": epoch, "val_accuracy": mca, "val_mean_class_accuracy": mca, "val_loss": loss}

    # validation is full (every face right) from head epoch 2 on; the loss still falls, then rises
    history = [row("head", 1, 0.5, 1.0), row("head", 2, 1.0, 0.6), row("head", 3, 1.0, 0.5),
               row("full", 1, 1.0, 0.40), row("full", 2, 1.0, 0.30), row("full", 3, 1.0, 0.35)]
    accuracy = ft.finetune_config(overrides=["select=accuracy"])
    assert ft.best_epochs(history, accuracy) == (3, 3)                    # ties: the longer schedule
    loss = ft.finetune_config(overrides=["select=loss"])
    assert ft.best_epochs(history, loss) == (3, 2)
    assert ft.best_epochs(history, ft.finetune_config(overrides=["select=loss", "select_tol=0.06"])) == (3, 3)
    worse = history[:3] + [row("full", 1, 1.0, 0.9)]
    assert ft.best_epochs(worse, loss) == (3, 0)                          # the full stage lost to the head
    assert ft.best_epochs(worse, ft.finetune_config()) == (3, 1)          # fixed (the default): the whole schedule
    with pytest.raises(ValueError, match="select"):
        ft.finetune_config(overrides=["select=nosuch"])


def test_budget_parsing_and_the_clock():
    assert ft.parse_budget("10m") == 600 and ft.parse_budget("90s") == 90 and ft.parse_budget("1.5h") == 5400
    assert ft.parse_budget("45") == 45 and ft.parse_budget("none") is None and ft.parse_budget(None) is None
    for bad in ("ten", "-5m"):
        with pytest.raises(ValueError, match="budget"):
            ft.parse_budget(bad)
    clock = ft.Clock(100.0, refit_ratio=1.25, reserve=10.0)
    assert clock.fits(0.0, 0) and clock.fits(10.0, 3) and not ft.Clock(5.0, reserve=10.0).fits(0.0, 0)                    # 10 * (1 + 1.25 * 4) + 10 = 70 s
    assert not clock.fits(10.0, 7)                                        # 10 * (1 + 1.25 * 8) + 10 = 120 s
    assert ft.Clock(None).fits(1e9, 100) and ft.Clock(None).left() is None


def test_layer_decay_l2sp_and_the_schedule():
    from litefer import create_model

    model = create_model("litefer_cpsca", num_classes=3)
    cfg = ft.finetune_config(overrides=["full.lr=0.01", "full.layer_decay=0.5", "full.l2sp=0.1"])
    opt = ft.full_optimizer(model, cfg)
    n = len(model.features)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(next(model.features[n - 1].parameters()))] == (0.01 * 0.5, 0.0)
    assert lr_of[id(next(model.features[0].parameters()))] == (0.01 * 0.5 ** n, 0.0)
    assert lr_of[id(model.classifier[3].weight)] == (0.01, cfg["full"]["weight_decay"])
    anchor = ft.l2sp_anchor(model, cfg)
    assert set(anchor) == {k for k, _ in model.named_parameters() if k.startswith("features.")}
    assert ft.l2sp_anchor(model, ft.finetune_config(overrides=["full.l2sp=0"])) is None
    fc = ft.finetune_config(overrides=["full.epochs=5", "full.warmup=1", "full.schedule=cosine"])["full"]
    rates = []
    for e in range(5):
        ft.set_epoch_lr(opt, e, fc)
        rates.append(opt.param_groups[0]["lr"] / opt.param_groups[0]["base_lr"])
    assert rates[0] == 0.5 and rates[1] == 1.0 and rates[1] > rates[2] > rates[3] > rates[4] > 0


def test_budget_stops_the_whole_network_stage_and_the_report_says_so(faces_root, base, tmp_path):
    report = ft.finetune(faces_root, tmp_path / "out", weights=base, group_by=r"^(s\d)_", budget="1s",
                         overrides=FAST + ["select=loss"])
    assert report["budget"] == {"seconds": 1.0, "stopped_whole_network_at": 0, "planned_whole_network_epochs": 2}
    assert report["refit"]["full_epochs"] == 0 and not [h for h in report["history"] if h["stage"] == "full"]
    assert "time budget" in (tmp_path / "out" / "report.md").read_text()
    assert "val_loss" in report["history"][0]


def test_group_folds_take_whole_groups_and_balance_their_sizes():
    groups = np.array(["a"] * 6 + ["b"] * 5 + ["c"] * 4 + ["d"] * 3 + ["e"] * 2)
    folds = ft.group_folds(groups, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    assert all(not set(groups[f]) & set(groups[g]) for i, f in enumerate(folds) for g in folds[i + 1:])
    assert sorted(len(f) for f in folds) == [6, 7, 7]


def test_mixup_and_l2sp_train_one_epoch():
    from litefer import create_model
    from litefer.data import FaceDataset, Preprocess

    torch.manual_seed(0)
    model = create_model("litefer_cpsca", num_classes=2)
    ds = FaceDataset(torch.randint(0, 255, (6, 40, 40, 1), dtype=torch.uint8), torch.tensor([0, 1] * 3), ("a", "b"))
    cfg = ft.finetune_config(overrides=["full.mixup=0.4", "full.l2sp=0.1", "batch_size=4"])
    anchor = ft.l2sp_anchor(model, cfg)
    loss = ft.full_epoch(model, ft.full_optimizer(model, cfg), ds, Preprocess(input_size=32), cfg, None,
                         torch.Generator().manual_seed(0), anchor)
    assert np.isfinite(loss) and any(not torch.equal(p, anchor[n]) for n, p in model.named_parameters() if n in anchor)


def test_the_clock_plans_a_schedule_that_ends_within_the_budget():
    clock = ft.Clock(100.0, refit_ratio=1.0, reserve=10.0)
    # 5 s an epoch, one done: n - 1 more and a refit of n must fit in ~90 s: 5 (n - 1) + 5 n <= 90 -> n = 9
    assert clock.plan(5.0, 1, 20) == 9
    assert clock.plan(5.0, 1, 4) == 4 and ft.Clock(None).plan(5.0, 1, 20) == 20
    assert ft.Clock(1.0, reserve=10.0).plan(5.0, 1, 20) == 1        # nothing more fits: the epoch done stays


# ----------------------------------------------------------------------------- hardening (issue 29)

@pytest.fixture
def no_work(monkeypatch):
    """Makes loading the base model or framing a photo fail the test: a refusal must come first."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(ft, "load_base", forbidden)
    monkeypatch.setattr(ft, "frame_folder", forbidden)


ISSUE_PROBES = ["head.lr=.inf", "head.lr=-1", "full.lr=.nan", "head.epochs=-1", "full.epochs=-5", "threads=0",
                "threads=-3", "threads=2.5", "min_per_class=0", "augment.flip=7", "label_smoothing=2", "batch_size=0",
                "val_fraction=1", "select_tol=-1", "full.layer_decay=0", "estimate_folds=-2", "balance=often"]


@pytest.mark.parametrize("override", ISSUE_PROBES)
def test_bad_recipe_values_are_one_line_naming_the_key_before_any_work(override, tmp_path, capsys, no_work):
    from litefer.cli import main

    code = main(["finetune", str(tmp_path / "faces"), "--out", str(tmp_path / "out"), "--set", override,
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    key, value = override.split("=")
    assert err[0].startswith(f"litefer finetune: error: {key} must be ") and "got" in err[0], err


def test_every_numeric_recipe_key_has_a_range_and_the_defaults_pass():
    def leaves(tree, prefix=""):
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    numeric = {k for k, v in leaves(ft.DEFAULTS) if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    assert numeric == set(ft.RANGES)
    ft.finetune_config(overrides=["head.epochs=0", "threads=2"])         # head-only and threads set: fine
    with pytest.raises(ValueError, match="both 0"):
        ft.finetune_config(overrides=["head.epochs=0", "full.epochs=0"])


def test_a_model_with_non_finite_weights_is_never_written(tmp_path):
    from litefer import create_model
    from litefer.train import finetune_output as fo

    model = create_model("litefer_cpsca", num_classes=2)
    with torch.no_grad():
        model.classifier[3].weight[0, 0] = float("nan")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"the earlier model")
    with pytest.raises(ValueError, match="non-finite weights .* first classifier.3.weight"):
        fo.write_outputs(out, model, {"model_name": "litefer_cpsca"}, None, {})
    assert [p.name for p in out.iterdir()] == ["model.pt"] and (out / "model.pt").read_bytes() == b"the earlier model"


def test_out_inside_an_image_folder_is_refused_before_any_work(tmp_path, capsys, no_work):
    from litefer.cli import main

    root, val = tmp_path / "faces", tmp_path / "val"
    for out, extra in ((root / "model", []), (root, []), (val / "x" / "y", ["--val", str(val)])):
        code = main(["finetune", str(root), "--out", str(out), "--no-progress", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "is inside the image folder" in err[0], err


def test_odd_file_names_and_identical_images_are_handled_and_reported(base, tmp_path, capsys):
    """A file name that is not UTF-8 is trained on and written escaped; copies of one image in two
    classes are left out of both, copies within one class keep one file."""
    from litefer.cli import main

    root = tmp_path / "faces"
    write_crops(root / "happy", 4, 1)
    write_crops(root / "sad", 4, 2)
    ok, png = cv2.imencode(".png", np.clip(face_crop() * 0.9, 0, 255).astype(np.uint8))
    with open(os.path.join(os.fsencode(root / "happy"), b"caf\xe9_9.png"), "wb") as f:
        f.write(png.tobytes())
    with open(os.path.join(os.fsencode(root / "sad"), b"broken\xff.png"), "wb") as f:
        f.write(b"not an image")
    (root / "sad" / "dup.png").write_bytes((root / "happy" / "s0_0.png").read_bytes())     # in two classes
    (root / "sad" / "s1_copy.png").write_bytes((root / "sad" / "s1_1.png").read_bytes())   # twice in one
    (root / "loose.png").write_bytes((root / "sad" / "s2_2.png").read_bytes())              # in no class folder
    (root / "happy" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "happy" / "up").symlink_to(root)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier run's model")
    assert main(["finetune", str(root), "--out", str(out), "--weights", str(base), "--no-progress",
                 *[x for s in ["head.epochs=1", "full.epochs=1", "batch_size=8", "refit=false", "estimate_folds=0"]
                   for x in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "2 set(s) of identical images" in err and "replaced the earlier run's model.pt" in err
    report = json.loads((out / "report.json").read_bytes().decode("utf-8"))
    dups = {tuple(Path(f).name for f in d["files"]): d for d in report["data"]["duplicates"]}
    assert dups[("s0_0.png", "dup.png")]["classes"] == ["happiness", "sadness"]
    assert "left out of every class" in dups[("s0_0.png", "dup.png")]["action"]
    assert dups[("s1_1.png", "s1_copy.png")]["action"] == "kept s1_1.png only"
    counts = {c: report["data"]["train_counts"][c] + report["data"]["val_counts"][c] for c in ("happiness", "sadness")}
    assert counts == {"happiness": 4, "sadness": 4}                   # caf\xe9_9.png among the happy faces
    reasons = {Path(s["file"]).name: s["reason"] for s in report["data"]["skipped"]}
    assert sorted(reasons) == ["broken\\xff.png", "gone.png", "loose.png", "up"] and "not an image" in reasons[
        "broken\\xff.png"]
    assert reasons["gone.png"].startswith("broken symbolic link") and reasons["up"].startswith("symbolic link loop")
    assert reasons["loose.png"].startswith("not in a class folder")
    md = (out / "report.md").read_bytes().decode("utf-8")
    assert "identical images" in md and "dup.png" in md and "broken\\xff.png" in md
    card = json.loads((out / "model.json").read_bytes().decode("utf-8"))
    assert card["data"]["listing_sha256"] == report["data"]["listing_sha256"]


def test_one_run_at_a_time_into_one_out_and_resume_needs_a_checkpoint(tmp_path, capsys, no_work):
    from litefer.cli import main

    out = tmp_path / "out"
    argv = ["finetune", str(tmp_path / "faces"), "--out", str(out), "--no-progress"]
    with ft.out_lock(out):                                              # another run holds the folder
        assert main(argv) == 2
        assert "another litefer finetune is writing there now" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no checkpoint to resume" in err[0] and "without --resume" in err[0]
    (out / "file").write_text("x")
    assert main(["finetune", str(tmp_path / "faces"), "--out", str(out / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_an_interrupt_after_a_saved_epoch_names_resume(tmp_path, capsys, monkeypatch):
    from litefer.cli import main

    out = tmp_path / "out"

    def interrupted(root, out, **kw):
        if kw["resume"] is False and root.endswith("later"):
            ft.save_checkpoint(Path(out), {"epoch": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "finetune", interrupted)
    assert main(["finetune", str(tmp_path / "early"), "--out", str(out)]) == 130
    assert "--resume" not in capsys.readouterr().err                    # nothing saved yet: nothing to resume
    assert main(["finetune", str(tmp_path / "later"), "--out", str(out)]) == 130
    assert "run the same command with --resume" in capsys.readouterr().err
