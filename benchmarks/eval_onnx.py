"""``litefer eval`` of the packaged model through ONNX Runtime and through torch, side by side.

    .venv/bin/python benchmarks/eval_onnx.py --data ../shared/data/fer2013

Runs the two commands as a user would (the FERPlus validation split, flip TTA as the card says) and
compares what they report, then the two backends face by face (top-1 agreement and the largest logit
difference, from the library functions the commands call). Writes ``results/eval_onnx.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_page import command_line, header, table, write

REPO = Path(__file__).resolve().parents[1]


def run_eval(data: str, backend: str | None, out: Path) -> dict:
    """One ``litefer eval`` in a fresh process: its report, the command and its wall time."""
    argv = ["eval", "--weights", "default", "--data", data] + (["--backend", backend] if backend else [])
    load, start = os.getloadavg()[0], time.perf_counter()
    subprocess.run([sys.executable, "-m", "litefer", *argv, "--json", str(out)], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    return {"command": shlex.join(["litefer", *argv]), "seconds": time.perf_counter() - start,
            "load_before": load, "report": json.loads(out.read_text())}


def per_face(data: str) -> dict:
    """Top-1 agreement and largest logit difference between the two backends on every face."""
    from litefer.card import card_from_payload
    from litefer.data import Preprocess
    from litefer.inference.backends import create_backend
    from litefer.inference.files import resolve_weights
    from litefer.train.evaluate import backend_logits, eval_data_config, eval_split, predict_logits
    from litefer.weights import load_checkpoint_model

    model, meta = load_checkpoint_model(resolve_weights("default", "torch")[0])
    card = card_from_payload(meta, "default")
    ds = eval_split(card, eval_data_config(meta, card, data, None, None), "val", 3)
    torch_logits = predict_logits(model, ds, Preprocess.from_dict(meta["preprocess"]), tta_flip=card.tta_flip)
    ort_logits = backend_logits(create_backend("default", "onnxruntime"), ds, tta=card.tta_flip)
    agree = (torch_logits.argmax(1) == ort_logits.argmax(1)).float().mean().item()
    return {"faces": len(ds), "top1_agreement": agree,
            "max_abs_logit_diff": (torch_logits - ort_logits).abs().max().item()}


def markdown(runs: dict, faces: dict, command: str) -> str:
    rows = [[name, f"`{r['command']}`", f"**{100 * r['report']['accuracy']:.2f} %**",
             f"{100 * r['report']['priors']['balanced']['accuracy']:.2f} %", f"{r['report']['loss']:.5f}",
             f"{r['seconds']:.0f} s ({r['load_before']:.1f})"] for name, r in runs.items()]
    a, b = (runs[k]["report"] for k in ("onnxruntime", "torch"))
    same = a["confusion"] == b["confusion"] and a["priors"]["balanced"]["confusion"] == b["priors"]["balanced"]["confusion"]
    return "\n".join([
        *header("`litefer eval` through ONNX Runtime and through torch", command),
        f"The packaged model on the FERPlus validation split ({a['n']} majority-label faces, flip TTA "
        f"{'on' if a['tta_flip'] else 'off'} as its card says). ONNX Runtime is the default backend for "
        "the packaged model; it scores the data set's uint8 faces with the ONNX backend's NumPy "
        "preprocessing, as `litefer predict` runs the model.", "",
        *table(["backend", "command", "accuracy (prior=dataset)", "prior=balanced", "loss", "wall time (load before)"],
               rows, "llrrrr"), "",
        "Wall time is the whole command in a new process (imports, data loading, scoring) on a machine "
        "other jobs shared (1-minute load average before each run in brackets).", "",
        f"Confusion matrices (both priors) {'identical' if same else 'DIFFERENT'}. Face by face: "
        f"{100 * faces['top1_agreement']:.2f} % top-1 agreement over {faces['faces']} faces, largest logit "
        f"difference {faces['max_abs_logit_diff']:.1e}.", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="FERPlus root")
    p.add_argument("--out", default=str(REPO / "results" / "eval_onnx"), help="output stem (.md and .json)")
    args = p.parse_args(argv)
    command = command_line("eval_onnx.py", argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {b: run_eval(args.data, b if b == "torch" else None, Path(tmp) / f"{b}.json")
                for b in ("onnxruntime", "torch")}
    faces = per_face(args.data)
    write(args.out, {"command": command, "runs": runs, "per_face": faces}, markdown(runs, faces, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
