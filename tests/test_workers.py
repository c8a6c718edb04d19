"""Worker processes: jobs train in spawned children, a dead child fails only its job, cancel crosses over."""
from __future__ import annotations

import math
import os
import runpy
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from core.engine.config import RunConfig
from core.lab.grid import GridConfig
from core.serve.jobs import JobManager
from core.serve.store import RunStore
from helpers import train_events

pytestmark = pytest.mark.slow  # worker processes: each spawn starts a Python and imports torch

SMALL = RunConfig(dataset="digits", hidden=(32,), epochs=2, batch_size=64, log_every=10, seed=3)
# Long enough to be killed or cancelled mid-run (about a second per epoch on one thread).
LONG = SMALL.replace(hidden=(256, 256), epochs=200, batch_size=8, seed=4)


@pytest.fixture
def manager(isolated_cache):
    jobs = JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 1}, processes=True)
    yield jobs
    jobs.shutdown()


def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _running_step(manager: JobManager, key: str) -> int:
    snap = manager.snapshot(key)
    return max((getattr(e, "first_step", 0) for e in snap.events if e.kind == "steps"), default=0)


def test_a_job_trains_in_a_worker_process_learns_what_it_learns_in_this_one_and_stores_its_weights(manager):
    snap = manager.wait(manager.submit(SMALL), timeout=180)
    assert snap.status == "finished"
    end = snap.events[-1]
    assert end.test_acc > 0.5 and end.test_loss < math.log(10)  # learned: far above chance
    here, events = train_events(SMALL)
    assert end.test_acc == pytest.approx(here.test_acc, abs=0.02)
    assert manager.store.meta(SMALL.key())["status"] == "finished"  # the manager stored it
    assert manager.warmup_status()[0]["state"] == "ready"
    stored = manager.store.final_weights(SMALL.key())  # trained in the child, stored by the web process
    (mine,) = [e for e in events if e.kind == "weights"]
    assert stored is not None and list(stored.weights) == list(mine.weights) and stored.step == mine.step
    for name, array in mine.weights.items():
        assert np.allclose(stored.weights[name], array, atol=1e-3)  # the same training (threads may round apart)
    assert not any(e.weights for e in snap.events if e.kind == "weights")  # the history in memory holds no arrays


def test_a_killed_worker_fails_its_job_and_a_new_worker_serves_the_next(manager):
    key = manager.submit(LONG)
    _wait_until(lambda: _running_step(manager, key) > 0)
    (slot,) = manager._slots
    os.kill(slot.pid, signal.SIGKILL)
    snap = manager.wait(key, timeout=60)
    assert snap.status == "failed"
    assert "SIGKILL" in snap.error and "nothing stored was touched" in snap.error
    assert manager.store.meta(key) is None
    after = manager.wait(manager.submit(SMALL), timeout=180)
    assert after.status == "finished" and after.events[-1].test_acc > 0.5
    assert slot.restarts == 1


def test_cancel_reaches_the_worker_process(manager):
    key = manager.submit(LONG)
    _wait_until(lambda: _running_step(manager, key) > 0)
    assert manager.cancel(key)
    snap = manager.wait(key, timeout=60)
    assert snap.status == "cancelled"
    assert snap.events[-1].step < LONG.epochs * 1000


def test_a_grid_in_a_worker_process_hands_its_cells_to_the_manager_to_store(manager):
    grid = GridConfig(base=SMALL.replace(epochs=1, activation="sigmoid"), activations=("sigmoid", "relu"),
                      depths=(1, 2), width=16)
    snap = manager.wait(manager.submit(grid), timeout=240)
    assert snap.status == "finished"
    for _, cell in grid.cells():
        meta = manager.store.meta(cell.key())
        assert meta["status"] == "finished"  # filed by the web process, not the child
        assert meta["weights"]["stored"] is False  # a grid's cells keep metrics only


def test_the_app_entry_script_is_inert_when_a_worker_process_reimports_it():
    """Spawned workers re-run Streamlit's __main__ (app/main.py) as __mp_main__: it must not draw or start workers."""
    namespace = runpy.run_path(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), run_name="__mp_main__")
    assert "page" not in namespace  # no navigation was built, no page run
