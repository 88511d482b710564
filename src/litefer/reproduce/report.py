"""Aggregate a table's runs on disk into ``results/<table>_<dataset>_<protocol>.{md,json,png}``.

Per row: accuracy of the selected epoch, mean ± sample standard deviation over the seeds that have
finished, the paper's figure beside it, and each row's difference from the table's reference row
against the seed spread (|Δ| > 2·SE, SE = sqrt(s₁²/n₁ + s₂²/n₂)). Every number is read from the runs'
``final.json``, ``metrics.csv`` and ``meta.json``; nothing is typed in except the paper's figures,
which come from the table specs.
"""
from __future__ import annotations

import io
import json
import math
import platform
import statistics
import textwrap
import time
from pathlib import Path

from ..utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from .plan import PlannedRun, Protocol, TableSpec, experiment_config, loss_label, read_metrics

DATASET_NAMES = {"ferplus": "FERPlus", "rafdb": "RAF-DB", "folder": "image folder"}
SPLIT_TEXT = {
    ("ferplus", "val"): "FERPlus validation split (PublicTest); the test split (PrivateTest) is withheld "
                        "on these machines, so the epoch is selected and reported on the same split and "
                        "the figure is optimistic by that selection",
    ("ferplus", "test"): "FERPlus test split (PrivateTest), evaluated once with the epoch selected on "
                         "PublicTest",
    ("rafdb", "val"): "the validation split carved from RAF-DB train (selection and report on the same "
                      "split: optimistic)",
    ("rafdb", "test"): "RAF-DB official test split, evaluated once with the epoch selected on the "
                       "validation split carved from train",
}


# ------------------------------------------------------------------------------------------ collect
def _last_val_acc(run_dir: Path) -> float | None:
    rows = read_metrics(run_dir)
    try:
        return float(rows[-1]["val_acc"]) if rows else None
    except (KeyError, ValueError):
        return None


def read_run(run: PlannedRun) -> dict | None:
    """The numbers of one complete run (None while it is not complete)."""
    final_path = run.run_dir / "final.json"
    if not final_path.is_file():
        return None
    final = json.loads(final_path.read_text())
    if final.get("stopped"):            # stopped by run.time_limit_s: resumable, not a finished run
        return None
    meta_path = run.run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    out = {"seed": run.seed, "run_dir": str(run.run_dir), "best_epoch": final.get("best_epoch"),
           "epochs": final.get("epochs"), "train_seconds": final.get("total_train_seconds"),
           "last_val_acc": _last_val_acc(run.run_dir), "hardware": meta.get("hardware"),
           "device": meta.get("device"), "torch": meta.get("torch"), "git_commit": meta.get("git_commit"),
           "started": meta.get("started"),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(final_path.stat().st_mtime))}
    for split in ("val", "test"):
        report = final.get(split)
        if report:
            out[split] = {k: report.get(k) for k in ("accuracy", "mean_class_accuracy", "macro_f1", "n")}
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than 2 values)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pct(v):
    return None if v is None else 100.0 * v


