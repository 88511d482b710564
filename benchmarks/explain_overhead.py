"""What carrying the map costs plain recognition: the packaged model, which has the ``cam`` output
since issue 21, against the same weights exported without it, on 1 thread, one face per call.

    .venv/bin/python benchmarks/explain_overhead.py

ONNX Runtime runs every node of a graph whatever outputs a call asks for, so ``OnnxBackend`` runs
plain recognition on the graph with the map's branch cut out (``litefer.onnxproto.without_output``).
Rows: that plain path; the same weights exported without the map (the packaged file before issue
21); the whole explaining graph asked for ``logits`` only (what plain recognition would cost
without the cut); and ``OnnxBackend.explain`` (logits and map). Each call includes the backend's
NumPy preprocessing of the packaged photo's face crop. The rows take turns call by call, and the
report gives the 10th percentile and the median of each row's call times: on a machine shared with
other jobs the low percentile is the cost of a call that ran undisturbed. Writes
``results/explain_overhead.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import litefer
from litefer.export import export_with_metadata
from litefer.inference.backends import DEFAULT_FILES, OnnxBackend, packaged_file
from litefer.inference.samples import sample_bgr
from litefer.inference.session import ort_session
from results_page import command_line, header, table, write


def calls(tmp: Path, crop: np.ndarray) -> dict[str, callable]:
    """Row label -> one call on one face."""
    shipped = OnnxBackend(packaged_file(DEFAULT_FILES["default"]["onnxruntime"]), threads=1)
    plain = OnnxBackend(export_with_metadata("default", tmp / "plain.onnx"), threads=1)
    whole = ort_session(shipped.path, 1)
    x = np.ascontiguousarray(shipped.card.preprocess(crop))
    return {"without the map (same weights exported without `cam`)": lambda: plain.logits(crop),
            "packaged, plain recognition (`OnnxBackend.logits`, map branch cut out)": lambda: shipped.logits(crop),
            "packaged, whole graph asked for `logits` only (no cut)":
                lambda: (shipped.card.preprocess(crop), whole.run(["logits"], {"input": x})),
            "packaged, `OnnxBackend.explain` (logits and map)": lambda: shipped.explain(crop)}


def call_times(rows: dict, calls: int, warmup: int = 50) -> dict[str, np.ndarray]:
    """Milliseconds of each of ``calls`` calls per row, the rows taking turns call by call."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    times = {k: np.empty(calls) for k in rows}
    for i in range(calls):
        for label, fn in rows.items():
            t = time.perf_counter()
            fn()
            times[label][i] = (time.perf_counter() - t) * 1e3
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000, help="timed calls per row")
    p.add_argument("--out", default="results/explain_overhead")
    args = p.parse_args(argv)
    command = command_line("explain_overhead.py", argv)
    rec = litefer.Recognizer(threads=1)
    crop = np.stack(rec.detect_and_crop(sample_bgr())[1][:1])
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        times = call_times(calls(Path(tmp), crop), args.calls)
    low = {k: float(np.percentile(v, 10)) for k, v in times.items()}
    mid = {k: float(np.median(v)) for k, v in times.items()}
    base = low[next(iter(low))]
    lines = [*header("What carrying the map costs plain recognition", command, load_start=load),
             f"ONNX Runtime on 1 thread, one face per call (the packaged photo's crop, NumPy preprocessing "
             f"included); {args.calls} calls per row, the rows taking turns call by call.", "",
             *table(["model and call", "ms per face, 10th percentile", "vs without the map", "median ms"],
                    [[label, f"{ms:.3f}", f"{ms / base:.3f}x", f"{mid[label]:.3f}"] for label, ms in low.items()],
                    "lrrr"), ""]
    write(args.out, {"command": command, "calls": args.calls,
                     "ms_per_face_p10": {k: round(v, 4) for k, v in low.items()},
                     "ms_per_face_median": {k: round(v, 4) for k, v in mid.items()}}, "\n".join(lines), load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
