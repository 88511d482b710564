"""Tables as data, and the runs they imply.

``configs/reproduce/<table>.yaml`` lists a table's rows (a config file, optional overrides, the
paper's figures); ``configs/reproduce/protocols.yaml`` names the dataset recipes and the protocols
(config overrides + default seeds). A planned run is one (row, seed) with its fully resolved config
and a run directory named after the *experiment* the config describes, not after the row: two rows
(of one table or of several) that resolve to the same experiment share one run, trained once.

The experiment identity is a hash of the config's departures from ``DEFAULTS``, leaving out the keys
that say where or how fast a run executes (data root, threads, device, progress output...), so a run
started on one machine can be finished on another with its data elsewhere, and adding a new config
key with a default does not orphan the runs on disk.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..train.config import DEFAULTS, ConfigError, build_config, read_yaml

log = logging.getLogger("litefer.reproduce")

# Keys that do not change what a run computes, only where or how it executes.
EXECUTION_KEYS = {
    "data": ("root", "val_root", "test_root"),
    "run": ("out_dir", "name", "seed", "device", "threads", "progress", "tensorboard", "eval_batch_size",
            "compile", "channels_last", "deterministic", "cuda_graph", "time_limit_s"),
}
LOCK_NAME = ".reproduce.lock"


# ------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Row:
    key: str
    label: str
    config: Path
    overrides: tuple[str, ...] = ()
    paper: dict = field(default_factory=dict)     # dataset -> accuracy in %
    x: float | None = None                        # the abscissa of a curve (Figure 6's lambda)


@dataclass
class TableSpec:
    name: str
    title: str
    source: str
    claim: str
    rows: list[Row]
    reference: str | dict | None = None
    kind: str = "table"                           # table | curve
    x_label: str = ""
    profile: bool = False                         # add size columns from litefer.profile
    not_reproduced: list[str] = field(default_factory=list)
    order: int = 100                              # position in 'all' (the main claims first)

    def reference_key(self, dataset: str) -> str | None:
        ref = self.reference.get(dataset) if isinstance(self.reference, dict) else self.reference
        return ref if ref in {r.key for r in self.rows} else None


@dataclass
class Protocol:
    name: str
    description: str
    budget: str
    seeds: list[int]
    overrides: dict
    datasets: dict = field(default_factory=dict)  # dataset -> extra overrides

    def overrides_for(self, dataset: str) -> list[dict]:
        return [self.overrides] + ([self.datasets[dataset]] if self.datasets.get(dataset) else [])


def default_configs_dir() -> Path:
    """``./configs`` when it holds the reproduction specs, else the repository's ``configs``."""
    candidates = [Path.cwd() / "configs", Path(__file__).resolve().parents[3] / "configs"]
    for c in candidates:
        if (c / "reproduce" / "protocols.yaml").is_file():
            return c
    raise FileNotFoundError("no configs/reproduce/protocols.yaml in the current folder or the litefer "
                            "repository; pass --configs DIR")


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_protocols(configs_dir: Path) -> tuple[dict[str, Path], dict[str, Protocol]]:
    """(dataset -> recipe path, protocol name -> Protocol) from ``reproduce/protocols.yaml``."""
    path = Path(configs_dir) / "reproduce" / "protocols.yaml"
    data = _read_mapping(path)
    recipes = {k: (path.parent / v).resolve() for k, v in data.get("recipes", {}).items()}
    protocols = {}
    for name, p in data.get("protocols", {}).items():
        seeds = [int(s) for s in p.get("seeds", [0])]
        if not seeds:
            raise ConfigError(f"{path}: protocol {name!r} has no seeds")
        protocols[name] = Protocol(name, " ".join(str(p.get("description", "")).split()),
                                   " ".join(str(p.get("budget", "")).split()), seeds,
                                   p.get("overrides") or {}, p.get("datasets") or {})
    if not recipes or not protocols:
        raise ConfigError(f"{path}: needs 'recipes' and 'protocols'")
    return recipes, protocols


def list_tables(configs_dir: Path) -> list[str]:
    """Table names, in their specs' ``order``."""
    names = sorted(p.stem for p in (Path(configs_dir) / "reproduce").glob("*.yaml") if p.stem != "protocols")
    return sorted(names, key=lambda n: load_table(configs_dir, n).order)


