"""Job manager (dedup, cache, cancel, failures) and run store (round trip, damage, permissions)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from core.engine.config import RunConfig
from core.engine.events import LayerStats, RunFinished, StepLosses
from core.serve.jobs import JobManager, get_manager
from core.lessons.presets import PRESETS
from core.__main__ import MAX_ERROR_CHARS
from core.serve.store import RunStore, _part_names
from ray_helpers import BACKENDS, manager_on

FAST = RunConfig(dataset="digits", hidden=(16,), epochs=4, lr=0.01)


@pytest.fixture
def manager(request, isolated_cache):
    """A manager with one trainer: local, or (indirect parameter "ray") the Ray test cluster's front-end."""
    return manager_on(request, isolated_cache / "runs", 1, lambda: JobManager(RunStore(isolated_cache / "runs")))


def _started(snapshot):
    return [e for e in snapshot.events if e.kind == "started"]


@pytest.mark.parametrize("manager", BACKENDS, indirect=True)
def test_two_submits_train_once_and_the_third_is_served_from_the_store(manager):
    key = manager.submit(FAST)
    assert manager.submit(FAST) == key
    done = manager.wait(key, timeout=120)
    assert done.status == "finished" and not done.from_cache and len(_started(done)) == 1
    assert done.events[-1].test_acc > 0.5  # learned something, 10 classes

    fresh = JobManager(manager.store)  # e.g. another server process
    again = fresh.snapshot(fresh.submit(FAST))
    assert again.status == "finished" and again.from_cache and again.saved_at is not None
    assert again.n_events == done.n_events and fresh.counts() == {"queued": 0, "running": 0}


def test_force_trains_again(manager):
    key = manager.submit(FAST)
    manager.wait(key, timeout=120)
    assert manager.submit(FAST, force=True) == key
    snap = manager.wait(key, timeout=120)
    assert snap.status == "finished" and not snap.from_cache


@pytest.mark.parametrize("manager", BACKENDS, indirect=True)
def test_snapshot_since_returns_only_new_events(manager):
    key = manager.submit(FAST.replace(log_every=5))
    seen, kinds = 0, []
    while True:
        snap = manager.snapshot(key, since=seen)
        assert snap.n_events == seen + len(snap.events)
        seen = snap.n_events
        kinds += [e.kind for e in snap.events]
        if snap.done:
            break
        time.sleep(0.01)
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("started") == 1
    assert manager.snapshot(key, since=seen).events == []


@pytest.mark.parametrize("manager", BACKENDS, indirect=True)
def test_cancel_a_running_and_a_queued_job(manager):
    slow = RunConfig(dataset="digits", hidden=(64,), epochs=200, log_every=5)
    queued = slow.replace(seed=1)
    running_key, queued_key = manager.submit(slow), manager.submit(queued)
    while manager.snapshot(running_key).status != "running":
        time.sleep(0.01)
    assert manager.snapshot(queued_key).queue_position == 0
    assert manager.cancel(queued_key) and manager.cancel(running_key)
    assert manager.wait(running_key, timeout=60).status == "cancelled"
    assert manager.wait(queued_key, timeout=60).status == "cancelled"
    # a cancelled run is kept for the library but trains again when asked
    assert manager.store.meta(running_key)["status"] == "cancelled"
    manager.submit(slow.replace(epochs=1))


@pytest.mark.parametrize("manager", BACKENDS, indirect=True)
def test_a_failing_job_does_not_stop_the_worker(manager):
    bad = manager.submit(RunConfig(dataset="upload:00000000deadbeef00000000"))
    good = manager.submit(FAST.replace(seed=3))
    failed = manager.wait(bad, timeout=60)
    assert failed.status == "failed" and "upload it again" in failed.error
    assert manager.wait(good, timeout=120).status == "finished"
    assert bad not in manager.store  # failures are not cached: the user may fix the cause


def test_diverged_runs_are_stored_and_replayed(manager):
    cfg = RunConfig(dataset="digits", activation="linear", optimizer="sgd", lr=100.0, epochs=2)
    key = manager.submit(cfg)
    assert manager.wait(key, timeout=60).status == "diverged"
    replay = JobManager(manager.store).snapshot(key)
    assert replay.status == "diverged" and "learning rate" in replay.error


def test_manager_is_a_process_wide_singleton(isolated_cache):
    assert get_manager() is get_manager()


