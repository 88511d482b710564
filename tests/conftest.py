"""Shared test settings (edit by appending; several test modules rely on these fixtures)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))   # tests/fixtures.py: generated data sets


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
    """Parsed-data caches go to a per-test folder, never the user's ~/.cache."""
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))
    yield
