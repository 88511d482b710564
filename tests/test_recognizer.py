"""litefer.Recognizer: every input type, both backends, batching, videos with frame skipping, tables,
bad inputs inside batches, preprocessing parity, and (with the packaged weights) a real prediction."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from face_fixtures import (FACE_CENTRE, astronaut_bgr, astronaut_rgb, checkpoint, make_checkpoint,  # noqa: F401
                           onnx_file, photo_dir, rec_ort, rec_torch, two_face_composite, video_file, yunet_path)
from PIL import Image

import litefer
from litefer.inference.backends import DEFAULT_FILES, resolve_weights
from litefer.data.transforms import Preprocess, preprocess
from litefer.inference.inputs import InputError, read_image

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def probs(faces):
    return np.array([[f.scores[c] for c in CLASSES] for f in faces])


def test_one_face_from_every_input_type(rec_torch, photo_dir):
    ref = rec_torch.recognize(photo_dir / "astronaut.png")
    assert len(ref) == 1
    f = ref[0]
    x, y, w, h = f.box
    assert abs(x + w / 2 - FACE_CENTRE[0]) < 10 and abs(y + h / 2 - FACE_CENTRE[1]) < 10
    assert f.label in CLASSES and list(f.scores) == CLASSES and abs(sum(f.scores.values()) - 1) < 1e-5
    assert f.score == max(f.scores.values()) and f.label == max(f.scores, key=f.scores.get)
    assert f.quality["aligned"] and f.issues == []
    for other in (rec_torch.recognize(str(photo_dir / "astronaut.png")),
                  rec_torch.recognize(astronaut_rgb(), color="rgb"),
                  rec_torch.recognize(astronaut_bgr()),                      # BGR is the default order
                  rec_torch.recognize(Image.fromarray(astronaut_rgb())),
                  rec_torch.recognize(photo_dir / "rgb16.png"),
                  rec_torch.recognize(photo_dir / "rgba.png")):
        assert [o.box for o in other] == [f.box]
        np.testing.assert_allclose(probs(other), probs(ref), atol=1e-5)
    # grey, JPEG and sideways-with-EXIF versions of the photo: same face, nearly the same answer
    for name in ("grey.png", "grey16.png", "astronaut.jpg", "sideways_exif.jpg"):
        other = rec_torch.recognize(photo_dir / name)
        assert len(other) == 1 and np.abs(np.array(other[0].box) - f.box).max() <= 4
        np.testing.assert_allclose(probs(other), probs(ref), atol=0.05)


def test_no_face_is_an_empty_result(rec_torch, photo_dir):
    assert rec_torch.recognize(photo_dir / "no_face.png") == []


def test_several_faces_and_batching_across_images(checkpoint, photo_dir):
    rec1 = litefer.Recognizer(weights=checkpoint, batch_size=1)
    rec64 = litefer.Recognizer(weights=checkpoint, batch_size=64)
    inputs = [photo_dir / "two_faces.png", photo_dir / "astronaut.png", two_face_composite(), photo_dir / "no_face.png"]
    a, b = rec1.recognize_many(inputs), rec64.recognize_many(inputs, progress=True)
    assert [len(r.faces) for r in a] == [2, 1, 2, 0] == [len(r.faces) for r in b]
    assert [r.source for r in a] == [str(p) for p in inputs[:2]] + ["<array 512x900x3 uint8>", str(inputs[3])]
    for ra, rb in zip(a, b):
        assert [f.box for f in ra.faces] == [f.box for f in rb.faces]
        np.testing.assert_allclose(probs(ra.faces), probs(rb.faces), atol=1e-5)
    assert a[0].width == 900 and a[0].height == 512


def test_bad_inputs_are_recorded_and_the_batch_goes_on(rec_torch, photo_dir):
    names = ["astronaut.png", "truncated.jpg", "not_an_image.png", "empty.jpg", "missing.png", "grey16.png"]
    inputs = [photo_dir / n for n in names] + [np.zeros((0, 0, 3), np.uint8)]
    results = rec_torch.recognize_many(inputs)
    assert [r.ok for r in results] == [True, False, False, False, False, True, False]
    assert [len(r.faces) for r in results] == [1, 0, 0, 0, 0, 1, 0]
    assert "truncated or corrupt" in results[1].error and results[1].error.startswith(str(photo_dir / "truncated.jpg"))
    assert "not an image file" in results[2].error and "empty file" in results[3].error
    assert "no such file" in results[4].error and "empty image" in results[6].error
    with pytest.raises(InputError, match="truncated.jpg: truncated"):
        rec_torch.recognize(photo_dir / "truncated.jpg")
    with pytest.raises(InputError, match="truncated"):
        rec_torch.recognize_many(inputs, on_error="raise")


def test_a_30_megapixel_photo(rec_torch, tmp_path):
    """6400 x 4800 JPEG with the photo pasted in at 4x: found, boxed in full-resolution coordinates."""
    import cv2

    big = np.full((4800, 6400, 3), 110, np.uint8)
    big[1000:3048, 2000:4048] = cv2.resize(astronaut_bgr(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del big
    faces = rec_torch.recognize(path)
    assert len(faces) >= 1
    x, y, w, h = faces[0].box
    assert abs(x + w / 2 - (2000 + 4 * FACE_CENTRE[0])) < 40 and abs(y + h / 2 - (1000 + 4 * FACE_CENTRE[1])) < 40
    assert 300 < w < 450


def test_onnxruntime_backend_matches_torch(rec_torch, rec_ort, photo_dir):
    assert rec_ort.backend.name == "onnxruntime" and rec_ort.class_names == CLASSES
    for src in (photo_dir / "astronaut.png", photo_dir / "two_faces.png"):
        a, b = rec_torch.recognize(src), rec_ort.recognize(src)
        assert [f.box for f in a] == [f.box for f in b]
        np.testing.assert_allclose(probs(a), probs(b), atol=1e-4)


def test_mirrored_pass_beside_the_plain_one_when_threads_are_not_given(onnx_file, rec_ort, photo_dir):
    rec = litefer.Recognizer(weights=onnx_file, tta=True)
    assert (rec._mirror_pool is not None) == ((os.cpu_count() or 1) > 1)
    assert rec_ort._mirror_pool is None                                      # threads=1: one call, as before
    crops = np.stack([c for name in ("astronaut.png", "two_faces.png")
                      for c in rec.detect_and_crop(read_image(photo_dir / name))[1]])
    np.testing.assert_allclose(rec._logits(crops), rec.backend.logits(crops, True), atol=1e-5)


def test_onnxruntime_backend_runs_without_torch(onnx_file, photo_dir):
    code = ("import sys, litefer; r = litefer.Recognizer(weights=sys.argv[1], threads=1); "
            "faces = r.recognize(sys.argv[2]); assert len(faces) == 1, faces; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(faces[0].label)")
    out = subprocess.run([sys.executable, "-c", code, str(onnx_file), str(photo_dir / "astronaut.png")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in CLASSES


def test_torch_backend_from_a_pt_with_onnxruntime(checkpoint, rec_torch, photo_dir):
    rec = litefer.Recognizer(weights=checkpoint, backend="onnxruntime")      # exported on the fly
    np.testing.assert_allclose(probs(rec.recognize(photo_dir / "astronaut.png")),
                               probs(rec_torch.recognize(photo_dir / "astronaut.png")), atol=1e-4)


def test_yunet_detector_in_the_recognizer(checkpoint, photo_dir):
    rec = litefer.Recognizer(weights=checkpoint, detector="yunet", yunet_model=yunet_path())
    faces = rec.recognize(photo_dir / "two_faces.png")
    assert len(faces) == 2 and all(f.landmarks is not None and len(f.landmarks) == 5 for f in faces)


def test_class_names_and_tta_come_from_the_weights(tmp_path, photo_dir):
    names = ["calm", "glad", "cross"]
    ckpt = make_checkpoint(tmp_path / "three.pt", class_names=names, tta=True, packaged=True)
    rec = litefer.Recognizer(weights=ckpt)
    assert rec.class_names == names and rec.tta
    faces = rec.recognize(photo_dir / "astronaut.png")
    assert list(faces[0].scores) == names and faces[0].label in names
    plain = litefer.Recognizer(weights=ckpt, tta=False).recognize(photo_dir / "astronaut.png")
    assert not np.allclose(list(faces[0].scores.values()), list(plain[0].scores.values()), atol=1e-7)


def test_weights_resolution_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        litefer.Recognizer(weights=tmp_path / "nope.pt")
    (tmp_path / "x.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="runs with backend='onnxruntime'"):
        resolve_weights(tmp_path / "x.onnx", "torch")
    with pytest.raises(ValueError, match="x.onnx: not a readable ONNX file"):
        litefer.Recognizer(weights=tmp_path / "x.onnx")
    monkeypatch.setitem(DEFAULT_FILES, "default", {"onnxruntime": "no_such_weights.onnx"})
    with pytest.raises(FileNotFoundError, match="packaged file litefer/weights/no_such_weights.onnx is missing"):
        litefer.Recognizer()


def test_video_frame_skipping_and_tables(rec_torch, video_file, tmp_path):
    all_frames = list(rec_torch.recognize_video(video_file))
    assert [r.frame for r in all_frames] == list(range(10))
    every3 = list(rec_torch.recognize_video(video_file, every=3))
    assert [r.frame for r in every3] == [0, 3, 6, 9]
    assert [round(r.time, 3) for r in every3] == [0.0, 0.3, 0.6, 0.9]
    assert all(len(r.faces) == 1 for r in every3)
    # the face drifts right 2 px per frame; skipped frames really are skipped, not re-read
    xs = [r.faces[0].box[0] for r in every3]
    assert xs[-1] - xs[0] > 9
    for r in every3:
        same = all_frames[r.frame].faces[0]
        assert r.faces[0].box == same.box
    assert len(list(rec_torch.recognize_video(video_file, every=2, max_frames=3))) == 3
    rows = litefer.write_csv(rec_torch.recognize_video(video_file, every=5), tmp_path / "clip.csv")
    back = pd.read_csv(tmp_path / "clip.csv")
    assert list(back["frame"]) == [0, 5] and set(CLASSES) <= set(back.columns)
    assert [r["label"] for r in rows] == list(back["label"]) and (back["face"] == 0).all()


def test_unopenable_videos_raise_clear_errors(rec_torch, photo_dir, tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="fake.mp4: cannot open as a video"):
        rec_torch.recognize_video(fake)
    with pytest.raises(InputError, match="nothing.avi: no such file"):
        rec_torch.recognize_video(tmp_path / "nothing.avi")


def test_dataframe_rows_for_faces_empty_images_and_errors(rec_torch, photo_dir):
    results = rec_torch.recognize_many([photo_dir / "two_faces.png", photo_dir / "no_face.png",
                                        photo_dir / "truncated.jpg"])
    df = litefer.to_dataframe(results)
    assert len(df) == 4 and list(df["face"].astype("float").fillna(-1)) == [0, 1, -1, -1]
    assert df["error"].iloc[3].startswith(str(photo_dir / "truncated.jpg"))
    assert len(litefer.to_dataframe(results, include_empty=False)) == 2
    faces_only = litefer.to_dataframe(rec_torch.recognize(photo_dir / "astronaut.png"))
    assert len(faces_only) == 1 and faces_only["label"].iloc[0] in CLASSES
    assert litefer.to_dataframe([]).empty


def test_csv_needs_no_pandas_and_matches_the_dataframe(rec_torch, photo_dir, video_file, monkeypatch):
    images = rec_torch.recognize_many([photo_dir / "two_faces.png", photo_dir / "no_face.png",
                                       photo_dir / "truncated.jpg"])
    frames = list(rec_torch.recognize_video(video_file, every=5))
    wanted = [litefer.to_dataframe(r).to_csv(index=False) for r in (images, frames, [])]
    monkeypatch.setitem(sys.modules, "pandas", None)           # `import pandas` now raises ImportError
    assert [litefer.csv_text(r) for r in (images, frames, [])] == wanted
    with pytest.raises(ImportError, match=r"pip install pandas \(or litefer\[all\]\)"):
        litefer.to_dataframe(images)


@pytest.mark.parametrize("size, chans, in_chans", [(48, 1, 3), (64, 1, 3), (48, 3, 3), (48, 3, 1), (100, 1, 1)])
def test_numpy_preprocessing_equals_the_training_pipeline(size, chans, in_chans):
    rng = np.random.default_rng(size + chans)
    crops = rng.integers(0, 256, (5, size, size, chans), dtype=np.uint8)
    pp = Preprocess(input_size=64, in_chans=in_chans)
    ref = preprocess(torch.from_numpy(crops), pp).numpy()
    got = Preprocess.from_dict(pp.to_dict())(crops)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_packaged_default_weights_read_a_smile(photo_dir):
    rec = litefer.Recognizer()          # the packaged weights ship in the repository
    faces = rec.recognize(photo_dir / "astronaut.png")
    assert len(faces) == 1 and faces[0].label == "happiness", faces[0].scores
    mirrored = rec.recognize(astronaut_rgb()[:, ::-1], color="rgb")
    assert mirrored[0].label == "happiness"


@pytest.mark.parametrize("orientation, turn", [(6, 1), (8, -1)])
def test_an_open_pil_image_gets_its_exif_orientation_like_a_path(tmp_path, orientation, turn):
    """Pixels stored sideways, with the EXIF tag that turns them upright (as phones write them)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"sideways_{orientation}.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut_rgb(), turn))).save(path, quality=92, exif=exif)
    rec = litefer.Recognizer()
    from_path = rec.recognize(path)
    with Image.open(path) as im:
        from_pil = rec.recognize(im)
    assert len(from_path) == 1 and [f.box for f in from_pil] == [f.box for f in from_path]
    np.testing.assert_allclose(probs(from_pil), probs(from_path), atol=1e-6)


