"""Fair sharing of one server: round-robin between sessions, and a watcher's cancel is that watcher's."""
from __future__ import annotations

import threading

import pytest

from core.engine.config import RunConfig
from core.serve.jobs import JobManager
from core.serve.scheduler import FairQueue
from core.serve.store import RunStore


def test_round_robin_between_sessions_first_come_first_served_within_one():
    q = FairQueue()
    for i in range(20):
        q.put(("greedy", i), "greedy")
    q.put(("alice", 0), "alice")
    q.put(("bob", 0), "bob")
    q.put(("alice", 1), "alice")
    expected = [("greedy", 0), ("alice", 0), ("bob", 0), ("greedy", 1), ("alice", 1)] + [("greedy", i) for i in range(2, 20)]
    assert q.order() == expected
    assert [q.get() for _ in range(len(expected))] == expected
    assert q.get(timeout=0.01) is None


def test_remove_takes_items_out_of_the_rotation():
    q = FairQueue()
    q.put("a1", "a")
    q.put("b1", "b")
    q.put("a2", "a")
    assert q.remove(lambda item: item.startswith("a")) == ["a1", "a2"]
    assert q.order() == ["b1"] and len(q) == 1


def test_get_blocks_until_an_item_arrives():
    q = FairQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    q.put("job", "s")
    t.join(10)
    assert got == ["job"]


@pytest.fixture
def paused_manager(isolated_cache, monkeypatch):
    """A manager with no workers, so submitted jobs stay queued (a greedy session may queue 5 here)."""
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "10")
    return JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0}, processes=False)


def _configs(n: int, start: int = 0) -> list[RunConfig]:
    return [RunConfig(dataset="digits", hidden=(8,), epochs=1, seed=start + i) for i in range(n)]


def test_the_manager_hands_queued_jobs_out_round_robin(paused_manager):
    greedy = [paused_manager.submit(c, session="greedy") for c in _configs(5)]
    alice = paused_manager.submit(_configs(1, start=100)[0], session="alice")
    assert paused_manager.snapshot(alice).queue_position == 1  # behind greedy's first job only
    assert paused_manager.snapshot(greedy[1]).queue_position == 2
    assert paused_manager.snapshot(greedy[4]).queue_position == 5


def test_a_watchers_cancel_stops_only_their_view_of_a_shared_job(paused_manager):
    cfg = _configs(1, start=200)[0]
    key = paused_manager.submit(cfg, session="teacher")
    assert paused_manager.submit(cfg, session="student") == key
    assert paused_manager.snapshot(key).watchers == 2
    assert paused_manager.cancel(key, session="student") is False  # the teacher still watches
    assert paused_manager.snapshot(key).status == "queued" and paused_manager.snapshot(key).watchers == 1
    assert paused_manager.cancel(key, session="teacher") is True  # nobody watches: it stops


def test_cancel_for_everyone_is_the_starters(paused_manager):
    cfg = _configs(1, start=300)[0]
    key = paused_manager.submit(cfg, session="teacher")
    paused_manager.submit(cfg, session="student")
    assert paused_manager.cancel(key, session="student", everyone=True) is False  # not the starter
    assert paused_manager.submit(cfg, session="student") == key  # watching again
    assert paused_manager.cancel(key, session="teacher", everyone=True) is True
    assert paused_manager.snapshot(key).status == "queued"  # it ends as cancelled when a worker reaches it
    assert paused_manager._jobs[key].cancel_flag.is_set()


def test_cancelling_frees_the_sessions_queue_slot(paused_manager, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "2")
    first, _ = (paused_manager.submit(c, session="s") for c in _configs(2, start=400))
    with pytest.raises(Exception, match="GRADIENT_LAB_MAX_QUEUED_PER_SESSION"):
        paused_manager.submit(_configs(1, start=402)[0], session="s")
    paused_manager.cancel(first, session="s")  # no longer watched by "s"
    paused_manager.submit(_configs(1, start=402)[0], session="s")
