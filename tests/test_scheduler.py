"""Fair sharing of one server: round-robin between sessions, and a watcher's cancel is that watcher's."""
from __future__ import annotations

import threading
import time

import pytest

from core.engine.config import RunConfig
from core.serve import identity
from core.serve.budget import Refused
from core.serve.jobs import WATCHER_TTL, JobManager
from core.serve.scheduler import FairQueue
from core.serve.store import RunStore
from ray_helpers import BACKENDS, PER_BROWSER, manager_on


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
def paused_manager(request, isolated_cache, monkeypatch):
    """A manager with no workers, so submitted jobs stay queued (a greedy session may queue 5 here): local, or
    (indirect parameter "ray") the Ray test cluster's front-end, whose head has the same per-browser cap."""
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", str(PER_BROWSER))
    return manager_on(request, isolated_cache / "runs", 0,
                      lambda: JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0}, processes=False))


def _configs(n: int, start: int = 0) -> list[RunConfig]:
    return [RunConfig(dataset="digits", hidden=(8,), epochs=1, seed=start + i) for i in range(n)]


def _burst(q: FairQueue, n: int, every: float) -> threading.Thread:
    """Put ``n`` items, one every ``every`` seconds, each from its own session (students pressing Train)."""
    def put_all() -> None:
        for i in range(n):
            q.put(i, f"student-{i}")
            time.sleep(every)
    return threading.Thread(target=put_all)


def test_a_gathering_get_takes_a_burst_as_one_group():
    q = FairQueue()
    burst = _burst(q, 8, 0.02)
    burst.start()
    group = q.get_group(lambda chosen, item: True, 32, timeout=60, gather=1.0)
    burst.join()
    assert group == list(range(8))


def test_a_gathering_get_is_bounded_while_items_keep_coming():
    q = FairQueue()
    burst = _burst(q, 400, 0.01)  # far longer than GATHER_ROUNDS gathers of 0.05 s
    burst.start()
    group = q.get_group(lambda chosen, item: True, 1000, timeout=60, gather=0.05)
    still_coming = burst.is_alive()
    burst.join()
    assert still_coming and 1 <= len(group) < 400  # it went with what it had while the burst went on
    assert len(group) + len(q) == 400


@pytest.mark.parametrize("paused_manager", BACKENDS, indirect=True)
def test_the_manager_hands_queued_jobs_out_round_robin(paused_manager):
    greedy = [paused_manager.submit(c, session="greedy") for c in _configs(5)]
    alice = paused_manager.submit(_configs(1, start=100)[0], session="alice")
    assert paused_manager.snapshot(alice).queue_position == 1  # behind greedy's first job only
    assert paused_manager.snapshot(greedy[1]).queue_position == 2
    assert paused_manager.snapshot(greedy[4]).queue_position == 5


@pytest.mark.parametrize("paused_manager", BACKENDS, indirect=True)
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


# --- a crowded room: quotas per browser, not per session (issue 20) ---------------------------------
def test_many_sessions_of_one_browser_cannot_fill_the_queue(paused_manager, monkeypatch):
    """16 reconnects of one browser share its quota; another browser still gets in, and its job goes
    out right after that browser's first (the rotation is between browsers, not sessions)."""
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED", "8")
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "2")
    accepted, refused = [], []
    for i, cfg in enumerate(_configs(16, start=500)):
        try:
            accepted.append(paused_manager.submit(cfg, session=f"reconnect-{i}", browser="script"))
        except Refused as exc:
            refused.append(str(exc))
    assert len(accepted) == 2 and len(refused) == 14
    assert all("GRADIENT_LAB_MAX_QUEUED_PER_SESSION = 2" in r and "reload" in r for r in refused)
    other = paused_manager.submit(_configs(1, start=600)[0], session="student", browser="student")
    assert paused_manager.snapshot(other).queue_position == 1


