"""Load and fault benchmark of ``litefer serve`` on loopback: latency percentiles and throughput.

Starts ``litefer serve`` (or uses ``--url``), warms it up, then runs, with ``--clients`` concurrent
keep-alive clients sending ``--requests`` uploads each of the astronaut photo (512 x 512 JPEG, one
face):

1. ``serial``: one client, for the latency of an unloaded server;
2. ``load``: all clients;
3. ``load + faults``: all clients again while the faults of ``benchmarks/loadtest.py`` hit the
   server (truncated, non-image, oversized declared and chunked, a 30,000 x 30,000 PNG header,
   slowloris body and headers, a client vanishing mid-upload);
4. ``large images``: ``--large-images`` PNGs of 39.7 MP (inside the 40-MP limit), two at a time,
   with the server's resident memory (from ``/healthz``) before, and after it has gone idle.

Writes a Markdown report (and JSON beside it) with p50/p95/p99 latency, throughput, status counts,
the fault outcomes, and how busy the CPUs were with other processes during the run (read from
/proc/stat minus the server's and this script's own CPU time), since on a shared machine that is
what the figures depend on. Usage:

    python benchmarks/serve_load.py --weights default --out results/serve.md
    python benchmarks/serve_load.py --weights untrained          # same architecture, untrained weights
    python benchmarks/serve_load.py --url http://127.0.0.1:8000  # a server that is already running
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loadtest as L
from results_page import command_line, header, write


# ----------------------------------------------------------------------------- CPU accounting

def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _proc_jiffies(pid: int) -> int:
    """utime + stime (and those of waited-for children) of a process, in jiffies."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(parts[i]) for i in (11, 12, 13, 14))


class CpuMeter:
    """Cores used by everything else than ``pids`` between start() and stop()."""

    def __init__(self, pids):
        self.pids = [p for p in pids if p]

    def start(self):
        self.t0, self.b0, self.tot0 = time.monotonic(), *_cpu_jiffies()
        self.own0 = sum(_proc_jiffies(p) for p in self.pids)
        return self

    def stop(self) -> dict:
        b1, tot1 = _cpu_jiffies()
        own1 = sum(_proc_jiffies(p) for p in self.pids)
        ncpu = os.cpu_count() or 1
        span = (tot1 - self.tot0) / ncpu or 1               # jiffies of one CPU over the interval
        busy = (b1 - self.b0) / span
        ours = (own1 - self.own0) / span
        return {"cores": ncpu, "busy_cores": round(busy, 2), "server_and_clients_cores": round(ours, 2),
                "other_processes_cores": round(max(0.0, busy - ours), 2), "seconds": round(time.monotonic() - self.t0, 1)}


# ----------------------------------------------------------------------------- server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_weights(folder: Path, input_size: int) -> Path:
    """litefer_cpsca with untrained weights, FERPlus classes and the shipped preprocessing shape:
    the cost of a request does not depend on the weights' values."""
    import torch

    from litefer import create_model
    from litefer.data.transforms import Preprocess
    from litefer.weights import weights_payload

    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    model = create_model("litefer_cpsca", num_classes=len(classes)).eval()
    path = folder / f"litefer_cpsca_untrained_{input_size}px.pt"
    torch.save(weights_payload(model, "litefer_cpsca", classes, Preprocess(input_size, 3).to_dict(), {},
                               tta_flip=True), path)
    return path


def start_server(weights: str, workers: int | None, log: Path, extra: list[str]):
    port = _free_port()
    cmd = [sys.executable, "-m", "litefer", "serve", "--weights", weights, "--port", str(port),
           "--log-level", "warning", "--no-access-log", *extra]
    if workers:
        cmd += ["--workers", str(workers)]
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        L.wait_ready(url, 180, proc)
    except RuntimeError as e:
        proc.kill()
        raise SystemExit(f"serve_load: {e}\n{log.read_text()[-2000:]}") from None
    return url, proc, cmd


def astronaut_jpeg() -> bytes:
    """The packaged astronaut photo (public domain), a 512 x 512 JPEG, as its file's bytes."""
    from litefer.inference.samples import sample_photo

    return sample_photo().read_bytes()


# ----------------------------------------------------------------------------- report

