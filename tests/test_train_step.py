"""The GPU-minded training step, exercised on the CPU: device-resident data, device-side metric sums
(equal to the old per-step host sums), the epoch time limit, resume edge cases, and the GPU suite's
pack / plan / dry run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import write_ferplus
from litefer import create_model
from litefer.data import AugmentConfig, BatchSampler, FaceDataset, FERPLUS_CLASSES, Preprocess
from litefer.losses import JointLoss
from litefer.train.config import ConfigError, load_config
from litefer.train.engine import make_optimizer, train
from litefer.train.step import (DeviceData, EpochMeter, StepConfig, TrainStep, epoch_generator,
                                graph_unsupported_reason)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _dataset(n=48, soft=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 48, 48, 1), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 8, (n,), generator=g)
    targets = torch.softmax(torch.randn(n, 8, generator=g), 1) if soft else None
    return FaceDataset(images, labels, FERPLUS_CLASSES, "fixture", targets)


class _Recording(torch.nn.Module):
    """A JointLoss that remembers what each call returned, to recompute the old host-side sums."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.center = inner.center
        self.centre_grad_scale = inner.centre_grad_scale

    def forward(self, logits, emb, target):
        loss, parts = self.inner(logits, emb, target)
        self.calls.append((loss.detach().clone(), {k: v.detach().clone() for k, v in parts.items()},
                           logits.detach().clone(), target.clone()))
        return loss, parts


def test_device_sums_equal_the_old_per_step_host_sums():
    torch.manual_seed(0)
    model = create_model("litefer_cpsca", num_classes=8, dropout=0.2).train()
    crit = _Recording(JointLoss(8, model.embedding_dim, softmax=1.0, centre=0.4, triplet=0.1))
    opt = make_optimizer(model.parameters(), {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}, torch.device("cpu"))
    copt = torch.optim.SGD(crit.center.parameters(), lr=0.5)
    settings = StepConfig(Preprocess(input_size=48, in_chans=3), AugmentConfig(), "hard", True, None, 0.0)
    step = TrainStep(model, model, crit, opt, copt, None, settings)
    data = DeviceData(_dataset(), torch.device("cpu"))
    meter, gen = EpochMeter(torch.device("cpu")), epoch_generator(torch.device("cpu"), 7)
    for idx in BatchSampler(len(data), 12, seed=1, drop_last=True).batches():
        x, y = step.batch(data, idx, gen)
        step(x, y, meter)
    old = {"loss": 0.0, "ce": 0.0, "centre": 0.0, "triplet": 0.0, "correct": 0, "n": 0}
    for loss, parts, logits, target in crit.calls:            # the loop's sums before this change
        b = len(target)
        old["loss"] += float(loss) * b
        for k in ("ce", "centre", "triplet"):
            old[k] += float(parts[k]) * b
        old["correct"] += int((logits.argmax(1) == target).sum())
        old["n"] += b
    new = meter.read()
    assert len(crit.calls) == 4 and new["n"] == old["n"] == 48
    for k in ("loss", "ce", "centre", "triplet", "correct"):
        assert new[k] == pytest.approx(old[k], rel=1e-12, abs=1e-12), k


def test_device_data_indexes_like_the_host_tensors():
    ds = _dataset(soft=True)
    data = DeviceData(ds, torch.device("cpu"))
    idx = torch.tensor([5, 0, 17, 3])
    assert torch.equal(data.images[idx], ds.images[idx])
    assert torch.equal(data.targets(idx, "crossentropy", None), ds.soft_targets[idx])
    assert torch.equal(data.targets(idx, "hard", None), ds.labels[idx])
    drawn = data.targets(idx, "probability", torch.Generator().manual_seed(0))
    assert drawn.shape == (4,) and drawn.dtype == torch.long and int(drawn.max()) < 8


def test_sampler_batches_are_its_iteration_moved_once():
    s = BatchSampler(50, 8, seed=3, drop_last=True)
    s.set_epoch(2)
    assert [b.tolist() for b in s.batches(torch.device("cpu"))] == [b.tolist() for b in s]
    assert len(s.batches()) == len(s) == 6


def test_cpu_epoch_generator_repeats_the_old_stream():
    a = torch.rand(5, generator=epoch_generator(torch.device("cpu"), 42))
    assert torch.equal(a, torch.rand(5, generator=torch.Generator().manual_seed(42)))


def test_cuda_graph_is_refused_with_a_reason_off_cuda():
    cfg = load_config(None, ["run.cuda_graph=true"])
    assert "cpu" in graph_unsupported_reason(cfg, torch.device("cpu"), False)
    with pytest.raises(ConfigError, match="exclude each other"):
        load_config(None, ["run.cuda_graph=true", "run.compile=true"])
    with pytest.raises(ConfigError, match="run.time_limit_s must be in"):
        load_config(None, ["run.time_limit_s=-1"])


def _tiny(tmp_path, *overrides):
    write_ferplus(tmp_path / "fer", {"Training": 48, "PublicTest": 16})
    return load_config(None, [f"data.root={tmp_path / 'fer'}", "data.input_size=48", "optim.batch_size=16",
                              "run.threads=1", "run.tensorboard=false", "run.progress=never",
                              "run.eval_batch_size=64", *overrides])


