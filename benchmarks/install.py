"""The lean install (``pip install litefer``) against ``litefer[all]`` on this machine: installed size,
setup time from a fresh clone, ``import litefer`` time, a new process's time to its first result on
the sample photo, resident memory, and steady time per photo and per 64 face crops.

Both installs come from the wheel of the working tree (``benchmarks/lean_install.py``), each in a
fresh venv outside the repository; torch is ``torch==2.13.0`` (the CPU build on this machine's
disk). Writes ``results/install.md`` and ``.json``.

    .venv/bin/python benchmarks/install.py [--workdir DIR] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lean_install import (
    ROOT,
    build_wheel,
    make_venv,
    run,
    site_packages,
    source_files,
    tree_bytes,
)
from results_page import command_line, header, table, write

TORCH = "torch==2.13.0"
MB = 1e6
STEADY_PROCESSES = 3           # steady figures: median of these processes' medians

# A new process: import litefer, build a Recognizer, recognize the sample photo; prints one JSON
# line as soon as the first result is there (the parent stamps its arrival), then, with "steady",
# a second line with warm timings.
PROBE = r'''
import json, sys, time
T = time.perf_counter
backend, steady = sys.argv[1], sys.argv[2] == "1"
kw = {} if backend == "default" else {"backend": backend}
t0 = T()
import litefer
t1 = T()
from litefer.inference.samples import sample_photo
rec = litefer.Recognizer(**kw)
t2 = T()
faces = rec.recognize(sample_photo())
t3 = T()

def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith("Vm"))
    return {k: int(f[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}

first = {"import_s": t1 - t0, "construct_s": t2 - t1, "recognize_s": t3 - t2, "faces": len(faces),
         "backend": rec.backend.name, "torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules, **rss()}
print("FIRST " + json.dumps(first), flush=True)
if steady:
    import numpy as np
    photo = [None] * 30
    for i in range(len(photo)):
        t = T(); rec.recognize(sample_photo()); photo[i] = T() - t
    crop = rec.detect_and_crop(litefer.inference.samples.sample_bgr())[1][0]
    crops = np.stack([crop] * 64)
    rec.classify_crops(crops)
    batch = [None] * 15
    for i in range(len(batch)):
        t = T(); rec.classify_crops(crops); batch[i] = T() - t
    print("STEADY " + json.dumps({"photo_ms": 1000 * float(np.median(photo)),
                                  "crops64_ms": 1000 * float(np.median(batch)), "tta": rec.tta, **rss()}), flush=True)
'''


def probe(py: Path, backend: str, steady: bool, cwd: Path) -> dict:
    """One new process: wall time from its start to its first result, and what it reports."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(py), "-c", PROBE, backend, "1" if steady else "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    wall = time.perf_counter() - t0
    rest, err = proc.communicate(timeout=600)
    if proc.returncode != 0 or not line.startswith("FIRST "):
        raise RuntimeError(f"probe ({py}, {backend}) failed:\n{err[-3000:]}")
    out = {"first_result_s": wall, **json.loads(line[6:])}
    if steady:
        out["steady"] = json.loads(rest.split("STEADY ", 1)[1])
    return out


def seconds(py: Path, code: str, cwd: Path) -> float:
    """What a snippet prints: the seconds it measured inside a new process."""
    return float(run([py, "-c", code], cwd=cwd).strip())


IMPORT_LITEFER = "import time; t = time.perf_counter(); import litefer; print(time.perf_counter() - t)"


def timings(configs: dict, runs: int, cwd: Path) -> dict:
    """For each (python, backend) of ``configs``: ``runs`` cold processes (median and range) and one
    steady-state process, the configurations taking turns so that a change in load hits them alike."""
    cold = {name: [] for name in configs}
    imports = {name: [] for name in configs}
    for _ in range(runs):
        for name, (py, backend) in configs.items():
            cold[name].append(probe(py, backend, False, cwd))
            imports[name].append(seconds(py, IMPORT_LITEFER, cwd))
    warm = {name: [] for name in configs}
    for _ in range(STEADY_PROCESSES):
        for name, (py, backend) in configs.items():
            warm[name].append(probe(py, backend, True, cwd)["steady"])
    return {name: summary(cold[name], imports[name], warm[name]) for name in configs}


