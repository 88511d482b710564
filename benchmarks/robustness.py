"""Robustness probes: bad inputs and faults on every interface, what litefer does, and the test that
pins each; plus /healthz and recognition latency while clients poll /v1/model, the server's figures
under load while a slow-client flood runs, its memory around large images, and the time per photo
and faces found of the small-face search on a 12-MP photo (``detect_scale.py``). Every outcome in
the table is measured by this run. Usage:

    python benchmarks/robustness.py --out results/robustness.md
    python benchmarks/robustness.py --only-upload-flood     # just the /v1/recognize slow-upload flood

The server runs the packaged model (onnxruntime) with 2 s header and body deadlines and at most
256 connections; the slow-upload flood into /v1/recognize has a server of its own with the default
limits; the CLI probes run ``python -m litefer`` in subprocesses on files made here, the Python API
probes (one recognizer shared by threads, EXIF-rotated PIL images, sizes, bad cards) run in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import detect_scale
import loadtest as L
from serve_load import CpuMeter, astronaut_jpeg, start_server
from litefer.utils import remove_stale_temp_files
from results_page import command_line, header, table, write

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
    rows.append(per_client_probe(url, int(limits["max_connections_per_client"])))
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
    """The limit full of connections too young to be closed to make room (under a second open)."""
    sources = flood_sources(16)
    idle = [L._connect(url, 10, sources[i % 16]) for i in range(limit)]
    try:
        time.sleep(0.3)
        answer = L.exchange(url, b"GET /healthz HTTP/1.1\r\nHost: p\r\n\r\n", 10)
    finally:
        for s in idle:
            s.close()
    return (f"{limit} idle connections open (16 addresses), then a request", http_outcome(answer),
            T + "test_serve_protocol.py::test_connection_limit_answers_json_503_with_retry_after")


def per_client_probe(url: str, cap: int) -> tuple[str, str, str]:
    source = flood_sources(1)[0]
    held = [L._connect(url, 10, source) for _ in range(cap)]
    try:
        time.sleep(0.3)
        with L._connect(url, 10, source) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: p\r\n\r\n")
            answer = L.read_answer(s, 5)
    finally:
        for s in held:
            s.close()
    return (f"{cap + 1} connections from one address", http_outcome(answer),
            T + "test_serve_protocol.py::test_one_address_is_capped_while_another_is_served")


def load_during_flood(url: str, server_pid: int, jpeg: bytes, flood: int, clients: int, requests: int) -> dict:
    """Real clients while ``flood`` connections drip bodies to /healthz (the issue's lock-out)."""
    result = {}
    t = threading.Thread(target=lambda: result.update(L.slow_body_flood(url, flood, seconds=12.0,
                                                                        sources=flood_sources(15))))
    meter = CpuMeter([server_pid, os.getpid()]).start()
    t.start()
    time.sleep(0.5)
    load = L.run_load(url, jpeg, clients, requests)
    t.join()
    return {"flood": result, "load": load.summary(), "cpu": meter.stop()}


UPLOAD_FLOOD_SOURCES = {"255 addresses, 1 each": 255, "15 addresses, 17 each": 15, "1 address": 1}


def flood_sources(count: int) -> list[str]:
    """``count`` loopback client addresses other than 127.0.0.1 (the real clients'); Linux routes all
    of 127/8 to the loopback interface."""
    return [f"127.1.{i // 250}.{1 + i % 250}" for i in range(count)]


def upload_flood(jpeg: bytes, log: Path, flood: int = 255, seconds: float = 20.0, clients: int = 4) -> list[dict]:
    """Issue 20's lock-out of /v1/recognize: ``flood`` connections send ``POST /v1/recognize`` declaring
    1 MB and drip it a byte a second, each one the server closes reopened at the next drip; from many
    source addresses, from a few and from one. Meanwhile ``clients`` real clients (127.0.0.1) send the
    astronaut JPEG, each a request every 0.25 s. A server of its own with the default limits (10 s
    headers, 15 s body, 256 connections); a first row without the flood for comparison."""
    url, proc, _ = start_server("default", None, log, [])
    rows = []
    try:
        for label, count in {"no flood": 0, **UPLOAD_FLOOD_SOURCES}.items():
            rows.append({"sources": label, **_upload_flood_phase(url, proc.pid, jpeg, flood if count else 0,
                                                                 flood_sources(count or 1), seconds, clients)})
            time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(15)
    return rows


def _upload_flood_phase(url: str, pid: int, jpeg: bytes, flood: int, sources: list[str], seconds: float,
                        clients: int) -> dict:
    result = {}
    t = threading.Thread(target=lambda: result.update(L.slow_body_flood(url, flood, seconds, "/v1/recognize",
                                                                        sources=sources, reconnect=True)))
    meter = CpuMeter([pid, os.getpid()]).start()
    t.start()
    time.sleep(2.0)                 # the flood in place
    load = L.run_load(url, jpeg, clients, 1, timeout=30, duration_s=seconds - 4, pause_s=0.25)
    t.join()
    return {"flood": result, "load": load.summary(), "cpu": meter.stop()}


def upload_flood_section(rows: list[dict]) -> list[str]:
    """The report's section on :func:`upload_flood`."""
    f = rows[-1]["flood"]
    parts = ["## Slow uploads into /v1/recognize", "",
             f"{f['connections']} connections send `POST /v1/recognize` declaring 1 MB and drip a byte a second, each "
             "connection the server closes reopened at the next drip, for "
             f"{f['watched_s']:g} s; from 255, 15 or 1 source address(es) (127.1.x.y). Meanwhile "
             f"{rows[-1]['load']['clients']} real clients on 127.0.0.1 send the astronaut JPEG, a request every "
             "0.25 s each, from 2 s into the flood to 2 s before its end. Server: its own, default limits "
             "(`litefer serve` with no limit flags).", "",
             *table(["flood from", "flood connections opened", "their answers", "real requests", "real statuses",
                     "p50 ms", "p99 ms", "busy cores (other processes)"],
                    [[r["sources"], r["flood"]["opened"], r["flood"]["answers"] or "-", r["load"]["requests"],
                      r["load"]["statuses"], r["load"]["p50_ms"], r["load"]["p99_ms"],
                      f"{r['cpu']['busy_cores']:.2f} ({r['cpu']['other_processes_cores']:.2f})"] for r in rows])]
    return parts + [""]


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


# ----------------------------------------------------------------------------- issue 29's third round

def stderr_outcome(p) -> str:
    """Exit status and every line on stderr but the detector hint (for runs that end with warnings)."""
    lines = [x.strip() for x in p.stderr.strip().splitlines() if x.strip() and "face detector: Haar" not in x]
    return f"exit {p.returncode}: " + " / ".join(x[:160] for x in lines)


def odd_name(folder: Path, raw: bytes) -> str:
    """A file name that is not valid UTF-8 (bytes, as Linux allows), as Python names it (surrogateescape)."""
    return os.fsdecode(os.path.join(os.fsencode(folder), raw))


def faces_folder(root: Path, jpeg: bytes) -> Path:
    """happy/ and sad/ face crops of the sample photo at 5 brightness levels each, plus: a crop named
    b'caf\\xe9.png', one image in both classes, one twice in sad/, an image in ROOT itself, a
    broken link and a link to ROOT."""
    import cv2
    import numpy as np

    from litefer.inference.align import CropSpec, crop_face
    from litefer.inference.detect import HaarDetector
    from litefer.inference.samples import sample_bgr

    crop = crop_face(sample_bgr(), HaarDetector().detect(sample_bgr())[0], CropSpec())[0].astype(np.float32)
    for k, cls in enumerate(("happy", "sad")):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(str(root / cls / f"s{i % 2}_{i}.png"), np.clip(crop * (0.7 + 0.12 * i + 0.05 * k), 0, 255).astype(np.uint8))
    Path(odd_name(root / "happy", b"caf\xe9.png")).write_bytes(cv2.imencode(".png", np.clip(crop * 1.35, 0, 255)
                                                                           .astype(np.uint8))[1].tobytes())
    (root / "sad" / "same_as_happy.png").write_bytes((root / "happy" / "s1_1.png").read_bytes())
    (root / "sad" / "copy.png").write_bytes((root / "sad" / "s0_2.png").read_bytes())
    (root / "loose.jpg").write_bytes(jpeg)
    (root / "happy" / "gone.png").symlink_to(root / "deleted.png")
    (root / "happy" / "up").symlink_to(root)
    return root


def finetune_probes(tmp: Path, jpeg: bytes) -> list[tuple[str, str, str]]:
    """Issue 29: recipe values, --out, --resume, a second run into one --out, and a folder holding an
    odd file name, identical images, a loose image and bad links (one real run, a few epochs)."""
    from litefer.train.finetune import out_lock

    root = faces_folder(tmp / "ft_faces", jpeg)
    pin = T + "test_finetune.py::"
    rows = []
    for override in ("head.lr=.inf", "head.epochs=-1", "label_smoothing=2", "threads=-3", "augment.flip=7"):
        started = time.perf_counter()
        p = litefer("finetune", root, "--out", tmp / "ft_bad", "--set", override, "--no-progress")
        rows.append((f"`litefer finetune --set {override}`", f"{cli_outcome(p)} ({time.perf_counter() - started:.1f} s)",
                     f"{pin}test_bad_recipe_values_are_one_line_naming_the_key_before_any_work[{override}]"))
    rows.append(("`litefer finetune ROOT --out ROOT/model`", cli_outcome(litefer("finetune", root, "--out", root / "model")),
                 pin + "test_out_inside_an_image_folder_is_refused_before_any_work"))
    rows.append(("`litefer finetune --resume` with no checkpoint in --out",
                 cli_outcome(litefer("finetune", root, "--out", tmp / "ft_none", "--resume")),
                 pin + "test_one_run_at_a_time_into_one_out_and_resume_needs_a_checkpoint"))
    with out_lock(tmp / "ft_busy"):
        busy = litefer("finetune", root, "--out", tmp / "ft_busy", "--no-progress")
    rows.append(("a second `litefer finetune` into an --out another run holds", cli_outcome(busy),
                 pin + "test_one_run_at_a_time_into_one_out_and_resume_needs_a_checkpoint"))
    out = tmp / "ft_out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier model")
    fast = [x for s in ("head.epochs=2", "full.epochs=1", "batch_size=8", "refit=false", "estimate_folds=0")
            for x in ("--set", s)]
    p = litefer("finetune", root, "--out", out, "--no-progress", *fast, timeout=600)
    report = json.loads((out / "report.json").read_text()) if p.returncode == 0 else {"data": {}}
    data = report["data"]
    used = {c: data["train_counts"][c] + data["val_counts"][c] for c in data.get("train_counts", {})}
    rows.append(("`litefer finetune` on a folder with b'caf\\xe9.png', one image in both classes, one twice in sad/, "
                 "an image in ROOT, a broken link and a link to ROOT",
                 f"{stderr_outcome(p)}; faces used {used}; report.json skipped "
                 f"{[(Path(s['file']).name, s['reason'][:40]) for s in data.get('skipped', [])]}, identical sets "
                 f"{[(len(d['files']), d['action']) for d in data.get('duplicates', [])]}",
                 pin + "test_odd_file_names_and_identical_images_are_handled_and_reported"))
    return rows


