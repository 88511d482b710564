"""`litefer reproduce`: table specs and configs, run planning and sharing, skip/resume/lock logic,
aggregation on fake run folders, the prototype classifiers of Table 6, and tiny end-to-end tables
on generated FERPlus and RAF-DB fixtures."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import write_ferplus, write_rafdb
from litefer.cli import main as cli
from litefer.reproduce import plan as P
from litefer.reproduce import report as R
from litefer.train.config import ConfigError, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TINY = ["--set", "data.input_size=32", "--set", "data.image_size=32", "--set", "optim.epochs=2",
        "--set", "optim.batch_size=16", "--set", "run.eval_batch_size=64", "--threads", "1"]


def _plan(table, dataset="ferplus", protocol="budget", seeds=(0, 1), runs_dir=Path("runs"), extra=()):
    recipes, protocols = P.load_protocols(CONFIGS)
    spec = P.load_table(CONFIGS, table)
    return spec, protocols[protocol], P.plan_table(spec, dataset, protocols[protocol], list(seeds), recipes,
                                                   runs_dir, list(extra))


# ------------------------------------------------------------------------------------ specs, configs
@pytest.mark.parametrize("dataset", ["ferplus", "rafdb"])
@pytest.mark.parametrize("protocol", ["budget", "paper"])
def test_every_table_row_resolves(dataset, protocol):
    recipes, protocols = P.load_protocols(CONFIGS)
    assert P.list_tables(CONFIGS) == ["table5", "table6", "fig6", "table2"]
    lam = {"ferplus": 0.4, "rafdb": 0.1}[dataset]
    for table in P.list_tables(CONFIGS):
        spec = P.load_table(CONFIGS, table)
        assert spec.reference_key(dataset) in {r.key for r in spec.rows}
        for row in spec.rows:
            cfg = P.row_config(row, dataset, recipes, protocols[protocol])
            assert cfg["data"]["dataset"] == dataset
            assert cfg["data"]["input_size"] == (48 if protocol == "budget" else 224)
            assert cfg["optim"]["epochs"] == (10 if protocol == "budget" else 100)
            if table == "table5":
                assert cfg["loss"]["centre"] == lam and cfg["model"]["name"] == f"litefer_{row.key}"
            if table == "fig6":
                assert cfg["loss"]["centre"] == row.x
    t6 = {r.key: r for r in P.load_table(CONFIGS, "table6").rows}
    centre = P.row_config(t6["centre"], dataset, recipes, protocols[protocol])
    assert centre["loss"]["softmax"] == 0 and centre["run"]["classifier"] == "nearest_centre"
    triplet = P.row_config(t6["triplet"], dataset, recipes, protocols[protocol])
    assert triplet["loss"]["triplet"] == 1 and triplet["run"]["classifier"] == "class_mean"
    if dataset == "rafdb":
        assert centre["data"]["val_fraction"] == 0.1
        assert centre["data"]["image_size"] == (64 if protocol == "budget" else 100)


def test_row_configs_load_standalone_as_ferplus():
    for path in sorted(CONFIGS.glob("table*/*.yaml")):
        cfg = load_config(path)
        assert cfg["data"]["dataset"] == "ferplus" and cfg["data"]["input_size"] == 224, path


def test_classifier_config_validation():
    with pytest.raises(ConfigError, match="needs learned centres"):
        load_config(None, ["run.classifier=nearest_centre", "loss.centre=0"])
    with pytest.raises(ConfigError, match="run.classifier must be one of"):
        load_config(None, ["run.classifier=knn"])
    assert load_config(None)["run"]["classifier"] == "logits"


def test_runs_are_shared_by_experiment_not_by_row(tmp_path):
    _, _, t5 = _plan("table5")
    _, _, t6 = _plan("table6")
    _, _, f6 = _plan("fig6")
    _, _, t2 = _plan("table2")
    d = lambda runs, key, seed=0: next(r.run_dir for r in runs if r.row.key == key and r.seed == seed)  # noqa: E731
    assert d(t5, "cpsca") == d(t6, "softmax_centre") == d(f6, "lambda_0.4") == d(t2, "improved")
    assert d(t6, "softmax") == d(f6, "lambda_0")
    assert d(t5, "cpsca", 0).parent == d(t5, "cpsca", 1).parent and d(t5, "cpsca", 0) != d(t5, "cpsca", 1)
    distinct = {r.run_dir for runs in (t5, t6, f6, t2) for r in runs}
    assert len(distinct) == 28                                   # 14 experiments x 2 seeds
    # where and how fast a run executes does not change its identity; what it computes does
    _, _, moved = _plan("table5", extra=[{"data": {"root": "/elsewhere"}}, {"run": {"threads": 7}}])
    assert [r.run_dir for r in moved] == [r.run_dir for r in t5]
    _, _, other = _plan("table5", extra=["optim.lr=0.1"])
    assert not {r.run_dir for r in other} & {r.run_dir for r in t5}
    _, _, raf = _plan("table5", dataset="rafdb")
    assert all("/rafdb/" in str(r.run_dir) for r in raf) and "c0.1" in d(raf, "cpsca").parent.name


# ------------------------------------------------------------------------------ skip / resume / lock
def _fake_complete(run, acc, seconds=600.0, test=None):
    """A finished run folder: 3 epochs, the best (selected) at epoch 2, the last 2 points lower."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.yaml").write_text(dump_config(run.cfg))
    (run.run_dir / "meta.json").write_text(json.dumps({"hardware": "Test CPU, 2 logical CPUs", "device": "cpu",
                                                       "torch": "9.9", "git_commit": "abc123",
                                                       "started": "2026-01-01 00:00:00 UTC"}))
    lines = ["epoch,lr,train_loss,val_acc"] + [f"{e + 1},0.001,1.0,{v:.4f}"
                                               for e, v in enumerate((acc - 0.05, acc, acc - 0.02))]
    (run.run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    final = {"best_val_acc": acc, "best_epoch": 2, "epochs": 3, "total_train_seconds": seconds,
             "val": {"accuracy": acc, "mean_class_accuracy": acc - 0.1, "macro_f1": acc - 0.2, "n": 100}}
    if test is not None:
        final["test"] = {"accuracy": test, "mean_class_accuracy": test, "macro_f1": test, "n": 50}
    (run.run_dir / "final.json").write_text(json.dumps(final))


def test_execute_skips_complete_resumes_incomplete_and_respects_limits(tmp_path):
    _, _, runs = _plan("table5", runs_dir=tmp_path)
    _fake_complete(runs[0], 0.8)                                  # baseline seed 0: done
    runs[1].run_dir.mkdir(parents=True)                           # ca seed 0: killed after an epoch
    (runs[1].run_dir / "config.yaml").write_text(dump_config(runs[1].cfg))
    (runs[1].run_dir / "last.pt").write_bytes(b"checkpoint")
    calls = []

    def fake_train(cfg, run_dir, resume=False):
        calls.append((Path(run_dir), resume, cfg["run"]["seed"]))
        if cfg["model"]["name"] == "litefer_maxca":
            raise RuntimeError("boom")
        (Path(run_dir) / "final.json").write_text("{}")

    out = P.execute(runs, max_runs=3, train_fn=fake_train)
    assert calls[0] == (runs[1].run_dir, True, 0)                 # incomplete -> resumed
    assert calls[1] == (runs[2].run_dir, False, 0)                # new -> fresh (and it fails)
    assert calls[2] == (runs[3].run_dir, False, 0)                # a failure does not stop the table
    assert [r.row.key for r in out["skipped"]] == ["baseline"]
    assert [r.row.key for r in out["failed"]] == ["maxca"]
    assert len(out["trained"]) == 2 and len(out["pending"]) == 4
    assert not list(tmp_path.rglob(P.LOCK_NAME))                  # locks are released

    calls.clear()
    live = runs[4].run_dir
    live.mkdir(parents=True)
    (live / P.LOCK_NAME).write_text(f"{socket.gethostname()} {os.getpid()}")   # a live process holds it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs[5].run_dir.mkdir(parents=True)
    (runs[5].run_dir / P.LOCK_NAME).write_text(f"{socket.gethostname()} {dead.pid}")  # left by a dead one
    out = P.execute(runs, train_fn=fake_train)
    assert [r.run_dir for r in out["locked"]] == [live]
    assert runs[5].run_dir in [c[0] for c in calls]               # the stale lock was taken over
    assert {r.row.key for r in out["skipped"]} == {"baseline", "ca", "cpsca"}


def test_run_folder_of_another_experiment_is_refused(tmp_path):
    _, _, runs = _plan("table5", runs_dir=tmp_path)
    runs[0].run_dir.mkdir(parents=True)
    other = dict(runs[0].cfg, model=dict(runs[0].cfg["model"], name="litefer_ca"))
    (runs[0].run_dir / "config.yaml").write_text(dump_config(other))
    with pytest.raises(RuntimeError, match="different experiment"):
        P.execute(runs[:1], train_fn=lambda *a, **k: None)


# ------------------------------------------------------------------------------------ aggregation
def test_aggregate_fake_runs_table5(tmp_path):
    _, _, runs = _plan("table5", runs_dir=tmp_path / "runs")
    acc = {("baseline", 0): 0.80, ("baseline", 1): 0.82, ("ca", 0): 0.83, ("ca", 1): 0.85,
           ("maxca", 0): 0.79, ("cpsca", 0): 0.84, ("cpsca", 1): 0.86}          # maxca seed 1 unfinished
    for run in runs:
        if (run.row.key, run.seed) in acc:
            _fake_complete(run, acc[run.row.key, run.seed])
    rc = cli(["reproduce", "table5", "--aggregate-only", "--runs-dir", str(tmp_path / "runs"),
              "--results-dir", str(tmp_path / "res")])
    assert rc == 0
    md = (tmp_path / "res" / "table5_ferplus_budget.md").read_text()
    data = json.loads((tmp_path / "res" / "table5_ferplus_budget.json").read_text())
    assert (tmp_path / "res" / "table5_ferplus_budget.png").stat().st_size > 5000
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["baseline"]["mean"] == pytest.approx(81.0) and rows["baseline"]["std"] == pytest.approx(2 ** 0.5)
    assert rows["maxca"]["n"] == 1 and rows["maxca"]["std"] is None
    assert rows["baseline"]["delta_ref"] == pytest.approx(-4.0) and rows["baseline"]["beyond"] is True
    assert rows["ca"]["delta_ref"] == pytest.approx(-1.0) and rows["ca"]["beyond"] is False
    assert rows["baseline"]["last_mean"] == pytest.approx(79.0)                  # final epoch, no selection
    assert data["split"] == "val" and data["runs_complete"] == 7 and data["runs_planned"] == 8
    assert "PARTIAL — 7 of 8 runs finished" in md
    assert "| Baseline (no attention in rows 9-10) | `litefer_baseline` | softmax + 0.4·centre | 86.6 | 81.00 ± 1.41 | 2/2 |" in md
    assert "| MAXCA | `litefer_maxca` | softmax + 0.4·centre | 87.1 | 79.00 (1 seed) | 1/2 ⚠ |" in md
    assert "beyond the seed spread (|Δ| > 2 SE): 1 of 2**: Baseline (no attention in rows 9-10) (-4.00)" in md
    assert "PublicTest" in md and "withheld" in md
    assert "litefer reproduce table5 --protocol budget --dataset ferplus" in md
    assert "1.17 h in all, 10.0 min per run" in md and "Test CPU, 2 logical CPUs (cpu)" in md       # 7 runs x 600 s
    assert "48×48 input, 10 epochs, batch 64, adamw lr 0.001" in md


def test_aggregate_reports_test_split_when_every_run_has_one(tmp_path):
    _, _, runs = _plan("table6", dataset="rafdb", seeds=(0,), runs_dir=tmp_path / "runs")
    for i, run in enumerate(runs):
        _fake_complete(run, 0.7, test=0.60 + 0.01 * i)
    spec, protocol, _ = _plan("table6", dataset="rafdb", seeds=(0,))
    out = R.write_results(spec, runs, "rafdb", protocol, tmp_path / "res", "cmd", [])
    assert out["split"] == "test"
    means = [r["mean"] for r in out["rows"]]
    assert means == pytest.approx([60.0, 61.0, 62.0, 63.0, 64.0])
    md = out["markdown"].read_text()
    assert "RAF-DB official test split" in md and "| 85.6 |" in md                # paper's RAF-DB centre row


def test_aggregate_fig6_curve_and_nothing_written_without_runs(tmp_path, capsys):
    res = tmp_path / "res"
    rc = cli(["reproduce", "fig6", "--aggregate-only", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(res)])
    assert rc == 0 and not res.exists()
    assert "no finished runs yet" in capsys.readouterr().err
    spec, protocol, runs = _plan("fig6", runs_dir=tmp_path / "runs")
    for run in runs:
        _fake_complete(run, 0.80 + 0.05 * run.row.x + 0.002 * run.seed)
    out = R.write_results(spec, runs, "ferplus", protocol, res, "cmd", [])
    md = out["markdown"].read_text()
    assert out["reference"] == "lambda_0.4"
    assert "| lambda = 0.4 | 0.4 | `litefer_cpsca` | softmax + 0.4·centre | 87.5 | 82.10 ± 0.14 |" in md
    assert "Our best λ: 0.8" in md and "the paper's: 0.4 (87.5)" in md
    assert out["png"].stat().st_size > 5000


def test_aggregate_table2_size_columns_from_profile(tmp_path, monkeypatch):
    calls = []

    def fake_profile(name, input_size=224, num_classes=8, in_chans=3, latency=True, **kw):
        calls.append((name, input_size, num_classes, latency))
        return {"params": 1000 + len(name), "gmac_torch": input_size / 1000, "gmac_ptflops": input_size / 900,
                "fp32_params_bytes": 4 * 2 ** 20, "checkpoint_adam_bytes": 12_000_000, "onnx_bytes": 4_000_000}

    import litefer.profile
    monkeypatch.setattr(litefer.profile, "profile_model", fake_profile)
    spec, protocol, runs = _plan("table2", dataset="rafdb", seeds=(0,), runs_dir=tmp_path / "runs")
    for run in runs:
        _fake_complete(run, 0.75, test=0.74)
    out = R.write_results(spec, runs, "rafdb", protocol, tmp_path / "res", "cmd", [])
    assert sorted(calls) == sorted((m, s, 7, False) for m in ("mobilenetv3_large", "mobilenetv3_large_reduced",
                                                            "mobilenetv3_large_reduced_hswish", "litefer_cpsca")
                                   for s in (224, 48))
    md = out["markdown"].read_text()
    assert "## Size and compute" in md
    assert "| MobileNetV3 | 1,017 | 0.249 | 0.053 | 0.224 | 0.048 | 4.00 | 12.0 | 4.00 | 0.23 | 4.1 | 50.1 |" in md
    assert "Not reproduced: VGG16" in md
    calls.clear()
    R.write_results(spec, runs, "rafdb", protocol, tmp_path / "res", "cmd", [])
    assert calls == []                                            # profiles reused from the results JSON


# ------------------------------------------------------------------------- prototype classifiers
class _Stub(torch.nn.Module):
    """Embedding = the mean brightness of the image in 2 dims; logits always say class 0."""
    embedding_dim = 2

    def forward_features(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, -m], 1)

    def forward(self, x):
        return torch.tensor([[5.0, 0.0, 0.0]]).expand(len(x), 3)