def summary(cold: list[dict], imports: list[float], steady: list[dict]) -> dict:
    """Medians over the cold processes; steady figures: median over the steady processes, and their range."""
    first = [c["first_result_s"] for c in cold]
    return {"backend": cold[0]["backend"], "torch_imported": any(c["torch"] for c in cold),
            "onnx_imported": any(c["onnx"] for c in cold), "faces": cold[0]["faces"],
            "first_result_s": {"median": statistics.median(first), "min": min(first), "max": max(first)},
            "phases_s": {k: statistics.median(c[k] for c in cold) for k in ("import_s", "construct_s", "recognize_s")},
            "rss_mib_first": statistics.median(c["VmRSS"] for c in cold), "import_litefer_s": statistics.median(imports),
            "steady": {k: statistics.median(s[k] for s in steady) for k in ("photo_ms", "crops64_ms", "VmHWM")},
            "steady_range": {k: [min(s[k] for s in steady), max(s[k] for s in steady)] for k in ("photo_ms", "crops64_ms")}}


# ----------------------------------------------------------------------------- installs

def size_of(py: Path) -> dict:
    """site-packages on disk (pip and setuptools as the venv ships them included), and its largest entries."""
    sp = site_packages(py)
    parts = {p.name: tree_bytes(p) if p.is_dir() else p.lstat().st_blocks * 512 for p in sp.iterdir()}
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:10]
    return {"bytes": tree_bytes(sp), "largest": [[name, size] for name, size in top]}


def pip_list(py: Path) -> dict:
    return {d["name"]: d["version"] for d in json.loads(run([py, "-m", "pip", "list", "--format", "json"]))}


