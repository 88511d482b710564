"""Robustness probes: bad inputs and faults on every interface, what litefer does, and the test that
pins each; plus the server's figures under load while a slow-client flood runs, and its memory
around large images. Every outcome in the table is measured by this run. Usage:

    python benchmarks/robustness.py --out results/robustness.md

The server runs the packaged model (onnxruntime) with 2 s header and body deadlines and at most
256 connections; the CLI probes run ``python -m litefer`` in subprocesses on files made here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import loadtest as L
from serve_load import CpuMeter, astronaut_jpeg, start_server
from litefer.utils import atomic_write_text, hardware_summary, remove_stale_temp_files

T = "tests/"


# ----------------------------------------------------------------------------- server probes

def http_outcome(answer) -> str:
    status, headers, body, closed = answer
    if status is None:
        return "no answer" + (", connection closed" if closed else "")
    try:
        message = json.loads(body).get("message", "")
    except ValueError:
        message = body[:60].decode("latin-1")
    return f"{status} {headers.get('content-type', '?')}: {message[:90]}" + (", then closed" if closed else "")


MALFORMED = {
    "`Content-Length: abc`": b"POST /v1/recognize HTTP/1.1\r\nHost: p\r\nContent-Length: abc\r\n\r\n",
    "`Content-Length: -1`": b"POST /v1/recognize HTTP/1.1\r\nHost: p\r\nContent-Length: -1\r\n\r\n",
    "1 MB header": b"GET /healthz HTTP/1.1\r\nHost: p\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    "1 MB URL": b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: p\r\n\r\n",
    "garbage request line": b"\x16\x03\x01 not HTTP at all\r\n\r\n",
}


def server_probes(url: str, jpeg: bytes, limits: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, raw in MALFORMED.items():
        rows.append((name, http_outcome(L.exchange(url, raw, 10)), T + "test_serve_protocol.py::test_malformed_requests_get_json_errors"))
    rows.append(connection_limit_probe(url))
    pins = {"slow_body": "test_serve_protocol.py::test_slow_body_on_a_route_that_reads_it_gets_a_json_408",
            "slow_headers": "test_serve_protocol.py::test_slow_headers_get_a_json_408"}
    repeated = (b"POST /v1/recognize?prior=balanced&prior=dataset HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
                b"Content-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg)
    rows.append(("`?prior=balanced&prior=dataset` (repeated)", http_outcome(L.exchange(url, repeated, 30)),
                 T + "test_serve_api.py::test_a_repeated_prior_parameter_is_refused_naming_it"))
    for f in L.run_faults(url, jpeg, limits):
        outcome = f"{f.outcome} after {f.seconds} s: {f.message[:90]}"
        rows.append((f.name, outcome, T + pins.get(f.key, "test_serve_load.py::test_load_with_faults_no_5xx_and_every_fault_refused")))
    return rows


def connection_limit_probe(url: str, limit: int = 256) -> tuple[str, str, str]:
    idle = [L._connect(url, 10) for _ in range(limit)]
    try:
        time.sleep(0.3)
        answer = L.exchange(url, b"GET /healthz HTTP/1.1\r\nHost: p\r\n\r\n", 10)
    finally:
        for s in idle:
            s.close()
    return (f"{limit} idle connections open, then a request", http_outcome(answer),
            T + "test_serve_protocol.py::test_connection_limit_answers_json_503_with_retry_after")


def load_during_flood(url: str, server_pid: int, jpeg: bytes, flood: int, clients: int, requests: int) -> dict:
    """Real clients while ``flood`` connections drip bodies to /healthz (the issue's lock-out)."""
    result = {}
    t = threading.Thread(target=lambda: result.update(L.slow_body_flood(url, flood, seconds=12.0)))
    meter = CpuMeter([server_pid, os.getpid()]).start()
    t.start()
    time.sleep(0.5)
    load = L.run_load(url, jpeg, clients, requests)
    t.join()
    return {"flood": result, "load": load.summary(), "cpu": meter.stop()}


# ----------------------------------------------------------------------------- command-line probes

def litefer(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "litefer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def cli_outcome(p) -> str:
    """Exit status, litefer's own last line on stderr and, when details follow it, the last detail."""
    lines = [x.strip() for x in p.stderr.strip().splitlines() if x.strip()]
    ours = [x for x in lines if x.startswith("litefer ")]
    shown = ours[-1:] + [x for x in lines[-1:] if x not in ours[-1:]]
    shown = [x[:150] for x in shown]
    traceback = any(x.startswith("Traceback") for x in lines)
    return f"exit {p.returncode}: " + " / ".join(shown) + (" (after a traceback)" if traceback else "")


def train_probes(tmp: Path) -> list[tuple[str, str, str]]:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"data: {{root: {tmp / 'fer'}, input_size: 48}}\nrun: {{out_dir: {tmp / 'runs'}, progress: never}}\n")
    (tmp / "fer").mkdir()
    row = " ".join(["128"] * 9 + ["300"] + ["128"] * 2294)
    (tmp / "fer" / "fer2013.csv").write_text(f"emotion,pixels,Usage\n0,{row},Training\n")
    (tmp / "fer" / "fer2013new.csv").write_text("Usage,Image name,neutral\n")
    pin_range = T + "test_train.py::test_config_numeric_ranges_name_the_key"
    pin_line = T + "test_cli.py::test_config_and_data_errors_are_one_line_with_debug_for_the_traceback"
    return [("`litefer train --set optim.min_lr=-1`", cli_outcome(litefer("train", cfg, "--set", "optim.min_lr=-1")), pin_range),
            ("`litefer train --set optim.epochs=0`", cli_outcome(litefer("train", cfg, "--set", "optim.epochs=0")), pin_range),
            ("`litefer train --set augment.flip=1.5`", cli_outcome(litefer("train", cfg, "--set", "augment.flip=1.5")), pin_range),
            ("FERPlus CSV with a pixel value of 300", cli_outcome(litefer("train", cfg, "--run-dir", tmp / "r1")),
             T + "test_data.py::test_ferplus_bad_files"),
            ("`litefer train` on a missing data folder",
             cli_outcome(litefer("train", cfg, "--set", f"data.root={tmp / 'gone'}", "--run-dir", tmp / "r2")), pin_line)]


def tiny_ferplus(root: Path, rows: int = 32) -> Path:
    """A FERPlus folder (gzipped pixels, votes) small enough to train one epoch in seconds."""
    import gzip

    import numpy as np

    from litefer.data.ferplus import FER_COLUMNS, VOTE_COLUMNS

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    fer, votes = [",".join(FER_COLUMNS)], [",".join(VOTE_COLUMNS)]
    for i in range(rows):
        usage = "Training" if i < rows * 3 // 4 else "PublicTest"
        fer.append(f"0,{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
        votes.append(f"{usage},fer{i:07d}.png," + ",".join("10" if c == i % 8 else "0" for c in range(10)))
    with gzip.open(root / "fer2013.csv.gz", "wt") as f:
        f.write("\n".join(fer) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(votes) + "\n")
    return root


def error_line_probes(tmp: Path) -> list[tuple[str, str, str]]:
    """Issue 20's one-line rule (item 9) and the resume decision: a trained one-epoch run, a copy
    whose last.pt is cut in half, a FERPlus folder whose pixel file is a cut gzip, random bytes as
    weights, on the command line."""
    fer = tiny_ferplus(tmp / "fer_ok")
    cfg = tmp / "ok.yaml"
    cfg.write_text(f"data: {{root: {fer}, input_size: 48}}\noptim: {{epochs: 1, batch_size: 8}}\n"
                   f"run: {{device: cpu, progress: never, tensorboard: false, eval_test: false, max_batches: 1}}\n")
    run, cut_run = tmp / "run_ok", tmp / "run_cut"
    trained = litefer("train", cfg, "--run-dir", run)
    if trained.returncode != 0:
        raise RuntimeError(f"the probes' run did not train: {trained.stderr[-500:]}")
    cut_run.mkdir()
    for f in run.iterdir():
        data = f.read_bytes()
        (cut_run / f.name).write_bytes(data[: len(data) // 2] if f.name == "last.pt" else data)
    (tmp / "cut_fer").mkdir()
    (tmp / "cut_fer" / "fer2013new.csv").write_bytes((fer / "fer2013new.csv").read_bytes())
    gz = (fer / "fer2013.csv.gz").read_bytes()
    (tmp / "cut_fer" / "fer2013.csv.gz").write_bytes(gz[: len(gz) // 2])
    (tmp / "random.pt").write_bytes(os.urandom(4096))
    best = run / "best.pt"
    pin = T + "test_cli.py::test_bad_options_and_files_are_one_line_naming_them_exit_2"
    cases = [("train data.root=123", "`litefer train --set data.root=123`", ["train", cfg, "--set", "data.root=123"]),
             ("train run.device=bogus", "`litefer train --set run.device=bogus`", ["train", cfg, "--set", "run.device=bogus"]),
             ("resume model.name", "`litefer train --resume RUN --set model.name=mobilenetv3_large`",
              ["train", "--resume", run, "--set", "model.name=mobilenetv3_large"]),
             ("resume data.input_size", "`litefer train --resume RUN --set data.input_size=64`",
              ["train", "--resume", run, "--set", "data.input_size=64"]),
             ("resume corrupt last.pt", "`litefer train --resume RUN` with last.pt cut in half", ["train", "--resume", cut_run]),
             ("predict random bytes", "`litefer predict --weights random.pt` (4 KB of random bytes)",
              ["predict", "--sample", "--weights", tmp / "random.pt"]),
             ("eval truncated gz", "`litefer eval` with fer2013.csv.gz cut in half",
              ["eval", "--weights", best, "--data", tmp / "cut_fer"]),
             ("eval --batch-size 0", "`litefer eval --batch-size 0`", ["eval", "--weights", best, "--batch-size", "0"]),
             ("eval --device cuda", "`litefer eval --device cuda` (torch without CUDA here)",
              ["eval", "--weights", best, "--device", "cuda"]),
             ("export --opset 3", "`litefer export --opset 3`", ["export", "--weights", best, "--opset", "3", "--out", tmp / "x.onnx"]),
             ("export --parity-size -5", "`litefer export --parity-size -5`",
              ["export", "--weights", best, "--parity-size", "-5", "--out", tmp / "x.onnx"]),
             ("predict --max-frames 0", "`litefer predict --max-frames 0`", ["predict", "--sample", "--max-frames", "0"]),
             ("serve --max-connections 0", "`litefer serve --max-connections 0`", ["serve", "--max-connections", "0"])]
    return [(probe, cli_outcome(litefer(*argv, timeout=120)), f"{pin}[{key}]") for key, probe, argv in cases]


def misfit_weights_probe(tmp: Path) -> tuple[str, str, str]:
    import torch

    from litefer import create_model
    from litefer.data.transforms import Preprocess
    from litefer.weights import weights_payload

    bad = tmp / "misfit.pt"
    names = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
    torch.save(weights_payload(create_model("litefer_cpsca", num_classes=8), "litefer_cpsca", names,
                               Preprocess(48, 3).to_dict()), bad)
    return ("`litefer serve --weights` with tensors that do not fit the architecture", cli_outcome(litefer("serve", "--weights", bad)),
            T + "test_serve_api.py::test_weights_whose_tensors_do_not_fit_are_a_value_error_and_one_line")


def write_face_video(path: Path, frames: int) -> Path:
    """An MJPG .avi of the astronaut photo at 320 x 320, ``frames`` frames long."""
    import cv2

    from litefer.inference.samples import sample_bgr

    frame = cv2.resize(sample_bgr(), (320, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 320))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def predict_probes(tmp: Path, jpeg: bytes) -> list[tuple[str, str, str]]:
    d = tmp / "photos"
    d.mkdir()
    (d / "a.jpg").write_bytes(jpeg)
    (d / "gone.jpg").symlink_to(tmp / "deleted.jpg")
    (d / "self.png").symlink_to(d / "self.png")
    (d / "sub").mkdir()
    (d / "sub" / "up").symlink_to(d)
    (tmp / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    video = write_face_video(tmp / "clip.avi", frames=60)
    cut = tmp / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    fast = ["--backend", "onnxruntime", "--no-progress"]
    pin = T + "test_predict_cli.py::"
    return [("`litefer predict` on a good photo", cli_outcome(litefer("predict", d / "a.jpg", *fast)),
             pin + "test_exit_codes_tell_complete_partial_and_interrupted_runs"),
            ("`litefer predict` on a good and a truncated photo", cli_outcome(litefer("predict", d / "a.jpg", tmp / "half.jpg", *fast)),
             pin + "test_exit_codes_tell_complete_partial_and_interrupted_runs"),
            ("a folder with a dangling link, a self-link and a link to its parent",
             cli_outcome(litefer("predict", d, *fast)), pin + "test_broken_links_and_link_loops_in_a_folder_are_reported"),
            ("a video cut in half", cli_outcome(litefer("predict", cut, *fast)), pin + "test_truncated_video_is_reported_incomplete"),
            ("Ctrl-C (SIGINT) during `litefer predict`", sigint_probe(write_face_video(tmp / "long.avi", frames=3000), fast),
             pin + "test_exit_codes_tell_complete_partial_and_interrupted_runs")]


def special_input_probes(tmp: Path, jpeg: bytes) -> list[tuple[str, str, str]]:
    """A HEIC photo named on the command line, and a FIFO inside a folder."""
    (tmp / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic not decoded")
    d = tmp / "with_fifo"
    d.mkdir()
    (d / "a.jpg").write_bytes(jpeg)
    os.mkfifo(d / "stream.jpg")
    fast = ["--backend", "onnxruntime", "--no-progress"]
    pin = T + "test_predict_cli.py::"
    return [("`litefer predict IMG_0001.heic` (named, not in a folder)", cli_outcome(litefer("predict", tmp / "IMG_0001.heic", *fast)),
             pin + "test_a_heic_photo_named_on_the_command_line_gets_the_same_reason"),
            ("a folder holding a FIFO", cli_outcome(litefer("predict", d, *fast, timeout=60)),
             pin + "test_fifos_and_devices_are_reported_not_opened")]


def early_interrupt_probe(tmp: Path, jpeg: bytes, signum: int, after_s: float = 2.5, photos: int = 200) -> tuple[str, str, str]:
    """``signum`` ``after_s`` seconds into `litefer predict --batch-size 64` on a folder: before, the
    rows of a batch were written only once all 64 images were classified."""
    d = tmp / f"many_{signum}"
    d.mkdir()
    for i in range(photos):
        (d / f"p{i:03}.jpg").write_bytes(jpeg)
    out = tmp / f"early_{signum}.csv"
    proc = subprocess.Popen([sys.executable, "-m", "litefer", "predict", str(d), "--batch-size", "64", "--csv", str(out),
                             "--backend", "onnxruntime", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    rows = max(len(out.read_text().splitlines()) - 1, 0) if out.is_file() else 0
    name = signal.Signals(signum).name
    return (f"{name} {after_s:g} s into `litefer predict --batch-size 64` on {photos} photos",
            f"exit {proc.returncode}; {rows} of {photos} photos' rows written (a batch holds 64)",
            T + f"test_predict_cli.py::test_an_early_interrupt_writes_every_finished_result[reading-{name}]")


def sigint_probe(video: Path, extra: list[str]) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "litefer", "predict", str(video), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    if proc.poll() is not None:
        return f"finished (exit {proc.returncode}) before the signal; rerun on a slower input"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return cli_outcome(subprocess.CompletedProcess(proc.args, proc.returncode, "", err))


def stale_temp_probe(tmp: Path) -> tuple[str, str, str]:
    folder = tmp / "run"
    code = ("import os, sys\nfrom litefer.utils import atomic_open\n"
            f"with atomic_open({str(folder / 'last.pt')!r}) as f:\n    f.write(bytes(4 << 20)); f.flush(); os._exit(9)\n")
    rc = subprocess.run([sys.executable, "-c", code]).returncode
    left = sorted(p.name for p in folder.iterdir())
    removed = [p.name for p in remove_stale_temp_files(folder)]
    return ("SIGKILL during an atomic write (4 MB)",
            f"writer exit {rc}; left {left}; `remove_stale_temp_files` removed {removed} (the training engine "
            "calls it at resume and at the end of a run)", T + "test_utils.py::test_stale_temp_files_of_a_killed_atomic_write_are_removed")


# ----------------------------------------------------------------------------- report

def table(rows) -> str:
    out = ["| probe | what litefer does (measured) | pinned by |", "|---|---|---|"]
    out += [f"| {p} | {o.replace('|', '/')} | `{t}` |" for p, o, t in rows]
    return "\n".join(out)


def report(command: str, sections: dict, flood: dict, large: dict) -> str:
    f, s = flood["flood"], flood["load"]
    parts = ["# litefer robustness probes", "", f"Command: `{command}`  ", f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}  ",
             f"Machine: {hardware_summary()}, Python {platform.python_version()}, {platform.system()} {platform.release()}  ",
             "Server: packaged model, onnxruntime, default workers and queue, `--header-timeout 2 --upload-timeout 2 "
             "--max-connections 256`.", ""]
    for title, rows in sections.items():
        parts += [f"## {title}", "", table(rows), ""]
    parts += ["## Load during a slow-client flood", "",
              f"{f['connections']} connections send `POST {f['path']}` declaring 1 MB and drip a byte a second; at the "
              f"same time {s['clients']} clients send {s['requests']} `POST /v1/recognize` (astronaut JPEG).", "",
              "| flood connections | closed by the server | last closed after s | still open after "
              f"{f['watched_s']:g} s | requests | statuses | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|",
              f"| {f['connections']} | {f['closed_by_server']} | {f['last_closed_s']} | {f['still_open']} | {s['requests']} | "
              f"{s['statuses']} | {s['p50_ms']} | {s['p99_ms']} |", "",
              f"During this phase the CPUs were busy {flood['cpu']['busy_cores']:.2f} of {flood['cpu']['cores']} cores, "
              f"{flood['cpu']['other_processes_cores']:.2f} of them for other processes than the server and these "
              "clients: the latencies depend on that share.", "",
              "## Memory around large images", "",
              f"{large['images']} PNGs of 39.7 MP ({large['png_bytes'] // 1024} KB each), {large['concurrent']} at a time: "
              f"statuses {large['statuses']}, {large['wall_s']} s; server RSS {large['rss_before_mib']} MiB before, "
              f"**{large['rss_after_idle_mib']} MiB** once idle after (one such image is 119 MB decoded).", ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=255, help="slow-body connections of the flood")
    ap.add_argument("--large-images", type=int, default=30)
    ap.add_argument("--out", default="results/robustness.md")
    args = ap.parse_args(argv)
    jpeg = astronaut_jpeg()
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        tmp = Path(tmp)
        sections = {"Training and data": train_probes(tmp) + [stale_temp_probe(tmp)],
                    "Prediction": predict_probes(tmp, jpeg) + special_input_probes(tmp, jpeg)
                    + [early_interrupt_probe(tmp, jpeg, s) for s in (signal.SIGINT, signal.SIGTERM)],
                    "One-line errors (exit 2, naming the option or file)": error_line_probes(tmp)}
        url, proc, _ = start_server("default", None, tmp / "server.log", ["--header-timeout", "2", "--upload-timeout", "2",
                                                                         "--max-connections", "256"])
        try:
            limits = L.get_json(url, "/v1/model")[1]["limits"]
            sections["Server"] = server_probes(url, jpeg, limits) + [misfit_weights_probe(tmp)]
            flood = load_during_flood(url, proc.pid, jpeg, args.flood, clients=4, requests=10)
            large = L.large_image_phase(url, args.large_images)
        finally:
            proc.terminate()
            proc.wait(15)
    command = "python benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(command.strip(), sections, flood, large)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