def test_time_limit_stops_at_an_epoch_boundary_and_the_run_resumes(tmp_path, monkeypatch):
    from litefer.reproduce.plan import run_status

    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    cfg = _tiny(tmp_path, "optim.epochs=3", "run.time_limit_s=0.001")
    result = train(cfg, run_dir=tmp_path / "r")
    assert result["epochs"] == 1 and "time_limit_s" in result["stopped"]
    assert json.loads((tmp_path / "r" / "final.json").read_text())["stopped"]
    assert run_status(tmp_path / "r") == "incomplete"          # litefer reproduce would resume it
    from litefer.reproduce.plan import PlannedRun
    from litefer.reproduce.report import read_run
    planned = PlannedRun("t", None, 0, cfg, tmp_path / "r")
    assert read_run(planned) is None                           # and no table counts it as finished
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "setup_seconds" in rows[0]
    cfg2 = load_config(tmp_path / "r" / "config.yaml", ["run.time_limit_s=0"])
    again = train(cfg2, run_dir=tmp_path / "r", resume=True)
    assert again["epochs"] == 3 and "stopped" not in again
    assert run_status(tmp_path / "r") == "complete" and read_run(planned)["epochs"] == 3


def test_resume_before_the_first_checkpoint_restarts_and_stale_temp_files_go(tmp_path, monkeypatch):
    from litefer.train.config import dump_config

    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    cfg = _tiny(tmp_path, "optim.epochs=1")
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg))     # killed in epoch 1: a config, no last.pt
    (run / ".last.pt.k3j_x9ab.tmp").write_bytes(b"half a checkpoint")
    result = train(load_config(run / "config.yaml"), run_dir=run, resume=True)
    assert result["epochs"] == 1 and (run / "last.pt").is_file()
    assert not list(run.glob(".*.tmp"))


# ------------------------------------------------------------------------------------- the GPU suite
def test_pack_round_trip_is_bit_exact(tmp_path, monkeypatch):
    import gpu_suite
    from litefer.data.ferplus import load_arrays, load_ferplus

    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    write_ferplus(tmp_path / "fer", {"Training": 60, "PublicTest": 25}, gz=True)
    manifest = gpu_suite.pack(tmp_path / "fer", tmp_path / "pack")
    gpu_suite.unpack(tmp_path / "pack", tmp_path / "back")
    assert manifest["rows"] < manifest["source_rows"] == 85          # only rows with a majority label
    for split in ("train", "val"):
        for mode in ("majority", "crossentropy"):
            a, b = load_ferplus(tmp_path / "fer", split, mode), load_ferplus(tmp_path / "back", split, mode)
            if mode == "majority":
                assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    src, back = load_arrays(tmp_path / "fer"), load_arrays(tmp_path / "back")
    from litefer.data.ferplus import majority_labels
    keep = majority_labels(src["votes"]) >= 0
    assert np.array_equal(src["images"][keep], back["images"])
    assert np.array_equal(src["votes"][keep], back["votes"])
    (tmp_path / "pack" / "pixels.u8.xz").write_bytes(
        __import__("lzma").compress(b"\0" * int(np.prod(manifest["shape"]))))
    with pytest.raises(ValueError, match="checksum"):
        gpu_suite.unpack(tmp_path / "pack", tmp_path / "again")


def test_plan_keeps_the_main_run_whole():
    import gpu_suite

    # 8,000 img/s alone, 10,000 for two together; 25,060 + 3,199 images, 100 epochs
    plan = gpu_suite.plan_runs(8000, 10000, 480, 25060, 3199, 100, max_extra=4, startup_s=30)
    assert plan["extra"] == 0 and plan["epochs"] == 100 and plan["predicted_s"] <= 480
    roomy = gpu_suite.plan_runs(20000, 30000, 480, 25060, 3199, 100, max_extra=4, startup_s=30)
    assert roomy["extra"] == 3 and roomy["predicted_s"] <= 480     # a fifth run would not fit
    short = gpu_suite.plan_runs(3000, None, 480, 25060, 3199, 100, max_extra=4, startup_s=30)
    assert short["truncated"] and 0 < short["epochs"] < 100 and short["predicted_s"] <= 480


def test_gpu_suite_dry_run_end_to_end(tmp_path):
    write_ferplus(tmp_path / "fer", {"Training": 80, "PublicTest": 30}, gz=True)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--dry-run", "--data",
                           str(tmp_path / "fer"), "--out", str(out), "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=400,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["dry_run"] and len(report["runs"]) == 2
    assert [r["row"] for r in report["runs"]] == ["cpsca", "softmax"]
    for r in report["runs"]:
        assert r["exit_code"] == 0 and r["epochs_done"] == 2 and 0 <= r["val"]["accuracy"] <= 1
    assert "DRY RUN" in (out / "gpu.md").read_text()
    archives = sorted(p.name for p in out.glob("run*.tar.gz"))
    assert archives == ["run0-cpsca.tar.gz", "run1-softmax.tar.gz"]
    import tarfile
    with tarfile.open(out / "run0-cpsca.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("paper/ferplus/") and n.endswith("seed0/best.pt") for n in names)


def test_suite_uses_graphs_only_where_they_agree_and_pay():
    import gpu_suite

    def report(graph, eager, ok):
        rows = [{"model": "litefer_cpsca", "input": 224, "batch": 64, "mode": "graph", "images_per_s": graph},
                {"model": "litefer_cpsca", "input": 224, "batch": 64, "mode": "eager", "images_per_s": eager}]
        return {"rows": rows, "parity": [{"ok": ok}]}

    assert gpu_suite.choose_mode(report(5000.0, 1500.0, True), 224, 64) == ("graph", 5000.0)
    assert gpu_suite.choose_mode(report(5000.0, 1500.0, False), 224, 64) == ("eager", 1500.0)
    assert gpu_suite.choose_mode(report(1000.0, 1500.0, True), 224, 64) == ("eager", 1500.0)
    assert gpu_suite.choose_mode(report(None, 1500.0, True), 224, 64) == ("eager", 1500.0)
