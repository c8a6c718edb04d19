"""Pause, step and resume (issue 24.3): a paused run is the same run as an uninterrupted one, a step trains exactly
its batches, only the browser that started a run may hold it, and a pause past its bound ends the run stored as
paused with its history."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from apptest_helpers import new_app, texts
from core.engine.config import RunConfig
from core.serve.budget import Refused
from core.serve.jobs import JobManager, get_manager
from core.serve.pause import MAX_STEP_BATCHES
from core.serve.store import RunStore
from helpers import of_kind
from ray_helpers import BACKENDS, manager_on

# Three spiral arms, learned well above chance in a few seconds; 26 steps an epoch, 520 in all.
SPIRAL = RunConfig(dataset="spiral", hidden=(32, 32), lr=0.01, epochs=20, batch_size=32, log_every=10, seed=2)
TIMES = {"elapsed", "epoch_seconds", "started_at"}  # the clock's readings: the only fields a pause may change


@pytest.fixture
def threads(isolated_cache):
    return JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 1}, processes=False)


def _until(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _held_at(manager: JobManager, key: str, other_than: int | None = None) -> int:
    """The step a paused job waits at, once it waits (at another step than ``other_than``)."""
    def held():
        snap = manager.snapshot(key)
        assert not snap.done, f"the run ended ({snap.status}) instead of waiting"
        at = snap.paused_at
        return at is not None and at != other_than and (at,)
    return _until(held)[0]


def _started(manager: JobManager, key: str, eval_first: bool = False) -> None:
    """Wait until job ``key`` trains alone (it can be paused), and has logged once with ``eval_first``."""
    _until(lambda: (snap := manager.snapshot(key)).pausable and (not eval_first or of_kind(snap.events, "eval")))


def _same(a, b, where: str = "") -> None:
    """Equal to the bit (NaN equal to NaN), through dataclasses, dicts, lists and arrays."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for name in vars(a):
            if name not in TIMES:
                _same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for name in a:
            _same(a[name], b[name], f"{where}[{name}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


def _paused_stepped_resumed(manager: JobManager, cfg: RunConfig, batches: int) -> tuple[int, int]:
    """Train ``cfg`` with a pause, a step of ``batches`` and a resume; (step paused at, step after the step)."""
    key = manager.submit(cfg, force=True)
    _started(manager, key, eval_first=True)
    manager.pause(key)
    first = _held_at(manager, key)
    manager.step(key, batches)
    after = _held_at(manager, key, other_than=first)
    time.sleep(0.1)  # it stays where it is while paused
    assert manager.snapshot(key).paused_at == after
    manager.resume(key)
    return first, after


def _stored(manager: JobManager, cfg: RunConfig):
    snap = manager.wait(cfg.key(), timeout=300)
    assert snap.status == "finished", snap.error
    return manager.store.get(cfg.key()).events


def _assert_identical_when_paused(manager: JobManager) -> None:
    manager.submit(SPIRAL)
    alone = _stored(manager, SPIRAL)
    first, after = _paused_stepped_resumed(manager, SPIRAL, 7)
    held = _stored(manager, SPIRAL)
    assert 0 < first and after == first + 7 < of_kind(held, "started")[0].total_steps  # paused mid-run
    end = held[-1]
    assert end.test_acc > 0.6 and end.test_loss < math.log(3)  # it learned: far above chance (1/3)
    assert [e.kind for e in held] == [e.kind for e in alone]
    _same(held, alone)  # every event, final weights included, to the bit; only the clock differs
    assert of_kind(held, "weights")[0].weights  # the weights were compared, not empty on both sides


@pytest.fixture
def manager(request, isolated_cache):
    """One trainer: local in threads, or (indirect "ray") the Ray test cluster's (the pause crosses from its
    scheduler actor to its trainer actor and back)."""
    return manager_on(request, isolated_cache / "runs", 1,
                      lambda: JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 1}, processes=False))


@pytest.mark.parametrize("manager", BACKENDS, indirect=True)
def test_pause_step_resume_gives_the_uninterrupted_run_bit_for_bit(manager):
    _assert_identical_when_paused(manager)


@pytest.mark.slow  # starts a worker process
def test_pause_step_resume_crosses_into_a_worker_process(isolated_cache):
    manager = JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 1}, processes=True)
    try:
        _assert_identical_when_paused(manager)
    finally:
        manager.shutdown()


