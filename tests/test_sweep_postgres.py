"""Sweeps on PostgreSQL (issue 25.4): GRADIENT_LAB_SWEEP_DB names a server that several front-ends share, and two
front-ends running trials of one study at once lose none and ask none twice. The server is the tests' own
(tests/pg_helpers.py, the ``postgres_url`` fixture)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

import core.lab.sweep.study
from core.engine.config import RunConfig
from core.lab.sweep.lease import GRACE_S, LEASE_PREFIX, RUNNER_ATTR, Lease, live_leases, machine, orphans
from core.lab.sweep.space import Dist, SweepConfig
from core.lab.sweep.study import SweepStorageError, counted, open_storage, open_study, with_driver
from tests.conftest import REPO
from tests.helpers import KILLED_EXIT

DIGITS = RunConfig(dataset="digits", epochs=2, batch_size=32, log_every=50, val_fraction=0.2, hidden=(16,),
                   optimizer="sgd", lr=0.1)
SPACE = (Dist("activation", "categorical", ("tanh", "relu")), Dist("width", "categorical", (8, 16)),
         Dist("lr", "categorical", (0.03, 0.1)))
GRID = tuple(itertools.product(("tanh", "relu"), (8, 16), (0.03, 0.1)))


@pytest.mark.parametrize("plain, driven", [
    ("postgresql://lab:pw@db:5432/sweeps", "postgresql+psycopg://lab:pw@db:5432/sweeps"),
    ("postgres://lab@db/sweeps?sslmode=require", "postgresql+psycopg://lab@db/sweeps?sslmode=require"),
    ("postgresql+psycopg://lab@db/sweeps", "postgresql+psycopg://lab@db/sweeps"),  # a driver named is kept
    ("sqlite:////tmp/studies.db", "sqlite:////tmp/studies.db"),
])
def test_a_plain_postgresql_url_gets_the_installed_driver(plain, driven):
    assert with_driver(plain) == driven


def test_no_postgresql_driver_is_a_clear_message(monkeypatch):
    monkeypatch.setattr(core.lab.sweep.study, "POSTGRES_DRIVERS", ("no_such_driver_module",))
    with pytest.raises(SweepStorageError) as info:
        with_driver("postgresql://lab:secret@db/sweeps")
    message = str(info.value)
    assert "no PostgreSQL driver" in message and "requirements-cluster.txt" in message
    assert "GRADIENT_LAB_SWEEP_DB" in message and "secret" not in message


# One front-end: a sweep job as a server's worker runs it, reporting what it told (and its SweepStarted) as
# JSON lines. Front-end "a" holds its first asked trial (RUNNING in the study) until "b" has started, so "b"
# starts while "a" has a trial in flight; given a boundary, "a" is then killed there in that trial.
FRONT_END = """
import json, sys, time
from pathlib import Path
from core.lab.sweep.runner import run_sweep
from core.lab.sweep.space import SweepConfig
from tests.helpers import kill_at
sweep, url, name, folder = SweepConfig.from_json(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
kill = kill_at(sys.argv[5], 0, exit=True) if name == "a" and len(sys.argv) > 5 else lambda boundary, number: None

def emit(event):
    if event.kind == "sweep_started":
        (folder / f"{name}-started").touch()
    if event.kind in ("sweep_started", "trial_done"):
        print(json.dumps(event.to_dict()), flush=True)

def hold(boundary, number):
    deadline = time.monotonic() + 120
    while name == "a" and boundary == "asked" and not (folder / "b-started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    kill(boundary, number)

end = run_sweep(sweep, emit, storage=url, at_boundary=hold)
print(json.dumps({"kind": "end", "status": end.status, "step": end.step}), flush=True)
"""


def front_end(sweep: SweepConfig, url: str, name: str, folder, *kill: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIENT_LAB_TORCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", FRONT_END, sweep.to_json(), url, name, str(folder), *kill],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, returncode: int = 0) -> list[dict]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == returncode, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def a_then_b(sweep: SweepConfig, url: str, folder, *kill: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Front-end "a" started, then "b" once "a" has opened the study."""
    a = front_end(sweep, url, "a", folder, *kill)
    deadline = time.monotonic() + 180
    while not (folder / "a-started").exists():  # "a" has opened the study and is asking its first trial
        assert a.poll() is None and time.monotonic() < deadline, a.stderr.read()[-3000:] if a.poll() else "timeout"
        time.sleep(0.05)
    return a, front_end(sweep, url, "b", folder)


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_two_front_ends_share_one_study_losing_no_trial_and_asking_none_twice(isolated_cache, tmp_path,
                                                                               postgres_url, sampler):
    sweep = SweepConfig(DIGITS, SPACE, sampler, "none", 8, parallel=1)
    a, b = a_then_b(sweep, postgres_url, tmp_path)
    reports = {"a": finished(a), "b": finished(b)}

    told = {name: [r for r in lines if r["kind"] == "trial_done"] for name, lines in reports.items()}
    started = {name: next(r for r in lines if r["kind"] == "sweep_started") for name, lines in reports.items()}
    ends = {name: lines[-1] for name, lines in reports.items()}
    assert started["b"]["requeued"] == 0  # "a"'s trial in flight was not taken for a killed one
    assert all(end["status"] == "finished" for end in ends.values()), ends
    assert told["a"] and told["b"], "both front-ends ran trials"

    study = open_study(sweep, postgres_url)
    trials = study.get_trials()
    numbers = [t["number"] for t in told["a"] + told["b"]]
    assert len(numbers) == len(set(numbers))  # no trial told by both
    by_number = {t.number: t for t in trials}
    for report in told["a"] + told["b"]:  # each told trial is in the study as its front-end evaluated it
        trial = by_number[report["number"]]
        assert trial.state.name == report["state"] == "COMPLETE" and trial.value == report["value"]
        assert trial.params == report["params"]
    assert sum(counted(t) for t in trials) == len(numbers) == sweep.n_trials  # the budget, shared
    assert sorted(t.number for t in trials if counted(t)) == sorted(numbers)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("outcome") == "interrupted"]
    points = [(t.params["activation"], t.params["width"], t.params["lr"]) for t in trials if counted(t)]
    if sampler == "grid":
        assert sorted(points) == sorted(GRID)  # every point exactly once
    else:
        assert set(points) <= set(GRID)
    assert study.best_value > 0.5  # Digits in two epochs: chance is 0.1


def test_only_a_dead_runners_trials_are_orphans(tmp_path):
    """The rules of core.lab.sweep.lease.orphans, each on a trial of its own (SQLite: the rules are the database's
    neither way)."""
    sweep = SweepConfig(DIGITS, SPACE, "random", "none", 8)
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = open_study(sweep, storage)
    study_id = storage.get_study_id_from_name(study.study_name)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()  # its process id names no process now
    now = time.time()
    records = {"away-fresh": {"machine": "another-host/pid:[1]", "pid": 1, "beat": now, "ended": False},
               "away-silent": {"machine": "another-host/pid:[1]", "pid": 1, "beat": now - GRACE_S - 5, "ended": False},
               "here-exited": {"machine": machine(), "pid": exited.pid, "beat": now, "ended": False},
               "here-ended": {"machine": machine(), "pid": os.getpid(), "beat": now, "ended": True}}
    for lease_id, record in records.items():
        storage.set_study_system_attr(study_id, LEASE_PREFIX + lease_id, record)
    with Lease(study, storage) as mine:
        numbers = {}
        for owner in [*records, mine.id, None]:
            trial = study.ask()
            if owner is not None:
                trial.set_user_attr(RUNNER_ATTR, owner)
            numbers[owner] = trial.number
        assert live_leases(study, storage) == {"away-fresh", mine.id}
        found = {t.number for t in orphans(study, storage, mine.id)}
        assert found == {numbers["away-silent"], numbers["here-exited"], numbers["here-ended"]}
        # an unstamped trial, young, may be a live runner's between asking and stamping: left alone while another
        # runner lives ("away-fresh"), an orphan once none does
        storage.set_study_system_attr(study_id, LEASE_PREFIX + "away-fresh", {**records["away-fresh"], "ended": True})
        assert numbers[None] in {t.number for t in orphans(study, storage, mine.id)}
    assert numbers[mine.id] in {t.number for t in orphans(study, storage)}  # the lease ended with its runner


def test_a_front_end_killed_mid_trial_loses_it_to_the_other_which_asks_it_again(isolated_cache, tmp_path,
                                                                                postgres_url):
    sweep = SweepConfig(DIGITS, SPACE, "grid", "none", 8, parallel=1)
    a, b = a_then_b(sweep, postgres_url, tmp_path, "training")  # "a" dies after trial 0's first epoch
    finished(a, KILLED_EXIT)
    told = [r for r in finished(b) if r["kind"] == "trial_done"]
    trials = open_study(sweep, postgres_url).get_trials()
    killed = trials[0]
    assert killed.state == TrialState.FAIL and killed.user_attrs["outcome"] == "interrupted" and not counted(killed)
    again = [t for t in trials if t.number > 0 and t.params == killed.params]
    assert len(again) == 1 and again[0].state == TrialState.COMPLETE  # asked again once, by "b", same point
    assert again[0].number in {r["number"] for r in told} and len(told) == sweep.n_trials  # "b" ran all eight
    points = [(t.params["activation"], t.params["width"], t.params["lr"]) for t in trials if counted(t)]
    assert sorted(points) == sorted(GRID)  # every point once, none lost with "a"
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