@pytest.mark.parametrize("field, value", [("max_side", 0), ("max_side", -640), ("max_side", 2.5), ("min_face", 0),
                                          ("min_face", -1), ("batch_size", 0), ("batch_size", -8)])
def test_sizes_and_counts_must_be_positive(field, value):
    """0 or a negative max_side used to be accepted, and then no face was ever found."""
    with pytest.raises(ValueError, match=f"^{field} must be a whole number >= 1, got {value!r}$"):
        litefer.Recognizer(**{field: value})


def test_a_detector_refuses_a_max_side_of_zero():
    from litefer.inference.detect import HaarDetector
    with pytest.raises(ValueError, match="^max_side must be a whole number >= 1, got 0$"):
        HaarDetector(max_side=0)


def test_max_side_must_hold_a_tile():
    """Large images are searched in tiles of max_side, each overlapping the next by up to half its side:
    under 256 px the tiles would multiply without bound."""
    from litefer.inference.detect import HaarDetector
    from litefer.serve.engine import ServeConfig
    for make in (HaarDetector, litefer.Recognizer):
        with pytest.raises(ValueError, match=r"^max_side must be at least 256 \(large images are searched in tiles "
                                             r"of that side\), got 100$"):
            make(max_side=100)
    with pytest.raises(ValueError, match="detect_max_side=128"):
        ServeConfig(detect_max_side=128)
    assert HaarDetector(max_side=256).max_side == 256
