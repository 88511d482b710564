"""`litefer fetch`: explicit downloads only, checked and atomic; tested against local file:// URLs."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from litefer import cli
from litefer.fetch import KNOWN, cached_path, download, fetch, models_dir
from litefer.inference.detect import YuNetDetector, create_detector

from face_fixtures import yunet_path


def _file(tmp_path, data=b"litefer weights, not really" * 100):
    p = tmp_path / "src" / "published.bin"
    p.parent.mkdir()
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_fetch_a_url_into_the_cache_with_checksum(tmp_path):
    src, digest = _file(tmp_path)
    path = fetch(src.as_uri(), sha256=digest)
    assert path == models_dir() / "published.bin" and path.read_bytes() == src.read_bytes()
    src.write_bytes(b"changed upstream")            # cached and matching: not fetched again
    assert fetch(src.as_uri(), sha256=digest).read_bytes() != b"changed upstream"


def test_checksum_mismatch_leaves_nothing(tmp_path):
    src, _ = _file(tmp_path)
    dest = tmp_path / "out" / "w.bin"
    with pytest.raises(ValueError, match="does not match"):
        download(src.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []     # no .part left behind


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="known names are"):
        fetch("no-such-model")
    with pytest.raises(ValueError, match="only http"):
        download("ftp://example.org/x", tmp_path / "x")
    with pytest.raises(OSError, match="cannot fetch"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "x")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        download(empty.as_uri(), tmp_path / "x")
    big, _ = _file(tmp_path)
    with pytest.raises(ValueError, match="larger than"):
        download(big.as_uri(), tmp_path / "x", max_bytes=10)
    assert not (tmp_path / "x").exists()


def test_a_file_that_is_not_yunet_is_refused(tmp_path):
    src, _ = _file(tmp_path)
    with pytest.raises(ValueError, match="YuNet"):
        fetch("yunet", url=src.as_uri())
    assert cached_path("yunet") is None


FOREIGN_ONNX = Path(__file__).resolve().parents[1] / "src" / "litefer" / "weights" / "litefer_cpsca112_ferplus.onnx"


def test_an_onnx_model_that_is_not_yunet_is_refused_and_not_cached(tmp_path, capsys):
    """Any ONNX file used to pass the YuNet check and be cached; every later detection then failed."""
    assert cli.main(["fetch", "yunet", "--url", FOREIGN_ONNX.as_uri()]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a YuNet model" in err and "litefer_cpsca112_ferplus.onnx" in err and "\n" not in err
    assert cached_path("yunet") is None and not (models_dir().exists() and any(models_dir().iterdir()))


def test_serve_refuses_a_foreign_onnx_detector_at_startup():
    out = subprocess.run([sys.executable, "-m", "litefer", "serve", "--detector", str(FOREIGN_ONNX), "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load as a YuNet model" in lines[0], out.stderr


def test_fetch_yunet_then_the_detector_needs_no_path(tmp_path, capsys):
    with pytest.raises(ValueError, match="litefer fetch yunet"):
        create_detector("yunet")                  # nothing is downloaded implicitly
    local = yunet_path()                          # skips where ../shared/models is absent
    assert cli.main(["fetch", "yunet", "--url", local.as_uri()]) == 0
    assert KNOWN["yunet"].filename in capsys.readouterr().out
    assert cached_path("yunet") is not None
    assert isinstance(create_detector("yunet"), YuNetDetector)
    bad, _ = _file(tmp_path)                      # a forced re-download that fails its check ...
    with pytest.raises(ValueError, match="YuNet"):
        fetch("yunet", url=bad.as_uri(), force=True)
    assert cached_path("yunet").read_bytes() == local.read_bytes()    # ... keeps the good file
    assert [p.name for p in models_dir().iterdir()] == [KNOWN["yunet"].filename]
    assert cli.main(["fetch", "--list"]) == 0
    assert "cached at" in capsys.readouterr().out


def test_cli_reports_a_bad_checksum_without_traceback(tmp_path, capsys):
    src, _ = _file(tmp_path)
    assert cli.main(["fetch", src.as_uri(), "--sha256", "0" * 64]) == 2
    assert "does not match" in capsys.readouterr().err
