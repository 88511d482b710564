"""What every benchmark's results page shares, in one place: the command line that made it, the lines
naming its date, machine and load, and the atomic write of its ``.json`` and ``.md`` twins."""
from __future__ import annotations

import datetime as dt
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


def header(title: str, command: str, machine_extra: str = "", load_start=None) -> list[str]:
    """A page's first lines: its title, the command, the date, and the machine with its load."""
    from litefer.utils import hardware_summary

    extra = f", {machine_extra}" if machine_extra else ""
    return [f"# {title}", "", f"Command: `{command}`  ", f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
            f"Machine: {hardware_summary()}, Python {platform.python_version()}{extra}; {load_text(load_start)}", ""]


def write(out: str, result: dict, text: str) -> None:
    """``out``.json (the result, which names its command) and ``out``.md, each written atomically; the page
    is printed too."""
    from litefer.utils import atomic_write_json, atomic_write_text

    atomic_write_json(out + ".json", result)
    atomic_write_text(out + ".md", text)
    print(text)
