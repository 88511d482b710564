"""litefer.distributed and ``litefer predict --ray``: a real two-node Ray cluster on this machine (two
raylets of one CPU, benchmarks/ray_cluster.py), a real S3-compatible server on 127.0.0.1 (moto), workers and
drivers killed by their PIDs mid-run. The planning, listing and Parquet bookkeeping are tested without Ray.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from face_fixtures import JAFFE, write_video
from ray_cluster import children, ray_env, two_node_cluster

LITEFER = [sys.executable, "-m", "litefer", "predict"]


# ----------------------------------------------------------------------------- without Ray

def test_video_ranges_cover_every_analysed_frame_once(tmp_path):
    """The ranges of a video, read from their first frame on, give the frames a sequential read gives."""
    from litefer.distributed.sources import plan
    from litefer.inference.inputs import iter_frames

    video = str(write_video(tmp_path / "clip.mp4", frames=23))
    tasks = plan([video], {video: 23}, every=2, max_frames=None, frames_per_task=3, images_per_task=8, done=set())
    assert [(t["start"], t["count"]) for t in tasks] == [(0, 3), (6, 3), (12, 3), (18, 3)]
    whole = list(iter_frames(video, every=2))
    pieces = [f for t in tasks for f in iter_frames(video, every=2, max_frames=t["count"], start=t["start"])]
    assert [i for i, _, _ in pieces] == [i for i, _, _ in whole] == list(range(0, 23, 2))
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(pieces, whole))
    done = {tasks[1]["keys"][0]}
    assert [(t["start"], t["count"]) for t in plan([video], {video: 23}, 2, 5, 3, 8, set())] == [(0, 3), (6, 2)]
    assert [t["start"] for t in plan([video], {video: 23}, 2, None, 3, 8, done)] == [0, 12, 18]


def test_list_files_globs_and_problems(tmp_path):
    from litefer.distributed.sources import list_inputs

    for name in ("a.png", "b.png", "c.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 50, np.uint8))
    (tmp_path / "list.txt").write_text("# photos\na.png\n\n" + str(tmp_path / "*.jpg") + "\nmissing.png\n")
    found, problems = list_inputs([f"@{tmp_path / 'list.txt'}", str(tmp_path / "a.png"), str(tmp_path / "*.gif")])
    assert found == [str(tmp_path / "a.png"), str(tmp_path / "c.jpg")]
    assert problems == [f"{tmp_path / 'missing.png'}: no such file", f"{tmp_path / '*.gif'}: pattern matches no files"]


def test_parquet_schema_is_the_csv_columns():
    import pyarrow as pa

    from litefer.distributed.parquet import schema
    from litefer.inference.recognizer import COLUMNS, TAIL_COLUMNS

    s = schema(["neutral", "happiness"], internal=False)
    raw = ["raw_label", "raw_score", "raw_neutral", "raw_happiness"]        # smoothed video faces' own values
    assert s.names == COLUMNS + ["neutral", "happiness"] + raw + TAIL_COLUMNS
    assert s.field("x").type == pa.int64() and s.field("happiness").type == pa.float64()
    assert s.field("track").type == pa.int64() and s.field("raw_happiness").type == pa.float64()
    assert s.field("valence").type == pa.float64() and s.field("raw_label").type == pa.string()
    assert s.field("aligned").type == pa.bool_() and s.field("label").type == pa.string()


def test_resume_refuses_other_settings(tmp_path):
    import pyarrow as pa

    from litefer.distributed.parquet import PartsFolder, schema

    parts = PartsFolder(tmp_path, {"every": 1})
    rows = pa.Table.from_pylist([{"source": "a.png", "_item": "a.png", "_keep": True},
                                 {"source": "v.mp4", "_item": "v.mp4#90:30", "_keep": False, "_note": "ends early"}],
                                schema=schema(["neutral"]))
    assert parts.write(rows) == 1 and parts.write(rows) == 0          # an item delivered twice is written once
    with pytest.raises(OSError, match="another run is writing"):
        PartsFolder(tmp_path, {"every": 1})
    parts.close()
    again = PartsFolder(tmp_path, {"every": 1})
    assert again.done == {"a.png", "v.mp4#90:30"} and again.next == 2
    assert again.write_skipped([])[0]["reason"] == "incomplete video"
    again.close()
    with pytest.raises(ValueError, match=r"written with every=1, not 5"):
        PartsFolder(tmp_path, {"every": 5})


def test_bytes_decode_like_files(tmp_path):
    from litefer.inference.inputs import InputError, decode_image_bytes, read_image

    path = tmp_path / "p.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    assert np.array_equal(decode_image_bytes(path.read_bytes(), "s3://b/p.png"), read_image(path))
    with pytest.raises(InputError, match=r"^s3://b/x.jpg: not an image file"):
        decode_image_bytes(b"not a photo", "s3://b/x.jpg")


def test_ray_missing_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\nimport litefer, litefer.distributed\nfrom litefer.cli import main\n"
            f"sys.exit(main(['predict', '--sample', '--ray', 'local', '--parquet', {str(tmp_path)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "litefer predict: error: litefer's Ray recognition (--ray) needs ray, which is not installed: "
        "pip install 'litefer[ray]'"]


@pytest.mark.parametrize("flags, message", [
    (["--parquet", "DIR"], "--parquet needs --ray ADDRESS"),
    (["--ray", "local"], "--ray needs --parquet DIR"),
    (["--ray", "local", "--parquet", "DIR", "--csv", "x.csv"], "--csv is not available with --ray"),
    (["--ray", "local", "--parquet", "DIR", "--images-per-task", "0"], "--images-per-task must be >= 1"),
    (["--ray", "local", "--parquet", "DIR", "--ray-env", "LITEFER_UNSET_VARIABLE"], "--ray-env LITEFER_UNSET"),
    (["--ray", "nowhere", "--parquet", "DIR"], "--ray 'nowhere': expected local (start Ray"),
])
def test_ray_flags_are_checked_before_ray_starts(flags, message, tmp_path, capsys, monkeypatch):
    from litefer.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)          # nothing reaches Ray: the checks come first
    flags = [str(tmp_path / "out") if f == "DIR" else f for f in flags]
    assert main(["predict", "--sample", *flags]) == 2
    assert message in capsys.readouterr().err


def test_import_litefer_does_not_import_ray():
    code = "import sys, litefer, litefer.distributed, litefer.cli.predict; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], env=ray_env(), check=True, timeout=120)


# ----------------------------------------------------------------------------- on a two-node cluster

@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray.data")
    with two_node_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A list file of 96 JAFFE photos, a face-less picture and a broken one; a 24-frame video."""
    photos = sorted(JAFFE.glob("*.tiff"))[:96] if JAFFE.is_dir() else []
    if len(photos) < 96:
        pytest.skip(f"JAFFE photos not found in {JAFFE} (../shared/data is absent on this machine)")
    d = tmp_path_factory.mktemp("ray_inputs")
    cv2.imwrite(str(d / "grey.png"), np.full((120, 160, 3), 128, np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (d / "photos.txt").write_text("\n".join(map(str, photos)) + "\n")
    return {"list": f"@{d / 'photos.txt'}", "extra": [str(d / "grey.png"), str(d / "broken.jpg")],
            "video": str(write_video(d / "clip.mp4", frames=24)), "photos": [str(p) for p in photos]}


@pytest.fixture(scope="module")
def plain(inputs, tmp_path_factory):
    """What plain ``litefer predict --csv`` gives for the same inputs, in this process."""
    import pandas as pd

    from litefer.cli import main

    csv = tmp_path_factory.mktemp("plain") / "plain.csv"
    assert main(["predict", inputs["list"], *inputs["extra"], inputs["video"], "--detector", "haar", "--csv", str(csv),
                 "--no-progress", "--smooth", "0"]) == 3    # smoothing looks across Ray's range boundaries: off
    return pd.read_csv(csv)


def _predict(cluster, folder, *args, wait=True):
    address, _, env = cluster
    cmd = [*LITEFER, *args, "--ray", address, "--parquet", str(folder), "--detector", "haar", "--smooth", "0"]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _same_labels(df, plain, columns=("source", "frame", "face", "label")):
    """The same rows in the same order, whatever the dtypes (Parquet's int64 beside the CSV's floats)."""
    import pandas as pd

    def cells(frame):
        return [tuple(None if pd.isna(v) else float(v) if isinstance(v, (int, float, np.number)) else v
                      for v in row) for row in frame[list(columns)].astype(object).itertuples(index=False)]
    got, want = cells(df), cells(plain)
    assert len(got) == len(want) and got == want


def test_two_nodes_give_plain_predicts_table(cluster, inputs, plain, tmp_path):
    """Two actors of 0.9 CPU fit only one per 1-CPU node: the run spans both nodes. Rows, labels and
    scores equal plain predict's photo by photo and frame by frame (the video split in 8 ranges)."""
    import pandas as pd

    run = _predict(cluster, tmp_path, inputs["list"], *inputs["extra"], inputs["video"], "--frames-per-task", "3",
                   "--images-per-task", "16")
    assert run.returncode == 3, run.stderr                # the broken photo skipped, the rest processed
    df = pd.read_parquet(tmp_path)
    _same_labels(df, plain)
    assert np.allclose(df["score"], plain["score"], atol=1e-5, equal_nan=True)
    video = df[df["source"] == inputs["video"]]
    assert video["frame"].tolist() == list(range(24)) and video["time"].is_monotonic_increasing
    tracked = video.dropna(subset=["track"])        # each range of 3 frames tracked on its own, ids apart
    assert ((tracked["track"] // 1000) == (tracked["frame"] // 3) * 3).all()
    grey = df[df["source"].str.endswith("grey.png")]
    assert len(grey) == 1 and grey["face"].isna().all() and grey["error"].isna().all()
    skipped = pd.read_parquet(tmp_path / "_skipped.parquet")
    assert skipped[["kind", "reason"]].values.tolist() == [["image", "not an image"]]
    assert "skipped 1: 1 not an image" in run.stderr


def _map_workers(cluster) -> list[int]:
    return [pid for pid, cmd in children(cluster[1]) if "MapWorker" in cmd and "RecognizerWorker" in cmd]


def _wait_for(check, timeout=180.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(check)


def test_worker_killed_mid_run_is_retried(cluster, inputs, plain, tmp_path):
    """SIGKILL to a recognizer actor once parts are being written: Ray restarts it and retries its
    task, and every photo is in the output exactly once."""
    import pandas as pd

    proc = _predict(cluster, tmp_path, inputs["list"], "--images-per-task", "3", wait=False)
    _wait_for(lambda: (tmp_path / "part-000002.parquet").exists())
    victim = _wait_for(lambda: _map_workers(cluster))[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    parts = sorted(tmp_path.glob("part-*.parquet"))
    assert len(parts) > 2 and any(p.stat().st_mtime > killed_at for p in parts)     # the run went on after it
    df = pd.read_parquet(tmp_path)
    assert sorted(df["source"]) == sorted(inputs["photos"])                         # each once
    _same_labels(df, plain[plain["source"].isin(inputs["photos"])])


def test_killed_driver_leaves_whole_parts_and_rerun_resumes(cluster, inputs, plain, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    proc = _predict(cluster, tmp_path, inputs["list"], "--images-per-task", "3", wait=False)
    _wait_for(lambda: (tmp_path / "part-000003.parquet").exists())
    proc.kill()
    proc.wait()
    written = sorted(tmp_path.glob("part-*.parquet"))
    assert all(pq.read_metadata(p).num_rows for p in written)                  # every part whole and readable
    assert all(p.name.startswith(("part-", "_", ".")) for p in tmp_path.iterdir())
    first = pd.read_parquet(tmp_path)
    assert 0 < len(first) < len(inputs["photos"])
    run = _predict(cluster, tmp_path, inputs["list"], "--images-per-task", "3")
    assert run.returncode == 0, run.stderr
    assert f"{len(inputs['photos']) - len(first)} item(s) recognised now" in run.stderr
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    df = pd.read_parquet(tmp_path)
    assert sorted(df["source"]) == sorted(inputs["photos"])
    _same_labels(df, plain[plain["source"].isin(inputs["photos"])])


@pytest.fixture
def s3_bucket(monkeypatch):
    """A moto S3 server on 127.0.0.1 (a thread of this process, stopped by its handle) with a bucket."""
    moto_server = pytest.importorskip("moto.server")
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)     # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3")
    client.create_bucket(Bucket="faces")
    try:
        yield client, env
    finally:
        server.stop()


def test_s3_photos_and_video_through_the_python_api(cluster, inputs, plain, s3_bucket, monkeypatch):
    """``recognize`` on s3:// URIs (a prefix and a glob): the actors read the objects, the driver only lists
    them; the credentials reach the workers through runtime_env. Rows equal plain predict's on the files."""
    import ray

    from litefer.distributed import recognize

    client, env = s3_bucket
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")             # this process is the driver of the test cluster
    photos = inputs["photos"][:6]
    for p in photos:
        client.upload_file(p, "faces", f"photos/{Path(p).name}")
    client.upload_file(inputs["video"], "faces", "videos/clip.mp4")
    try:
        ds = recognize(["s3://faces/photos/", "s3://faces/videos/*.mp4"], address=cluster[0], detector="haar",
                       frames_per_task=5, runtime_env={"env_vars": env}, smooth=0)
        df = ds.to_pandas()
    finally:
        ray.shutdown()
    df["source"] = df["source"].str.replace("s3://faces/photos/", str(JAFFE) + "/").str.replace(
        "s3://faces/videos/clip.mp4", inputs["video"])
    want = plain[plain["source"].isin(photos + [inputs["video"]])]
    _same_labels(df, want)