def load_table(configs_dir: Path, name: str) -> TableSpec:
    path = Path(configs_dir) / "reproduce" / f"{name}.yaml"
    if not path.is_file() or name == "protocols":
        raise ConfigError(f"unknown table {name!r}; available: {', '.join(list_tables(configs_dir))}")
    data = _read_mapping(path)
    rows = []
    for r in data.get("rows", []):
        rows.append(Row(key=str(r["key"]), label=str(r.get("label", r["key"])),
                        config=(path.parent / r["config"]).resolve(),
                        overrides=tuple(r.get("overrides", ())), paper=dict(r.get("paper") or {}),
                        x=None if r.get("x") is None else float(r["x"])))
    keys = [r.key for r in rows]
    if not rows or len(set(keys)) != len(keys):
        raise ConfigError(f"{path}: rows must be present and have distinct keys, got {keys}")
    return TableSpec(name=name, title=str(data.get("title", name)), source=str(data.get("source", "")),
                     claim=" ".join(str(data.get("claim", "")).split()), rows=rows,
                     reference=data.get("reference"), kind=str(data.get("kind", "table")),
                     x_label=str(data.get("x_label", "")), profile=bool(data.get("profile", False)),
                     not_reproduced=[" ".join(s.split()) for s in data.get("not_reproduced", [])],
                     order=int(data.get("order", 100)))


# ---------------------------------------------------------------------------------------- configs
def _row_layers(path: Path, recipes: dict[str, Path]) -> list[dict]:
    """The row file's own mappings, outermost base first, down to (not including) its dataset recipe."""
    known = set(recipes.values())
    layers, seen = [], set()
    while True:
        path = path.resolve()
        if path in seen:
            raise ConfigError(f"{path}: circular 'base' chain")
        seen.add(path)
        data = _read_mapping(path)
        base = data.pop("base", None)
        layers.insert(0, data)
        if base is None:
            raise ConfigError(f"{path}: a row config must inherit a dataset recipe "
                              f"({', '.join(str(p) for p in known)}) through 'base'")
        path = path.parent / base
        if path.resolve() in known:
            return layers


def row_config(row: Row, dataset: str, recipes: dict[str, Path], protocol: Protocol,
               extra: list[str | dict] = ()) -> dict:
    """Recipe of ``dataset`` <- row file(s) <- row overrides <- protocol <- ``extra``; validated."""
    if dataset not in recipes:
        raise ConfigError(f"unknown dataset {dataset!r}; recipes exist for {', '.join(recipes)}")
    layers = _row_layers(row.config, recipes)
    cfg = build_config(read_yaml(recipes[dataset]),
                       [*layers, *row.overrides, *protocol.overrides_for(dataset), *extra])
    if cfg["data"]["dataset"] != dataset:
        raise ConfigError(f"{row.config}: resolves to data set {cfg['data']['dataset']!r}, not {dataset!r}")
    return cfg


def _departures(cfg: dict, defaults: dict) -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            sub = _departures(value, defaults[key])
            if sub:
                out[key] = sub
        elif key not in defaults or value != defaults[key]:
            out[key] = value
    return out


def experiment_config(cfg: dict) -> dict:
    """The part of a config that defines the experiment: departures from DEFAULTS, minus execution keys."""
    stripped = copy.deepcopy(cfg)
    for section, keys in EXECUTION_KEYS.items():
        for k in keys:
            stripped.get(section, {}).pop(k, None)
    return _departures(stripped, DEFAULTS)