def report(meta: dict, phases: list[dict], faults: list[L.FaultOutcome]) -> str:
    card, health = meta["card"], meta["health"]
    lim = card["limits"]
    cpu = meta["cpu"]
    lines = [
        *header("litefer serve: load and fault test on loopback", meta["command"],
                f"{platform.system()} {platform.release()}"),
        f"Server: model `{card['model_name']}` ({card['server']['weights']}, {card['preprocess']['input_size']} px input"
        f"{', flip TTA' if card['tta_flip'] else ''}), backend {card['server']['backend']}, "
        f"{card['server']['workers']} worker(s) x {card['server']['threads_per_worker']} thread(s), queue "
        f"{card['server']['queue']}; limits {lim['max_upload_bytes'] // 1024} KiB upload, {lim['upload_timeout_s']:g} s "
        f"body, {lim['header_timeout_s']:g} s headers, {lim['request_timeout_s']:g} s per request  ",
        *([f"Weights: {meta['weights_note']}  "] if meta.get("weights_note") else []),
        f"Request: POST /v1/recognize with the astronaut photo ({meta['image_bytes'] // 1024} KiB JPEG, 512 x 512, "
        "one face): decode, Haar detection with eye search, crop, model, JSON; latency measured by the client "
        "from sending the request to the end of the answer.", "",
        "## Latency and throughput", "",
        L.markdown_table(phases, L.LOAD_COLS), "",
        "## Faults (sent during the `load + faults` phase)", "",
        L.markdown_table([vars(f) for f in faults], L.FAULT_COLS), "",
        "## Memory after large images", "",
        L.markdown_table([meta["large"]], LARGE_COLS), "",
        f"After the run: `/healthz` {health['status']}, {health['stats']['admitted']} requests admitted, "
        f"{health['stats']['rejected_busy']} refused as busy, {health['inflight']} in flight.", "",
        "## CPU contention", "",
        f"During the run the CPUs were busy {cpu['busy_cores']:.2f} of {cpu['cores']} cores on average: "
        f"{cpu['server_and_clients_cores']:.2f} for the server and these clients, "
        f"**{cpu['other_processes_cores']:.2f} for other processes**.",
    ]
    if cpu["other_processes_cores"] > 0.25:
        lines += ["", "Other processes took a large share of the CPUs (on this machine: model training running in "
                      "the background), so these latencies are higher and the throughput lower than on an idle "
                      "machine. Rerun the command above on an idle machine for clean figures."]
    return "\n".join(lines) + "\n"


LARGE_COLS = [("images", "39.7-MP PNGs"), ("concurrent", "at a time"), ("statuses", "statuses"),
              ("wall_s", "wall s"), ("rss_before_mib", "server RSS before, MiB"),
              ("rss_after_idle_mib", "RSS after, idle, MiB")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default",
                    help="'default' (packaged), 'untrained' (litefer_cpsca, untrained), or a .pt/.onnx path")
    ap.add_argument("--untrained-input-size", type=int, default=48, help="input size of --weights untrained")
    ap.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="requests per client and phase")
    ap.add_argument("--serial", type=int, default=20, help="requests of the one-client phase")
    ap.add_argument("--workers", type=int, default=None, help="server workers (default: the server's default)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `litefer serve` argument (repeatable)")
    ap.add_argument("--large-images", type=int, default=30, help="39.7-MP PNGs of the memory phase")
    ap.add_argument("--out", default="results/serve.md")
    args = ap.parse_args(argv)

    jpeg = astronaut_jpeg()
    proc = None
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        weights = args.weights
        if weights == "untrained":
            weights = str(untrained_weights(Path(tmp), args.untrained_input_size))
        if args.url:
            url = args.url
            L.wait_ready(url, 30)
        else:
            url, proc, _ = start_server(weights, args.workers, Path(tmp) / "server.log", args.server_arg)
        try:
            status, card = L.get_json(url, "/v1/model")
            warm = L.run_load(url, jpeg, clients=max(1, card["server"]["workers"]), requests=3)
            if warm.statuses.get(200, 0) == 0:
                raise SystemExit(f"serve_load: warm-up failed: {dict(warm.statuses)}")
            meter = CpuMeter([proc.pid if proc else None, os.getpid()]).start()
            phases = []
            serial = L.run_load(url, jpeg, clients=1, requests=args.serial)
            phases.append({"phase": "serial", **serial.summary()})
            load = L.run_load(url, jpeg, clients=args.clients, requests=args.requests)
            phases.append({"phase": "load", **load.summary()})
            loaded, faults = L.load_with_faults(url, jpeg, args.clients, args.requests, card["limits"])
            phases.append({"phase": "load + faults", **loaded.summary()})
            cpu = meter.stop()
            large = L.large_image_phase(url, args.large_images)
            _, health = L.get_json(url, "/healthz")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(15)
    command = command_line("serve_load.py", argv)
    note = ("untrained litefer_cpsca weights with the shipped model's shape (FERPlus classes, "
            f"{args.untrained_input_size} px input, flip TTA): what a request costs does not depend on the weights' "
            "values, the labels are meaningless") if args.weights == "untrained" else None
    meta = {"weights_note": note, "command": command, "card": card, "health": health, "cpu": cpu,
            "image_bytes": len(jpeg), "large": large}
    write(args.out, {**{k: v for k, v in meta.items() if k != "card"}, "model": card["model_name"],
                     "server": card["server"], "limits": card["limits"], "phases": phases,
                     "faults": [vars(f) for f in faults]}, report(meta, phases, faults))
    bad = [f.name for f in faults if not f.ok]
    errors = sum(p["server_errors"] for p in phases)
    if bad or errors:
        print(f"serve_load: FAILED: {errors} 5xx answers; faults not handled: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