def fresh_clone(dest: Path) -> Path:
    """The working tree as a fresh clone would have it: tracked and untracked files, nothing built."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    for rel in source_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    return dest


def timed(cmd: list, cwd: Path) -> float:
    t0 = time.perf_counter()
    run(cmd, cwd=cwd, timeout=1800)
    return time.perf_counter() - t0


def setup_times(work: Path) -> dict:
    """``make run`` from a fresh clone (lean), and the same for ``[all]``: a venv, torch, then
    ``-e .[all]`` and ``litefer predict --sample`` with the default backend."""
    base = getattr(sys, "_base_executable", sys.executable)
    lean = fresh_clone(work / "clone-lean")
    make = ["make", "run", f"PYTHON={base}"]
    shown = " ".join(make).replace(base, "python3")
    full = fresh_clone(work / "clone-all")
    script = (f"{base} -m venv .venv && .venv/bin/pip install -q {TORCH} && .venv/bin/pip install -q -e '.[all]' && "
              ".venv/bin/litefer predict --sample --no-progress")
    return {"lean": {"command": shown, "s": timed(make, lean)},
            "all": {"command": script.replace(base, "python3"), "s": timed(["bash", "-c", script], full)}}


def installs(work: Path, wheel: Path, bare: Path) -> tuple[dict, dict]:
    """(sizes, python of each timed venv): lean from the wheel without and with the page's vendor
    files, lean + [serve], and [all] (torch first)."""
    sizes = {"lean_no_vendor": size_of(make_venv(work / "venv-lean-bare", [str(bare)]))}
    lean = make_venv(work / "venv-lean", [str(wheel)])
    sizes["lean"] = size_of(lean)
    sizes["lean_packages"] = pip_list(lean)
    run([lean, "-m", "pip", "install", "-q", f"{wheel}[serve]"])
    sizes["lean_serve"] = size_of(lean)
    full = make_venv(work / "venv-all", [TORCH], [f"{wheel}[all]"])
    sizes["all"] = size_of(full)
    sizes["all_packages"] = pip_list(full)
    return sizes, {"lean": lean, "all": full}


def import_profile(py: Path, cwd: Path, top: int = 8) -> list[list]:
    """The top-level imports of a first-result process by cumulative time (``python -X importtime``)."""
    out = subprocess.run([str(py), "-X", "importtime", "-c", PROBE, "onnxruntime", "0"], cwd=cwd,
                         capture_output=True, text=True, timeout=300, check=True)
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not line.startswith("import time:") or "cumulative" in line:
            continue
        name = parts[2]
        if len(name) - len(name.lstrip()) == 1:                      # one space: imported by the script itself
            rows.append([name.strip(), int(parts[1]) / 1e6])
    return sorted(rows, key=lambda r: -r[1])[:top]


# ----------------------------------------------------------------------------- report

def machine() -> dict:
    from litefer import __version__
    from litefer.utils import cpu_model

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((int(line.split()[1]) // 1024 for line in meminfo if line.startswith("MemTotal")), None)
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "os": platform.platform(), "litefer": __version__, "load_average": list(os.getloadavg()),
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def mb(n: float) -> str:
    return f"{n / MB:.0f} MB"


def largest(size: dict, n: int = 6) -> str:
    return ", ".join(f"{name} {mb(b)}" for name, b in size["largest"][:n])


def size_section(s: dict) -> list[str]:
    serve = s["lean_serve"]["bytes"] - s["lean"]["bytes"]
    vendor = s["lean"]["bytes"] - s["lean_no_vendor"]["bytes"]
    lines = ["## Installed size", "",
             ("site-packages of a fresh venv after the install, on disk (as `du` counts it), pip and setuptools as "
             "`python -m venv` ships them included; MB = 10^6 bytes."), "",
             *table(["install", "site-packages", "largest entries"], [
                 ["`pip install litefer`, wheel without the page's vendor files", f"**{mb(s['lean_no_vendor']['bytes'])}**",
                  largest(s["lean_no_vendor"])],
                 ["`pip install litefer`, wheel with them (`make web` before the build)", f"**{mb(s['lean']['bytes'])}**",
                  largest(s["lean"])],
                 ["`pip install litefer[serve]` (wheel with vendor files)", mb(s["lean_serve"]["bytes"]),
                  f"serve stack +{mb(serve)}"],
                 [f"`pip install litefer[all]` (`{TORCH}` first)", mb(s["all"]["bytes"]), largest(s["all"])]], "lrl"), ""]
    lean = s["lean_no_vendor"]["bytes"]
    lines += [(f"Target: lean <= 400 MB. The lean wheel without vendor files takes {mb(lean)} "
              f"({'met' if lean <= 400 * MB else 'missed'}); the page's vendor files (onnxruntime-web, opencv.js, "
              f"Swagger UI; the large ones stored gzipped by `make web`, 26 MB unpacked) add {mb(vendor)}, giving "
              f"{mb(s['lean']['bytes'])} "
              f"({'met' if s['lean']['bytes'] <= 400 * MB else 'missed'}). fastapi, uvicorn, pydantic, starlette and "
              f"python-multipart add {mb(serve)}: with them the lean install would take "
              f"{mb(s['lean_no_vendor']['bytes'] + serve)}, so they stay in `litefer[serve]`, and CI proves serving "
              "with `litefer[serve]` installed and torch absent (`benchmarks/lean_install.py`)."),
              f"Lean packages: {', '.join(f'{k} {v}' for k, v in sorted(s['lean_packages'].items()))}.", ""]
    return lines


def ms(x: float) -> str:
    return f"{1000 * x:.0f} ms"


def steady_cell(r: dict, key: str) -> str:
    lo, hi = r["steady_range"][key]
    return f"{r['steady'][key]:.0f} ms ({lo:.0f}-{hi:.0f})"


def time_section(t: dict) -> list[str]:
    cols = list(t)
    rows = [("backend", lambda r: r["backend"]), ("torch imported", lambda r: "yes" if r["torch_imported"] else "no"),
            ("`import litefer`", lambda r: ms(r["import_litefer_s"])),
            ("**first result**, new process: median (min-max)", lambda r: "**{}** ({}-{})".format(
                *(f"{r['first_result_s'][k]:.2f} s" for k in ("median", "min", "max")))),
            ("of which import / Recognizer() / first recognize", lambda r: " / ".join(
                ms(r["phases_s"][k]) for k in ("import_s", "construct_s", "recognize_s"))),
            ("resident memory at first result", lambda r: f"{r['rss_mib_first']:.0f} MiB"),
            ("peak resident memory, after the steady runs", lambda r: f"{r['steady']['VmHWM']:.0f} MiB"),
            ("steady time per photo", lambda r: steady_cell(r, "photo_ms")),
            ("steady time per 64 crops", lambda r: steady_cell(r, "crops64_ms"))]
    lines = ["## Time and memory", "",
             ("A new process imports litefer, builds `Recognizer(...)` and recognizes the packaged sample photo "
             "(512 x 512, one face); first result = wall time from starting the process to that result; the three "
             "configurations take turns, run after run. Default "
             "threads; flip TTA on, as the model card says (64 crops = 128 network passes). Steady: in each of "
             f"{STEADY_PROCESSES} processes per configuration, the median of 30 photos and of 15 batches of 64 crops "
             "after the first; the table gives the median of those and their range."), "",
             *table(["", *cols], [[name, *(f(t[c]) for c in cols)] for name, f in rows], "l" + "r" * len(cols))]
    return lines + [""]


def report(res: dict, command: str) -> str:
    m, st = res["machine"], res["setup_s"]
    lines = [*header("Lean install against `litefer[all]`", command, f"{m['memory_mib']} MiB memory, {m['os']}",
                     load_start=m["load_average"]),
             (f"Both installs come from the wheel of the working tree ({res['commit']}), each in a fresh venv; packages came from this "
             "machine's local package index and pip cache."), ""]
    lines += size_section(res["sizes"])
    lines += ["## Setup from a fresh clone", "",
              *table(["install", "command", "wall time"], [[name, f"`{st[key]['command']}`", f"{st[key]['s']:.0f} s"]
                                                          for name, key in (("lean", "lean"), ("`[all]`", "all"))], "llr"), ""]
    lines += time_section(res["timings"])
    cpu = res["timing_cpu"]
    lines += [(f"During these {cpu['seconds']:.0f} s, other processes kept {cpu['other_processes_cores']:.2f} of the "
              f"{cpu['cores']} CPUs busy (from /proc/stat, less this benchmark's own CPU time): the speed figures are "
              "those of a shared machine; compare the columns, measured in turns, rather than with other files."), ""]
    lines += ["## Where a lean first result's imports go", "",
              "Top-level imports of one lean first-result process, cumulative (`python -X importtime`):", "",
              *table(["module", "s"], [[name, f"{s:.3f}"] for name, s in res["import_profile"]], "lr")]
    return "\n".join(lines) + "\n"


def commit() -> str:
    head = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).strip()
    return head + (" + uncommitted changes" if dirty else "")


def measure(work: Path, runs: int) -> dict:
    res = {"machine": machine(), "commit": commit(), "runs": runs}
    wheel = build_wheel(work / "dist")
    bare = build_wheel(work / "dist-bare", None)
    res["sizes"], py = installs(work, wheel, bare)
    cwd = work / "probe"
    cwd.mkdir(exist_ok=True)
    from serve_load import CpuMeter

    meter = CpuMeter([os.getpid()]).start()              # the probes are waited-for children: counted as ours
    res["timings"] = timings({"lean (onnxruntime)": (py["lean"], "onnxruntime"),
                              "[all], onnxruntime": (py["all"], "onnxruntime"),
                              "[all], torch backend": (py["all"], "torch")}, runs, cwd)
    res["timing_cpu"] = meter.stop()
    res["import_profile"] = import_profile(py["lean"], cwd)
    res["setup_s"] = setup_times(work)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=None, help="venvs and clones (default: a temporary folder)")
    p.add_argument("--runs", type=int, default=5, help="new processes per first-result figure (default 5)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "install.md")
    args = p.parse_args(argv)
    command = command_line("install.py", argv)
    with tempfile.TemporaryDirectory(prefix="litefer-install-") as tmp:
        res = measure(args.workdir or Path(tmp), args.runs)
    res["command"] = command
    write(args.out, res, report(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