def odd_name_predict_probe(tmp: Path, jpeg: bytes) -> tuple[str, str, str]:
    d = tmp / "odd_names"
    d.mkdir()
    (d / "plain.jpg").write_bytes(jpeg)
    Path(odd_name(d, b"caf\xe9.jpg")).write_bytes(jpeg)
    p = litefer("predict", d, "--csv", tmp / "odd.csv", "--json", tmp / "odd.json", "--backend", "onnxruntime",
                "--no-progress")
    csv_rows = (tmp / "odd.csv").read_bytes().decode("utf-8").splitlines()[1:] if (tmp / "odd.csv").is_file() else []
    sources = sorted(r.split(",")[0].rsplit("/", 1)[-1] for r in csv_rows)
    js = json.loads((tmp / "odd.json").read_text()) if (tmp / "odd.json").is_file() else {"inputs": []}
    return ("`litefer predict DIR --csv --json`, DIR holding b'caf\\xe9.jpg' and plain.jpg",
            f"exit {p.returncode}; CSV rows {len(csv_rows)}, sources {sources}; JSON sources "
            f"{sorted(e['source'].rsplit('/', 1)[-1] for e in js['inputs'])}",
            T + "test_predict_cli.py::test_file_names_that_are_not_utf8_are_written_escaped_in_csv_and_json")


