"""Co-batching: compatible queued runs train as one lanes job, each equal to itself trained alone."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from core.serve import budget
from core.engine.batched import StackedLanes
from core.serve.cobatch import compatible, dispatch
from core.engine.config import RunConfig
from core.engine.events import CellEvent, RunFailed, RunFinished
from core.serve.jobs import JobManager
from core.engine.models import build_model
from core.serve.scheduler import FairQueue
from core.serve.store import RunStore
from helpers import assert_same_run, train_events
from ray_helpers import BACKENDS, manager_on

BASE = RunConfig(dataset="digits", hidden=(16,), epochs=2, batch_size=64, optimizer="sgd", lr=0.2, log_every=10)
# Students' variations of one lesson: activation, depth, width, learning rate (one data stream).
VARIANTS = [BASE.replace(activation="sigmoid", hidden=(16,) * 3), BASE.replace(activation="tanh", lr=0.1),
            BASE.replace(activation="relu", hidden=(32, 32)), BASE.replace(optimizer="adam", lr=0.01)]


def _manager(cache, processes: bool = False) -> JobManager:
    """A manager without workers yet: what is submitted stays queued until :func:`_start`."""
    return JobManager(RunStore(cache / "runs"), workers={"cpu": 0}, processes=processes)


def _start(manager: JobManager) -> None:
    manager.workers = {"cpu": 1}
    manager.start()


def _lanes(manager: JobManager, key: str) -> int:
    """How many runs trained together with this one (its RunStarted says)."""
    return manager.snapshot(key).events[0].lanes


def _step(manager: JobManager, key: str) -> int:
    return max((e.step for e in manager.snapshot(key).events if e.kind == "eval"), default=0)


def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- the queue ----------------------------------------------------------------------------------
def test_get_group_takes_the_next_item_and_compatible_ones_and_keeps_the_rotation_fair():
    q = FairQueue()
    for item, session in [("x-a1", "a"), ("y-a2", "a"), ("y-b1", "b"), ("x-c1", "c"), ("x-c2", "c"), ("z-d1", "d")]:
        q.put(item, session)
    same = lambda chosen, item: item[0] == chosen[0][0]  # noqa: E731
    assert q.get_group(same, limit=10) == ["x-a1", "x-c1", "x-c2"]
    # b and d were not served: they come first; a (served) goes behind them; c has nothing left
    assert q.order() == ["y-b1", "z-d1", "y-a2"]
    assert q.get_group(same, limit=10) == ["y-b1", "y-a2"]
    assert q.get_group(same, limit=10) == ["z-d1"] and len(q) == 0
    assert q.get_group(same, limit=10, timeout=0.01) == []


def test_get_group_respects_the_limit_and_hands_over_what_was_chosen_so_far():
    q = FairQueue()
    for i, item in enumerate([1, 2, 3, 4, 7, 5]):
        q.put(item, f"s{i}")
    assert q.get_group(lambda chosen, item: True, limit=3) == [1, 2, 3]
    assert q.get_group(lambda chosen, item: sum(chosen) + item <= 10, limit=10) == [4, 5]  # 4 + 7 > 10
    assert q.order() == [7]


# --- which runs may train together -----------------------------------------------------------------
def test_runs_of_one_data_stream_are_compatible_others_are_not():
    ok = compatible()
    assert all(ok([VARIANTS[0]], cfg) for cfg in VARIANTS[1:])
    for other in (BASE.replace(seed=1), BASE.replace(batch_size=32), BASE.replace(epochs=3), BASE.replace(log_every=5),
                  BASE.replace(dataset="moons"), BASE.replace(dropout=0.2), BASE.replace(arch="cnn"),
                  BASE.replace(hidden=(16, 8)), BASE.replace(hidden=(300,)), BASE.replace(backprop="by_hand")):
        assert not ok([BASE], other) and not ok([other], BASE), other


def test_a_group_stays_within_the_memory_cap(monkeypatch):
    one = budget.estimate_run(BASE)
    # one run fits, two (their models, one shared copy of the data) do not
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MEMORY_MB", str((one.memory_bytes + one.model_bytes / 2) / 2**20))
    assert not compatible()([BASE], VARIANTS[1])
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MEMORY_MB", str((one.memory_bytes + 1.5 * one.model_bytes) / 2**20))
    assert compatible()([BASE], VARIANTS[1])


# --- the manager ----------------------------------------------------------------------------------
def test_a_co_batched_group_equals_each_run_trained_alone_each_stored_under_its_own_key(isolated_cache):
    manager = _manager(isolated_cache)
    keys = [manager.submit(cfg, session=f"student{i}") for i, cfg in enumerate(VARIANTS)]
    assert manager.submit(VARIANTS[0], session="late") == keys[0]  # dedup: the same config is one job
    assert manager.counts()["queued"] == len(VARIANTS)
    _start(manager)
    for key, cfg in zip(keys, VARIANTS):
        snap = manager.wait(key, timeout=120)
        assert snap.status == "finished"
        assert _lanes(manager, key) == len(VARIANTS)  # trained in one lanes job
        assert not any(isinstance(e, CellEvent) for e in snap.events)  # its own events, unwrapped
        assert snap.events[0].key == key and snap.events[0].config == cfg.to_dict()
        alone = train_events(cfg)[1]
        assert_same_run(snap.events, alone)
        stored = manager.store.get(key)
        assert stored.meta["status"] == "finished" and stored.meta["config"] == cfg.to_dict()
        assert [e.kind for e in stored.events] == [e.kind for e in snap.events]
        kept, alone_weights = manager.store.final_weights(key).weights, next(e for e in alone if e.kind == "weights").weights
        assert kept.keys() == alone_weights.keys()  # the trained weights, as the run alone stores them
        for name in kept:
            np.testing.assert_allclose(kept[name], alone_weights[name], atol=1e-4, err_msg=name)


def test_co_batched_runs_on_a_2d_set_each_send_their_own_live_boundary(isolated_cache):
    moons = [RunConfig(dataset="moons", hidden=(16,), epochs=3, log_every=10, lr=lr) for lr in (0.01, 0.03)]
    manager = _manager(isolated_cache)
    keys = [manager.submit(cfg, session=f"student{i}") for i, cfg in enumerate(moons)]
    _start(manager)
    for key, cfg in zip(keys, moons):
        snap = manager.wait(key, timeout=120)
        assert snap.status == "finished" and _lanes(manager, key) == len(moons)
        ours = [e for e in snap.events if e.kind == "boundary"]
        alone = [e for e in train_events(cfg)[1] if e.kind == "boundary"]
        assert [e.step for e in ours] == [e.step for e in alone] and [e.kept for e in ours][-1]
        differ = ours[-1].pred != alone[-1].pred  # two classes: only where alone is a coin flip within rounding
        assert (np.abs(alone[-1].confidence[differ].astype(int) - 128) <= 2).all()


def test_incompatible_runs_train_alone(isolated_cache):
    manager = _manager(isolated_cache)
    configs = [BASE, BASE.replace(seed=7), BASE.replace(dropout=0.2), BASE.replace(batch_size=128)]
    keys = [manager.submit(cfg) for cfg in configs]
    _start(manager)
    for key in keys:
        assert manager.wait(key, timeout=120).status == "finished" and _lanes(manager, key) == 1


def test_the_group_size_cap(isolated_cache, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_MAX_COBATCH", "3")
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "10")
    configs = [BASE.replace(lr=0.1 * (i + 1)) for i in range(5)]
    manager = _manager(isolated_cache)
    keys = [manager.submit(cfg, session="s") for cfg in configs]
    _start(manager)
    assert [manager.wait(k, timeout=120).status for k in keys] == ["finished"] * 5
    assert [_lanes(manager, k) for k in keys] == [3, 3, 3, 2, 2]  # first come, first served
    monkeypatch.setenv("GRADIENT_LAB_MAX_COBATCH", "1")  # co-batching off
    manager = _manager(isolated_cache / "off")
    keys = [manager.submit(cfg.replace(seed=1), session="s") for cfg in configs[:3]]
    _start(manager)
    assert [manager.wait(k, timeout=120).status for k in keys] == ["finished"] * 3
    assert [_lanes(manager, k) for k in keys] == [1, 1, 1]


LONG = BASE.replace(epochs=60, log_every=40)  # long enough to be cancelled mid-run (the others train to the end)


def _cancel_one_lane(manager: JobManager) -> None:
    """Three long runs co-batched; the middle one is cancelled mid-run: it alone stops, with the history it
    had (the start of its run alone), and the others train to the end and equal themselves alone."""
    configs = [LONG.replace(activation=a) for a in ("sigmoid", "tanh", "relu")]
    keys = [manager.submit(cfg) for cfg in configs]
    _start(manager)
    _wait_until(lambda: _step(manager, keys[1]) >= 20)
    assert manager.cancel(keys[1])
    cancelled = manager.wait(keys[1], timeout=60)
    assert cancelled.status == "cancelled"
    # it ended at once, not when the group ends: the others have more than a thousand steps to go
    assert [manager.snapshot(k).status for k in (keys[0], keys[2])] == ["running", "running"]
    total = cancelled.events[0].total_steps
    assert cancelled.events[-1].step < total
    losses = [v for e in cancelled.events if e.kind == "steps" for v in e.losses]
    # its start alone: a shorter run of it takes the same first steps (same seeded batches, constant lr)
    epochs = len(losses) // cancelled.events[0].steps_per_epoch + 1
    alone = [v for e in train_events(configs[1].replace(epochs=epochs))[1] if e.kind == "steps" for v in e.losses]
    assert losses == pytest.approx(alone[:len(losses)], rel=1e-4, abs=1e-4)
    for key in (keys[0], keys[2]):
        snap = manager.wait(key, timeout=300)
        assert snap.status == "finished" and snap.events[-1].step == total and _lanes(manager, key) == 3
    assert_same_run(manager.snapshot(keys[2]).events, train_events(configs[2])[1])


@pytest.fixture
def queued_manager(request, isolated_cache):
    """No trainers yet (see :func:`_start`): local in threads, or (indirect "ray") the Ray test cluster's."""
    return manager_on(request, isolated_cache / "runs", 0, lambda: _manager(isolated_cache))