def test_evaluate_with_prototypes_uses_them_not_the_logits():
    from litefer.data import FaceDataset, Preprocess
    from litefer.train.evaluate import class_means, evaluate, prototype_scores

    levels = torch.tensor([20, 120, 230, 25, 125, 235], dtype=torch.uint8)
    ds = FaceDataset(levels.view(-1, 1, 1, 1).expand(-1, 8, 8, 1).contiguous(), torch.tensor([0, 1, 2, 0, 1, 2]),
                     ("a", "b", "c"))
    pp = Preprocess(input_size=8, in_chans=1, mean=(0.0,), std=(1.0,))
    model = _Stub()
    assert evaluate(model, ds, pp)["accuracy"] == pytest.approx(1 / 3)          # logits: always class 0
    means = class_means(model, ds, pp)
    assert torch.allclose(means[:, 0], torch.tensor([22.5, 122.5, 232.5]) / 255)
    assert evaluate(model, ds, pp, prototypes=means)["accuracy"] == 1.0
    rolled = evaluate(model, ds, pp, prototypes=means.roll(1, 0))                # class k's centre moved to k+1
    assert rolled["accuracy"] == 0.0 and rolled["confusion"][0][1] == 2
    # classes absent from training (NaN prototype) are never predicted
    gap = means.clone()
    gap[1] = float("nan")
    scores = prototype_scores(torch.tensor([[122.5 / 255, -122.5 / 255]]), gap)
    assert scores[0, 1] == float("-inf") and scores.argmax(1).item() in (0, 2)
    # a normalised triplet model: class means of unit embeddings, and unit queries scored against them
    unit = class_means(model, ds, pp, normalize=True)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3))
    far = prototype_scores(torch.tensor([[10.0, 10.0]]), torch.tensor([[0.7071, 0.7071], [10.0, 10.0]]), True)
    assert far.argmax(1).item() == 0          # nearest by direction, not by raw position