LEAN = ("import sys\nsys.modules.update(dict.fromkeys(['torch', 'torchvision', 'onnx', 'yaml', 'matplotlib'], None))\n"
        "from litefer.cli import main\nsys.exit(main(sys.argv[1:]))")


def lean_probes(tmp: Path) -> list[tuple[str, str, str]]:
    """README commands where torch cannot be imported (``sys.modules['torch'] = None``), as in the lean install."""
    pin = T + "test_without_torch.py::test_readme_commands_with_flags_name_the_extra_without_torch"
    rows = []
    for argv in (["export", "--weights", "default", "--out", "x.onnx"], ["export", "--format", "onnx-int8"],
                 ["train", "--resume", "runs/x"], ["train", "--set", "optim.lr=0.1", "cfg.yaml"]):
        p = subprocess.run([sys.executable, "-c", LEAN, *argv], capture_output=True, text=True, timeout=120, cwd=tmp)
        rows.append((f"`litefer {' '.join(argv)}` without torch", cli_outcome(p), pin))
    code = LEAN.split("from litefer")[0] + "import litefer\ntry:\n    litefer.create_model\nexcept ImportError as e:\n" \
        "    print(type(e).__name__, '|', e)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rows.append(("`litefer.create_model` without torch", p.stdout.strip() or p.stderr.strip()[-150:],
                 T + "test_without_torch.py::test_torch_names_of_the_python_api_name_the_extra_without_torch"))
    return rows