def test_a_full_queue_still_lets_a_browser_without_jobs_in(paused_manager, monkeypatch):
    """Browsers that filled the queue lose their oldest queued job to a newcomer; one that holds no more
    than the heaviest is refused."""
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED", "6")
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "3")
    filled = {b: [paused_manager.submit(c, session=b, browser=b) for c in _configs(3, start=700 + 10 * i)]
              for i, b in enumerate(("bot-a", "bot-b"))}
    newcomer = paused_manager.submit(_configs(1, start=800)[0], session="student", browser="student")
    assert paused_manager.snapshot(newcomer).status == "queued"
    dropped = [k for keys in filled.values() for k in keys if paused_manager.snapshot(k).status == "cancelled"]
    assert dropped == [filled["bot-b"][0]]  # the heaviest (ties: the later submitter), its oldest queued job
    assert "GRADIENT_LAB_MAX_QUEUED = 6" in paused_manager.snapshot(dropped[0]).error
    assert paused_manager.counts()["queued"] == 6
    paused_manager.submit(_configs(1, start=801)[0], session="student", browser="student")  # 1 < 3: still in
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_QUEUED = 6"):  # 2 each: nobody holds more
        paused_manager.submit(_configs(1, start=802)[0], session="student", browser="student")


# --- watchers that left, and a reload's Cancel (issue 20) ---------------------------------------------
@pytest.fixture
def clocked_manager(isolated_cache):
    """A paused manager on a clock the test moves."""
    now = [1000.0]
    manager = JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0}, processes=False, clock=lambda: now[0])
    return manager, now


def test_a_watcher_that_stopped_looking_expires(clocked_manager):
    manager, now = clocked_manager
    cfg = _configs(1, start=900)[0]
    key = manager.submit(cfg, session="closed-tab", browser="alice")
    manager.submit(cfg, session="bob-tab", browser="bob")
    assert manager.snapshot(key).watchers == 2
    now[0] += WATCHER_TTL / 2
    manager.touch(key, "bob-tab")  # bob's page polls; alice's tab was closed
    now[0] += WATCHER_TTL / 2 + 1
    snap = manager.snapshot(key)
    assert snap.watchers == 1 and snap.watched_by == {"bob"}
    assert manager.cancel(key, session="bob-tab", browser="bob") is True  # no one else is watching any more


def test_a_reloaded_page_cancels_its_browsers_run(clocked_manager):
    """The page reloaded at once (its old session has not expired yet): the same browser's Cancel stops the
    run, and its Cancel for everyone stops a run another browser also watches."""
    manager, now = clocked_manager
    first, second = _configs(2, start=950)
    key = manager.submit(first, session="before-reload", browser="alice")
    assert manager.cancel(key, session="after-reload", browser="alice") is True
    shared = manager.submit(second, session="before-reload", browser="alice")
    manager.submit(second, session="bob-tab", browser="bob")
    assert manager.cancel(shared, session="after-reload", browser="alice") is False  # bob still watches
    assert manager.snapshot(shared).watched_by == {"bob"}
    assert manager.cancel(shared, session="after-reload", browser="alice", everyone=True) is True


def test_a_browser_cookie_cannot_be_forged_and_outlives_a_restart(isolated_cache, monkeypatch):
    monkeypatch.delenv(identity.SECRET_ENV, raising=False)
    alice, mallory = identity.new_id(), identity.new_id()
    cookie = identity.sign(alice)
    assert identity.verify(cookie) == alice and alice != mallory
    assert identity.verify(f"{mallory}.{cookie.split('.')[1]}") is None  # another id under alice's signature
    assert identity.verify(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert identity.verify(None) is None and identity.verify("f" * 5000) is None
    monkeypatch.setattr(identity, "_keys", {})  # a restart reads the same key file
    assert identity.verify(cookie) == alice
    assert (isolated_cache / identity.KEY_FILE).stat().st_mode & 0o077 == 0
    monkeypatch.setenv(identity.SECRET_ENV, "another server's key")
    assert identity.verify(cookie) is None