def experiment_hash(cfg: dict) -> str:
    text = json.dumps(experiment_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def experiment_slug(cfg: dict) -> str:
    """Readable part of a run folder name: model and loss weights, e.g. ``litefer_cpsca-ce1-c0.4``."""
    loss = cfg["loss"]
    parts = [cfg["model"]["name"]]
    parts += [f"{short}{loss[k]:g}" for k, short in (("softmax", "ce"), ("centre", "c"), ("triplet", "t"))
              if loss[k] > 0]
    if cfg["run"]["classifier"] != "logits":
        parts.append(cfg["run"]["classifier"])
    return "-".join(parts)


def loss_label(cfg: dict) -> str:
    loss = cfg["loss"]
    terms = []
    if loss["softmax"] > 0:
        terms.append("softmax" if loss["softmax"] == 1 else f"{loss['softmax']:g}·softmax")
    if loss["centre"] > 0:
        terms.append(f"{loss['centre']:g}·centre")
    if loss["triplet"] > 0:
        terms.append(f"{loss['triplet']:g}·triplet")
    text = " + ".join(terms)
    return text + {"logits": "", "nearest_centre": " (nearest centre)",
                   "class_mean": " (nearest class mean)"}[cfg["run"]["classifier"]]


# ------------------------------------------------------------------------------------------- runs
@dataclass
class PlannedRun:
    table: str
    row: Row
    seed: int
    cfg: dict
    run_dir: Path

    @property
    def experiment(self) -> str:
        return self.run_dir.parent.name

    def status(self) -> str:
        """complete (final.json), incomplete (last.pt, no final.json) or new."""
        return run_status(self.run_dir)

    def epochs_done(self) -> int:
        return len(read_metrics(self.run_dir))

    def train_seconds(self) -> float:
        """Training time spent in this run so far, finished or not: the sum of its epoch times
        (evaluation excluded), what a protocol's CPU budget is counted in."""
        return sum(float(row["epoch_seconds"]) for row in read_metrics(self.run_dir) if row.get("epoch_seconds"))


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's ``metrics.csv`` (one per finished epoch), as strings; [] before the first."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_status(run_dir: Path) -> str:
    """complete, incomplete (resumable: killed, or stopped by ``run.time_limit_s``) or new."""
    final = run_dir / "final.json"
    if final.is_file():
        stopped = json.loads(final.read_text()).get("stopped")
        return "incomplete" if stopped and (run_dir / "last.pt").is_file() else "complete"
    if (run_dir / "last.pt").is_file():
        return "incomplete"
    return "new"


def plan_table(spec: TableSpec, dataset: str, protocol: Protocol, seeds: list[int], recipes: dict[str, Path],
               runs_dir: Path, extra: list[str | dict] = ()) -> list[PlannedRun]:
    """One planned run per (seed, row), seed-major, so a partial pass still gives whole tables."""
    planned = []
    for seed in seeds:
        for row in spec.rows:
            cfg = row_config(row, dataset, recipes, protocol, [*extra, {"run": {"seed": int(seed)}}])
            name = f"{experiment_slug(cfg)}-{experiment_hash(cfg)}"
            planned.append(PlannedRun(spec.name, row, int(seed), cfg,
                                      Path(runs_dir) / protocol.name / dataset / name / f"seed{seed}"))
    return planned


def check_run_dir(run: PlannedRun) -> None:
    """Refuse a run folder whose config.yaml describes another experiment (a hash collision or a
    folder edited by hand): mixing them would publish one experiment's numbers under another's name."""
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        return
    on_disk = build_config(_read_mapping(path))
    if experiment_config(on_disk) != experiment_config(run.cfg) or on_disk["run"]["seed"] != run.seed:
        raise RuntimeError(f"{run.run_dir} holds a different experiment than table {run.table} row "
                           f"{run.row.key} seed {run.seed} expects; move it away")


# ------------------------------------------------------------------------------------------ locks
class RunLocked(RuntimeError):
    """Another live process is training this run."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock file in the run folder, so two processes (or machines sharing the disk) never
    train one run at once; a lock left by a dead process on this host is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()}"
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                host, pid = path.read_text().split()
            except (OSError, ValueError):
                host, pid = "", "0"
            if attempt == 0 and host == socket.gethostname() and not _pid_alive(int(pid)):
                log.warning("removing the stale lock of dead process %s in %s", pid, run_dir)
                path.unlink(missing_ok=True)
                continue
            raise RunLocked(f"{run_dir} is being trained by {host} pid {pid} (delete {path} if that "
                            "process is gone)") from None
    with os.fdopen(fd, "w") as f:
        f.write(me)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- execute
def execute(planned: list[PlannedRun], max_runs: int | None = None, train_fn=None) -> dict[str, list]:
    """Train every planned run that is not complete (resuming incomplete ones), at most ``max_runs``.

    Returns lists of runs by outcome: skipped (already complete), trained, locked (another process),
    failed, pending (left for later by ``max_runs``). A failed run is logged and the next one starts.
    """
    from ..utils import setup_logging

    if train_fn is None:
        from ..train.engine import train as train_fn
    outcome: dict[str, list] = {k: [] for k in ("skipped", "trained", "locked", "failed", "pending")}
    seen: set[Path] = set()
    for run in planned:
        if run.run_dir in seen:
            continue
        seen.add(run.run_dir)
        check_run_dir(run)
        if run.status() == "complete":
            outcome["skipped"].append(run)
            continue
        if max_runs is not None and len(outcome["trained"]) + len(outcome["failed"]) >= max_runs:
            outcome["pending"].append(run)
            continue
        try:
            with run_lock(run.run_dir):
                status = run.status()                # re-read under the lock
                if status == "complete":
                    outcome["skipped"].append(run)
                    continue
                log.info("%s %s seed %d: %s -> %s", "resuming" if status == "incomplete" else "training",
                         run.row.key, run.seed, run.table, run.run_dir)
                train_fn(copy.deepcopy(run.cfg), run.run_dir, resume=status == "incomplete")
            outcome["trained"].append(run)
        except RunLocked as e:
            log.warning("skipping: %s", e)
            outcome["locked"].append(run)
        except Exception:  # noqa: BLE001 - one failed run must not stop an unattended table
            log.exception("run %s seed %d failed (%s)", run.row.key, run.seed, run.run_dir)
            outcome["failed"].append(run)
        finally:
            setup_logging()                          # the engine logged to the run's train.log
    return outcome