@pytest.mark.slow  # three lanes trained until one is cancelled
@pytest.mark.parametrize("queued_manager", BACKENDS, indirect=True)
def test_cancelling_one_lane_leaves_the_others_running(queued_manager):
    _cancel_one_lane(queued_manager)


@pytest.mark.slow  # a worker process
def test_co_batching_in_a_worker_process(isolated_cache):
    manager = _manager(isolated_cache, processes=True)
    try:
        _cancel_one_lane(manager)
    finally:
        manager.shutdown()


def test_a_failure_of_the_whole_group_ends_every_run_not_ended_yet():
    got: list[list] = [[], [], []]
    emit = dispatch([lane.append for lane in got])
    done = RunFinished(status="finished", step=5, epoch=1.0, elapsed=0.1)
    emit(CellEvent(1, "k1", done))
    emit(RunFailed(5, "the worker died", "WorkerDied", 0.0))
    assert got[1] == [done] and [e.kind for e in got[0]] == [e.kind for e in got[2]] == ["failed"]


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_a_stacked_lanes_state_dict_rebuilds_each_lanes_network(norm):
    """Oracle: the nn.Module build_model makes, loaded with a lane's state_dict, gives that lane's logits."""
    configs = [RunConfig(dataset="digits", hidden=(12,) * d, activation=a, norm=norm, seed=i)
               for i, (a, d) in enumerate([("sigmoid", 3), ("relu", 1), ("tanh", 2), ("relu", 3)])]
    lanes = StackedLanes(configs, (1, 8, 8), 10, torch.device("cpu"))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    for _ in range(3):  # a few steps, so the weights (and BatchNorm's running statistics) moved from their init
        lanes.train(True)
        totals, _, _ = lanes.losses(x, y)
        for opt in lanes.optimizers:
            opt.zero_grad()
        totals.sum().backward()
        for opt in lanes.optimizers:
            opt.step()
    logits = lanes.logits(x)
    for i, cfg in enumerate(configs):
        model = build_model(cfg, (1, 8, 8), 10)
        model.load_state_dict(lanes.state_dict(i))
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), logits[i], atol=1e-5, rtol=1e-4)
