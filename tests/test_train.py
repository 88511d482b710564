"""End to end on CPU: train -> kill -> resume -> eval, config errors, and a 2-process DDP run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fixtures import write_ferplus, write_rafdb
from litefer.train.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def _tiny_config(path: Path, data_root: Path, dataset="ferplus", **extra) -> Path:
    cfg = {
        "model": {"name": "litefer_cpsca", "dropout": 0.2},
        "data": {"dataset": dataset, "root": str(data_root), "input_size": 48, "image_size": 48,
                 "val_fraction": 0.25},
        "loss": {"softmax": 1.0, "centre": 0.4},
        "optim": {"optimizer": "adam", "lr": 0.002, "batch_size": 16, "epochs": 4, "schedule": "plateau",
                  "plateau_patience": 1},
        "run": {"seed": 3, "deterministic": True, "threads": 1, "eval_batch_size": 64, "progress": "never",
                "tensorboard": True},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "litefer", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_config_unknown_key_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'optim.lr_typo'"):
        load_config(None, ["optim.lr_typo=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nme: litefer_cpsca\n")
    with pytest.raises(ConfigError, match="'model.nme'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["optim.lr=fast"])
    cfg = load_config(REPO / "configs" / "rafdb_paper.yaml", ["optim.lr=0.001"])
    assert cfg["loss"]["centre"] == 0.1 and cfg["data"]["dataset"] == "rafdb" and cfg["optim"]["lr"] == 0.001


@pytest.mark.parametrize("override, message", [
    ("optim.min_lr=-1", "optim.min_lr must be in [0, inf), got -1"),      # trained a diverged model before
    ("optim.epochs=0", "optim.epochs must be in [1, inf), got 0"),         # exited 0 with no checkpoint
    ("optim.lr=0", "optim.lr must be in (0, inf)"),
    ("optim.lr=.nan", "optim.lr must be in (0, inf), got nan"),
    ("optim.lr=0.01", None),
    ("optim.min_lr=0.5", "optim.min_lr (0.5) must not exceed optim.lr"),
    ("optim.batch_size=2.5", "optim.batch_size must be a whole number"),
    ("data.input_size=16", "data.input_size must be in [32, 512]"),
    ("augment.flip=1.5", "augment.flip must be in [0, 1]"),
    ("loss.label_smoothing=1", "loss.label_smoothing must be in [0, 1)"),
    ("loss.centre=-0.4", "loss.centre must be in [0, inf)"),
    ("model.dropout=true", "model.dropout must be a number"),
    ("run.seed=-1", "run.seed must be in [0, 4294967295]"),
    ("optim.schedule=linear", "optim.schedule must be one of plateau, cosine, none, got 'linear'"),
])
def test_config_numeric_ranges_name_the_key(override, message):
    if message is None:
        assert load_config(None, [override])["optim"]["lr"] == 0.01
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_config_all_losses_zero_is_refused():
    with pytest.raises(ConfigError, match="nothing to train on"):
        load_config(None, ["loss.softmax=0", "loss.centre=0"])


# finetune.yaml is litefer finetune's recipe, not a training config (tests/test_finetune.py loads it)
TRAIN_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.name != "finetune.yaml")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_every_shipped_config_loads(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg["model"]["name"]


def test_train_kill_resume_eval(tmp_path):
    expected = write_ferplus(tmp_path / "fer", {"Training": 160, "PublicTest": 48, "PrivateTest": 32})
    cfg = _tiny_config(tmp_path / "tiny.yaml", tmp_path / "fer")
    env = {"LITEFER_CACHE": str(tmp_path / "cache")}

    # reference: the same run, uninterrupted
    ref_dir = tmp_path / "ref"
    ref = _cli("train", cfg, "--run-dir", ref_dir, env_extra=env)
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out

    # killed (SIGKILL) once its first checkpoint exists, then resumed
    run = tmp_path / "run"
    proc = _cli("train", cfg, "--run-dir", run, env_extra=env)
    deadline = time.time() + 240
    while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = torch.load(run / "last.pt", weights_only=False)["state"]["epoch"]
    assert done < 4, "the run finished before it could be killed"
    again = _cli("train", "--resume", run, env_extra=env)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert f"resumed {run} at epoch {done}" in out

    # the resumed run ends where the uninterrupted one does
    a = torch.load(ref_dir / "last.pt", weights_only=False)
    b = torch.load(run / "last.pt", weights_only=False)
    assert b["state"]["epoch"] == 4
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-4), k
    assert torch.allclose(a["criterion"]["center.centers"], b["criterion"]["center.centers"], atol=1e-4)
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch,lr")
    final = json.loads((run / "final.json").read_text())
    assert final["test"]["n"] == expected["PrivateTest"]        # test split evaluated once at the end
    assert final["val"]["n"] == expected["PublicTest"]
    for f in ("config.yaml", "meta.json", "best.pt", "curves.png", "confusion_val.png", "confusion_test.png"):
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))

    # litefer eval on the selected checkpoint, JSON output
    ev = _cli("eval", "--weights", run / "best.pt", "--split", "val", "--tta", "--json", tmp_path / "eval.json",
              env_extra=env)
    out, _ = ev.communicate(timeout=120)
    assert ev.returncode == 0, out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["n"] == expected["PublicTest"] and 0 <= report["macro_f1"] <= 1
    assert len(report["per_class"]) == 8 and "accuracy" in out


def test_existing_run_is_not_overwritten(tmp_path):
    write_ferplus(tmp_path / "fer", {"Training": 32, "PublicTest": 16})
    cfg = load_config(_tiny_config(tmp_path / "t.yaml", tmp_path / "fer"), ["optim.epochs=1"])
    from litefer.train.engine import train
    train(cfg, run_dir=tmp_path / "r")
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, run_dir=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(cfg, run_dir=tmp_path / "other", resume=True)


def test_rafdb_config_trains_on_fixture(tmp_path):
    """The paper's RAF-DB recipe file, exercised on a generated RAF-DB tree (lambda = 0.1)."""
    root = write_rafdb(tmp_path / "raf", 5, 2)
    from litefer.train.engine import train
    cfg = load_config(REPO / "configs" / "rafdb_paper.yaml",
                      [f"data.root={root}", "data.input_size=48", "data.image_size=48", "optim.epochs=1",
                       "optim.batch_size=8", "run.progress=never", "run.tensorboard=false", "run.threads=1"])
    result = train(cfg, run_dir=tmp_path / "r")
    assert result["test"]["n"] == 14 and len(result["test"]["per_class"]) == 7
    assert abs(cfg["loss"]["centre"] - 0.1) < 1e-9