def test_a_step_trains_exactly_its_batches(threads):
    key = threads.submit(SPIRAL)
    _started(threads, key)
    threads.pause(key)
    first = _held_at(threads, key)
    threads.step(key, 1)
    second = _held_at(threads, key, other_than=first)
    threads.step(key, 5)
    third = _held_at(threads, key, other_than=second)
    threads.cancel(key)  # ends the wait: a cancelled run ends where it stood
    snap = threads.wait(key, timeout=60)
    assert (second, third) == (first + 1, first + 6)
    assert snap.status == "cancelled" and snap.events[-1].step == third
    steps = of_kind(snap.events, "steps")
    assert sum(len(e.losses) for e in steps) == third  # one loss per batch trained (stride 1)


def test_pause_is_refused_to_another_browser_and_counts_against_the_quota(threads, monkeypatch):
    key = threads.submit(SPIRAL, session="s-a", browser="A")
    threads.submit(SPIRAL, session="s-b", browser="B")  # B watches A's run
    _started(threads, key)
    for hold in (lambda: threads.pause(key, browser="B"), lambda: threads.step(key, 3, browser="B"),
                 lambda: threads.resume(key, browser="B")):
        with pytest.raises(Refused, match="Only the browser that started this run"):
            hold()
    assert not threads.snapshot(key).paused
    threads.pause(key, browser="A")
    _held_at(threads, key)
    for bad in (0, MAX_STEP_BATCHES + 1, 2.5):
        with pytest.raises(Refused, match=f"1 to {MAX_STEP_BATCHES} batches"):
            threads.step(key, bad, browser="A")
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "1")
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_QUEUED_PER_SESSION"):  # the paused run still holds A's place
        threads.submit(SPIRAL.replace(seed=3), session="s-a", browser="A")
    threads.resume(key, browser="A")
    assert threads.wait(key, timeout=120).status == "finished"
    with pytest.raises(Refused, match="Only a running run"):
        threads.pause(key, browser="A")


def test_a_co_batched_run_cannot_be_paused_and_says_why(threads):
    keys = [threads.submit(SPIRAL.replace(lr=lr)) for lr in (0.02, 0.03)]  # one burst: trained together as lanes
    _until(lambda: all(threads.snapshot(k).status == "running" for k in keys))
    with pytest.raises(Refused, match="one batch with other runs"):
        threads.pause(keys[0])
    assert not threads.snapshot(keys[0]).pausable
    for key in keys:
        assert threads.wait(key, timeout=120).status == "finished"


def test_a_pause_past_its_bound_ends_the_run_stored_as_paused_with_its_history(threads, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_MAX_PAUSE_MINUTES", "0.005")  # 0.3 seconds
    key = threads.submit(SPIRAL)
    _started(threads, key, eval_first=True)
    threads.pause(key)
    at = _held_at(threads, key)
    snap = threads.wait(key, timeout=60)
    assert snap.status == "paused"
    end = snap.events[-1]
    assert end.status == "paused" and end.step == at and "GRADIENT_LAB_MAX_PAUSE_MINUTES" in end.reason
    assert threads.store.meta(key)["status"] == "paused"
    stored = JobManager(threads.store, processes=False).snapshot(key)  # a fresh server reads it back
    assert stored.status == "paused"
    evals = of_kind(stored.events, "eval")
    assert evals and evals[-1].step == at  # the progress up to the pause is kept and shown
    assert threads.submit(SPIRAL) == key and threads.snapshot(key).status in ("queued", "running")  # trains again
    threads.cancel(key)
    threads.wait(key, timeout=60)


def test_the_playground_pauses_steps_and_resumes_its_run(isolated_cache):
    at = new_app({"dataset": "spiral", "epochs": "200", "log_every": "5"})
    at.button(key="train").click().run()
    key = at.session_state["gl_job"]
    at.button(key=f"pause_{key}").click().run()

    def status_says(text: str) -> str:
        for _ in range(200):
            shown = texts(at.info)
            if text in shown:
                return shown
            time.sleep(0.1)
            at.run()
            assert not at.exception, at.exception
        raise AssertionError(f"{text!r} never shown; info: {shown}")

    shown = status_says("Paused at step")
    first = int(shown.split("Paused at step ")[1].split("**")[0].replace(",", ""))
    at.number_input(key=f"step_batches_{key}").set_value(3).run()
    at.button(key=f"step_{key}").click().run()
    status_says(f"Paused at step {first + 3:,}")
    other = new_app({"dataset": "spiral", "epochs": "200", "log_every": "5"})  # another browser on the same run
    assert not [b for b in other.button if b.key == f"pause_{key}" or b.key == f"step_{key}"]
    assert "only it can step or resume it" in texts(other.caption)  # it is told who holds the run
    at.button(key=f"resume_{key}").click().run()
    assert at.button(key=f"pause_{key}").label == "Pause"  # training again
    get_manager().cancel(key)  # for both browsers
    assert get_manager().wait(key, timeout=60).status == "cancelled"
