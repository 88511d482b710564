"""The wheel: what travels in it, with and without the page's vendor files (``make web``)."""
from __future__ import annotations

import json
import subprocess
import zipfile

import pytest
from lean_install import ROOT, build_wheel

ALWAYS = ["litefer/samples/astronaut.jpg", "litefer/samples/README.md", "litefer/weights/litefer_cpsca112_ferplus.onnx",
          "litefer/weights/litefer_cpsca112_ferplus.json", "litefer/serve/static/index.html",
          "litefer/serve/static/app.js", "litefer/inference/samples.py"]
VENDOR_FILES = {"ort/ort.wasm.min.js": "// stand-in\n", "ort/ort-wasm-simd-threaded.wasm": "\0asm",
                "opencv/opencv.js": "// stand-in\n", "swagger/swagger-ui.css": "/* */\n"}


def names(wheel) -> set[str]:
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_carries_the_vendor_files_when_present_and_builds_without(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True, check=False).returncode:
        pytest.skip(f"{ROOT} is not a git checkout: the wheel is built from the files git lists")
    vendor = tmp_path / "vendor"
    for rel, text in VENDOR_FILES.items():
        (vendor / rel).parent.mkdir(parents=True, exist_ok=True)
        (vendor / rel).write_text(text)
    (vendor / "manifest.json").write_text(json.dumps({"files": sorted(VENDOR_FILES)}))
    with_vendor = names(build_wheel(tmp_path / "with", vendor))
    expected = {f"litefer/serve/static/vendor/{rel}" for rel in [*VENDOR_FILES, "manifest.json"]}
    assert expected <= with_vendor and set(ALWAYS) <= with_vendor
    without = names(build_wheel(tmp_path / "without", None))
    assert set(ALWAYS) <= without and not any("/static/vendor/" in n for n in without)
    assert not any(n.startswith("litefer/") and "__pycache__" in n for n in with_vendor | without)
