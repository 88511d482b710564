"""What every benchmark's results page shares, in one place: the command line that made it, the lines
naming its date, machine, versions and load, its tables, and the atomic write of its ``.json`` and
``.md`` twins (the ``.json`` carries the same provenance)."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import sys


def command_line(script: str, argv=None) -> str:
    """``python benchmarks/<script> ...`` as it was run (``argv``: the arguments when called from Python)."""
    return shlex.join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])


def load_text(start=None) -> str:
    """The load average now (and ``start``, one taken earlier), as the pages print it."""
    now = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    if start is None:
        return f"load average at the end {now}"
    return "load average " + " / ".join(f"{v:.2f}" for v in start) + f" at the start, {now} at the end"


# the packages whose versions a page names (those installed; torch only where it is)
PACKAGES = ("litefer", "numpy", "opencv-python-headless", "onnxruntime", "torch", "onnx", "fastapi", "uvicorn")


def versions() -> str:
    """``litefer 0.1.0, numpy 2.4.6, ...``: the installed versions of :data:`PACKAGES`."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def header(title: str, command: str, machine_extra: str = "", load_start=None) -> list[str]:
    """A page's first lines: its title, the command, the date, and the machine with its load."""
    from litefer.utils import hardware_summary

    extra = f", {machine_extra}" if machine_extra else ""
    return [f"# {title}", "", f"Command: `{command}`  ", f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
            f"Machine: {hardware_summary()}, Python {platform.python_version()}{extra}; {load_text(load_start)}  ",
            f"Versions: {versions()}", ""]


def table(head, rows, align: str = "") -> list[str]:
    """A markdown table's lines: ``head`` the column titles, ``rows`` lists of cells (``|`` in a cell is
    escaped), ``align`` one letter per column, ``l`` or ``r`` (default ``l``)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in (align + "l" * len(head))[:len(head)])
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return ["| " + " | ".join(head) + " |", rule, *body]


def provenance(load_start=None) -> dict:
    """Date, machine, Python, versions and load, as :func:`header` prints them, for the ``.json``."""
    from litefer.utils import hardware_summary

    return {"date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}", "machine": hardware_summary(),
            "python": platform.python_version(), "versions": versions(), "load": load_text(load_start)}


def write(out, result: dict, text: str, load_start=None) -> None:
    """``out``.json (the result, which names its command, with its :func:`provenance`) and ``out``.md
    (``out`` with or without its suffix), each written atomically; the page is printed too."""
    from litefer.utils import atomic_write_json, atomic_write_text

    out = str(out)
    out = out[:-3] if out.endswith(".md") else out[:-5] if out.endswith(".json") else out
    atomic_write_json(out + ".json", {**result, "provenance": provenance(load_start)})
    atomic_write_text(out + ".md", text)
    print(text)
