"""Shared fixtures: an isolated cache per test, the real datasets from ../shared (read-only), a
``streamlit run`` server for the browser tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser_helpers import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# Never reach for the network from tests; point the data search at ../shared when it is there.
os.environ.setdefault("GRADIENT_LAB_OFFLINE", "1")
# Jobs train in threads of the test process (tests/test_workers.py covers worker processes).
os.environ.setdefault("GRADIENT_LAB_WORKER_PROCESSES", "0")
if SHARED_DATASETS.is_dir():
    os.environ.setdefault("GRADIENT_LAB_DATA_DIR", str(SHARED_DATASETS))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh cache dir (run store, uploads) for this test; the job-manager singleton is reset."""
    import core.serve.jobs

    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADIENT_LAB_CACHE_DIR", str(cache))
    monkeypatch.setattr(core.serve.jobs, "_manager", None)
    return cache


def _require(folder: str) -> Path:
    raw = SHARED_DATASETS / folder / "raw"
    if not raw.is_dir():
        pytest.skip(f"real {folder} files not found at {raw} (CI has ../shared/datasets beside the clone)")
    return SHARED_DATASETS


@pytest.fixture
def shared_mnist() -> Path:
    return _require("MNIST")


@pytest.fixture
def shared_fashion() -> Path:
    return _require("FashionMNIST")


@pytest.fixture
def no_mnist(tmp_path, monkeypatch):
    """Pretend MNIST / Fashion-MNIST are not on this server (empty data folder, no downloads)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("GRADIENT_LAB_DATA_DIR", str(empty))
    monkeypatch.setenv("GRADIENT_LAB_OFFLINE", "1")


@pytest.fixture
def server(tmp_path):
    """``streamlit run app/main.py`` on a free port with its own cache: its base URL."""
    port = free_port()
    # One torch thread: the browser shares this machine, and a run on every core would starve it.
    proc = start_server(tmp_path / "cache", port, tmp_path / "streamlit.log", {"OMP_NUM_THREADS": "1"})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)
