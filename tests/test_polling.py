"""Many sessions polling one live job (issue 20.9): one manager snapshot per job per tick, shared by all of
them; every event still reaches every session; sessions that only watch poll slower. Calls and configured
intervals are counted, never timed.

The live job is a submitted run that no worker takes: the test plays the worker, appending the events
:func:`train` emitted for the same config to the job's history.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import app.views.jobs as views
import app.views.run as run_view
import core.serve.jobs
from apptest_helpers import MAIN
from helpers import train_events
from core.engine.config import RunConfig
from core.serve.jobs import JobManager
from core.serve.store import RunStore

CFG = RunConfig(dataset="digits", hidden=(16,), epochs=6, log_every=5, seed=7)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def history() -> list:
    """The events train() emits for CFG, up to (not including) its end."""
    _, events = train_events(CFG)
    return [e for e in events if e.kind not in ("finished", "weights")]


@pytest.fixture
def live(isolated_cache, monkeypatch):
    """(manager, job, clock): CFG submitted by browser "starter", running, no events yet; fresh process-wide
    view caches and an injected clock."""
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "10")
    manager = JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0}, processes=False)
    monkeypatch.setattr(core.serve.jobs, "_manager", manager)
    for name, fresh in (("_jobs", OrderedDict()), ("_fetched", {}), ("_viewers", {}), ("_cache", OrderedDict())):
        monkeypatch.setattr(views, name, fresh)
    clock = Clock()
    monkeypatch.setattr(views, "_clock", clock)
    quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")  # bare-mode sessions
    monkeypatch.setattr(quiet, "level", logging.ERROR)
    key = manager.submit(CFG, session="starter-tab", browser="starter")
    job = manager._jobs[key]
    job.status = "running"  # as a worker that took it would say
    return manager, job, clock


@pytest.fixture
def snapshots(live, monkeypatch) -> list:
    """Every manager.snapshot(key, since) call, as (key, since)."""
    manager = live[0]
    calls, original = [], manager.snapshot

    def counted(key, since=0):
        calls.append((key, since))
        return original(key, since)

    monkeypatch.setattr(manager, "snapshot", counted)
    return calls


def as_session(name: str) -> None:
    """Become browser session ``name`` (bare mode has one session state: reset it to that session's)."""
    st.session_state.clear()
    st.session_state[views.SESSION] = name
    st.session_state[views.BROWSER] = name


def poll_all(sessions: list[str], key: str) -> list:
    states = []
    for name in sessions:
        as_session(name)
        states.append(views.job_state(key))
    return states


def test_sixty_watchers_share_one_snapshot_per_tick(live, snapshots, history):
    manager, job, clock = live
    watchers = [f"watcher-{i}" for i in range(60)]
    job.events.extend(history[:10])
    states = poll_all(watchers, job.key)
    assert len(snapshots) == 1
    assert all(len(s.events) == 10 for s in states)
    assert all(s.events is states[0].events for s in states)  # one shared history, not 60 copies

    for tick in range(1, 4):
        clock.now += views.TICK_SECONDS / 3  # still the same tick: no new snapshot, new events wait for the next
        job.events.extend(history[10 * tick:10 * tick + 5])
        poll_all(watchers, job.key)
        assert len(snapshots) == tick
        clock.now += views.TICK_SECONDS  # the next tick: one snapshot, of the new events only
        job.events.extend(history[10 * tick + 5:10 * tick + 10])
        states = poll_all(watchers, job.key)
        assert len(snapshots) == tick + 1
        assert snapshots[-1] == (job.key, 10 * tick)
        assert all(s.events == job.events for s in states)


def test_a_status_change_is_seen_within_the_tick(live, snapshots, history):
    manager, job, clock = live
    job.events.extend(history[:3])
    poll_all(["a", "b"], job.key)
    job.status = "cancelled"  # the worker stopped it: nobody waits a tick to see it end
    states = poll_all(["a", "b"], job.key)
    assert len(snapshots) == 2 and all(s.status == "cancelled" and s.done for s in states)


def test_every_watcher_sees_every_event_in_order(live, history):
    manager, job, clock = live
    sizes = [1, 0, 7, 2, 13, 1, 1, 30, 4]
    early, late = ["early-0", "early-1"], "late"
    assert len(history) >= sum(sizes)
    for i, n in enumerate(sizes):
        start = len(job.events)
        job.events.extend(history[start:start + n])
        clock.now += views.TICK_SECONDS * (0.5 if i % 2 else 1.5)  # polls inside a tick and across ticks
        for state in poll_all(early, job.key):
            assert state.events == job.events[:len(state.events)]  # a prefix of the history: nothing lost or doubled
    clock.now += views.TICK_SECONDS
    finals = poll_all(early + [late], job.key)  # a session joining late gets the whole history too
    assert len(job.events) == sum(sizes)
    for state in finals:
        assert len(state.events) == len(job.events) and all(a is b for a, b in zip(state.events, job.events))


def test_replayed_is_each_sessions_own(live, history):
    """The state is shared per tick; whether it is a replay for this session is not."""
    manager, job, clock = live
    job.events.extend(history)
    as_session("saw-it-run")
    assert not views.job_state(job.key).replayed
    saw_it_run = dict(st.session_state.items())
    job.status = "finished"
    as_session("came-later")
    assert views.job_state(job.key).replayed
    st.session_state.clear()  # back to the first session, its memory of the job included
    st.session_state.update(saw_it_run)
    assert not views.job_state(job.key).replayed


def test_watch_only_sessions_poll_slower_the_more_sessions_look():
    every = run_view.POLL_SECONDS
    assert views.watch_seconds(every, 1) == max(every, views.WATCH_SECONDS)
    many = [views.watch_seconds(every, n) for n in range(1, 200)]
    assert many == sorted(many) and many[-1] == views.SECONDS_PER_VIEWER * 199
    # polls per second of all watch-only sessions together stay below one per SECONDS_PER_VIEWER
    assert all(n / views.watch_seconds(every, n) <= 1 / views.SECONDS_PER_VIEWER for n in range(1, 200))


@pytest.fixture
def fragments(monkeypatch) -> dict:
    """The run_every each polling fragment of a page run was declared with, by fragment key."""
    declared, original = {}, st.fragment

    def recording(func=None, *, run_every=None, key=None, **kwargs):
        declared[key] = run_every
        return original(func, run_every=run_every, key=key, **kwargs)

    monkeypatch.setattr(st, "fragment", recording)
    return declared


def page_run_every(fragments: dict, key: str, browser: str | None = None) -> float | None:
    """The curves fragment's run_every on a new session of the run's page (of ``browser``: as its cookie says)."""
    fragments.clear()
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.query_params.update(CFG.to_query())
    if browser is not None:
        at.session_state[views.BROWSER] = browser
    at.run()
    assert not at.exception, at.exception
    return fragments[f"poll_curves_{key}"]


def test_the_configured_interval_is_slower_for_a_session_that_only_watches(live, history, monkeypatch, fragments):
    manager, job, clock = live
    job.events.extend(history[:20])
    every = run_view.POLL_SECONDS
    assert page_run_every(fragments, job.key, browser="starter") == every  # it pressed Train: full speed
    watching = page_run_every(fragments, job.key)
    assert watching == views.watch_seconds(every, views.viewers(job.key)) and watching > every
    crowd = [f"student-{i}" for i in range(79)]
    poll_all(crowd, job.key)  # 79 more sessions look at it
    looking = views.viewers(job.key)
    assert looking >= 80
    crowded = page_run_every(fragments, job.key)
    assert crowded == views.SECONDS_PER_VIEWER * views.viewers(job.key) > watching


def test_a_config_never_trained_here_leaves_nothing_behind(live, snapshots):
    other = CFG.replace(seed=8)
    for _ in range(3):  # every page run asks the Train button's status of the settings shown
        assert views.config_status(other) is None
    assert other.key() not in views._jobs and other.key() not in views._fetched
    assert len(snapshots) == 3  # nothing to share: each look asks the manager (and store) again


def test_a_watchers_history_keeps_only_the_latest_decision_boundary(live):
    manager, job, clock = live
    toy = [e for e in train_events(RunConfig(dataset="moons", hidden=(8,), epochs=3, log_every=5))[1]
           if e.kind not in ("finished", "weights")]
    record = manager._recorder(job)  # the worker's emit: the manager thins its own history too
    for start in range(0, len(toy), 7):
        for event in toy[start:start + 7]:
            record(event)
        clock.now += views.TICK_SECONDS
        (state,) = poll_all(["watcher"], job.key)
        kept = [e for e in state.events if e.kind == "boundary" and e.kept]
        assert [e.kind for e in state.events] == [e.kind for e in job.events]
        latest = [e for e in job.events if e.kind == "boundary"][-1:]
        assert [(e.step, e.kept) for e in kept] == [(e.step, e.kept) for e in latest]  # the latest, nothing earlier
