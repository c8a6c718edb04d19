"""The job manager on a Ray cluster: a local head (loopback, token auth), two front-ends, one scheduler.

The job manager's contract tests (test_jobs_store, test_scheduler, test_cobatch, test_pause) run on both
backends where they live, their fixtures parametrized by ray_helpers.BACKENDS. The tests here are about more
than one front-end: dedup, fairness and cancel across front-ends, a trainer killed mid-run, and the head killed
and started again.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from playwright.sync_api import sync_playwright

from browser_helpers import CHROMIUM, free_port, launch, start_server, stop_server
from ray_helpers import PER_BROWSER, REPO, stop_head

ray = pytest.importorskip("ray", reason="Ray cannot be imported here (pip install -r requirements-cluster.txt)")

from core.engine.config import RunConfig  # noqa: E402
from core.serve.budget import Refused  # noqa: E402
from core.serve.ray_backend import ClusterUnavailable, RayJobManager  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray head, actors that import torch

SMALL = RunConfig(dataset="digits", hidden=(16,), epochs=3, lr=0.01)
LONG = RunConfig(dataset="digits", hidden=(256, 256), epochs=200, batch_size=8, log_every=10, seed=4)


@pytest.fixture
def cluster(ray_cluster):
    return ray_cluster


def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _running_step(manager, key: str) -> int:
    return max((getattr(e, "first_step", 0) for e in manager.snapshot(key).events if e.kind == "steps"), default=0)


# --- more than one front-end -------------------------------------------------------------------------------
def test_the_same_config_pressed_in_two_front_ends_trains_once_and_both_watch_it(cluster, isolated_cache):
    one = cluster.manager(isolated_cache / "runs", 1)
    key = one.submit(SMALL, session="teacher")
    assert cluster.second.submit(SMALL, session="student") == key
    assert cluster.second.snapshot(key).watched_by == {"teacher", "student"}
    done = cluster.second.wait(key, timeout=180)
    seen_by_one = one.snapshot(key)
    assert done.status == "finished" and not done.from_cache
    assert [e.kind for e in done.events].count("started") == 1 and seen_by_one.n_events == done.n_events
    assert done.events[-1].test_acc > 0.5 and done.events[-1].test_loss < math.log(10)  # learned
    assert one.store.meta(key)["status"] == "finished"  # stored once, by the scheduler, read by both
    # what the pages read of the store, through a front-end: methods, and attributes (the sidebar's problems)
    assert [r["key"] for r in cluster.second.store.list_runs(kind="run")] == [key] and key in cluster.second.store
    assert cluster.second.store.problems == [] and cluster.second.store.health() is None


def test_a_second_front_end_process_joins_the_job_and_reads_the_store(cluster, isolated_cache):
    """Another Python (another web server) connects with the token and finds the same job, then its result."""
    one = cluster.manager(isolated_cache / "runs", 0)  # paused: the job waits while the other joins
    key = one.submit(SMALL.replace(seed=7), session="front-1")
    script = ("import json\nfrom core.serve.jobs import get_manager\n"
              "from core.engine.config import RunConfig\n"
              "m = get_manager()  # GRADIENT_LAB_RAY_ADDRESS set: the Ray backend, as a page gets it\n"
              "assert type(m).__name__ == 'RayJobManager', type(m)\n"
              f"cfg = RunConfig.from_dict(json.loads({json.dumps(json.dumps(SMALL.replace(seed=7).to_dict()))}))\n"
              "key = m.submit(cfg, session='front-2')\n"
              "snap = m.snapshot(key)\n"
              "print(json.dumps([key, snap.status, sorted(snap.watched_by)]))\n")
    env = {**os.environ, **cluster.env, "GRADIENT_LAB_RAY_ADDRESS": cluster.address}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [key, "queued", ["front-1", "front-2"]]


def test_without_a_ray_address_the_manager_is_local_and_ray_is_never_imported(isolated_cache):
    script = ("import sys\nfrom core.serve.jobs import JobManager, get_manager\nimport app.main\n"
              "assert type(get_manager()) is JobManager\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))\n")
    env = {k: v for k, v in os.environ.items() if k != "GRADIENT_LAB_RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_round_robin_between_browsers_of_different_front_ends(cluster, isolated_cache):
    one, two = cluster.manager(isolated_cache / "runs", 0), cluster.second
    greedy = [one.submit(SMALL.replace(seed=100 + i), session="greedy") for i in range(3)]
    alice = two.submit(SMALL.replace(seed=200), session="alice")
    assert [two.snapshot(k).queue_position for k in greedy] == [0, 2, 3]
    assert one.snapshot(alice).queue_position == 1  # behind greedy's first job only, seen from either


def test_one_front_ends_cancel_stops_only_its_own_watching(cluster, isolated_cache):
    one, two = cluster.manager(isolated_cache / "runs", 0), cluster.second
    key = one.submit(SMALL.replace(seed=300), session="teacher")
    two.submit(SMALL.replace(seed=300), session="student")
    assert two.cancel(key, session="student") is False
    assert one.snapshot(key).status == "queued" and one.snapshot(key).watched_by == {"teacher"}
    assert one.cancel(key, session="teacher") is True


def test_the_quota_per_browser_counts_across_front_ends_and_refuses_in_plain_words(cluster, isolated_cache):
    one, two = cluster.manager(isolated_cache / "runs", 0), cluster.second
    for i in range(PER_BROWSER):
        (one, two)[i % 2].submit(SMALL.replace(seed=400 + i), session=f"tab-{i}", browser="one-browser")
    with pytest.raises(Refused) as refused:
        two.submit(SMALL.replace(seed=499), session="tab-x", browser="one-browser")
    assert str(refused.value).startswith(f"You already have {PER_BROWSER} jobs")  # the message, no traceback


def test_a_killed_trainer_fails_only_its_job_and_the_next_job_trains(cluster, isolated_cache):
    manager = cluster.manager(isolated_cache / "runs", 1)
    key = manager.submit(LONG)
    _wait_until(lambda: _running_step(manager, key) > 0)
    (pid,) = manager.trainer_pids()
    os.kill(pid, signal.SIGKILL)
    snap = manager.wait(key, timeout=60)
    assert snap.status == "failed" and "trainer running this job died" in snap.error
    assert manager.store.meta(key) is None  # nothing stored for it
    after = cluster.second.wait(cluster.second.submit(SMALL.replace(seed=9)), timeout=240)
    assert after.status == "finished" and after.events[-1].test_acc > 0.5
    assert manager.trainer_pids() != [pid]  # Ray restarted the trainer (it warmed up again)


def test_the_head_killed_mid_run_says_so_loses_no_stored_run_and_recovers(cluster, isolated_cache):
    manager = cluster.manager(isolated_cache / "runs", 1)
    kept = manager.wait(manager.submit(SMALL.replace(seed=11)), timeout=180)
    assert kept.status == "finished"
    running = manager.submit(LONG.replace(seed=12))
    _wait_until(lambda: _running_step(manager, running) > 0)
    os.killpg(cluster.proc.pid, signal.SIGKILL)
    cluster.proc.wait(10)
    _wait_until(lambda: not _answers(manager), timeout=60)  # the head's worker processes go a moment later
    with pytest.raises(ClusterUnavailable, match="nothing stored is lost"):
        cluster.second.snapshot(running)  # the other front-end too, in plain words
    stop_head(cluster.proc)
    cluster.start()  # the head again, on the same port; the same front-end objects reconnect
    _wait_until(lambda: _answers(manager), timeout=120)
    manager.reset(str(isolated_cache / "runs"), {"cpu": 1})  # the store the lost scheduler wrote
    replay = cluster.second.snapshot(SMALL.replace(seed=11).key())
    assert replay.status == "finished" and replay.from_cache and replay.n_events == kept.n_events
    assert manager.wait(manager.submit(SMALL.replace(seed=13)), timeout=240).status == "finished"


def _answers(front: RayJobManager) -> bool:
    try:
        front.counts()
    except ClusterUnavailable:
        return False
    return True


# --- two Streamlit front-ends, one class -------------------------------------------------------------------
TRAIN = re.compile(r"^(play_arrow)?\s*(Train|Training…)$")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")
def test_two_streamlit_front_ends_serve_one_class(cluster, isolated_cache, tmp_path):
    """The app started twice (own caches) with GRADIENT_LAB_RAY_ADDRESS: a student presses Train on one, the
    other front-end's student finds the same run training and then its result, trained once."""
    cluster.manager(isolated_cache / "runs", 1)
    cfg = RunConfig(dataset="digits", hidden=(64, 64), epochs=80, batch_size=16, log_every=20)  # trains ~15 s
    link = "&".join(f"{k}={v}" for k, v in cfg.to_query().items())
    env = {**cluster.env, "GRADIENT_LAB_RAY_ADDRESS": cluster.address}
    ports, servers = [free_port(), free_port()], []
    try:
        for port in ports:
            servers.append(start_server(tmp_path / f"front-{port}", port, tmp_path / f"front-{port}.log", env))
        with sync_playwright() as p:
            browser = launch(p)
            one, two = (browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in ports)
            one.goto(f"http://127.0.0.1:{ports[0]}/?{link}")
            one.get_by_role("button", name=TRAIN).first.wait_for(timeout=180_000)
            one.get_by_role("button", name=TRAIN).first.click()
            _wait_until(lambda: cluster.front.status(cfg.key()) == "running", timeout=120)
            two.goto(f"http://127.0.0.1:{ports[1]}/?{link}")
            two.get_by_text("Training…").first.wait_for(timeout=120_000)  # it watches the run the other started
            for page in (one, two):
                page.get_by_text("What happened.").first.wait_for(timeout=240_000)
            browser.close()
    finally:
        for server in servers:
            stop_server(server)
    done = cluster.front.snapshot(cfg.key())
    assert done.status == "finished" and [e.kind for e in done.events].count("started") == 1
    assert done.events[-1].test_acc > 0.5