def test_ddp_two_processes_gloo(tmp_path):
    write_ferplus(tmp_path / "fer", {"Training": 64, "PublicTest": 24})
    cfg = _tiny_config(tmp_path / "tiny.yaml", tmp_path / "fer", optim__epochs=2)
    env = {**os.environ, "LITEFER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "litefer", "train", str(cfg), "--run-dir", str(tmp_path / "ddp")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "ddp" / "meta.json").read_text())
    assert meta["world_size"] == 2
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    assert (tmp_path / "ddp" / "best.pt").is_file()


def test_package_run_writes_weights_and_card(tmp_path):
    write_ferplus(tmp_path / "fer", {"Training": 48, "PublicTest": 16})
    cfg = load_config(_tiny_config(tmp_path / "t.yaml", tmp_path / "fer"), ["optim.epochs=1"])
    from litefer.package import package_run
    from litefer.train.engine import train
    from litefer.weights import load_checkpoint_model
    train(cfg, run_dir=tmp_path / "r")
    card = package_run(tmp_path / "r", tmp_path / "w", "tiny", data_root=str(tmp_path / "fer"))
    assert card["class_names"][0] == "neutral" and len(card["class_names"]) == 8
    assert card["preprocess"]["input_size"] == 48 and card["epoch"] == 1
    assert 0 <= card["validation"]["accuracy_no_tta"] <= 1 and card["training"]["hardware"]
    assert json.loads((tmp_path / "w" / "tiny.json").read_text())["sha256"] == card["sha256"]
    model, meta = load_checkpoint_model(tmp_path / "w" / "tiny.pt")
    assert meta["card"]["model_name"] == "litefer_cpsca" and "config" not in meta
    # the training prior: label shares of the 48 training rows' majority labels
    from litefer.data import load_split
    counts = load_split({"dataset": "ferplus", "root": str(tmp_path / "fer")}, "train").class_counts()
    assert card["class_prior"] == pytest.approx({c: n / sum(counts) for c, n in zip(card["class_names"], counts)},
                                                abs=1e-6)
    assert set(card["validation"]["prior"]) == {"dataset", "balanced:0.5", "balanced"}
    assert card["val_accuracy"] == card["validation"]["prior"]["dataset"]["accuracy"]
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 8)


def test_resume_with_changed_settings_is_recorded(tmp_path):
    write_ferplus(tmp_path / "fer", {"Training": 32, "PublicTest": 16})
    path = _tiny_config(tmp_path / "t.yaml", tmp_path / "fer")
    from litefer.train.engine import train
    train(load_config(path, ["optim.epochs=1", "run.tensorboard=false"]), run_dir=tmp_path / "r")
    cfg2 = load_config(tmp_path / "r" / "config.yaml", ["optim.epochs=2"])
    result = train(cfg2, run_dir=tmp_path / "r", resume=True)
    assert result["epochs"] == 2
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["resumed_with_changes"][0]["changes"] == {"optim.epochs": [1, 2]}
    assert meta["resumed_with_changes"][0]["at_epoch"] == 1
    assert load_config(tmp_path / "r" / "config.yaml")["optim"]["epochs"] == 2


def test_init_from_weights_file_by_name(tmp_path):
    from litefer import create_model
    from litefer.models.pretrained import load_by_name
    from litefer.weights import weights_payload
    src = create_model("litefer_cpsca", num_classes=8)
    torch.save(weights_payload(src, "litefer_cpsca", [str(i) for i in range(8)], {"input_size": 48, "in_chans": 3,
                                                                                 "mean": [0.5] * 3, "std": [0.2] * 3}),
               tmp_path / "w.pt")
    dst = create_model("litefer_cpsca", num_classes=7)          # the classifier's last layer differs
    info = load_by_name(dst, tmp_path / "w.pt")
    assert info["skipped"] == 2 and 0.99 < info["fraction_params"] <= 1.0
    assert torch.equal(dst.features[0][0].weight, src.features[0][0].weight)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_by_name(dst, tmp_path / "missing.pth")