def aggregate(spec: TableSpec, planned: list[PlannedRun], dataset: str) -> dict:
    """Rows with per-seed numbers, mean ± std, paper figure and comparison with the reference row."""
    by_row: dict[str, list[PlannedRun]] = {r.key: [] for r in spec.rows}
    for run in planned:
        by_row[run.row.key].append(run)
    runs = {key: [(r, read_run(r)) for r in rs] for key, rs in by_row.items()}
    complete = [res for rs in runs.values() for _, res in rs if res is not None]
    split = "test" if complete and all("test" in res for res in complete) else "val"
    rows = []
    for row in spec.rows:
        done = [res for _, res in runs[row.key] if res is not None]
        cfg = by_row[row.key][0].cfg
        acc = [_pct(res[split]["accuracy"]) for res in done]
        mean, std = mean_std(acc)
        rows.append({
            "key": row.key, "label": row.label, "x": row.x, "model": cfg["model"]["name"],
            "loss": loss_label(cfg), "experiment": by_row[row.key][0].experiment,
            "paper": row.paper.get(dataset), "planned": len(by_row[row.key]), "n": len(done),
            "seeds": [res["seed"] for res in done], "values": acc, "mean": mean, "std": std,
            "last_mean": mean_std([_pct(res["last_val_acc"]) for res in done
                                   if res["last_val_acc"] is not None])[0],
            "mca_mean": mean_std([_pct(res[split]["mean_class_accuracy"]) for res in done])[0],
            "f1_mean": mean_std([res[split]["macro_f1"] for res in done])[0],
            "best_epochs": [res["best_epoch"] for res in done],
        })
    ref_key = spec.reference_key(dataset)
    ref = next((r for r in rows if r["key"] == ref_key), None)
    for r in rows:
        r["delta_ref"] = r["se_ref"] = r["beyond"] = None
        if ref is None or r is ref or r["mean"] is None or ref["mean"] is None:
            continue
        r["delta_ref"] = r["mean"] - ref["mean"]
        if r["std"] is not None and ref["std"] is not None:
            r["se_ref"] = math.sqrt(r["std"] ** 2 / r["n"] + ref["std"] ** 2 / ref["n"])
            r["beyond"] = abs(r["delta_ref"]) > 2 * r["se_ref"]
    return {"table": spec.name, "dataset": dataset, "split": split, "reference": ref_key, "rows": rows,
            "runs_complete": len(complete), "runs_planned": len(planned), "runs": complete}


# ------------------------------------------------------------------------------------------ profile
def profile_columns(rows: list[dict], sizes: list[int], num_classes: int, in_chans: int,
                    cache: dict | None = None) -> list[dict]:
    """Size columns of Table 2 from ``litefer.profile.profile_model`` (no latency), one per model and
    input size; ``cache`` holds rows of an earlier aggregation, reused when model, size, classes,
    channels and torch version match (profiling a model takes seconds)."""
    import torch

    from .. import profile as prof

    cached = {(c["model"], c["input_size"], c["num_classes"], c["in_chans"], c.get("torch")): c
              for c in (cache or {}).get("profile", [])}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for size in sizes:
            key = (model, size, num_classes, in_chans, torch.__version__)
            if key in cached:
                out.append(cached[key])
                continue
            p = prof.profile_model(model, input_size=size, num_classes=num_classes, in_chans=in_chans,
                                   latency=False)
            out.append({"model": model, "input_size": size, "num_classes": num_classes, "in_chans": in_chans,
                        "torch": torch.__version__, "params": p["params"], "gmac_torch": p["gmac_torch"],
                        "gmac_ptflops": p["gmac_ptflops"], "fp32_params_bytes": p["fp32_params_bytes"],
                        "checkpoint_adam_bytes": p["checkpoint_adam_bytes"], "onnx_bytes": p["onnx_bytes"]})
    return out


# ------------------------------------------------------------------------------------------ markdown
def _f(v, fmt=".1f", empty="–"):
    return empty if v is None else format(v, fmt)


def _mean_pm(r):
    if r["mean"] is None:
        return "–"
    return f"{r['mean']:.2f} ± {r['std']:.2f}" if r["std"] is not None else f"{r['mean']:.2f} (1 seed)"


def _settings(cfg: dict) -> str:
    o, d, m = cfg["optim"], cfg["data"], cfg["model"]
    sched = {"plateau": f"×{o['plateau_factor']:g} when the validation loss has not fallen for "
                        f"{o['plateau_patience']} epochs",
             "cosine": "cosine", "none": "constant"}[o["schedule"]]
    text = (f"{d['input_size']}×{d['input_size']} input, {o['epochs']} epochs, batch {o['batch_size']}, "
            f"{o['optimizer']} lr {o['lr']:g}" + (f" weight decay {o['weight_decay']:g}" if o["weight_decay"] else "")
            + f", {sched} schedule" + (f" after {o['warmup_epochs']} warm-up epoch(s)" if o["warmup_epochs"] else "")
            + f", dropout {m['dropout']:g}, test-time flip {'on' if cfg['run']['tta_flip'] else 'off'}"
            + (", ImageNet initialisation" if m["init"] else ", from scratch"))
    return text


