"""litefer serve: settings, upload decoding, the bounded pool, and every route through the real app."""
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from litefer.card import read_card
from litefer.inference.align import CropSpec
from litefer.serve.engine import RecognizerPool, ServeConfig, ServeError, decode_upload
from loadtest import png_header_only
from serve_support import CLASSES, astronaut_rgb, encode


# ----------------------------------------------------------------------------- units

def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="workers=0"):
        ServeConfig(workers=0)
    with pytest.raises(ValueError, match="upload_timeout=-1"):
        ServeConfig(upload_timeout=-1)
    with pytest.raises(ValueError, match="backend"):
        ServeConfig(backend="tensorflow")
    assert ServeConfig(workers=2, queue=5).capacity == 7
    for name, bad in (("min_transfer_rate", -1), ("transfer_grace", 0), ("max_connections_per_client", -1),
                      ("max_connections", -5)):
        with pytest.raises(ValueError, match=f"{name}={bad}"):
            ServeConfig(**{name: bad})
    assert ServeConfig(workers=2, queue=5).connection_limit == 256 and ServeConfig(queue=100).connection_limit >= 404
    assert ServeConfig(max_connections=20).limits()["max_connections"] == 20


def test_decode_upload_limits_and_errors():
    rgb = astronaut_rgb()
    bgr = decode_upload(encode(rgb, "PNG"), 40_000_000, 10_000)
    assert bgr.shape == (512, 512, 3) and np.array_equal(bgr[..., ::-1], rgb)
    cases = [(b"", 400, "empty upload"),
             (b"plain text, not pixels\n" * 20, 415, "not an image"),
             (encode(rgb, "JPEG")[:3000], 422, "truncated"),
             (png_header_only(30000, 30000), 422, "too large|limits"),
             (png_header_only(5000, 20), 422, "4000 px per side")]
    for data, status, pattern in cases:
        with pytest.raises(ServeError, match=pattern) as e:
            decode_upload(data, 40_000_000, 4000)
        assert e.value.status == status, (pattern, e.value.message)
    with pytest.raises(ServeError, match="0.1 MP"):
        decode_upload(encode(rgb, "PNG"), 100_000, 4000)


def test_pool_admits_at_most_its_capacity_and_drops_expired_jobs():
    release = threading.Event()
    made = []

    def factory():
        made.append(object())
        return made[-1]

    pool = RecognizerPool(factory, workers=1, capacity=2)
    assert len(made) == 1
    try:
        first = pool.submit(lambda rec: release.wait(10) and rec)
        queued = pool.submit(lambda rec: "second")
        assert first is not None and queued is not None
        assert pool.submit(lambda rec: "third") is None            # full: refused, not queued
        assert pool.stats["rejected_busy"] == 1
        expired = None
        release.set()
        assert first.result(5) is made[0] and queued.result(5) == "second"
        expired = pool.submit(lambda rec: "late", deadline=time.monotonic() - 1)
        with pytest.raises(ServeError, match="deadline") as e:
            expired.result(5)
        assert e.value.status == 503
        deadline = time.monotonic() + 5
        while pool.inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.inflight == 0
    finally:
        release.set()
        pool.shutdown()


# ----------------------------------------------------------------------------- the app, in process

