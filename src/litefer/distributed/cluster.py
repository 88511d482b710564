"""Connecting to Ray (``local``, ``auto``, ``host:port``) and sizing the actor pool from what the cluster has."""
from __future__ import annotations

import logging
import re

from ..utils import require
from .sources import first_line

ADDRESS_HELP = "local (start Ray on this machine), auto (RAY_ADDRESS or the running cluster) or HOST:PORT"
# Ray Data's own tasks need a little CPU beside the actors: an actor holding a whole CPU on every core
# starves them (measured with Ray 2.60 on 2 cores), so the default share is below one.
DEFAULT_CPUS_PER_WORKER = 0.9


def require_ray():
    """``ray`` with Ray Data, or MissingExtra naming ``litefer[ray]``."""
    ray = require("ray", "ray", "litefer's Ray recognition (--ray)")
    require("ray.data", "ray", "litefer's Ray recognition (--ray)")
    return ray


def check_address(address: str) -> str:
    """``local``, ``auto``, ``ray://host:port`` or ``host:port``; ValueError naming ``--ray`` otherwise."""
    if address in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", address):
        return address
    raise ValueError(f"--ray {address!r}: expected {ADDRESS_HELP}")


def connect(address: str, runtime_env: dict | None = None) -> bool:
    """Join (or, for ``local``, start) a Ray cluster; True when this call started Ray in this process
    (the caller shuts it down). Token-authenticated clusters: Ray reads ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` itself."""
    check_address(address)
    ray = require_ray()
    if ray.is_initialized():
        return False
    for name in ("ray", "ray.data"):               # Ray's INFO lines would drown the command's own
        logging.getLogger(name).setLevel(logging.WARNING)
    kwargs = dict(runtime_env=runtime_env or None, logging_level=logging.WARNING, log_to_driver=False)
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"--ray {address}: cannot connect to a Ray cluster ({first_line(e)})") from None
    return True


def pool_size(workers: int | None, cpus: float | None, gpus: float | None, device: str) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each): by default one actor per CPU (per GPU for ``cuda``) of the cluster."""
    import ray

    total = ray.cluster_resources()
    on_gpu = str(device).startswith("cuda")
    gpus = (1.0 if on_gpu else 0.0) if gpus is None else float(gpus)
    cpus = DEFAULT_CPUS_PER_WORKER if cpus is None else float(cpus)
    if workers is None:
        have = total.get("GPU", 0) / gpus if gpus else total.get("CPU", 1)
        workers = max(1, int(have))
    if workers < 1 or cpus <= 0 or gpus < 0:
        raise ValueError(f"--ray-workers must be >= 1 and --ray-cpus > 0, got {workers} and {cpus}")
    if on_gpu and not total.get("GPU"):
        raise ValueError(f"--device {device}: the Ray cluster has no GPU")
    return workers, cpus, gpus