def seed_spread_lines(agg: dict, spec: TableSpec) -> list[str]:
    rows, ref_key = agg["rows"], agg["reference"]
    ref = next((r for r in rows if r["key"] == ref_key), None)
    lines = []
    stds = [r["std"] for r in rows if r["std"] is not None]
    means = [r["mean"] for r in rows if r["mean"] is not None]
    if len(means) >= 2:
        lines.append(f"- Row means span {max(means) - min(means):.2f} points; the seed standard deviation "
                     + (f"averages {statistics.fmean(stds):.2f} points (range {min(stds):.2f}–{max(stds):.2f})."
                        if stds else "is unknown (fewer than 2 seeds per row so far)."))
    paper = [r["paper"] for r in rows if r["paper"] is not None]
    if len(paper) >= 2 and stds:
        lines.append(f"- The paper's rows differ by at most {max(paper) - min(paper):.1f} points; "
                     + ("that is within" if max(paper) - min(paper) <= 2 * statistics.fmean(stds) else "that exceeds")
                     + " twice our average seed standard deviation, so "
                     + ("one number per row with no seed spread, as the paper reports, cannot tell them apart "
                        "from seed noise."
                        if max(paper) - min(paper) <= 2 * statistics.fmean(stds)
                        else "seed noise alone does not explain the paper's spread."))
    if ref is not None and ref["mean"] is not None:
        compared = [r for r in rows if r["beyond"] is not None]
        beyond = [r for r in compared if r["beyond"]]
        if compared:
            lines.append(
                f"- **Differences from {ref['label']} beyond the seed spread (|Δ| > 2 SE): {len(beyond)} of "
                f"{len(compared)}**" + (": " + ", ".join(f"{r['label']} ({r['delta_ref']:+.2f})" for r in beyond)
                                        if beyond else "") + ".")
        else:
            lines.append(f"- Whether differences from {ref['label']} exceed the seed spread cannot be judged "
                         "yet: it needs at least 2 finished seeds in both rows.")
    ours = sorted((r for r in rows if r["mean"] is not None), key=lambda r: -r["mean"])
    theirs = sorted((r for r in rows if r["paper"] is not None), key=lambda r: -r["paper"])
    if len(ours) >= 2 and spec.kind == "table":
        lines.append("- Order by our mean: " + " > ".join(r["key"] for r in ours)
                     + (";  the paper's order: " + " > ".join(r["key"] for r in theirs) if len(theirs) >= 2 else "") + ".")
    if spec.kind == "curve" and ours:
        best = ours[0]
        paper_best = theirs[0] if theirs else None
        lines.append(f"- Our best λ: {best['x']:g} ({best['mean']:.2f})"
                     + (f"; the paper's: {paper_best['x']:g} ({paper_best['paper']:.1f})" if paper_best else "") + ".")
    if any(r["n"] == 2 for r in rows):
        lines.append("- With 2 seeds a standard deviation is itself very uncertain: read this as a screen, "
                     "not a significance test.")
    return lines