def _testclient_class():
    """Starlette's TestClient; recent Starlette warns that it will move from httpx to httpx2, which
    changes nothing for these tests."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from fastapi.testclient import TestClient
    return TestClient


@pytest.fixture(scope="module")
def client(serve_model):
    from litefer.serve import create_app

    TestClient = _testclient_class()

    cfg = ServeConfig(weights=str(serve_model[1]), detector="haar", workers=1, queue=2, max_upload_bytes=200_000,
                      max_side=4000, max_pixels=4_000_000)
    with TestClient(create_app(cfg)) as c:
        yield c


def test_recognize_matches_the_python_api(client, serve_model):
    from litefer import Recognizer

    rgb = astronaut_rgb()
    jpeg = encode(rgb, "JPEG", quality=95)
    raw = client.post("/v1/recognize", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert (body["width"], body["height"], body["model"]) == (512, 512, "litefer_cpsca")
    assert set(body["timing_ms"]) == {"queue", "decode", "recognize", "total"}
    form = client.post("/v1/recognize", files={"file": ("astronaut.jpg", jpeg, "image/jpeg")}).json()
    # curl --data-binary labels the body as a URL-encoded form: still taken as the image
    curl_like = client.post("/v1/recognize", content=jpeg,
                            headers={"Content-Type": "application/x-www-form-urlencoded"}).json()
    rec = Recognizer(str(serve_model[1]), backend="onnxruntime")
    expected = [f.to_dict() for f in rec.recognize(decode_upload(jpeg, 10**8, 10**5))]
    assert len(expected) == 1
    for got in (body["faces"], form["faces"], curl_like["faces"]):
        assert got == json.loads(json.dumps(expected))
    face = body["faces"][0]
    assert list(face["scores"]) == CLASSES and face["label"] == max(face["scores"], key=face["scores"].get)
    x, y, w, h = face["box"]
    assert 150 < x < 200 and 40 < y < 100 and 80 < w < 120         # the astronaut's face
    assert body["prior"] == "balanced:0.5"            # the default for weights that store their class prior


def test_the_server_says_which_detector_runs(client, serve_model):
    from face_fixtures import yunet_path
    from litefer.serve import create_app

    jpeg = encode(astronaut_rgb(), "JPEG", quality=95)
    server = client.get("/v1/model").json()["server"]
    assert (server["detector"], server["detector_requested"]) == ("haar", "haar")
    assert client.post("/v1/recognize", content=jpeg).json()["detector"] == "haar"
    from litefer.serve.engine import prepare_model

    auto = prepare_model(ServeConfig(weights=str(serve_model[1])))            # the default: auto
    assert (auto.detector, auto.yunet) == ("haar", None)                          # no YuNet on disk here
    cfg = ServeConfig(weights=str(serve_model[1]), workers=1, queue=1, yunet_model=str(yunet_path()))
    assert prepare_model(cfg).yunet == yunet_path()
    with _testclient_class()(create_app(cfg)) as c:
        assert c.get("/v1/model").json()["server"]["detector"] == "yunet"
        body = c.post("/v1/recognize", content=jpeg).json()
        assert body["detector"] == "yunet" and len(body["faces"]) == 1 and len(body["faces"][0]["landmarks"]) == 5


def test_recognize_honours_the_prior_parameter_and_echoes_it(client, serve_model):
    from litefer import Recognizer
    from serve_support import PRIOR

    jpeg = encode(astronaut_rgb(), "JPEG", quality=95)
    bgr = decode_upload(jpeg, 10**8, 10**5)
    weights = {c: round(1 + i / 2, 2) for i, c in enumerate(CLASSES)}
    query = ",".join(f"{c}={w}" for c, w in weights.items())
    for prior, param in (("balanced", "balanced"), (weights, query)):
        r = client.post("/v1/recognize", params={"prior": param}, content=jpeg)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prior"] == prior
        want = Recognizer(str(serve_model[1]), backend="onnxruntime", prior=prior).recognize(bgr)[0]
        assert body["faces"][0]["scores"] == pytest.approx(want.scores, abs=1e-6)
    plain = client.post("/v1/recognize?prior=dataset", content=jpeg).json()["faces"][0]["scores"]
    balanced = client.post("/v1/recognize?prior=balanced", content=jpeg).json()["faces"][0]["scores"]
    default = client.post("/v1/recognize", content=jpeg).json()["faces"][0]["scores"]
    # the default, balanced:0.5, divides the square root out: p_half(c) is proportional to p(c) / prior(c) ** 0.5
    half = {c: default[c] * PRIOR[c] ** 0.5 / plain[c] for c in CLASSES}
    assert max(half.values()) == pytest.approx(min(half.values()), rel=1e-4)
    # balanced divides the stored frequencies out: p_bal(c) is proportional to p(c) / prior(c)
    ratio = {c: balanced[c] * PRIOR[c] / plain[c] for c in CLASSES}
    assert max(ratio.values()) == pytest.approx(min(ratio.values()), rel=1e-4)
    for bad, needle in (("sometimes", "class=weight pairs"), ("neutral=1", "missing class(es)"),
                        (query + ",smirk=2", "unknown class(es) ['smirk']"), (query.replace("=1.0", "=0", 1), "positive")):
        r = client.post("/v1/recognize", params={"prior": bad}, content=jpeg)
        assert r.status_code == 422 and needle in r.json()["message"], (bad, r.text)
        if "class" in needle:
            assert str(CLASSES) in r.json()["message"]


def test_a_repeated_prior_parameter_is_refused_naming_it(client):
    """`?prior=balanced&prior=dataset` silently took the last value."""
    jpeg = encode(astronaut_rgb(), "JPEG", quality=95)
    r = client.post("/v1/recognize?prior=balanced&prior=dataset", content=jpeg)
    assert r.status_code == 422, r.text
    assert r.json()["message"] == "prior: given 2 times ('balanced', 'dataset'); give it once"
    assert client.post("/v1/recognize?prior=balanced", content=jpeg).json()["prior"] == "balanced"


def test_errors_are_json_with_4xx(client):
    rgb = astronaut_rgb()

    def check(resp, status, pattern):
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["status"] == status and isinstance(body["error"], str)
        assert re.search(pattern, body["message"]), body["message"]

    check(client.post("/v1/recognize", content=b""), 400, "empty upload")
    check(client.post("/v1/recognize", content=b"hello world" * 10), 415, "not an image")
    check(client.post("/v1/recognize", content=encode(rgb, "JPEG")[:5000]), 422, "truncated")
    check(client.post("/v1/recognize", content=b"\0" * 300_000), 413, "200000-byte limit")
    check(client.post("/v1/recognize", content=png_header_only(4001, 10)), 422, "4000 px per side")
    check(client.post("/v1/recognize", files={"photo": ("a.txt", b"x", "text/plain")},
                      data={"note": "no image"}), 415, "not an image")
    check(client.post("/v1/recognize", data={"note": "fields only"},
                      headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "")
    check(client.get("/v1/recognize"), 405, "Method Not Allowed")
    check(client.get("/nowhere"), 404, "Not Found")
    check(client.get("/v1/cascades/haarcascade_fullbody.xml"), 404, "unknown cascade")


def test_health_model_card_and_model_files(client, serve_model):
    import cv2
    import onnx

    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["workers"] == 1 and h["capacity"] == 3
    card = client.get("/v1/model").json()
    meta = json.loads({p.key: p.value for p in onnx.load(str(serve_model[1])).metadata_props}["litefer"])
    for key in ("class_names", "preprocess", "tta_flip", "class_prior"):
        assert card[key] == meta[key]
    assert card["crop"] == CropSpec.from_card(read_card(serve_model[1])).to_dict()
    assert card["priors"] == ["dataset", "balanced:0.5", "balanced"] and card["card"]["format"] == "litefer-card/1"
    assert card["default_prior"] == "balanced:0.5"
    assert card["limits"]["max_upload_bytes"] == 200_000
    det = card["browser"]["detector"]
    assert (det["scale_factor"], det["min_neighbors"], det["min_size"], det["search_size"]) == (1.1, 5, 32, 32)
    assert abs(det["frame_scale"] - 48 / 47) < 1e-12
    onnx_bytes = client.get(card["browser"]["onnx_url"]).content
    assert onnx_bytes == Path(serve_model[1]).read_bytes()
    xml = client.get(det["face_cascade"])
    assert xml.status_code == 200 and xml.content == (Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml").read_bytes()
    assert client.get(det["eye_cascade"]).status_code == 200


def test_polling_the_model_card_and_cascades_builds_no_detector(client, monkeypatch):
    """Building a HaarDetector takes ~20 ms on the event loop; polling must not pay it per call."""
    import functools

    from litefer.inference.detect import HaarDetector

    built = []
    real_init = HaarDetector.__init__

    @functools.wraps(real_init)
    def counting_init(self, *a, **k):
        built.append(1)
        real_init(self, *a, **k)

    monkeypatch.setattr(HaarDetector, "__init__", counting_init)
    first = client.get("/v1/model").json()
    for _ in range(3):
        assert client.get("/v1/model").json() == first
        assert client.get(first["browser"]["detector"]["face_cascade"]).status_code == 200
        assert client.get(first["browser"]["detector"]["eye_cascade"]).status_code == 200
    assert client.get("/v1/cascades/other.xml").status_code == 404
    assert built == []


def test_the_detector_route_without_and_with_yunet(client, serve_model):
    """GET /v1/detector.onnx: a clear 404 from a Haar server; from a YuNet server, the model file it
    detects with, described in /v1/model by the server's own YuNetDetector (the page runs the same)."""
    from face_fixtures import yunet_path

    from litefer.inference.align import FER2013_TEMPLATE
    from litefer.serve import create_app

    r = client.get("/v1/detector.onnx")
    assert r.status_code == 404 and r.json()["status"] == 404
    assert re.search(r"detects faces with 'haar', not YuNet.*--detector yunet", r.json()["message"]), r.json()
    assert client.get("/v1/model").json()["browser"]["detector"]["name"] == "haar"

    path = yunet_path()                           # skips where ../shared/models is absent
    cfg = ServeConfig(weights=str(serve_model[1]), detector="yunet", yunet_model=str(path), min_face=40,
                      workers=1, queue=1)
    with _testclient_class()(create_app(cfg)) as c:
        served = c.get("/v1/detector.onnx")
        assert served.status_code == 200 and served.content == path.read_bytes()
        det = c.get("/v1/model").json()["browser"]["detector"]
        own = c.app.state.pool.detector
        assert det["name"] == "yunet" and det["url"] == "/v1/detector.onnx" and det["model_bytes"] == len(served.content)
        assert (det["score_threshold"], det["nms_threshold"], det["top_k"], det["min_size"], det["max_side"]) == \
            (own.score_threshold, own.nms_threshold, own.top_k, own.min_size, own.max_side) == (0.7, 0.3, 5000, 40, 1280)
        assert np.array_equal(np.float32(det["template"]), FER2013_TEMPLATE) and det["template_size"] == 48
        assert det["fallback"]["name"] == "haar" and det["fallback"]["min_size"] == 40
        assert c.get(det["fallback"]["face_cascade"]).status_code == 200