def static_probes(url: str) -> list[tuple[str, str, str]]:
    """HEAD, refused gzip, a NUL byte and a Range on the page's vendor files (present after `make web`)."""
    import http.client

    from litefer.serve.app import vendor_file

    big = next((f for f in ("opencv/opencv.js", "ort/ort-wasm-simd-threaded.wasm") if (vendor_file(f) or (0, 0))[1]), None)
    pin = T + "test_serve_api.py::test_vendor_files_answer_head_refused_gzip_and_nul_bytes"
    if big is None:
        return [("static vendor probes", "not run: no gzipped vendor file here (run `make web`)", pin)]

    def ask(method: str, path: str, headers: dict) -> str:
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return (f"{r.status}, Content-Encoding {r.getheader('content-encoding') or 'none'}, "
                f"Content-Length {r.getheader('content-length')}, {len(body)} bytes read"
                + (f", Content-Range {r.getheader('content-range')}" if r.getheader("content-range") else ""))

    path = f"/static/vendor/{big}"
    return [(f"`HEAD {path}` (stored gzipped), Accept-Encoding: gzip", ask("HEAD", path, {"Accept-Encoding": "gzip"}), pin),
            (f"`GET {path}`, Accept-Encoding: gzip;q=0", ask("GET", path, {"Accept-Encoding": "gzip;q=0"}), pin),
            (f"`GET {path}`, Accept-Encoding: gzip;q=0, identity;q=1",
             ask("GET", path, {"Accept-Encoding": "gzip;q=0, identity;q=1"}), pin),
            ("`GET /static/vendor/%00`", ask("GET", "/static/vendor/%00", {}), pin),
            (f"`GET {path}`, Accept-Encoding: gzip, Range: bytes=0-99 (kept: a range of the gzip bytes, RFC 9110)",
             ask("GET", path, {"Accept-Encoding": "gzip", "Range": "bytes=0-99"}),
             "docs/guides/reliability.md (decision, no test)")]


# ----------------------------------------------------------------------------- issue 20's second round

def output_path_probes(tmp: Path) -> list[tuple[str, str, str]]:
    """Results written into a FIFO, through a symbolic link, into this process's pipe through a link
    like /dev/stdout and, as root only, into a character device: all made in ``tmp``, so that a
    regression can replace no real /dev entry."""
    fast = ["--sample", "--backend", "onnxruntime", "--no-progress"]
    pin = T + "test_utils.py::"
    return [("`litefer predict --csv FIFO` (a reader thread on the FIFO)", fifo_output_probe(tmp, fast),
             pin + "test_a_fifo_is_written_into"),
            ("`litefer predict --csv LINK` (a symbolic link to an older results file)", link_output_probe(tmp, fast),
             pin + "test_a_symbolic_link_stays_a_link_and_its_target_gets_the_content"),
            ("`litefer predict --json T/stdout`, stdout a pipe; T/stdout links to /proc/self/fd/1 as /dev/stdout does",
             stdout_link_output_probe(tmp, fast), pin + "test_a_fifo_is_written_into"),
            ("`litefer predict --csv NODE`, NODE a character device with /dev/null's numbers",
             device_output_probe(tmp, fast), pin + "test_a_device_node_stays_a_device")]


def _file_kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device",
             stat.S_ISREG: "a regular file"}
    return next((name for test, name in kinds.items() if test(mode)), "something else")


def fifo_output_probe(tmp: Path, fast: list[str]) -> str:
    fifo = tmp / "results.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    p = litefer("predict", *fast, "--csv", fifo, timeout=120)
    reader.join(30)
    if reader.is_alive():                        # nothing opened the FIFO: release the reader
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    rows = len(got[0].splitlines()) - 1 if got else None
    return (f"exit {p.returncode}; the reader got " + (f"the header and {rows} row(s)" if got else "nothing in 30 s")
            + f"; after: {_file_kind(fifo)}")


def link_output_probe(tmp: Path, fast: list[str]) -> str:
    (tmp / "kept").mkdir()
    target, link = tmp / "kept" / "results.csv", tmp / "results.csv"
    target.write_text("old results\n")
    link.symlink_to(target)
    p = litefer("predict", *fast, "--csv", link, timeout=120)
    text = target.read_text()
    held = "its old content" if text.startswith("old results") else f"the header and {len(text.splitlines()) - 1} row(s)"
    others = sorted(x.name for x in target.parent.iterdir() if x != target)
    return (f"exit {p.returncode}; after: the link is {_file_kind(link)}, its target {_file_kind(target)} holding "
            f"{held}; other files beside the target: {others or 'none'}")


def stdout_link_output_probe(tmp: Path, fast: list[str]) -> str:
    """``--json /dev/stdout`` without the real /dev/stdout: a regression that renamed over it would
    replace a system file (as root); this link is the same kind and lives in ``tmp``."""
    link = tmp / "stdout"
    link.symlink_to("/proc/self/fd/1")
    p = litefer("predict", *fast, "--json", link, timeout=120)
    lines = p.stdout.splitlines()
    start = next((i for i, x in enumerate(lines) if x == "{"), None)
    try:
        doc = json.loads("\n".join(lines[start:])) if start is not None else None
        got = f"the JSON document ({sum(len(i['faces']) for i in doc['inputs'])} face(s))" if doc else "no JSON document"
    except (ValueError, KeyError) as e:
        got = f"no JSON document that parses ({type(e).__name__})"
    return (f"exit {p.returncode}; the pipe got {start if start is not None else len(lines)} line(s) of the printed "
            f"table, then {got}; after: T/stdout is {_file_kind(link)}")