def markdown(agg: dict, spec: TableSpec, protocol: Protocol, planned: list[PlannedRun], command: str,
             extra: list[str], png_name: str, profile: list[dict] | None = None) -> str:
    dataset = agg["dataset"]
    dname = DATASET_NAMES.get(dataset, dataset)
    rows = agg["rows"]
    cfg0 = planned[0].cfg
    n_done, n_planned = agg["runs_complete"], agg["runs_planned"]
    status = (f"**Status: complete** — all {n_planned} runs finished." if n_done == n_planned else
              f"**Status: PARTIAL — {n_done} of {n_planned} runs finished**; rows with fewer seeds than planned "
              "are marked, and the table changes as the remaining runs finish.")
    out = [f"# {spec.title} — {dname}, `{protocol.name}` protocol", "",
           f"Reproduction of {spec.source}. The paper's claim: {spec.claim}", "",
           status, "", "Regenerate (trains what is missing, resumes what is incomplete, then rewrites this file):",
           "", "```bash", command, "```", "", "## Protocol", "",
           f"- **{protocol.name}**: {protocol.description}",
           f"- Settings as run: {_settings(cfg0)}.",
           f"- Seeds: {', '.join(map(str, sorted({s for r in rows for s in r['seeds']}))) or '–'} "
           f"(planned per row: {rows[0]['planned']}).",
           f"- Reported: accuracy of the epoch with the best validation accuracy, on the "
           f"{SPLIT_TEXT.get((dataset, agg['split']), agg['split'] + ' split')}.",
           "- Paper figures: the paper's own runs (224 px, 100 epochs, one number per row with no seed spread, "
           "selection protocol not stated; the authors' released code selected the epoch on the test split). They sit beside "
           "ours for reference, not as a like-for-like target" + (" (our protocol is reduced)." if protocol.name != "paper" else ".")]
    if extra:
        out.append(f"- Extra overrides on the command line: `{' '.join(extra)}`.")
    out += ["", "## Results", ""]
    ref = agg["reference"]
    head = ["row", "model", "loss", "paper %", "ours % (mean ± std)", "seeds", "per seed %",
            "final-epoch %", "mean class acc %", "macro-F1", f"Δ vs {ref} (pp)", "beyond 2 SE?"]
    if spec.kind == "curve":
        head.insert(1, "λ")
    text_cols = 3 + (spec.kind == "curve")
    out += ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] * text_cols + ["---:"] * (len(head) - text_cols)) + "|"]
    for r in rows:
        seeds = f"{r['n']}/{r['planned']}" + ("" if r["n"] == r["planned"] else " ⚠")
        cells = [r["label"], f"`{r['model']}`", r["loss"], _f(r["paper"]), _mean_pm(r), seeds,
                 ", ".join(f"{v:.2f}" for v in r["values"]) or "–", _f(r["last_mean"], ".2f"),
                 _f(r["mca_mean"], ".2f"), _f(r["f1_mean"], ".3f"),
                 "ref." if r["key"] == ref else _f(r["delta_ref"], "+.2f"),
                 "–" if r["beyond"] is None else ("yes" if r["beyond"] else "no")]
        if spec.kind == "curve":
            cells.insert(1, _f(r["x"], "g"))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Columns: *paper %* is the paper's figure for this row and data set (– where the paper gives "
            "none); *final-epoch %* is the last epoch's validation accuracy (no selection); *Δ* is our row mean "
            "minus the reference row's; *beyond 2 SE* compares |Δ| with twice sqrt(s²/n + s_ref²/n_ref)."]
    if profile:
        out += ["", "## Size and compute (from `litefer profile`)", "", profile_markdown(profile, rows, dataset)]
    if spec.not_reproduced:
        out += [""] + [f"Not reproduced: {t}" for t in spec.not_reproduced]
    out += ["", "## Does any difference exceed the seed spread?", ""] + seed_spread_lines(agg, spec)
    runs = agg["runs"]
    seconds = [r["train_seconds"] for r in runs if r["train_seconds"] is not None]
    hardware = sorted({f"{r['hardware']} ({r['device']})" for r in runs if r["hardware"]})
    versions = sorted({r["torch"] for r in runs if r["torch"]})
    commits = sorted({(r["git_commit"] or "")[:10] for r in runs if r["git_commit"]})
    started = sorted(r["started"] for r in runs if r["started"])
    finished = sorted(r["finished"] for r in runs if r["finished"])
    out += ["", "## Budget, wall time and hardware", "",
            f"- Protocol budget: {protocol.budget}" if protocol.budget else None,
            f"- Training time of the {len(seconds)} finished runs: {sum(seconds) / 3600:.2f} h in all, "
            f"{statistics.fmean(seconds) / 60:.1f} min per run on average (sum of epoch times; evaluation "
            "excluded). Runs shared with other tables count in each." if seconds else "- Training time: –",
            f"- Hardware (as recorded when each run started): {'; '.join(hardware) or '–'}.",
            f"- Software: torch {', '.join(versions) or '–'}; litefer commit(s) {', '.join(commits) or '–'}; "
            f"aggregated on {platform.node() or 'this machine'} at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            f"- First run started {started[0]}; last run finished {finished[-1]}." if started and finished else None,
            f"- Run folders: `{planned[0].run_dir.parents[1]}/<experiment>/seed<N>` "
            "(each holds config.yaml, meta.json, metrics.csv, curves.png, best.pt, final.json).",
            "", f"![{spec.title}]({png_name})", ""]
    return "\n".join(line for line in out if line is not None) + "\n"


