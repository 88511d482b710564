"""The recognition, predict and serve paths in subprocesses where importing torch (and the other
packages the lean install leaves out) fails, as in ``pip install litefer``: each must succeed and
never ask for torch. A ``sitecustomize`` on PYTHONPATH installs the blocking import finder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from face_fixtures import checkpoint  # noqa: F401

# Packages outside the lean install that the recognition path must not import (onnx included: the
# card is read from the ONNX protobuf directly).
BLOCKED = ("torch", "torchvision", "onnx", "pandas", "matplotlib", "yaml", "skimage", "scipy", "tensorboard",
           "ptflops")

SITECUSTOMIZE = '''\
"""Test prelude: importing a blocked package raises ImportError, and the attempt is logged."""
import importlib.abc
import os
import sys

BLOCKED = set(os.environ["LITEFER_BLOCK"].split(","))


class BlockedImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in BLOCKED:
            return None
        with open(os.environ["LITEFER_BLOCK_LOG"], "a") as f:
            f.write(name + "\\n")
        raise ModuleNotFoundError(f"No module named {name!r} (blocked: the lean install has no {top})", name=name)


sys.meta_path.insert(0, BlockedImports())
'''


@pytest.fixture
def lean_env(tmp_path, monkeypatch) -> Path:
    """Environment of every subprocess started by the test: the prelude on PYTHONPATH; returns the
    file that lists the blocked imports attempted."""
    prelude = tmp_path / "prelude"
    prelude.mkdir()
    (prelude / "sitecustomize.py").write_text(SITECUSTOMIZE)
    attempts = tmp_path / "blocked_imports.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(prelude), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LITEFER_BLOCK", ",".join(BLOCKED))
    monkeypatch.setenv("LITEFER_BLOCK_LOG", str(attempts))
    return attempts


def blocked_attempts(log: Path) -> list[str]:
    return log.read_text().split() if log.is_file() else []


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def python_json(code: str, cwd: Path) -> dict:
    """What ``code`` prints as JSON, after checking that it ran."""
    out = python(code, cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_prelude_blocks_torch(lean_env, tmp_path):
    out = python("import torch", tmp_path)
    assert out.returncode == 1 and "blocked: the lean install has no torch" in out.stderr
    assert blocked_attempts(lean_env) == ["torch"]


def test_the_default_recognizer_never_imports_torch(lean_env, tmp_path):
    code = ("import json, sys, litefer\n"
            "from litefer.inference.samples import sample_photo\n"
            "faces = litefer.Recognizer().recognize(sample_photo())\n"
            "print(json.dumps({'boxes': [f.box for f in faces], 'torch': 'torch' in sys.modules}))")
    got = python_json(code, tmp_path)
    assert not got["torch"] and len(got["boxes"]) == 1
    x, y, w, _ = got["boxes"][0]
    assert abs(x - 177) <= 4 and abs(y - 67) <= 4 and 85 <= w <= 105
    assert blocked_attempts(lean_env) == []


def test_predict_with_csv_and_json_never_imports_torch_or_pandas(lean_env, tmp_path):
    cmd = [sys.executable, "-m", "litefer", "predict", "--sample", "--no-progress",
           "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["faces"] == 1
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("source,face,x,y,w,h,label,score") and len(lines) == 2
    assert blocked_attempts(lean_env) == []


def test_explain_through_onnx_runtime_never_imports_torch(lean_env, tmp_path):
    code = ("import json, sys, litefer\n"
            "from litefer.inference.samples import sample_photo\n"
            "face, = litefer.Recognizer().recognize(sample_photo(), explain=True)\n"
            "rect, values = face.explanation.on_photo(512, 512)\n"
            "print(json.dumps({'label': face.explanation.label == face.label, 'res': face.explanation.resolution,\n"
            "                  'peak': float(values.max()), 'torch': 'torch' in sys.modules}))")
    got = python_json(code, tmp_path)
    assert got["label"] and got["res"] == [4, 4] and 0.9 < got["peak"] <= 1.0 and not got["torch"]
    cmd = [sys.executable, "-m", "litefer", "predict", "--sample", "--no-progress", "--explain", str(tmp_path / "maps")]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["astronaut.jpg"]
    assert blocked_attempts(lean_env) == []


def test_serve_round_trip_never_imports_torch(lean_env, tmp_path):
    from loadtest import get_json
    from serve_support import serve

    from litefer.inference.samples import sample_photo
    from litefer.serve.app import VENDOR_DIR

    with serve("default", tmp_path / "serve.log", "--workers", "1") as (url, _proc):
        import http.client

        conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)
        conn.request("POST", "/v1/recognize", body=sample_photo().read_bytes(), headers={"Content-Type": "image/jpeg"})
        answer = conn.getresponse()
        status, body = answer.status, json.loads(answer.read())
        conn.close()
        card = get_json(url, "/v1/model")[1]
    assert status == 200 and len(body["faces"]) == 1, body
    assert card["server"]["backend"] == "onnxruntime"
    assert card["browser"]["available"] == (VENDOR_DIR / "manifest.json").is_file()
    assert blocked_attempts(lean_env) == []


def test_a_pt_file_without_torch_is_one_line_naming_the_extra(lean_env, checkpoint, tmp_path):
    cmd = [sys.executable, "-m", "litefer", "predict", "--sample", "--no-progress", "--weights", str(checkpoint)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("litefer predict: error: ") and str(checkpoint) in lines[0]
    assert "pip install 'litefer[train]'" in lines[0] and f"litefer export --weights {checkpoint}" in lines[0]
    assert blocked_attempts(lean_env) == ["torch"]


def test_training_commands_name_their_extra_without_torch(lean_env, tmp_path):
    out = subprocess.run([sys.executable, "-m", "litefer", "train", "x.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 2 and "litefer[train]" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["export", "--weights", "default", "--out", "x.onnx"],
                                  ["export", "--format", "onnx-int8", "--weights", "default"],
                                  ["train", "--resume", "runs/x"], ["train", "--set", "optim.lr=0.1", "cfg.yaml"],
                                  ["finetune", "faces", "--out", "ft", "--set", "head.lr=0.1"]])
def test_readme_commands_with_flags_name_the_extra_without_torch(argv, lean_env, tmp_path):
    """Flags of a command whose extra is missing are not argparse noise: one line naming the extra."""
    out = subprocess.run([sys.executable, "-m", "litefer", *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"litefer {argv[0]}: error: ") and "pip install 'litefer[train]'" in lines[0]


def test_torch_names_of_the_python_api_name_the_extra_without_torch(lean_env, tmp_path):
    code = ("import json, litefer\n"
            "got = {}\n"
            "for name in ('finetune', 'create_model', 'list_models'):\n"
            "    try:\n"
            "        getattr(litefer, name)\n"
            "    except ImportError as e:\n"
            "        got[name] = [type(e).__name__, str(e)]\n"
            "try:\n"
            "    from litefer import finetune\n"
            "except ImportError as e:\n"
            "    got['from'] = [type(e).__name__, str(e)]\n"
            "print(json.dumps(got))")
    got = python_json(code, tmp_path)
    assert set(got) == {"finetune", "create_model", "list_models", "from"}
    for name, (kind, message) in got.items():                 # MissingExtra is an ImportError
        assert kind == "MissingExtra" and "pip install 'litefer[train]'" in message, (name, message)
    assert got["create_model"][1].startswith("litefer.create_model needs torch")
