"""Shared test settings (edit by appending; several test modules rely on these fixtures)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))   # tests/fixtures.py: generated data sets
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))   # loadtest.py: the serve load and fault clients


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the tests use tiny tensors, and on a busy 2-core machine two threads
    contending with another job are many times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Parsed-data caches go to a per-test folder, never the user's ~/.cache; no YuNet model is on disk
    (``detector="auto"`` is Haar) unless a test puts one there or sets LITEFER_YUNET."""
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LITEFER_YUNET", raising=False)
    yield


# --- litefer serve (tests/test_serve_*.py) ---------------------------------------------------------

@pytest.fixture(scope="session")
def serve_model(tmp_path_factory):
    """(weights .pt, ONNX export) of a small model the serve tests make themselves."""
    from serve_support import make_weights

    return make_weights(tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="session")
def serve_url(serve_model, tmp_path_factory):
    """A ``litefer serve`` subprocess detecting with Haar (whatever the default detector finds on disk),
    with small limits (1 MiB uploads, 2 s body and header deadlines), shared by the API, load and browser
    tests; yields its base URL."""
    from serve_support import serve

    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with serve(serve_model[1], log, "--detector", "haar", "--workers", "2", "--queue", "16", "--max-upload-mb", "1",
               "--upload-timeout", "2", "--header-timeout", "2") as (url, _proc):
        yield url