def device_output_probe(tmp: Path, fast: list[str]) -> str:
    if os.geteuid() != 0:
        return f"not run: making a device node needs root (uid {os.geteuid()})"
    node = tmp / "null"
    rdev = os.stat("/dev/null").st_rdev                      # read only: the real node is never written
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, rdev)
    except OSError as e:
        return f"not run: mknod refused ({e})"
    p = litefer("predict", *fast, "--csv", node, timeout=120)
    kind = _file_kind(node)
    numbers = f" ({os.major(rdev)}, {os.minor(rdev)})" if kind == "a character device" else ""
    return f"exit {p.returncode}; after: {kind}{numbers}"


def eval_unreadable_probe(tmp: Path) -> tuple[str, str, str]:
    """A folder data set (ROOT/<class>/*) of crops of the sample photo's face, one file not an image."""
    import cv2

    from litefer.inference.samples import sample_bgr

    face = sample_bgr()[40:200, 150:300]
    root = tmp / "faces"
    for cls in ("happiness", "neutral"):
        (root / cls).mkdir(parents=True)
        for j in range(3):
            cv2.imwrite(str(root / cls / f"{j}.png"), cv2.resize(face, (48 + 16 * j, 48 + 16 * j)))
    (root / "neutral" / "broken.png").write_bytes(b"not an image")
    report_json = tmp / "eval.json"
    p = litefer("eval", "--weights", "default", "--data", root, "--dataset", "folder", "--split", "train",
                "--json", report_json, timeout=120)
    warned = [x for x in p.stderr.splitlines() if "broken.png" in x]
    counted = [x for x in p.stdout.splitlines() if x.startswith("skipped")]
    listed = json.loads(report_json.read_text()).get("skipped") if report_json.is_file() else None
    warning = "..." + warned[0][max(warned[0].find("skipped"), 0):][:130] if warned else "none naming it"
    return ("`litefer eval` on a folder data set holding a file that is not an image",
            f"exit {p.returncode}; warning: {warning}; report: {counted[0] if counted else 'no count'}; "
            f"JSON `skipped`: {len(listed) if listed is not None else 'absent'} entry(ies)",
            T + "test_eval_backends.py::test_eval_on_a_folder_names_and_counts_unreadable_images")


def foreign_yunet_probes(tmp: Path) -> list[tuple[str, str, str]]:
    """The packaged expression model (an ONNX file, not YuNet) offered as the YuNet detector; the
    fetch runs with a cache of its own so that nothing real is replaced."""
    from litefer.inference.backends import resolve_weights

    foreign = Path(resolve_weights("default", "onnxruntime")[0])
    cache = tmp / "cache"
    p = litefer("fetch", "yunet", "--url", foreign.as_uri(), timeout=120, env={**os.environ, "LITEFER_CACHE": str(cache)})
    cached = sorted(str(x.relative_to(cache)) for x in cache.rglob("*") if x.is_file())
    try:
        served = cli_outcome(litefer("serve", "--detector", foreign, "--port", "0", timeout=30))
    except subprocess.TimeoutExpired:
        served = "still serving after 30 s (stopped by the probe): not refused at startup"
    pin = T + "test_fetch.py::"
    return [(f"`litefer fetch yunet --url file://.../{foreign.name}` (not YuNet)",
             f"{cli_outcome(p)}; files in the cache after: {cached or 'none'}",
             pin + "test_an_onnx_model_that_is_not_yunet_is_refused_and_not_cached"),
            (f"`litefer serve --detector {foreign.name}` (not YuNet)", served,
             pin + "test_serve_refuses_a_foreign_onnx_detector_at_startup")]


BAD_PREPROCESS = {"std [0, 0, 0]": {"std": [0, 0, 0]}, "input_size 100000": {"input_size": 100000},
                  "a preprocess block without input_size": {"input_size": None}}


def bad_cards(tmp: Path) -> list[tuple[str, Path, Path]]:
    """The packaged ONNX model with each of :data:`BAD_PREPROCESS` in its card, as an ``.onnx`` file
    (metadata rewritten by ``litefer.onnxproto``) and as a ``.json`` card."""
    from litefer.card import META_KEY, onnx_metadata
    from litefer.inference.backends import resolve_weights
    from litefer.onnxproto import with_metadata

    model = Path(resolve_weights("default", "onnxruntime")[0]).read_bytes()
    card = onnx_metadata(resolve_weights("default", "onnxruntime")[0])
    out = []
    for i, (name, change) in enumerate(BAD_PREPROCESS.items()):
        pre = {k: v for k, v in {**card["preprocess"], **change}.items() if v is not None}
        bad = {**card, "preprocess": pre}
        onnx, js = tmp / f"card{i}.onnx", tmp / f"card{i}.json"
        onnx.write_bytes(with_metadata(model, META_KEY, json.dumps(bad)))
        js.write_text(json.dumps(bad))
        out.append((name, onnx, js))
    return out


CARD_PIN = T + "test_card_prior.py::test_card_preprocess_values_are_checked_when_the_card_is_read"


