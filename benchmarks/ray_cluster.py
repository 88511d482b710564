"""A two-node Ray cluster on this machine for benchmarks/ray_scale.py and tests/test_ray.py: two raylets of one
CPU each (``ray start --head --block`` and ``ray start --block --address ...``), on free ports, with a
temporary --temp-dir, token authentication off, stopped by the PIDs started here (never ``ray stop``)."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
SRC = str(Path(__file__).resolve().parents[1] / "src")      # this checkout's litefer, for the workers


def free_ports(n: int) -> list[int]:
    """``n`` different ports free now (held open together while chosen, so none comes twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env(**extra) -> dict:
    """The environment of raylets and drivers: this checkout's litefer, no token, no usage stats."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **extra}


NODE_PORT_FLAGS = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                   "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]


def _node_ports(ports: list[int], low: int) -> list[str]:
    """Every port a raylet opens (``ports``: free now, one per flag), worker ports from ``low`` on."""
    return [a for f, port in zip(NODE_PORT_FLAGS, ports) for a in (f, str(port))] + \
        ["--min-worker-port", str(low), "--max-worker-port", str(low + 99)]


def children(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pids`` (from /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    below, frontier = [], set(pids)
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        below += sorted(frontier)
    out = []
    for p in below:
        try:
            out.append((p, Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            pass
    return out


@contextlib.contextmanager
def two_node_cluster(timeout: float = 90.0):
    """Yields (address ``127.0.0.1:PORT``, [head PID, worker PID], environment for drivers)."""
    temp = tempfile.mkdtemp(prefix="lfray", dir="/tmp")         # short: Ray's socket paths must fit 107 bytes
    n = len(NODE_PORT_FLAGS)
    port, *ports = free_ports(1 + 2 * n)
    # worker ports in a random block below the ephemeral range, so that parallel sessions seldom meet
    low = random.randrange(10000, 32000, 200)
    env = ray_env(RAY_TMPDIR=temp)
    common = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(200 << 20),
              "--disable-usage-stats"]
    log = open(Path(temp) / "ray-start.log", "wb")
    procs = [subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--temp-dir", temp,
                               "--include-dashboard", "false", *common, *_node_ports(ports[:n], low)], env=env, stdout=log, stderr=log,
                              start_new_session=True)]
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port, procs[0], timeout)
        procs.append(subprocess.Popen([RAY, "start", "--address", address, *common,
                                       *_node_ports(ports[n:], low + 100)], env=env,
                                      stdout=log, stderr=log, start_new_session=True))
        _wait_for_nodes(address, env, 2, timeout)
        yield address, [p.pid for p in procs], env
    except (RuntimeError, TimeoutError) as e:
        log.flush()
        tail = (Path(temp) / "ray-start.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{e}; ray start said:\n{tail}") from None
    finally:
        stop(procs)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT to each ``ray start --block`` (it stops its raylet and the processes below, in 1-3 s; SIGTERM
    takes 20), SIGKILL to
    whatever of that process group is left after 20 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in reversed(procs):
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)        # the group this test started (start_new_session), by its PID
        p.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the Ray head did not listen on port {port} in {timeout:.0f} s")


def _wait_for_nodes(address: str, env: dict, n: int, timeout: float) -> None:
    code = ("import ray, time, sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
            f"end = time.monotonic() + {timeout}\n"
            f"while sum(x['Alive'] for x in ray.nodes()) < {n} and time.monotonic() < end: time.sleep(0.3)\n"
            f"sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= {n} else 1)\n")
    run = subprocess.run([sys.executable, "-c", code, address], env=env, timeout=timeout + 30, capture_output=True)
    if run.returncode:
        raise TimeoutError(f"the Ray cluster at {address} did not reach {n} nodes in {timeout:.0f} s: "
                           f"{run.stderr.decode(errors='replace')[-1500:]}")
