"""Issue 21's interfaces: explanations from the Recognizer (ONNX Runtime and torch), placed on the
photo, drawn by `litefer predict --explain`, returned by `POST /v1/recognize?explain=1`, exported by
`litefer export --explain`, and the one-line errors of weights that cannot explain."""
from __future__ import annotations

import base64
import io
import json

import cv2
import numpy as np
import pytest
from face_fixtures import FACE_CENTRE, astronaut_bgr, checkpoint, onnx_file, photo_dir, video_file  # noqa: F401
from PIL import Image

import litefer
from litefer import onnxproto
from litefer.cli import main as cli
from litefer.inference.align import frame_transform
from litefer.inference.backends import OnnxBackend
from litefer.inference.detect import HaarDetector
from litefer.inference.explain import CAM_OUTPUT, METHOD, ExplainError, Explanation
from litefer.inference.samples import sample_bgr, sample_photo

PACKAGED_ONNX = litefer.inference.backends.packaged_file("litefer_cpsca112_ferplus.onnx")
# torch and ONNX Runtime maps of the same face: measured 2e-7 apart on the shipped model (cam up to ~1.3)
CAM_ATOL = 1e-4


@pytest.fixture(scope="module")
def explain_onnx(checkpoint, tmp_path_factory):
    """The random-weights checkpoint exported with the map as a second output."""
    from litefer.export import export_with_metadata

    return export_with_metadata(checkpoint, tmp_path_factory.mktemp("cam") / "random_cam.onnx", explain=True)


@pytest.fixture(scope="module")
def shipped():
    """The packaged model through ONNX Runtime (the .onnx) and through torch (its .pt twin)."""
    return litefer.Recognizer(threads=1), litefer.Recognizer(backend="torch", threads=1)


# ----------------------------------------------------------------------------- the packaged model

def test_the_packaged_onnx_carries_the_map():
    assert onnxproto.graph_outputs(PACKAGED_ONNX.read_bytes()) == ["logits", CAM_OUTPUT]
    assert OnnxBackend(PACKAGED_ONNX).can_explain


def test_torch_and_onnx_explain_the_photo_alike(shipped):
    rec_ort, rec_torch = shipped
    (a,), (b,) = rec_ort.recognize(sample_photo(), explain=True), rec_torch.recognize(sample_photo(), explain=True)
    ea, eb = a.explanation, b.explanation
    assert a.label == b.label == ea.label == eb.label and ea.method == METHOD
    assert ea.resolution == eb.resolution == (4, 4)                   # 112 px input: 4 x 4 last feature map
    np.testing.assert_allclose(ea.cam, eb.cam, atol=CAM_ATOL)
    assert ea.cam.max() > 0 and ea.cam.min() >= 0


def test_explanation_fields_follow_the_contract(shipped):
    rec = shipped[0]
    face, = rec.recognize(sample_bgr(), explain=True)
    e = face.explanation
    side = rec.crop_spec.size
    expected = cv2.resize(e.cam / e.cam.max(), (side, side), interpolation=cv2.INTER_LINEAR)
    assert e.map.shape == (side, side) and e.map.dtype == np.float32 and e.cam.dtype == np.float32
    np.testing.assert_allclose(e.map, expected, atol=1e-6)
    d = face.to_dict()["explanation"]
    assert d == json.loads(json.dumps(d)) and set(d) == {"label", "method", "resolution", "cam"}
    assert d["resolution"] == [4, 4] and np.abs(np.array(d["cam"]) - e.cam).max() < 1e-6
    plain, = rec.recognize(sample_bgr())
    assert plain.explanation is None and "explanation" not in plain.to_dict()
    assert plain.scores == face.scores                                 # explaining changes no score


def test_the_explained_label_is_the_label_after_the_prior(shipped):
    rec = shipped[0]
    for prior in ("dataset", "balanced"):
        face, = rec.recognize(sample_bgr(), prior=prior, explain=True)
        assert face.explanation.label == face.label
    assert Explanation.of(np.zeros((4, 4)), "x", 48).map.max() == 0     # an all-zero map stays zero


# ----------------------------------------------------------------------------- placing the map on the photo

