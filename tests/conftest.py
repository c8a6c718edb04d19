"""Shared fixtures: an isolated cache per test, the real datasets from ../shared (read-only), a
``streamlit run`` server for the browser tests; the ``slow`` marker put on what the fast tier leaves out."""
from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import pytest

from browser_helpers import free_port, start_server, stop_server
from pg_helpers import PostgresUnavailable, start_postgres
from ray_helpers import Cluster

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# Never reach for the network from tests; point the data search at ../shared when it is there.
os.environ.setdefault("GRADIENT_LAB_OFFLINE", "1")
# Jobs train in threads of the test process (tests/test_workers.py covers worker processes).
os.environ.setdefault("GRADIENT_LAB_WORKER_PROCESSES", "0")
if SHARED_DATASETS.is_dir():
    os.environ.setdefault("GRADIENT_LAB_DATA_DIR", str(SHARED_DATASETS))


# The fast tier (-m "not slow and not browser") leaves out, besides tests marked slow by hand: tests on
# the real datasets, and tests that run the Streamlit app (AppTest) or start another Python (subprocess).
REAL_DATA_FIXTURES = {"shared_mnist", "shared_fashion"}


def starts_slowly(obj) -> bool:
    """Streamlit's AppTest (named, not imported: most test files never load Streamlit) or subprocess."""
    return obj is subprocess or (isinstance(obj, type) and obj.__name__ == "AppTest"
                                 and obj.__module__.startswith("streamlit.testing"))


def reaches_slow_start(code: types.CodeType, names: dict, seen: set) -> bool:
    """Whether ``code`` (names resolved in ``names``, its globals) names what :func:`starts_slowly`,
    itself or through a function of tests/ it names (followed, each once)."""
    for name in code.co_names:
        found = names.get(name)
        if starts_slowly(found):
            return True
        if isinstance(found, types.FunctionType) and found.__code__.co_filename.startswith(str(TESTS)) \
                and found not in seen:
            seen.add(found)
            if reaches_slow_start(found.__code__, found.__globals__, seen):
                return True
    return any(reaches_slow_start(const, names, seen) for const in code.co_consts if isinstance(const, types.CodeType))


def is_slow(item: pytest.Function) -> bool:
    if REAL_DATA_FIXTURES & set(item.fixturenames):
        return True
    functions = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    seen: set = set()
    return any(reaches_slow_start(fn.__code__, fn.__globals__, seen) for fn in functions
               if isinstance(fn, types.FunctionType))


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.Function) and not item.get_closest_marker("slow") and is_slow(item):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray head (loopback, token auth) and two front-ends, for the tests that ask for the Ray backend."""
    running = Cluster()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session (tests/pg_helpers.py); skipped only where it is not installed."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's PostgreSQL server: its plain ``postgresql://`` URL."""
    return postgres_server.create_database()


@pytest.fixture
def server(tmp_path):
    """The app started as README starts it (``python -m app.launch``) on a free port with its own cache: its base URL."""
    port = free_port()
    # One torch thread: the browser shares this machine, and a run on every core would starve it.
    proc = start_server(tmp_path / "cache", port, tmp_path / "streamlit.log", {"OMP_NUM_THREADS": "1"})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)
