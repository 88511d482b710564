"""`litefer predict`: images, folders, globs, videos, webcam errors, outputs and the skip summary."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import pandas as pd
import pytest
from face_fixtures import checkpoint, onnx_file, photo_dir, video_file  # noqa: F401

from face_fixtures import write_video
from litefer.cli import main as cli
from litefer.inference.predict import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_TERMINATED


@pytest.fixture
def inputs(photo_dir, video_file, tmp_path):
    """A folder with good and bad images, a good video and a fake one."""
    d = tmp_path / "in"
    shutil.copytree(photo_dir, d)
    shutil.copy(video_file, d / ("clip" + video_file.suffix))
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return d


def test_folder_with_images_videos_and_bad_files(checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(["predict", str(inputs), "--weights", str(checkpoint), "--every", "4", "--json", str(out / "r.json"),
                "--csv", str(out / "r.csv"), "--save-annotated", str(out / "ann"), "--scores"])
    assert code == 3                                                    # some inputs skipped
    captured = capsys.readouterr()
    table, summary = captured.out, captured.err
    assert "happiness" in table and "no face found" in table and "skipped:" in table
    assert "9 image(s) (8 with faces)" in summary and "1 video(s)/stream(s), 3 frame(s) analysed" in summary
    assert "skipped 4:" in summary
    for reason in ("1 truncated or corrupt image", "1 not an image", "1 empty file", "1 unopenable video"):
        assert reason in summary
    report = json.loads((out / "r.json").read_text())
    assert report["summary"]["skipped"] == 4 and report["summary"]["frames"] == 3
    video = next(e for e in report["inputs"] if e["kind"] == "video" and e["error"] is None)
    assert [f["frame"] for f in video["frames"]] == [0, 4, 8] and video["every"] == 4
    two = next(e for e in report["inputs"] if e["source"].endswith("two_faces.png"))
    assert len(two["faces"]) == 2 and set(two["faces"][0]["scores"]) >= {"neutral", "happiness"}
    df = pd.read_csv(out / "r.csv")
    assert (df["source"].str.endswith("truncated.jpg") & df["error"].notna()).any()
    assert df[df["frame"].notna()]["frame"].tolist() == [0, 4, 8]
    ann = sorted(p.name for p in (out / "ann").iterdir())
    assert "two_faces.png" in ann and "astronaut.jpg" in ann and not any(n.startswith(".") for n in ann)
    vid = [n for n in ann if n.startswith("clip")]
    assert len(vid) == 1
    cap = cv2.VideoCapture(str(out / "ann" / vid[0]))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert cv2.imread(str(out / "ann" / "two_faces.png")).shape == (512, 900, 3)


def test_globs_stdout_csv_and_onnx_weights(onnx_file, photo_dir, capsys):
    code = cli(["predict", str(photo_dir / "astro*"), str(photo_dir / "nothing_*.png"), "--weights", str(onnx_file),
                "--csv", "--no-progress"])
    assert code == 3                                                    # a pattern matched nothing
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("source,") and len(lines) == 3                  # astronaut.jpg and .png
    assert "1 pattern without matches" in captured.err


def test_json_to_stdout_with_progress_bar(checkpoint, photo_dir, video_file, capsys):
    code = cli(["predict", str(photo_dir / "astronaut.png"), str(video_file), "--weights", str(checkpoint),
                "--json", "--progress", "--max-frames", "2"])
    assert code == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["summary"]["images"] == 1 and data["summary"]["frames"] == 2
    assert "litefer predict" in captured.err and "file" in captured.err       # the tqdm bar on stderr


def test_unavailable_webcam_and_nothing_usable(checkpoint, photo_dir, capsys):
    assert cli(["predict", "--webcam", "97", "--weights", str(checkpoint)]) == 1
    assert "webcam 97: cannot open as a video" in capsys.readouterr().err
    assert cli(["predict", str(photo_dir / "truncated.jpg"), "--weights", str(checkpoint)]) == 1
    assert "skipped 1: 1 truncated or corrupt image" in capsys.readouterr().err


def test_usage_errors(checkpoint, photo_dir, tmp_path, capsys):
    assert cli(["predict", "--weights", str(checkpoint)]) == 2
    assert "give at least one PATH" in capsys.readouterr().err
    assert cli(["predict", str(photo_dir), "--every", "0"]) == 2
    assert cli(["predict", str(photo_dir), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert cli(["predict", str(photo_dir), "--weights", str(checkpoint), "--detector", "yunet"]) == 2
    assert "needs a model file" in capsys.readouterr().err


def test_sample_photo_demo(checkpoint, tmp_path, capsys):
    assert cli(["predict", "--sample", "--weights", str(checkpoint), "--save-annotated", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "astronaut.jpg" in out and "177" in out
    assert (tmp_path / "astronaut.jpg").is_file()


def test_exit_codes_tell_complete_partial_and_interrupted_runs(checkpoint, photo_dir, monkeypatch, capsys):
    """A partial run and a Ctrl-C both exited 0 before."""
    good = str(photo_dir / "astronaut.png")
    assert cli(["predict", good, "--weights", str(checkpoint)]) == EXIT_OK
    assert cli(["predict", good, str(photo_dir / "truncated.jpg"), "--weights", str(checkpoint)]) == EXIT_PARTIAL
    from litefer.inference import predict

    seen = []

    def image_then_ctrl_c(self, r):
        if seen:
            raise KeyboardInterrupt
        seen.append(r)

    monkeypatch.setattr(predict.Output, "image", image_then_ctrl_c)
    capsys.readouterr()
    assert cli(["predict", good, str(photo_dir / "astronaut.jpg"), "--weights", str(checkpoint)]) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


def test_broken_links_and_link_loops_in_a_folder_are_reported(checkpoint, photo_dir, tmp_path, capsys):
    """Dangling symbolic links and link loops were dropped without a word before."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(photo_dir / "astronaut.png", d / "a.png")
    (d / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (d / "self.png").symlink_to(d / "self.png")
    (d / "sub").mkdir()
    (d / "sub" / "up").symlink_to(d)                              # a folder loop
    (d / "sub" / "notes.txt").symlink_to(tmp_path / "nowhere")     # not an input: ignored, as before
    code = cli(["predict", str(d), "--weights", str(checkpoint), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL, err
    assert "1 image(s)" in err and "skipped 3:" in err
    assert "1 broken link" in err and "2 link loop" in err
    report = json.loads((tmp_path / "r.json").read_text())["summary"]
    skipped = sorted(report["skipped_inputs"])
    assert [m.split(":")[0] for m in skipped] == sorted([str(d / "gone.jpg"), str(d / "self.png"), str(d / "sub" / "up")])
    assert "deleted.jpg, which does not exist" in " ".join(skipped)


def test_truncated_video_is_reported_incomplete(checkpoint, tmp_path, capsys):
    """A video cut short was analysed up to the break with no warning before."""
    import cv2

    full = write_video(tmp_path / "clip.avi", frames=30, size=(160, 120))
    assert full.suffix == ".avi"
    cap = cv2.VideoCapture(str(full))
    announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    code = cli(["predict", str(cut), "--weights", str(checkpoint), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL, err
    assert "1 video(s) incomplete" in err and f"of the {announced} its header announces" in err
    report = json.loads((tmp_path / "r.json").read_text())
    video = report["inputs"][0]
    assert 0 < len(video["frames"]) < announced and "truncated" in video["warning"]
    assert report["summary"]["incomplete_videos"] == [video["warning"]]
    assert cli(["predict", str(full), "--weights", str(checkpoint)]) == EXIT_OK


def test_sigterm_writes_the_results_so_far(checkpoint, photo_dir, tmp_path):
    """SIGTERM (timeout, docker stop) exited 143 without writing the CSV or JSON."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        shutil.copy(photo_dir / "astronaut.jpg", folder / f"p{i:03}.jpg")
    out = tmp_path / "r.csv"
    argv = ["predict", str(folder), "--weights", str(checkpoint), "--batch-size", "1", "--csv", str(out),
            "--json", str(tmp_path / "r.json")]
    proc = subprocess.Popen([sys.executable, "-u", "-c", f"from litefer.cli import main; raise SystemExit(main({argv!r}))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "p000" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err
    rows = pd.read_csv(out)
    assert 1 <= rows["source"].nunique() < 300
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["images"] == rows["source"].nunique()


def test_heic_photos_in_a_folder_are_reported_as_skipped(checkpoint, photo_dir, tmp_path, capsys):
    """A folder scan left .heic files out without a word and exited 0."""
    d = tmp_path / "phone"
    d.mkdir()
    shutil.copy(photo_dir / "astronaut.jpg", d / "good.jpg")
    (d / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic not decoded")
    code = cli(["predict", str(d), "--weights", str(checkpoint), "--json", str(tmp_path / "r.json")])
    assert code == EXIT_PARTIAL
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["images"] == 1 and summary["skipped_by_reason"] == {"HEIC/HEIF image": 1}
    assert "IMG_0001.HEIC: HEIC/HEIF is not supported" in capsys.readouterr().err


def _signal_at(monkeypatch, module, name, signum, at: int):
    """Deliver a real ``signum`` to this process on the ``at``-th call of ``module.name``."""
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.fixture(scope="module")
def folder_of_16(photo_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("sixteen")
    for i in range(16):
        shutil.copy(photo_dir / "astronaut.jpg", d / f"p{i:02}.jpg")
    return d


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_TERMINATED)],
                         ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where, written", [("reading", 5), ("writing", 15)], ids=["reading", "writing"])
def test_an_early_interrupt_writes_every_finished_result(checkpoint, folder_of_16, tmp_path, monkeypatch, capsys,
                                                         signum, status, where, written):
    """With --batch-size 64, results reached the output 64 at a time: Ctrl-C or SIGTERM before the
    first batch was classified wrote no row. Now the images read so far are classified and written
    (signal while reading the 6th image: 5 rows), and so is the rest of a classified batch when the
    signal lands while results are being written (while writing the 3rd of 16: all but that one)."""
    from litefer.inference import predict, recognizer

    if where == "reading":
        _signal_at(monkeypatch, recognizer, "load_image", signum, 6)
    else:
        _signal_at(monkeypatch, predict.Output, "image", signum, 3)
    out = tmp_path / "r.csv"
    code = cli(["predict", str(folder_of_16), "--weights", str(checkpoint), "--batch-size", "64", "--csv", str(out),
                "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert code == status, capsys.readouterr().err
    rows = pd.read_csv(out)
    assert rows["source"].nunique() == written and rows["label"].notna().all()
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["images"] == written


def test_an_interrupt_during_a_video_writes_the_frames_read(checkpoint, tmp_path, monkeypatch, capsys):
    from litefer.inference import recognizer

    video = write_video(tmp_path / "clip.avi", frames=30, size=(160, 120))
    frames_of = recognizer.iter_frames

    def frames_then_ctrl_c(*args, **kwargs):
        for i, item in enumerate(frames_of(*args, **kwargs)):
            if i == 7:
                signal.raise_signal(signal.SIGINT)
            yield item

    monkeypatch.setattr(recognizer, "iter_frames", frames_then_ctrl_c)
    code = cli(["predict", str(video), "--weights", str(checkpoint), "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert code == EXIT_INTERRUPTED, capsys.readouterr().err
    assert len(json.loads((tmp_path / "r.json").read_text())["inputs"][0]["frames"]) == 7


def test_a_heic_photo_named_on_the_command_line_gets_the_same_reason(checkpoint, tmp_path, capsys):
    """A .heic path given by name got the generic 'not an image file'; a folder scan said why."""
    (tmp_path / "IMG_0002.heic").write_bytes(b"\x00\x00\x00\x18ftypheic not decoded")
    (tmp_path / "exported.jpg").write_bytes(b"\x00\x00\x00\x18ftypmif1 a HEIF under another name")
    code = cli(["predict", str(tmp_path / "IMG_0002.heic"), str(tmp_path / "exported.jpg"), "--weights", str(checkpoint),
                "--json", str(tmp_path / "r.json")])
    assert code == 1
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["skipped_by_reason"] == {"HEIC/HEIF image": 2}
    assert "IMG_0002.heic: HEIC/HEIF is not supported" in capsys.readouterr().err


def test_fifos_and_devices_are_reported_not_opened(checkpoint, photo_dir, tmp_path, capsys):
    """A FIFO inside a folder was left out without a word, and one named on the command line was
    called an 'empty file'; a device such as /dev/null too."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(photo_dir / "astronaut.jpg", d / "good.jpg")
    os.mkfifo(d / "stream.jpg")
    os.mkfifo(d / "pipe")                      # no suffix: could be an input, like a link without one
    os.mkfifo(tmp_path / "named.png")
    code = cli(["predict", str(d), str(tmp_path / "named.png"), os.devnull, "--weights", str(checkpoint),
                "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL, err
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["images"] == 1 and summary["skipped_by_reason"] == {"special file": 4}
    assert f"{d / 'stream.jpg'}: not a regular file (a FIFO)" in err
    assert f"{os.devnull}: not a regular file (a character device)" in err


def test_file_names_that_are_not_utf8_are_written_escaped_in_csv_and_json(onnx_file, tmp_path, capsys):
    """b'caf\\xe9.jpg' (Latin-1, legal on Linux) is read, and its name is written as caf\\xe9.jpg in
    the table, the CSV and the JSON; every other photo's rows are written too."""
    from litefer.inference.samples import sample_photo

    d = tmp_path / "odd"
    d.mkdir()
    shutil.copy(sample_photo(), d / "plain.jpg")
    shutil.copy(sample_photo(), os.path.join(os.fsencode(d), b"caf\xe9.jpg"))
    with open(os.path.join(os.fsencode(d), b"bad\xff.jpg"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "out"
    code = cli(["predict", str(d), "--weights", str(onnx_file), "--no-progress",
                "--csv", str(out / "r.csv"), "--json", str(out / "r.json")])
    captured = capsys.readouterr()
    assert code == EXIT_PARTIAL and "caf\\xe9.jpg" in captured.out
    rows = (out / "r.csv").read_bytes().decode("utf-8").splitlines()
    sources = sorted(r.split(",")[0].rsplit("/", 1)[1] for r in rows[1:])
    assert sources == ["bad\\xff.jpg", "caf\\xe9.jpg", "plain.jpg"]
    report = json.loads((out / "r.json").read_bytes().decode("utf-8"))
    assert sorted(e["source"].rsplit("/", 1)[1] for e in report["inputs"]) == sources
    assert report["summary"]["skipped_inputs"][0].startswith(str(d / "bad\\xff.jpg"))