def _tilted_photo():
    bgr = astronaut_bgr()
    return cv2.warpAffine(bgr, cv2.getRotationMatrix2D(FACE_CENTRE, 17, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("tilted", [False, True])
def test_a_map_placed_on_the_photo_lands_where_the_crop_came_from(tilted):
    """A map equal to the crop's own pixels, placed on the photo, reproduces the photo there: the
    placement inverts the crop's warp, rotation included."""
    bgr = _tilted_photo() if tilted else astronaut_bgr()
    det = HaarDetector().detect(bgr)[0]
    M, aligned, angle = frame_transform(det, 48)
    assert (abs(angle) > 10) == tilted
    crop = cv2.warpAffine(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), M, (48, 48), flags=cv2.INTER_LINEAR)
    e = Explanation("x", np.ones((4, 4), np.float32), crop.astype(np.float32) / 255, M)
    (x, y, w, h), values = e.on_photo(512, 512)
    assert values.shape == (h, w) and x <= det.box[0] and y <= det.box[1]
    assert x + w >= det.box[0] + det.box[2] and y + h >= det.box[1] + det.box[3]
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[y:y + h, x:x + w].astype(np.float32)
    inside = cv2.warpAffine(np.ones((48, 48), np.float32), M, (512, 512),
                            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)[y:y + h, x:x + w] > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.corrcoef(values[inside], grey[inside])[0, 1] > 0.9
    if tilted:                                                          # a turned crop leaves the rect's corners
        assert values[0, 0] == values[-1, -1] == 0


def test_the_label_map_peaks_inside_the_face_box(shipped):
    face, = shipped[0].recognize(sample_bgr(), explain=True)
    (x, y, w, h), values = face.explanation.on_photo(512, 512)
    py, px = np.unravel_index(values.argmax(), values.shape)
    bx, by, bw, bh = face.box
    assert bx <= x + px < bx + bw and by <= y + py < by + bh
    # the map is 0 in the photo outside the face crop's rectangle
    assert w < 512 and h < 512


# ----------------------------------------------------------------------------- backends

def test_plain_logits_run_the_graph_without_the_map_branch(explain_onnx, onnx_file):
    data = explain_onnx.read_bytes()
    pruned = onnxproto.without_output(data, CAM_OUTPUT)
    assert onnxproto.graph_outputs(pruned) == ["logits"]
    import onnx

    nodes = lambda b: len(onnx.load_from_string(b).graph.node)  # noqa: E731
    assert nodes(pruned) < nodes(data)
    backend = OnnxBackend(explain_onnx, threads=1)
    assert [o.name for o in backend.session.get_outputs()] == ["logits"]
    crops = litefer.Recognizer(onnx_file).detect_and_crop(sample_bgr())[1]
    crops = np.stack(crops * 3)
    logits, cam = backend.explain(crops)
    np.testing.assert_array_equal(backend.logits(crops), logits)
    plain = onnx_file.read_bytes()
    assert onnxproto.without_output(plain, CAM_OUTPUT) is plain            # nothing to cut


def test_flip_tta_mirrors_the_mirrored_map_back(explain_onnx, checkpoint):
    from litefer.torch_backend import TorchBackend

    crops = np.stack(litefer.Recognizer(explain_onnx).detect_and_crop(astronaut_bgr())[1])
    for backend in (OnnxBackend(explain_onnx, threads=1), TorchBackend(checkpoint)):
        (l1, c1), (l2, c2) = backend.explain(crops), backend.explain(np.ascontiguousarray(crops[:, :, ::-1]))
        logits, cam = backend.explain(crops, tta_flip=True)
        np.testing.assert_allclose(logits, (l1 + l2) / 2, atol=1e-5)
        np.testing.assert_allclose(cam, (c1 + c2[..., ::-1]) / 2, atol=1e-5)
        assert not np.allclose(c1, c2[..., ::-1], atol=1e-3)            # the mirror average is not a no-op here
        np.testing.assert_allclose(backend.logits(crops, True), logits, atol=1e-5)


def test_the_recognizer_explains_with_tta_on_two_cores_as_in_one_call(explain_onnx):
    side = litefer.Recognizer(explain_onnx, tta=True)                  # the mirrored pass on a spare core
    one = litefer.Recognizer(explain_onnx, tta=True, threads=1)        # both passes in one call
    a, b = side.recognize(astronaut_bgr(), explain=True)[0], one.recognize(astronaut_bgr(), explain=True)[0]
    np.testing.assert_allclose(a.explanation.cam, b.explanation.cam, atol=1e-5)


def test_a_pt_file_through_onnx_runtime_explains_like_torch(checkpoint):
    via_onnx = litefer.Recognizer(checkpoint, backend="onnxruntime")   # exported to a temporary file, now gone
    via_torch = litefer.Recognizer(checkpoint, backend="torch")
    a, b = via_onnx.recognize(astronaut_bgr(), explain=True)[0], via_torch.recognize(astronaut_bgr(), explain=True)[0]
    assert a.label == b.label
    np.testing.assert_allclose(a.explanation.cam, b.explanation.cam, atol=CAM_ATOL)


def test_weights_that_cannot_explain_fail_in_one_line_naming_the_file(onnx_file, checkpoint, tmp_path):
    from litefer.export import export
    from litefer.torch_backend import TorchBackend

    with pytest.raises(ExplainError) as e:
        litefer.Recognizer(onnx_file).recognize(astronaut_bgr(), explain=True)
    msg = str(e.value)
    assert str(onnx_file) in msg and "no 'cam' output" in msg and "litefer export --weights W --explain" in msg
    assert "\n" not in msg
    ts = tmp_path / "m.ts"
    export(checkpoint, "torchscript", ts, parity_size=4)
    with pytest.raises(ExplainError, match=r"m\.ts: a TorchScript file cannot explain.*--explain"):
        list(litefer.Recognizer(ts).recognize_many([astronaut_bgr()], explain=True))
    backend = TorchBackend(checkpoint)
    import torch

    backend.model.classifier = torch.nn.Sequential(torch.nn.Linear(640, 8))   # no pooled two-layer classifier
    with pytest.raises(ExplainError, match=rf"{checkpoint.name}: cannot explain: .*no pooled two-layer classifier"):
        backend.explain(np.zeros((1, 48, 48, 1), np.uint8))


# ----------------------------------------------------------------------------- litefer predict --explain

def test_predict_explain_writes_overlays_for_images_and_videos(explain_onnx, photo_dir, video_file, tmp_path, capsys):
    maps, ann = tmp_path / "maps", tmp_path / "ann"
    code = cli(["predict", str(photo_dir / "astronaut.png"), str(photo_dir / "two_faces.png"), str(video_file),
                "--weights", str(explain_onnx), "--explain", str(maps), "--save-annotated", str(ann),
                "--max-frames", "3", "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in maps.iterdir()) == sorted(p.name for p in ann.iterdir())
    over, boxes = cv2.imread(str(maps / "astronaut.png")), cv2.imread(str(ann / "astronaut.png"))
    assert over.shape == boxes.shape == (512, 512, 3)
    faces = json.loads((tmp_path / "r.json").read_text())["inputs"][0]["faces"]
    x, y, w, h = faces[0]["box"]
    inner = (slice(y + 10, y + h - 10), slice(x + 10, x + w - 10))
    assert np.abs(over[inner].astype(int) - boxes[inner]).mean() > 5    # the map is drawn over the face
    np.testing.assert_array_equal(over[400:, :100], boxes[400:, :100])  # and nowhere far from it
    assert faces[0]["explanation"]["label"] == faces[0]["label"]
    video = next(p for p in maps.iterdir() if p.stem == video_file.stem)
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_predict_explain_with_weights_that_cannot_is_one_line_exit_2(onnx_file, tmp_path, capsys):
    code = cli(["predict", "--sample", "--weights", str(onnx_file), "--explain", str(tmp_path / "maps")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(onnx_file) in err[0] and "--explain" in err[0]
    assert not (tmp_path / "maps").exists()


# ----------------------------------------------------------------------------- litefer export --explain

def test_export_explain_adds_the_map_and_checks_it(checkpoint, tmp_path, capsys):
    from litefer.export import export
    from litefer.export.checks import check

    out = tmp_path / "m.onnx"
    report = export(checkpoint, "onnx", out, parity_size=8, explain=True)
    assert report["parity"]["cam_max_abs_diff"] < 1e-4 and report["checks"]["failures"] == []
    assert onnxproto.graph_outputs(out.read_bytes()) == ["logits", CAM_OUTPUT]
    assert litefer.card.read_card(out).class_names == litefer.card.read_card(checkpoint).class_names
    failed = check({"parity": {"max_abs_diff": 0.0, "top1_agreement": 1.0, "cam_max_abs_diff": 0.01}},
                   1e-3, 0.99, None, 1e-3)
    assert failed == ["max abs cam difference 1.00e-02 > 1e-03"]
    code = cli(["export", "--weights", str(checkpoint), "--format", "torchscript", "--explain", "--out",
                str(tmp_path / "m.ts")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--explain" in err[0] and "--format onnx" in err[0]
    assert not (tmp_path / "m.ts").exists()


# ----------------------------------------------------------------------------- HTTP

def _client(weights):
    import warnings

    from litefer.serve import create_app
    from litefer.serve.engine import ServeConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from fastapi.testclient import TestClient
    return TestClient(create_app(ServeConfig(weights=str(weights), workers=1, queue=2)))


def test_http_explain_returns_the_map_as_png_and_cam(explain_onnx):
    jpeg = sample_photo().read_bytes()
    with _client(explain_onnx) as c:
        r = c.post("/v1/recognize?explain=1", content=jpeg)
        plain = c.post("/v1/recognize?explain=0", content=jpeg).json()
        bad = c.post("/v1/recognize?explain=maybe", content=jpeg)
        twice = c.post("/v1/recognize?explain=1&explain=0", content=jpeg)
        schema = c.get("/openapi.json").json()
        card = c.get("/v1/model").json()
    assert card["explain"] == {"server": True, "on_device": True}
    assert r.status_code == 200, r.text
    face, = r.json()["faces"]
    e = face["explanation"]
    assert e["label"] == face["label"] and e["method"] == METHOD and e["resolution"] == [2, 2]   # 64 px input
    x, y, w, h = e["rect"]
    png = Image.open(io.BytesIO(base64.b64decode(e["png"])))
    assert png.mode == "RGBA" and png.size == (w, h) and np.asarray(png)[..., 3].max() > 0
    bx, by, bw, bh = face["box"]
    assert x <= bx and y <= by and x + w >= bx + bw and y + h >= by + bh
    rec = litefer.Recognizer(explain_onnx)
    from litefer.serve.engine import decode_upload

    expected, = rec.recognize(decode_upload(jpeg, 10**8, 10**5), explain=True)
    np.testing.assert_allclose(np.array(e["cam"]), expected.explanation.cam, atol=1e-5)
    assert plain["faces"][0].get("explanation") is None and plain["faces"][0]["scores"] == face["scores"]
    assert bad.status_code == 422 and "explain" in bad.json()["message"]
    assert twice.status_code == 422 and twice.json()["message"].startswith("explain: given 2 times")
    params = schema["paths"]["/v1/recognize"]["post"]["parameters"]
    assert any(p["name"] == "explain" for p in params)
    assert "explanation" in schema["components"]["schemas"]["FaceOut"]["properties"]


def test_http_explain_on_a_model_without_the_map_is_a_422_naming_it(onnx_file):
    with _client(onnx_file) as c:
        r = c.post("/v1/recognize?explain=1", content=sample_photo().read_bytes())
        ok = c.post("/v1/recognize", content=sample_photo().read_bytes())
        card = c.get("/v1/model").json()
    assert r.status_code == 422 and "no 'cam' output" in r.json()["message"] and ok.status_code == 200
    assert card["explain"] == {"server": False, "on_device": False}


def test_serve_exports_a_pt_file_with_the_map(checkpoint, tmp_path):
    from litefer.serve.engine import exported_onnx

    out = exported_onnx(checkpoint, tmp_path)
    assert onnxproto.graph_outputs(out.read_bytes()) == ["logits", CAM_OUTPUT]