def test_store_round_trip_keeps_arrays_and_numbers(tmp_path):
    store = RunStore(tmp_path / "runs")
    heat = np.arange(12, dtype=np.float32).reshape(3, 4)
    events = [StepLosses(1, [2.3, 2.2]),
              LayerStats(1, 0.5, ["fc1"], [0.1], [0.01], [0.001], [None], [heat]),
              RunFinished("finished", 2, 1.0, 0.5, test_acc=0.9, test_loss=0.3, confusion=[[1, 0], [0, 1]],
                          misclassified_images=np.zeros((2, 1, 8, 8), np.uint8))]
    store.put("run-x", {"lr": 0.1}, events)
    back = store.get("run-x")
    assert back.meta["test_acc"] == 0.9 and back.meta["config"] == {"lr": 0.1}
    assert back.events[0] == events[0]
    np.testing.assert_array_equal(back.events[1].heatmaps[0], heat)
    assert back.events[2].misclassified_images.dtype == np.uint8
    assert [m["key"] for m in store.list_runs()] == ["run-x"]


def test_damaged_entries_are_reported_and_skipped(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.put("run-good", {}, [StepLosses(1, [1.0])])
    store.put("run-bad", {}, [StepLosses(1, [1.0])])
    store.put("run-badmeta", {}, [StepLosses(1, [1.0])])
    store._cache.set(_part_names("run-bad", store.meta("run-bad")["version"])[1], b"not an npz")
    store._cache.set("meta:run-badmeta", "{broken json")
    assert store.get("run-bad") is None and store.get("run-badmeta") is None
    assert store.get("run-good") is not None
    # the library lists from summaries (cheap); a run whose summary is damaged is left out
    assert sorted(m["key"] for m in store.list_runs()) == ["run-bad", "run-good"]
    assert any("run-bad" in p for p in store.problems) and any("run-badmeta" in p for p in store.problems)


def test_store_never_unpickles(tmp_path):
    """A pickle planted in the store is rejected, not executed."""
    import pickle

    store = RunStore(tmp_path / "runs")
    store.put("run-evil", {}, [StepLosses(1, [1.0])])
    store._cache.set(_part_names("run-evil", store.meta("run-evil")["version"])[1], pickle.dumps(object()))
    assert store.get("run-evil") is None


def test_store_directory_is_owner_only(tmp_path):
    store = RunStore(tmp_path / "runs")
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


def test_every_preset_config_is_valid_and_distinct():
    for preset in PRESETS.values():  # within a family every run differs (across families they may share)
        keys = [cfg.key() for _, cfg in preset.runs]
        assert len(keys) == len(set(keys)), preset.name
    e = PRESETS["E-eight-networks"].runs
    assert len(e) == 8 and e[-1][1].arch == "cnn" and e[4][1].norm == "batchnorm"
    a = PRESETS["A-sigmoid-depth"].runs
    assert [c.depth for _, c in a] == [1, 2, 3, 4] and a[0][1].lr == 0.2 and a[0][1].batch_size == 32


def _cli(*args, env_extra=None, cache=None):
    import os

    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_presets_run_and_cache(tmp_path):
    listing = _cli("presets", cache=tmp_path)
    assert listing.returncode == 0 and "E-eight-networks" in listing.stdout and "A-sigmoid-depth" in listing.stdout
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"dataset": "digits", "hidden": [32], "epochs": 3, "lr": 0.01}))
    first = _cli("run", "--config", str(config), "--quiet", cache=tmp_path)
    assert first.returncode == 0, first.stderr
    import re

    acc = float(re.search(r"^\s+test\s+loss \S+\s+accuracy (\S+)", first.stdout, re.M).group(1))
    assert acc > 0.5
    second = _cli("run", "--config", str(config), "--quiet", cache=tmp_path)
    assert "(from cache)" in second.stdout


def test_cli_reports_bad_config(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"dataset": "digits", "lr": -1}))
    out = _cli("run", "--config", str(config), cache=tmp_path)
    assert out.returncode == 2 and "Learning rate (lr) = -1" in out.stderr
    out = _cli("run", "--preset", "A-sigmoid-depth", "--set", "epochs=0", cache=tmp_path)
    assert out.returncode == 2 and "Epochs (epochs) = 0 is out of range" in out.stderr


def test_cli_refuses_hostile_input_briefly_without_a_traceback(tmp_path):
    """Deep JSON in --config, a 10 MB value in it and a long --set name: a short error, exit status 2."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"dataset": "x" * 10_000_000}))
    for args in (["--config", str(deep)], ["--config", str(huge)],
                 ["--preset", "A-sigmoid-depth", "--set", "y" * 100_000 + "=1"],
                 ["--preset", "A-sigmoid-depth", "--set", "dataset=" + "z" * 100_000]):
        out = _cli("run", *args, cache=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stderr.startswith("error: ") and len(out.stderr) <= MAX_ERROR_CHARS + 100
