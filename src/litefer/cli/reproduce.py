"""``litefer reproduce``: train every row x seed of a paper table, then publish it with its evidence.

    litefer reproduce table5 --protocol budget --dataset ferplus            # train what is missing, aggregate
    litefer reproduce table2 table5 table6 fig6 --dry-run                   # the plan and each run's status
    litefer reproduce all --max-runs 3                                      # a few runs per session
    litefer reproduce fig6 --rows lambda_0 lambda_0.8                       # train only some rows; aggregate all
    litefer reproduce table5 --aggregate-only                               # rewrite results/ from the runs on disk
    litefer reproduce table5 --protocol paper --set run.device=cuda         # the paper's recipe on a GPU

Tables are ``configs/reproduce/<name>.yaml``; protocols are in ``configs/reproduce/protocols.yaml``.
Runs live under ``<runs-dir>/<protocol>/<dataset>/<experiment>/seed<N>``: a run with ``final.json``
is skipped, one with ``last.pt`` but no ``final.json`` is resumed, so a table can be built over
several sessions or machines; runs shared between tables are trained once. Results go to
``<results-dir>/<table>_<dataset>_<protocol>.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from . import options
from .options import UsageError

log = logging.getLogger("litefer.reproduce")
RUNS_DIR, RESULTS_DIR = Path("runs/reproduce"), Path("results")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[0]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.add_argument("tables", nargs="+", metavar="TABLE",
                   help="table2, table5, table6, fig6 (any file in configs/reproduce/) or 'all'")
    p.add_argument("--protocol", default="budget", help="budget (2-core CPU) or paper (GPU); default budget")
    p.add_argument("--dataset", default="ferplus", help="ferplus or rafdb (default ferplus)")
    options.add_data_root(p, "data root (default: the dataset recipe's data.root)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds (default: the protocol's)")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help=f"default {RUNS_DIR}")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=f"default {RESULTS_DIR}")
    p.add_argument("--configs", type=Path, help="configs folder (default: ./configs or the repository's)")
    options.add_threads(p, "torch threads per run (run.threads; not part of a run's identity)")
    options.add_overrides(p, "extra config override for every run (repeatable); keys other than where/how a run "
                             "executes (data.root, run.device, run.threads, ...) give different runs")
    p.add_argument("--rows", nargs="+", metavar="KEY",
                   help="train only these rows (keys as in the table files, e.g. cpsca lambda_0); "
                        "the tables are still aggregated from every run on disk")
    p.add_argument("--max-runs", type=int, metavar="N", help="train at most N runs, then aggregate")
    p.add_argument("--aggregate-only", action="store_true", help="train nothing; aggregate the runs on disk")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each run's status; write nothing")


def regenerate_command(args: argparse.Namespace, tables: list[str]) -> str:
    """The command that rebuilds these results (without --max-runs, --dry-run, --aggregate-only)."""
    parts = ["litefer", "reproduce", *tables, "--protocol", args.protocol, "--dataset", args.dataset]
    if args.data:
        parts += ["--data", str(args.data)]
    if args.seeds:
        parts += ["--seeds", *map(str, args.seeds)]
    if args.runs_dir != RUNS_DIR:
        parts += ["--runs-dir", str(args.runs_dir)]
    if args.results_dir != RESULTS_DIR:
        parts += ["--results-dir", str(args.results_dir)]
    for o in args.overrides:
        parts += ["--set", o]
    return shlex.join(parts)


def plan(args: argparse.Namespace):
    """(protocol, table specs, {table: planned runs}) for the command's tables, seeds and overrides."""
    from ..reproduce.plan import (
        default_configs_dir,
        list_tables,
        load_protocols,
        load_table,
        plan_table,
    )

    configs = args.configs or default_configs_dir()
    recipes, protocols = load_protocols(configs)
    if args.protocol not in protocols:
        raise UsageError(f"unknown protocol {args.protocol!r}; available: {', '.join(protocols)}")
    protocol = protocols[args.protocol]
    available = list_tables(configs)
    names = available if args.tables == ["all"] else args.tables
    unknown = [t for t in names if t not in available]
    if unknown:
        raise UsageError(f"unknown table(s) {', '.join(unknown)}; available: {', '.join(available)} or all")
    extra: list = [*args.overrides]
    if args.data:
        extra.append({"data": {"root": str(args.data)}})
    if args.threads:
        extra.append({"run": {"threads": int(args.threads)}})
    specs = [load_table(configs, t) for t in names]
    seeds = args.seeds or protocol.seeds
    return protocol, specs, {s.name: plan_table(s, args.dataset, protocol, seeds, recipes, args.runs_dir, extra)
                             for s in specs}


def chosen_runs(args: argparse.Namespace, plans: dict) -> list:
    """Seed-major over all the tables asked for (every table gets its first seed before any gets a
    second), limited to ``--rows``."""
    everything = sorted((run for runs in plans.values() for run in runs), key=lambda r: r.seed)
    if not args.rows:
        return everything
    unknown = sorted(set(args.rows) - {r.row.key for r in everything})
    if unknown:
        raise UsageError(f"unknown row(s) {', '.join(unknown)} in {', '.join(plans)}; rows: "
                         f"{', '.join(dict.fromkeys(r.row.key for r in everything))}")
    return [r for r in everything if r.row.key in args.rows]


def main(args: argparse.Namespace) -> int:
    from ..reproduce.plan import execute
    from ..reproduce.report import write_results
    from ..utils import setup_logging

    setup_logging()
    protocol, specs, plans = plan(args)
    runs = chosen_runs(args, plans)
    if args.dry_run:
        print_plan(runs)
        return 0
    failed = 0
    if not args.aggregate_only:
        outcome = execute(runs, max_runs=args.max_runs)
        failed = len(outcome["failed"])
        log.info("runs: %s", ", ".join(f"{len(v)} {k}" for k, v in outcome.items()))
    for spec in specs:
        written = write_results(spec, plans[spec.name], args.dataset, protocol, args.results_dir,
                                regenerate_command(args, [spec.name]), args.overrides)
        if written is None:
            print(f"{spec.name}: no finished runs yet under {args.runs_dir}; nothing written", file=sys.stderr)
        else:
            print(f"{spec.name}: {written['runs_complete']}/{written['runs_planned']} runs -> {written['markdown']}, "
                  f"{written['png'].name}")
    return 1 if failed else 0


def print_plan(planned) -> None:
    seen = set()
    print(f"{'table':<8} {'row':<16} {'seed':>4}  {'status':<16} run folder")
    for run in planned:
        status = run.status()
        if status == "incomplete":
            status = f"resume @{run.epochs_done()}/{run.cfg['optim']['epochs']}"
        shared = " (shared)" if run.run_dir in seen else ""
        seen.add(run.run_dir)
        print(f"{run.table:<8} {run.row.key:<16} {run.seed:>4}  {status:<16} {run.run_dir}{shared}")
    distinct = {r.run_dir: r for r in planned}
    todo = [r for r in distinct.values() if r.status() != "complete"]
    epochs = sum(r.cfg["optim"]["epochs"] - r.epochs_done() for r in todo)
    spent = sum(r.train_seconds() for r in distinct.values()) / 3600
    print(f"{len(distinct)} distinct runs, {len(distinct) - len(todo)} complete, {len(todo)} to train "
          f"({epochs} epochs); {spent:.2f} h of training spent in them so far (sum of epoch times)")