def onnx_card_probes(cards) -> list[tuple[str, str, str]]:
    return [(f"`litefer predict --weights card.onnx`, its card with {name}",
             cli_outcome(litefer("predict", "--sample", "--weights", onnx, "--no-progress", timeout=120)), CARD_PIN)
            for name, onnx, _ in cards]


def api_outcome(call) -> str:
    """What a Python call returns, or its exception's type and message (one line or not)."""
    try:
        return f"accepted, no error: {call()!r}"[:140]
    except Exception as e:  # noqa: BLE001 - the probe reports whatever is raised
        lines = str(e).splitlines()
        return f"{type(e).__name__} ({len(lines)} line(s)): {lines[0][:150] if lines else ''}"


def python_api_probes(tmp: Path, cards) -> list[tuple[str, str, str]]:
    import litefer as lf
    from litefer.card import read_card

    rows = shared_recognizer_probes() + exif_probes(tmp)
    pin = T + "test_recognizer.py::test_sizes_and_counts_must_be_positive"
    for field, value in (("max_side", 0), ("max_side", -640), ("min_face", 0)):
        rows.append((f"`Recognizer({field}={value})`", api_outcome(lambda: lf.Recognizer(**{field: value})),
                     f"{pin}[{field}-{value}]"))
    rows += [(f"`litefer.read_card(card.json)`, a card with {name}", api_outcome(lambda: read_card(js)), CARD_PIN)
             for name, _, js in cards]
    return rows


def thread_probe_images() -> list:
    """12 images with 0 to 4 faces: the sample photo mirrored, scaled, blurred, darkened, beside a
    mirrored half-size copy of itself on grey, stacked; and a grey image with none."""
    import cv2
    import numpy as np

    from litefer.inference.samples import sample_bgr

    photo = sample_bgr()
    pair = np.full((512, 900, 3), 128, np.uint8)
    pair[:, :512] = photo
    pair[120:376, 620:876] = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)[:, ::-1]
    images = [photo, photo[:, ::-1], cv2.resize(photo, (320, 320), interpolation=cv2.INTER_AREA),
              cv2.resize(photo, (800, 800)), cv2.GaussianBlur(photo, (5, 5), 0), (photo * 0.6).astype(np.uint8),
              pair, pair[:, ::-1], np.vstack([pair, pair]), cv2.resize(pair, (600, 341), interpolation=cv2.INTER_AREA),
              np.hstack([photo, photo[:, ::-1]]), np.full((300, 400, 3), 128, np.uint8)]
    return [np.ascontiguousarray(im) for im in images]


def shared_recognizer_configs() -> dict[str, dict]:
    """Recognizer settings of the thread probe: Haar with each backend installed, and YuNet where its
    model file is."""
    import importlib.util

    configs = {"Haar, onnxruntime": dict(backend="onnxruntime")}
    if importlib.util.find_spec("torch"):
        configs["Haar, torch"] = dict(backend="torch")
    if detect_scale.YUNET.is_file():
        configs["YuNet, onnxruntime"] = dict(backend="onnxruntime", detector=str(detect_scale.YUNET))
    return configs


def shared_recognizer_probes(rounds: int = 2) -> list[tuple[str, str, str]]:
    """One recognizer per configuration, each image recognized serially, then every image ``rounds``
    times by 4 threads sharing it; the threads' results compared with the serial ones. Each in a
    child process: a detector shared unsafely can corrupt the heap and kill its process."""
    pin = T + "test_threads.py::test_one_{}_recognizer_shared_by_four_threads"
    rows = []
    for name, kw in shared_recognizer_configs().items():
        code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import robustness as r; "
                f"print(json.dumps(r.shared_recognizer_outcome({name!r}, {rounds})))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        if p.returncode == 0:
            outcome = json.loads(p.stdout.strip().splitlines()[-1])
        else:
            died = signal.Signals(-p.returncode).name if p.returncode < 0 else f"exit {p.returncode}"
            last = (p.stderr.strip().splitlines() or [""])[-1][:120]
            outcome = f"the process died ({died})" + (f": {last}" if last else "")
        if kw["backend"] == "torch":
            outcome += " (the tests share an onnxruntime recognizer; this row is the torch one)"
        rows.append((f"one `Recognizer` ({name}) shared by 4 threads, {len(thread_probe_images())} images x {rounds}",
                     outcome, pin.format("yunet" if "YuNet" in name else "haar")))
    return rows