def test_openapi_and_docs_and_page(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/recognize"]["post"]
    assert {"image/*", "multipart/form-data"} <= set(op["requestBody"]["content"])
    assert {"200", "413", "415", "422", "503"} <= set(op["responses"])
    assert {"/healthz", "/v1/model", "/v1/model.onnx", "/v1/detector.onnx"} <= set(spec["paths"])
    assert "YuNet" in spec["paths"]["/v1/detector.onnx"]["get"]["summary"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    for asset in ("/static/app.js", "/static/pipeline.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_without_the_vendor_files_the_page_and_log_say_so_and_the_api_works(serve_model, tmp_path, monkeypatch,
                                                                            caplog):
    """A wheel built without `make web`: one warning line, a visible note on the page, the API intact."""
    import logging

    from litefer.serve import app as serve_app

    monkeypatch.setattr(serve_app, "VENDOR_DIR", tmp_path / "vendor")          # absent
    with caplog.at_level(logging.WARNING, logger="litefer.serve.app"):
        app = serve_app.create_app(ServeConfig(weights=str(serve_model[1]), workers=1, queue=1))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "litefer.serve.app"]
    assert len(warned) == 1 and "on-device mode is unavailable" in warned[0] and "API work" in warned[0]
    with _testclient_class()(app) as c:
        page = c.get("/").text
        assert '<p id="vendor-note" class="warn">On-device mode is unavailable' in page
        browser = c.get("/v1/model").json()["browser"]
        assert browser["available"] is False and "make web" in browser["missing_hint"]
        r = c.post("/v1/recognize", content=encode(astronaut_rgb(), "JPEG"))
        assert r.status_code == 200 and len(r.json()["faces"]) == 1
    vendor = tmp_path / "vendor"                                               # present: the note stays hidden
    (vendor / "ort").mkdir(parents=True)
    (vendor / "ort" / "ort.js").write_text("// stand-in\n")
    (vendor / "manifest.json").write_text(json.dumps({"files": ["ort/ort.js"]}))
    assert serve_app.vendor_manifest() is not None
    assert '<p id="vendor-note" class="warn" hidden>' in serve_app.page_html(True)


def test_gzipped_vendor_files_are_sent_as_stored_or_decompressed(serve_model, tmp_path, monkeypatch):
    """`make web` keeps large vendor files gzipped only: clients that accept gzip get the stored bytes
    with Content-Encoding, the rest the decompressed file; paths outside the folder are 404."""
    import gzip

    from litefer.serve import app as serve_app

    vendor = tmp_path / "vendor"
    (vendor / "ort").mkdir(parents=True)
    wasm = bytes(range(256)) * 4096
    (vendor / "ort" / "rt.wasm.gz").write_bytes(gzip.compress(wasm))
    (vendor / "ort" / "ort.js").write_text("// plain\n")
    (vendor / "manifest.json").write_text(json.dumps({"files": ["ort/rt.wasm", "ort/ort.js"]}))
    (tmp_path / "secret.txt").write_text("no")
    monkeypatch.setattr(serve_app, "VENDOR_DIR", vendor)
    assert serve_app.vendor_manifest() is not None
    app = serve_app.create_app(ServeConfig(weights=str(serve_model[1]), workers=1, queue=1))
    with _testclient_class()(app) as c:
        packed = c.get("/static/vendor/ort/rt.wasm", headers={"Accept-Encoding": "gzip, deflate"})
        assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
        assert packed.content == wasm and packed.headers["content-type"] == "application/wasm"
        plain = c.get("/static/vendor/ort/rt.wasm", headers={"Accept-Encoding": "identity"})
        assert plain.content == wasm and "content-encoding" not in plain.headers
        assert c.get("/static/vendor/ort/ort.js").text == "// plain\n"
        assert c.get("/static/vendor/ort/nope.js").status_code == 404
        assert c.get("/static/vendor/..%2F..%2Fsecret.txt").status_code == 404
        assert c.get("/static/app.js").status_code == 200             # the rest of /static is unchanged


@pytest.mark.parametrize("header,gz", [("gzip", True), ("gzip, deflate, br", True), ("GZIP;Q=0.5", True),
                                       ("*", True), ("x-gzip", True), ("gzip;q=0", False), ("gzip;q=0.0", False),
                                       ("gzip;q=0, identity;q=1", False), ("identity", False), ("", False),
                                       ("*;q=0", False), ("gzip;q=0, *", False), ("br, *;q=0.1", True),
                                       ("gzip;q=nan", False), ("gzip;q=bogus", False)])
def test_accept_encoding_q_values(header, gz):
    from litefer.serve.app import accepts_gzip

    assert accepts_gzip(header) is gz


def test_vendor_files_answer_head_refused_gzip_and_nul_bytes(serve_model, tmp_path, monkeypatch, caplog):
    """HEAD on a file stored gzipped is 200 like GET; ``gzip;q=0`` gets the decompressed bytes; a NUL
    byte in the path is a 404 like any other bad path, with nothing logged as an error."""
    import gzip
    import logging

    from litefer.serve import app as serve_app

    vendor = tmp_path / "vendor"
    (vendor / "ort").mkdir(parents=True)
    wasm = bytes(range(256)) * 512
    (vendor / "ort" / "rt.wasm.gz").write_bytes(gzip.compress(wasm))
    monkeypatch.setattr(serve_app, "VENDOR_DIR", vendor)
    app = serve_app.create_app(ServeConfig(weights=str(serve_model[1]), workers=1, queue=1))
    with caplog.at_level(logging.ERROR), _testclient_class()(app, raise_server_exceptions=False) as c:
        head = c.head("/static/vendor/ort/rt.wasm", headers={"Accept-Encoding": "gzip"})
        assert head.status_code == 200 and head.headers["content-encoding"] == "gzip" and head.content == b""
        plain_head = c.head("/static/vendor/ort/rt.wasm", headers={"Accept-Encoding": "identity"})
        assert plain_head.status_code == 200 and plain_head.headers["content-length"] == str(len(wasm))
        for refused in ("gzip;q=0", "gzip;q=0, identity;q=1"):
            r = c.get("/static/vendor/ort/rt.wasm", headers={"Accept-Encoding": refused})
            assert "content-encoding" not in r.headers and r.content == wasm, refused
        for path in ("/static/vendor/%00", "/static/vendor/ort/%00rt.wasm", "/static/%00", "/static/app.js%00"):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"] == "application/json", path
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ----------------------------------------------------------------------------- command line

def test_cli_refuses_missing_weights_clearly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "litefer", "serve", "--weights", str(tmp_path / "nope.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "nope.pt does not exist" in out.stderr


def _serve_error_line(*flags) -> str:
    out = subprocess.run([sys.executable, "-m", "litefer", "serve", *flags], capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr)
    return lines[0]


def test_cli_refuses_a_port_or_host_it_cannot_listen_on_in_one_line():
    """Before: a port out of range was a multi-line OverflowError; a port in use or an unknown host
    exited 3 (documented as "some inputs skipped") after loading the model."""
    import socket

    assert "--port 99999: must be between 0 and 65535" in _serve_error_line("--port", "99999")
    assert "--host no-such-host.invalid: cannot resolve" in _serve_error_line("--host", "no-such-host.invalid")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"--port {port}: cannot listen there" in _serve_error_line("--port", str(port))


@pytest.mark.parametrize("flag, value, rule", [
    ("--min-transfer-rate", "-1", ">= 0 bytes/s"), ("--transfer-grace", "0", "> 0 seconds"),
    ("--max-connections-per-client", "-2", ">= 0"), ("--max-connections", "-1", ">= 1"),
    ("--upload-timeout", "0", "> 0 seconds"), ("--max-upload-mb", "0", ">= 1024 bytes")])
def test_bad_serve_limits_name_their_flag(flag, value, rule):
    """Before, a bad limit named the ServeConfig field (``upload_timeout=0.0``), not the flag."""
    from litefer.cli import build_parser
    from litefer.cli.serve import config_from_args

    args = build_parser("serve").parse_args(["serve", flag, value])
    with pytest.raises(ValueError, match=rf"^{flag} {value}(\.0)?: must be {re.escape(rule)}"):
        config_from_args(args)


def test_a_bad_serve_limit_is_one_line_and_exit_2():
    assert _serve_error_line("--min-transfer-rate", "-5") == \
        "litefer serve: error: --min-transfer-rate -5.0: must be >= 0 bytes/s (0: off)"


def test_weights_whose_tensors_do_not_fit_are_a_value_error_and_one_line(tmp_path):
    """A weights file whose tensors do not fit its architecture: torch's RuntimeError (Python API)
    and a traceback (`litefer serve`) before."""
    import torch

    from litefer import create_model
    from litefer.data.transforms import Preprocess
    from litefer.weights import load_checkpoint_model, weights_payload

    model = create_model("litefer_cpsca", num_classes=8)
    bad = tmp_path / "misfit.pt"
    torch.save(weights_payload(model, "litefer_cpsca", CLASSES[:7], Preprocess(48, 3).to_dict()), bad)
    with pytest.raises(ValueError, match=r"misfit.pt: its tensors do not fit litefer_cpsca with 7 classes"):
        load_checkpoint_model(bad)
    out = subprocess.run([sys.executable, "-m", "litefer", "serve", "--weights", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "its tensors do not fit litefer_cpsca" in out.stderr and "Traceback" not in out.stderr


def test_cli_serves_a_pt_file_exported_for_the_page(serve_model, tmp_path):
    """A .pt weights file is exported to ONNX once (cached by content hash) for the page."""
    from loadtest import get_json
    from serve_support import serve

    env_cache = tmp_path / "cache"                        # conftest points LITEFER_CACHE here; the server inherits it
    with serve(serve_model[0], tmp_path / "log.txt", "--workers", "1", "--backend", "torch") as (url, _):
        status, card = get_json(url, "/v1/model")
        assert status == 200 and card["server"]["backend"] == "torch"
    assert len(list((env_cache / "serve").glob("test_model-*.onnx"))) == 1


def test_packaged_default_model_serves_the_astronaut():
    from litefer.inference.backends import DEFAULT_FILES, packaged_file

    try:
        packaged_file(DEFAULT_FILES["default"]["onnxruntime"])
    except FileNotFoundError:
        pytest.fail(f"the packaged default weights (src/litefer/weights/{DEFAULT_FILES['default']['onnxruntime']}) "
                    "are missing from this checkout")
    from litefer.serve import create_app

    with _testclient_class()(create_app(ServeConfig(workers=1, queue=1))) as c:
        r = c.post("/v1/recognize", content=encode(astronaut_rgb(), "JPEG"))
        assert r.status_code == 200 and len(r.json()["faces"]) == 1
        card = c.get("/v1/model").json()
        assert card["card"]["training"]["epochs_trained"] == 17 and card["priors"] == ["dataset", "balanced:0.5", "balanced"]


def test_the_page_gets_the_search_size_the_server_scales_its_copy_for():
    """The page scales its search copy for ``search_size`` (min_face rounded down to its octave of 32
    px, as HaarDetector does): with min_face 48 the copy must be the server's (scaled for 32), not
    one scaled for 48, or the page's boxes differ from the server's."""
    from litefer.inference.detect import HaarDetector
    from litefer.serve.app import detector_settings

    for min_face, expected in ((32, 32), (48, 32), (70, 64)):
        det = detector_settings(ServeConfig(min_face=min_face))
        assert det["min_size"] == min_face and det["search_size"] == expected
        assert det["search_size"] == HaarDetector(min_size=min_face).search_size()