# ------------------------------------------------------------------------------- end to end (tiny)
def test_end_to_end_table5_ferplus_through_the_cli(tmp_path, capsys):
    write_ferplus(tmp_path / "fer", {"Training": 64, "PublicTest": 24})
    args = ["reproduce", "table5", "--data", str(tmp_path / "fer"), "--seeds", "0", "--runs-dir",
            str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"), *TINY]
    assert cli(args + ["--dry-run"]) == 0
    assert "4 distinct runs, 0 complete, 4 to train (8 epochs)" in capsys.readouterr().out
    assert cli(args) == 0
    md = (tmp_path / "res" / "table5_ferplus_budget.md").read_text()
    assert "**Status: complete** — all 4 runs finished." in md
    assert "--set data.input_size=32" in md and "32×32 input, 2 epochs" in md
    finals = sorted((tmp_path / "runs").rglob("final.json"))
    assert len(finals) == 4
    for f in finals:
        final = json.loads(f.read_text())
        assert final["epochs"] == 2 and 0 <= final["best_val_acc"] <= 1 and "test" not in final
    stamps = [f.stat().st_mtime_ns for f in finals]
    # a second pass trains nothing and rewrites the results from the runs on disk
    assert cli(args) == 0
    assert [f.stat().st_mtime_ns for f in finals] == stamps
    assert "runs: 4 skipped, 0 trained" in capsys.readouterr().err
    # the plan counts the training time spent, from every run's epoch times (set here to 900 s each)
    for m in (tmp_path / "runs").rglob("metrics.csv"):
        rows = [r.split(",") for r in m.read_text().strip().splitlines()]
        col = rows[0].index("epoch_seconds")
        for r in rows[1:]:
            r[col] = "900"
        m.write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert cli(args + ["--dry-run"]) == 0
    assert ("4 distinct runs, 4 complete, 0 to train (0 epochs); 2.00 h of training"     # 4 runs x 2 x 900 s
            in capsys.readouterr().out)
    assert cli(["reproduce", "table9", "--runs-dir", str(tmp_path / "runs")]) == 2


@pytest.fixture(scope="module")
def rafdb_table6(tmp_path_factory):
    """Table 6 on a generated RAF-DB tree (1 seed, 2 epochs at 32 px), through the CLI, once."""
    tmp = tmp_path_factory.mktemp("raf6")
    root = write_rafdb(tmp / "raf", 8, 3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITEFER_CACHE", str(tmp / "cache"))
        rc = cli(["reproduce", "table6", "--dataset", "rafdb", "--data", str(root), "--seeds", "0",
                  "--runs-dir", str(tmp / "runs"), "--results-dir", str(tmp / "res"), *TINY])
    assert rc == 0
    runs = {}
    for d in (tmp / "runs" / "budget" / "rafdb").iterdir():
        runs[d.name.split("-")[-2] if "nearest" in d.name or "class_mean" in d.name else d.name] = d / "seed0"
    return tmp, root, runs


def _load_run(run_dir):
    from litefer.data import Preprocess, load_split
    from litefer.weights import load_checkpoint_model

    model, meta = load_checkpoint_model(run_dir / "best.pt")
    cfg = load_config(run_dir / "config.yaml")
    pp = Preprocess.from_dict(meta["preprocess"])
    return model, meta, cfg, pp, lambda split: load_split(cfg["data"], split, channels=3)


def test_rafdb_table6_results(rafdb_table6):
    tmp, _, runs = rafdb_table6
    md = (tmp / "res" / "table6_rafdb_budget.md").read_text()
    assert "**Status: complete** — all 5 runs finished." in md and "RAF-DB official test split" in md
    assert len(runs) == 5
    for run_dir in runs.values():
        final = json.loads((run_dir / "final.json").read_text())
        assert final["test"]["n"] == 21 and len(final["test"]["per_class"]) == 7


def test_centre_only_run_classifies_by_its_learned_centres(rafdb_table6):
    from litefer.train.evaluate import predict_embeddings
    from litefer.train.metrics import classification_report

    _, _, runs = rafdb_table6
    run_dir = runs["nearest_centre"]
    model, meta, cfg, pp, split = _load_run(run_dir)
    assert cfg["loss"]["softmax"] == 0 and meta["classifier"] == "nearest_centre"
    assert torch.equal(meta["prototypes"], meta["centers"])     # the learned centres, at the selected epoch
    final = json.loads((run_dir / "final.json").read_text())
    for name in ("val", "test"):
        ds = split(name)
        emb = predict_embeddings(model, ds, pp)
        pred = torch.cdist(emb, meta["centers"]).argmin(1)
        report = classification_report(ds.labels.numpy(), pred.numpy(), ds.class_names)
        assert report["confusion"] == final[name]["confusion"], name
        assert report["accuracy"] == pytest.approx(final[name]["accuracy"])
    # `litefer eval` on the checkpoint uses the same centres
    report_path = run_dir.parent / "eval.json"
    assert cli(["eval", "--weights", str(run_dir / "best.pt"), "--split", "test", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["confusion"] == final["test"]["confusion"] and report["classifier"] == "nearest_centre"


def test_triplet_only_run_classifies_by_training_class_means(rafdb_table6):
    from litefer.train.evaluate import class_means

    _, _, runs = rafdb_table6
    run_dir = runs["class_mean"]
    model, meta, cfg, pp, split = _load_run(run_dir)
    assert cfg["loss"]["softmax"] == 0 and cfg["loss"]["triplet"] == 1 and meta["classifier"] == "class_mean"
    assert cfg["loss"]["triplet_normalize"] and meta["prototypes_normalized"]
    recomputed = class_means(model, split("train"), pp, normalize=True)
    assert torch.allclose(meta["prototypes"], recomputed, atol=1e-4)
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    train_acc = [r.split(",")[header.index("train_acc")] for r in rows[1:]]
    assert train_acc[0] == "nan" and 0 <= float(train_acc[1]) <= 1   # epoch 1 has no class means yet


def test_rows_option_limits_what_is_trained(tmp_path, capsys):
    base = ["reproduce", "table5", "fig6", "--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    assert cli([*base, "--rows", "ca", "lambda_0"]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:-1]]
    assert sorted((ln[0], ln[1], ln[2]) for ln in lines) == [
        ("fig6", "lambda_0", "0"), ("fig6", "lambda_0", "1"), ("table5", "ca", "0"), ("table5", "ca", "1")]
    assert cli([*base, "--rows", "ca", "nope"]) == 2
    assert "unknown row(s) nope" in capsys.readouterr().err