def shared_recognizer_outcome(config: str, rounds: int) -> str:
    """:func:`shared_recognizer_probes`' measurement, in the child process."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import litefer as lf

    rec, images = lf.Recognizer(**shared_recognizer_configs()[config]), thread_probe_images()

    def summary(faces) -> list[tuple]:
        return [(f.box, f.label, round(f.score, 4)) for f in faces]

    def call(i: int):
        try:
            return i, summary(rec.recognize(images[i])), None
        except Exception as e:  # noqa: BLE001 - cv2.error and the like are what this probe counts
            return i, None, f"{type(e).__module__}.{type(e).__name__}"

    serial = [summary(rec.recognize(im)) for im in images]
    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(call, [i for _ in range(rounds) for i in range(len(images))]))
    wrong = [i for i, got, err in shared if err is None and got != serial[i]]
    errors = Counter(err for _, _, err in shared if err)
    return (f"{sum(map(len, serial))} faces serially; of {len(shared)} shared calls {len(wrong)} differ from the serial "
            f"results ({len(set(wrong))} image(s)), {sum(errors.values())} raised" + (f" {dict(errors)}" if errors else ""))


def exif_probes(tmp: Path) -> list[tuple[str, str, str]]:
    """The sample photo stored sideways with the EXIF orientation that turns it upright, as phones
    write portraits; recognized from ``Image.open(path)`` and from the path."""
    import numpy as np
    from PIL import Image

    import litefer as lf
    from litefer.inference.samples import sample_rgb

    rec = lf.Recognizer(backend="onnxruntime")
    rows = []
    for orientation, turns in ((6, 1), (8, -1)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp / f"sideways_{orientation}.jpg"
        Image.fromarray(np.ascontiguousarray(np.rot90(sample_rgb(), turns))).save(path, quality=92, exif=exif)
        with Image.open(path) as im:
            from_pil = rec.recognize(im)
        from_path = rec.recognize(path)
        faces = ", ".join(f"{f.label} {f.score:.3f} at {f.box}" for f in from_pil) or "none"
        rows.append((f"`Recognizer.recognize(Image.open(p))`, p a JPEG stored sideways with EXIF orientation {orientation}",
                     f"{len(from_pil)} face(s): {faces}; from the path: {len(from_path)}, "
                     f"{'the same boxes' if [f.box for f in from_pil] == [f.box for f in from_path] else 'other boxes'}",
                     T + f"test_recognizer.py::test_an_open_pil_image_gets_its_exif_orientation_like_a_path"
                         f"[{orientation}-{turns}]"))
    return rows


def model_polling(url: str, jpeg: bytes, seconds: float = 4.0, pollers: int = 8) -> list[dict]:
    """/healthz (a request every 20 ms) and /v1/recognize (one client) latency for ``seconds``,
    alone and while ``pollers`` clients GET /v1/model as fast as it answers (issue 20, item 11)."""
    phases = []
    for count in (0, pollers):
        polled = {}
        poll = threading.Thread(target=lambda: polled.update(
            L.run_load(url, None, count, 1, duration_s=seconds + 1.0, path="/v1/model").summary())) if count else None
        if poll:
            poll.start()
            time.sleep(0.5)
        health = {}
        probe = threading.Thread(target=lambda: health.update(
            L.run_load(url, None, 1, 1, duration_s=seconds, pause_s=0.02, path="/healthz").summary()))
        probe.start()
        recognize = L.run_load(url, jpeg, 1, 1, duration_s=seconds).summary()
        probe.join()
        if poll:
            poll.join()
        phases.append({"pollers": count, "seconds": seconds, "model": polled, "healthz": health, "recognize": recognize})
        time.sleep(0.5)
    return phases


def model_polling_section(phases: list[dict]) -> list[str]:
    out = ["## Polling /v1/model", "",
           "Issue 20 item 11: `GET /v1/model` built a Haar detector per call on the event loop. For "
           f"{phases[0]['seconds']:g} s, one client GETs /healthz every 20 ms and one sends the astronaut "
           f"JPEG to /v1/recognize, one request after another, alone and while {phases[-1]['pollers']} clients GET "
           "/v1/model as fast as it answers (probe server). Pinned by "
           f"`{T}test_serve_api.py::test_polling_the_model_card_and_cascades_builds_no_detector`. The issue measured "
           "/healthz at 3 ms alone and 168 ms with the pollers when every call built a detector; the pollers' "
           f"{phases[-1]['model'].get('throughput_rps')} answers a second share the same CPUs as the measured clients, "
           "so some rise remains.", "",
           *table(["/v1/model pollers", "/v1/model answers", "/healthz requests", "/healthz p50 ms", "/healthz p99 ms",
                   "/v1/recognize requests", "/v1/recognize p50 ms", "/v1/recognize p99 ms"],
                  [[p["pollers"], p["model"].get("statuses", "-"), p["healthz"]["requests"], p["healthz"]["p50_ms"],
                    p["healthz"]["p99_ms"], p["recognize"]["requests"], p["recognize"]["p50_ms"], p["recognize"]["p99_ms"]]
                   for p in phases])]
    return out + [""]


# ----------------------------------------------------------------------------- report

def report(command: str, sections: dict, polling: list[dict], flood: dict, uploads: list[dict], large: dict,
           scale: dict, load_start=None) -> str:
    f, s = flood["flood"], flood["load"]
    parts = [*header("litefer robustness probes", command, f"{platform.system()} {platform.release()}", load_start),
             "Other jobs on the machine raise the latencies.", "",
             "Server: packaged model, onnxruntime, default workers and queue, `--header-timeout 2 --upload-timeout 2 "
             "--max-connections 256`.", ""]
    for title, rows in sections.items():
        parts += [f"## {title}", "", *table(["probe", "what litefer does (measured)", "pinned by"],
                                            [[p, o, f"`{t}`"] for p, o, t in rows]), ""]
    parts += [*model_polling_section(polling),
              "## Load during a slow-client flood", "",
              f"{f['connections']} connections from {f['sources']} addresses send `POST {f['path']}` declaring 1 MB "
              "and drip a byte a second; at the "
              f"same time {s['clients']} clients send {s['requests']} `POST /v1/recognize` (astronaut JPEG).", "",
              *table(["flood connections", "closed by the server", "last closed after s",
                      f"still open after {f['watched_s']:g} s", "requests", "statuses", "p50 ms", "p99 ms"],
                     [[f["connections"], f["closed_by_server"], f["last_closed_s"], f["still_open"], s["requests"],
                       s["statuses"], s["p50_ms"], s["p99_ms"]]]), "",
              f"During this phase the CPUs were busy {flood['cpu']['busy_cores']:.2f} of {flood['cpu']['cores']} cores, "
              f"{flood['cpu']['other_processes_cores']:.2f} of them for other processes than the server and these "
              "clients: the latencies depend on that share.", "",
              *upload_flood_section(uploads),
              "## Memory around large images", "",
              f"{large['images']} PNGs of 39.7 MP ({large['png_bytes'] // 1024} KB each), {large['concurrent']} at a time: "
              f"statuses {large['statuses']}, {large['wall_s']} s; server RSS {large['rss_before_mib']} MiB before, "
              f"**{large['rss_after_idle_mib']} MiB** once idle after (one such image is 119 MB decoded).", "",
              "## Small faces in a 12-MP photo", "",
              f"`detect_scale.measure` (as `python benchmarks/detect_scale.py`): before, commit {scale['before']} "
              "searched one copy downscaled to 1280 px; after, that copy finds the large faces and tiles at the scale "
              "`min_face` needs find the others.", "", detect_scale.markdown(scale), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=255, help="slow-body connections of each flood (/healthz, /v1/recognize)")
    ap.add_argument("--large-images", type=int, default=30)
    ap.add_argument("--upload-flood-seconds", type=float, default=20.0,
                    help="length of each phase of the /v1/recognize slow-upload flood")
    ap.add_argument("--only-upload-flood", action="store_true",
                    help="run only the /v1/recognize slow-upload flood and print its section (writes nothing)")
    ap.add_argument("--scale-rounds", type=int, default=3, help="rounds of the 12-MP small-face timing")
    ap.add_argument("--out", default="results/robustness.md")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    jpeg = astronaut_jpeg()
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        tmp = Path(tmp)
        uploads = upload_flood(jpeg, tmp / "upload-flood.log", args.flood, args.upload_flood_seconds)
        if args.only_upload_flood:
            print("\n".join(upload_flood_section(uploads)))
            return 0
        cards = bad_cards(tmp)
        sections = {"Training and data": train_probes(tmp) + [stale_temp_probe(tmp), eval_unreadable_probe(tmp)],
                    "Prediction": predict_probes(tmp, jpeg) + special_input_probes(tmp, jpeg)
                    + [early_interrupt_probe(tmp, jpeg, s) for s in (signal.SIGINT, signal.SIGTERM)]
                    + output_path_probes(tmp),
                    "One-line errors (exit 2, naming the option or file)": error_line_probes(tmp)
                    + foreign_yunet_probes(tmp) + onnx_card_probes(cards),
                    "Fine-tuning (issue 29)": finetune_probes(tmp, jpeg),
                    "Lean install (no torch)": lean_probes(tmp),
                    "Python API": python_api_probes(tmp, cards)}
        sections["Prediction"].append(odd_name_predict_probe(tmp, jpeg))
        url, proc, _ = start_server("default", None, tmp / "server.log", ["--header-timeout", "2", "--upload-timeout", "2",
                                                                         "--max-connections", "256"])
        try:
            limits = L.get_json(url, "/v1/model")[1]["limits"]
            sections["Server"] = server_probes(url, jpeg, limits) + [misfit_weights_probe(tmp)] + static_probes(url)
            polling = model_polling(url, jpeg)
            flood = load_during_flood(url, proc.pid, jpeg, args.flood, clients=4, requests=10)
            large = L.large_image_phase(url, args.large_images)
        finally:
            proc.terminate()
            proc.wait(15)
    scale = detect_scale.measure(rounds=args.scale_rounds)
    command = command_line("robustness.py", argv)
    write(args.out, {"command": command, "sections": sections, "model_polling": polling, "flood": flood,
                     "upload_flood": uploads, "large_images": large, "detect_scale": scale},
          report(command, sections, polling, flood, uploads, large, scale, load_start), load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