def profile_markdown(profile: list[dict], rows: list[dict], dataset: str) -> str:
    from ..profile import MB, MIB, PAPER_TABLE2

    sizes = sorted({p["input_size"] for p in profile}, reverse=True)
    by = {(p["model"], p["input_size"]): p for p in profile}
    head = ["row", "params", *[f"GMac ptflops @{s}" for s in sizes], *[f"GMac FCM/2 @{s}" for s in sizes],
            "fp32 MiB", "ckpt+Adam MB", "ONNX MB", "paper GMac", "paper params M", "paper size MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        p = by.get((r["model"], sizes[0]))
        if p is None:
            continue
        paper = PAPER_TABLE2.get(r["model"])
        cells = [r["label"], f"{p['params']:,}",
                 *[_f(by[(r['model'], s)]["gmac_ptflops"], ".3f") for s in sizes],
                 *[_f(by[(r['model'], s)]["gmac_torch"], ".3f") for s in sizes],
                 f"{p['fp32_params_bytes'] / MIB:.2f}", f"{p['checkpoint_adam_bytes'] / MB:.1f}",
                 f"{p['onnx_bytes'] / MB:.2f}",
                 *(["–"] * 3 if paper is None else [f"{paper[1]}", f"{paper[2]}", f"{paper[3]}"])]
        lines.append("| " + " | ".join(cells) + " |")
    classes = profile[0]["num_classes"]
    return "\n".join(lines) + (
        f"\n\nMeasured with `litefer.profile.profile_model` for {classes} classes and "
        f"{profile[0]['in_chans']} input channels (the paper's Table 2 is for RAF-DB's 7 classes: 641 parameters "
        "fewer in the reduced networks). *GMac ptflops* also counts BatchNorm, ReLU and pooling layers, the "
        "counter the paper's figures agree with; *FCM/2* is torch FlopCounterMode FLOPs / 2 (convolutions and "
        "linear layers). *ckpt+Adam MB* is a checkpoint with Adam's two moments, what the paper's 'model size' "
        "measures; the deployable weights are the fp32 MiB / ONNX columns. The paper's size columns are "
        "its Table 2.")


# ------------------------------------------------------------------------------------------ plot
def plot(agg: dict, spec: TableSpec, path: Path, subtitle: str) -> None:
    """Left: our accuracy per row (mean ± std over seeds, each seed a grey dot), on its own scale.
    Right: each row's difference from the reference row, ours (± 2 SE) beside the paper's, where the
    question 'does the paper's ordering survive the seed noise?' can be read off directly."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = agg["rows"]
    split = "validation" if agg["split"] == "val" else "test"
    ref = next((r for r in rows if r["key"] == agg["reference"]), None)
    curve = spec.kind == "curve"
    pos = [r["x"] for r in rows] if curve else list(range(len(rows)))[::-1]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2 if curve else 0.5 * len(rows) + 2.2),
                                 sharey=not curve)

    done = [(p, r) for p, r in zip(pos, rows) if r["mean"] is not None]
    for axis in (ax, bx):
        axis.grid(alpha=0.3)
    if done:
        ps, rs = zip(*done)
        means, stds = [r["mean"] for r in rs], [r["std"] or 0.0 for r in rs]
        seeds_p = [p for p, r in done for _ in r["values"]]
        seeds_v = [v for _, r in done for v in r["values"]]
        if curve:
            ax.errorbar(ps, means, yerr=stds, fmt="o-", capsize=4, color="C0", label="ours: mean ± std")
            ax.scatter(seeds_p, seeds_v, s=12, color="0.5", zorder=3, label="ours: each seed")
        else:
            ax.errorbar(means, ps, xerr=stds, fmt="o", capsize=4, color="C0", label="ours: mean ± std")
            ax.scatter(seeds_v, seeds_p, s=12, color="0.5", zorder=3, label="ours: each seed")
    acc_label = f"our accuracy, {split} split (%)"
    # wrapped: a long reference label would run into the left panel's axis label
    delta_label = textwrap.fill(f"difference from {ref['label'] if ref else 'reference'} (points)", 45)
    d_ours = [(p, r["delta_ref"], 2 * r["se_ref"] if r["se_ref"] is not None else 0.0)
              for p, r in zip(pos, rows) if r["delta_ref"] is not None]
    d_paper = [(p, r["paper"] - ref["paper"]) for p, r in zip(pos, rows)
               if ref is not None and r is not ref and r["paper"] is not None and ref["paper"] is not None]
    if d_ours:
        a, b, c = zip(*d_ours)
        if curve:
            bx.errorbar(a, b, yerr=c, fmt="o", capsize=4, color="C0", label="ours ± 2 SE")
        else:
            bx.errorbar(b, a, xerr=c, fmt="o", capsize=4, color="C0", label="ours ± 2 SE")
    if d_paper:
        a, b = zip(*d_paper)
        if curve:
            bx.scatter(a, b, marker="*", s=140, color="C3", zorder=4, label="paper")
        else:
            bx.scatter(b, a, marker="*", s=140, color="C3", zorder=4, label="paper")
    if ref is not None:
        ref_pos = pos[rows.index(ref)]
        bx.scatter(*((ref_pos, 0) if curve else (0, ref_pos)), marker="D", s=40, facecolors="none",
                   edgecolors="0.2", zorder=4, label="reference row")
    if curve:
        ax.set_xlabel(spec.x_label or "x"), ax.set_ylabel(acc_label)
        bx.set_xlabel(spec.x_label or "x"), bx.set_ylabel(delta_label)
        bx.axhline(0, color="0.3", lw=0.8)
    else:
        ax.set_yticks(pos, [r["label"] for r in rows])
        ax.set_xlabel(acc_label), bx.set_xlabel(delta_label)
        bx.axvline(0, color="0.3", lw=0.8)
    for axis in (ax, bx):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize=8)
    fig.suptitle(f"{spec.title} — {subtitle}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------ write
def write_results(spec: TableSpec, planned: list[PlannedRun], dataset: str, protocol: Protocol,
                  results_dir: Path, command: str, extra: list[str]) -> dict | None:
    """Write ``<table>_<dataset>_<protocol>.{md,json,png}``; None (nothing written) when no run has finished."""
    agg = aggregate(spec, planned, dataset)
    if agg["runs_complete"] == 0:
        return None
    results_dir = Path(results_dir)
    stem = f"{spec.name}_{dataset}_{protocol.name}"
    json_path, md_path, png_path = (results_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    profile = None
    if spec.profile:
        old = json.loads(json_path.read_text()) if json_path.is_file() else None
        cfg = planned[0].cfg
        sizes = sorted({224, int(cfg["data"]["input_size"])}, reverse=True)
        num_classes = {"ferplus": 8, "rafdb": 7}.get(dataset, 8)
        profile = profile_columns(agg["rows"], sizes, num_classes, int(cfg["model"]["in_chans"]), old)
    text = markdown(agg, spec, protocol, planned, command, extra, png_path.name, profile)
    subtitle = (f"{DATASET_NAMES.get(dataset, dataset)}, {protocol.name} protocol, "
                f"{agg['runs_complete']}/{agg['runs_planned']} runs")
    plot(agg, spec, png_path, subtitle)
    atomic_write_json(json_path, {**agg, "protocol": protocol.name, "command": command, "extra_overrides": extra,
                                  "profile": profile or [],
                                  "experiments": {r.experiment: experiment_config(r.cfg) for r in planned}})
    atomic_write_text(md_path, text)
    return {**agg, "markdown": md_path, "json": json_path, "png": png_path}
