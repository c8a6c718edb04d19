"""Sweeps (core/lab/sweep/): search spaces from the schema, Optuna's samplers and pruners, batched
trials, the run store, resume after a kill, and bad input."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import tracemalloc

import optuna
import pytest
from optuna.trial import TrialState

import core.lab.sweep.runner
from core.lab.sweep.runner import BOUNDARIES, plan_trials, run_sweep
from core.lab.sweep.space import DataShape, Dist, SweepConfig, trial_config
from core.lab.sweep.study import DB_ENV, INTERRUPTED, SweepStorageError, counted, open_study
from core.engine.config import ConfigError, RunConfig
from core.serve.jobs import JobManager
from core.serve.store import RunStore
from core.lessons.families import SWEEP_PRESETS
from core.engine.train import train
from tests.conftest import REPO
from tests.helpers import KILLED_EXIT, Killed, kill_at

DIGITS = RunConfig(dataset="digits", epochs=1, batch_size=32, log_every=50, val_fraction=0.2, hidden=(16,),
                   optimizer="sgd", lr=0.1)


def small(**changes) -> SweepConfig:
    space = (Dist("activation", "categorical", ("tanh", "relu")), Dist("depth", "int", (), 1, 2),
             Dist("lr", "categorical", (0.01, 0.1)))
    return SweepConfig(**{"base": DIGITS, "space": space, "sampler": "grid", "trials": 8, **changes})


def url(tmp_path, name="studies") -> str:
    return f"sqlite:///{tmp_path / name}.db"


def run(sweep, tmp_path, store=None, cancel=None, name="studies"):
    """Run a sweep here; with ``store``, its trials are looked up and filed as the job manager does."""
    events = []
    links = {}
    if store is not None:
        manager = JobManager(store, processes=False)
        links = {"file_run": manager.file_run, "read_run": manager.read_run}
    end = run_sweep(sweep, events.append, cancel, storage=url(tmp_path, name), **links)
    return end, events, open_study(sweep, url(tmp_path, name))


def test_config_round_trips_and_keys(isolated_cache):
    sweep = SWEEP_PRESETS["D-sweep"].sweep
    assert SweepConfig.from_query(sweep.to_query()) == sweep
    assert SweepConfig.from_json(sweep.to_json()) == sweep
    assert sweep.key() == SweepConfig.from_json(sweep.to_json()).key()
    assert sweep.key() != sweep.replace(sampler="tpe").key()
    # a larger budget continues the same study; another sampler is another study
    assert sweep.replace(trials=80).study_name() == sweep.study_name() != sweep.replace(sampler="tpe").study_name()
    # seed 003's space: the product of its value counts
    assert sweep.grid_size == 2 * 3 * 3 * 3 * 2 * 6 * 3 * 2 * 3
    assert small().grid_size == 8 and small().n_trials == 8 and small(trials=20).n_trials == 8
    assert SWEEP_PRESETS["digits-sweep"].sweep.grid_size == float("inf")


def test_cost_estimate_follows_parameters(isolated_cache):
    shape = DataShape(1000, (64,), 10)
    one = small(space=(Dist("lr", "categorical", (0.01, 0.1)),), sampler="random")
    # one hidden layer of 16 on 64 inputs, 10 classes: 64*16+16 + 16*10+10 parameters
    assert one.trial_cost(shape) == pytest.approx(6 * (64 * 16 + 16 + 16 * 10 + 10) * 1000 * 1 / 1e9)
    assert one.replace(base=DIGITS.replace(epochs=3)).cost(shape) == pytest.approx(3 * one.cost(shape))
    assert one.replace(trials=16).cost(shape) == pytest.approx(2 * one.replace(trials=8).cost(shape))


@pytest.mark.parametrize("name, cls", [("grid", optuna.samplers.GridSampler), ("random", optuna.samplers.RandomSampler),
                                       ("tpe", optuna.samplers.TPESampler)])
def test_sampler_choice_reaches_optuna(tmp_path, name, cls):
    sweep = small(sampler=name)
    assert isinstance(open_study(sweep, url(tmp_path)).sampler, cls)


@pytest.mark.parametrize("name, cls", [("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
                                       ("halving", optuna.pruners.SuccessiveHalvingPruner)])
def test_pruner_choice_reaches_optuna(tmp_path, name, cls):
    assert isinstance(open_study(small(pruner=name), url(tmp_path)).pruner, cls)


def test_grid_visits_every_point_exactly_once(isolated_cache, tmp_path):
    sweep = small(trials=20)  # more than the 8 points: each is still visited once
    end, events, study = run(sweep, tmp_path, RunStore())
    assert end.status == "finished"
    points = [(t.params["activation"], t.params["depth"], t.params["lr"]) for t in study.trials]
    assert sorted(points) == sorted(itertools.product(("tanh", "relu"), (1, 2), (0.01, 0.1)))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # what was learned: lr 0.1 on digits in one epoch is well above chance (0.1) for some trial
    assert study.best_value > 0.5


def test_median_pruning_prunes_a_trial_clearly_behind(isolated_cache, tmp_path):
    base = DIGITS.replace(epochs=4, hidden=(32,))
    sweep = SweepConfig(base, (Dist("lr", "categorical", (0.2, 0.1, 1e-6)),), "random", "median", 3, parallel=1)
    study = open_study(sweep, url(tmp_path))
    for lr in (0.2, 0.1, 1e-6):  # two good trials first, then one that cannot learn
        study.enqueue_trial({"lr": lr})
    end, events, study = run(sweep, tmp_path)
    states = {t.params["lr"]: t for t in study.trials}
    assert states[0.2].state == states[0.1].state == TrialState.COMPLETE
    behind = states[1e-6]
    assert behind.state == TrialState.PRUNED
    assert len(behind.intermediate_values) < base.epochs  # it stopped training early
    assert max(behind.intermediate_values.values()) < min(states[0.1].intermediate_values.values())


def test_batched_trials_equal_the_same_trials_trained_alone(isolated_cache, tmp_path):
    space = (Dist("activation", "categorical", ("tanh", "relu")), Dist("width", "categorical", (16, 32)))
    sweep = SweepConfig(DIGITS.replace(epochs=2), space, "grid", "none", 4)
    cells = [(str(i), trial_config(sweep.base, dict(zip(("activation", "width"), p))))
             for i, p in enumerate(itertools.product(("tanh", "relu"), (16, 32)))]
    plan = plan_trials(cells)
    assert [len(g) for g in plan.batched] == [4] and plan.alone == []  # one batched lanes job (two stacks of two)
    end, events, study = run(sweep, tmp_path)
    assert end.status == "finished"
    for trial in study.trials:
        alone = train(trial_config(sweep.base, trial.params))
        assert trial.value == pytest.approx(alone.val_acc, abs=1.5e-3)  # one example of 360 may flip
        assert trial.user_attrs["test_acc"] == pytest.approx(alone.test_acc, abs=1.5e-3)


def test_trials_that_share_a_data_stream_train_as_one_stack():
    cells = [("a", DIGITS.replace(activation="tanh")), ("b", DIGITS.replace(activation="relu")),
             ("c", DIGITS.replace(optimizer="adam", hidden=(32, 32))),  # other optimizer and width: same stack
             ("d", DIGITS.replace(batch_size=64)), ("e", DIGITS.replace(batch_size=64, hidden=(16, 16))),
             ("f", DIGITS.replace(batch_size=16))]  # a data stream of its own
    plan = plan_trials(cells)
    assert (plan.batched, plan.alone) == ([[0, 1, 2], [3, 4]], [5]) and plan.mixed


def test_stored_trial_is_not_retrained(isolated_cache, tmp_path, monkeypatch):
    store = RunStore()
    sweep = small()
    first_end, _, first = run(sweep, tmp_path, store, name="a")
    assert all(trial_config(sweep.base, t.params).key() in store for t in first.trials)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored trial was trained again")

    monkeypatch.setattr(core.lab.sweep.runner, "train_family", no_training)
    end, events, again = run(sweep, tmp_path, store, name="b")  # a new study over the same runs
    assert end.status == "finished"
    assert [t.user_attrs["outcome"] for t in again.trials] == ["stored"] * 8
    by_point = {tuple(sorted(t.params.items())): t.value for t in first.trials}
    assert {tuple(sorted(t.params.items())): t.value for t in again.trials} == by_point


def test_diverged_trial_fails_and_the_sweep_goes_on(isolated_cache, tmp_path):
    sweep = SweepConfig(DIGITS.replace(activation="linear", epochs=3), (Dist("lr", "categorical", (0.05, 100.0)),),
                        "grid", "none", 2)
    end, events, study = run(sweep, tmp_path)
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[100.0].state == TrialState.FAIL and by_lr[100.0].user_attrs["outcome"] == "diverged"
    assert by_lr[0.05].state == TrialState.COMPLETE and by_lr[0.05].value > 0.5
    assert end.status == "finished" and end.val_acc == by_lr[0.05].value


def test_sweep_is_one_job_with_dedup_and_store(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(DB_ENV, url(tmp_path))
    manager = JobManager(RunStore())
    sweep = small()
    key = manager.submit(sweep)
    assert manager.submit(sweep) == key and manager.counts()["queued"] + manager.counts()["running"] == 1
    snap = manager.wait(key, timeout=300)
    assert snap.status == "finished" and not snap.from_cache
    assert sum(e.kind == "trial_done" for e in snap.events) == 8
    again = JobManager(manager.store)
    again.submit(sweep)
    assert again.snapshot(key).from_cache  # a finished sweep is served from the store


def test_cancel_keeps_finished_trials_and_resumes(isolated_cache, tmp_path):
    sweep = small(parallel=2, base=DIGITS.replace(epochs=3))
    cancel = threading.Event()
    events = []

    def emit(event):
        events.append(event)
        if event.kind == "cell" and sum(e.kind == "trial_done" for e in events) >= 2:
            cancel.set()  # cancel while the second batch of two trains, after its first epoch

    end = run_sweep(sweep, emit, cancel, storage=url(tmp_path))
    assert end.status == "cancelled"
    study = open_study(sweep, url(tmp_path))
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the cancelled trials are not left running
    kept = {t.number: (t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE}
    interrupted = [t.params for t in study.trials if t.state == TrialState.FAIL and not counted(t)]
    assert len(kept) == 2 and len(interrupted) == 2
    end, events, study = run(sweep, tmp_path)
    assert end.status == "finished"
    assert next(e for e in events if e.kind == "sweep_started").done_before == 2
    assert all(study.trials[n].params == p and study.trials[n].value == v for n, (p, v) in kept.items())
    assert sum(counted(t) for t in study.trials) == 8
    points = [tuple(sorted(t.params.items())) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(points) == len(set(points)) == 8  # every grid point once; the interrupted ones asked again
    assert all(tuple(sorted(p.items())) in points for p in interrupted)


KILL_SCRIPT = """
import sys
from core.lab.sweep.runner import run_sweep
from core.lab.sweep.space import SweepConfig
from tests.helpers import kill_at
run_sweep(SweepConfig.from_json(sys.argv[1]), lambda e: None, storage=sys.argv[2],
          at_boundary=kill_at(sys.argv[3], 2, exit=True))
"""
KILLED = 2  # the trial killed: two trials finished before it


def killable(sampler: str) -> SweepConfig:
    """One trial at a time; a grid search visits all 8 points, the others try 4."""
    return small(sampler=sampler, parallel=1, trials=8 if sampler == "grid" else 4)


def _assert_resumes(sweep: SweepConfig, tmp_path) -> None:
    """After trial KILLED was killed: the resumed sweep keeps what finished, asks the killed trial again
    (with the values it had, and a grid search its point), counts it once, and visits no point twice."""
    trials = open_study(sweep, url(tmp_path)).get_trials()
    before = {t.number: (t.params, t.value) for t in trials if t.state == TrialState.COMPLETE}
    (killed,) = [t for t in trials if t.state == TrialState.RUNNING]
    assert killed.number == KILLED and sorted(before) == list(range(KILLED))
    end, events, study = run(sweep, tmp_path)
    started = next(e for e in events if e.kind == "sweep_started")
    assert (started.done_before, started.requeued) == (KILLED, 1)
    assert end.status == "finished"
    after = study.get_trials()
    assert all((after[n].params, after[n].value) == before[n] for n in before)  # nothing finished was lost
    assert after[KILLED].state == TrialState.FAIL and not counted(after[KILLED])
    again = after[len(trials)]  # the first trial the resumed sweep asked
    assert again.state == TrialState.COMPLETE and killed.params.items() <= again.params.items()
    assert sum(counted(t) for t in after) == sweep.n_trials
    if sweep.sampler == "grid":
        points = [tuple(sorted(t.params.items())) for t in after if t.state == TrialState.COMPLETE]
        assert len(points) == len(set(points)) == sweep.grid_size


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_grid_sweep_killed_at_any_boundary_resumes_losing_nothing(isolated_cache, tmp_path, boundary):
    sweep = killable("grid")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIENT_LAB_TORCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, sweep.to_json(), url(tmp_path), boundary], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == KILLED_EXIT, done.stderr[-2000:]
    _assert_resumes(sweep, tmp_path)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_sweep_killed_at_any_boundary_resumes_for_every_sampler(isolated_cache, tmp_path, sampler, boundary):
    sweep = killable(sampler)
    with pytest.raises(Killed):
        run_sweep(sweep, lambda e: None, storage=url(tmp_path), at_boundary=kill_at(boundary, KILLED))
    _assert_resumes(sweep, tmp_path)


def test_a_trial_whose_worker_pipe_broke_is_interrupted_not_failed(isolated_cache, tmp_path):
    sweep = killable("grid").replace(base=DIGITS.replace(epochs=2))  # the pipe breaks after epoch 1 of 2

    def emit(event):
        if event.kind == "cell" and event.cell == KILLED:
            raise BrokenPipeError(32, "Broken pipe")  # the worker's parent is gone

    end = run_sweep(sweep, emit, storage=url(tmp_path))
    assert end.status == "cancelled"
    trials = open_study(sweep, url(tmp_path)).get_trials()
    assert [t.state for t in trials[:KILLED + 1]] == [TrialState.COMPLETE] * KILLED + [TrialState.FAIL]
    assert trials[KILLED].user_attrs["outcome"] == INTERRUPTED and sum(counted(t) for t in trials) == KILLED
    end, events, study = run(sweep, tmp_path)
    assert end.status == "finished" and sum(counted(t) for t in study.get_trials()) == sweep.n_trials
    points = [tuple(sorted(t.params.items())) for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(points) == len(set(points)) == sweep.grid_size  # the interrupted point was asked again


def test_a_trial_killed_while_being_told_is_not_counted_as_done(isolated_cache, tmp_path):
    """A kill between recording a trial's outcome and telling Optuna leaves it RUNNING with an outcome:
    it never finished, so the resumed sweep asks it again and does not count it as budget used."""
    sweep = small(trials=4)
    study = open_study(sweep, url(tmp_path))
    half_told = study.ask({d.name: d.optuna() for d in sweep.space})
    half_told.set_user_attr("outcome", "finished")  # then the process died before study.tell
    end, events, study = run(sweep, tmp_path)
    started = next(e for e in events if e.kind == "sweep_started")
    assert started.done_before == 0 and started.requeued == 1
    assert end.status == "finished"
    assert sum(counted(t) for t in study.get_trials()) == 4


@pytest.mark.parametrize("changes, words", [
    ({"space": ()}, "search space is empty"),
    ({"space": (Dist("lr", "categorical", (0.1,)),)}, "one point only"),
    ({"space": (Dist("lr", "categorical", (0.1, 0.1)),)}, "lists a value twice"),
    ({"space": (Dist("lr", "log", (), 1e-3, 5000.0),), "sampler": "random"}, "Learning rate (lr) = 5000 is out of range"),
    ({"space": (Dist("dropout", "categorical", (0.0, 0.95)),)}, "Dropout p (dropout) = 0.95 is out of range"),
    ({"space": (Dist("depth", "int", (), 1, 30),)}, "has 30 layers: allowed 0-20"),
    ({"space": (Dist("lr", "log", (), 1e-3, 1e-1),)}, "Grid search needs a finite list"),
    ({"space": (Dist("activation", "categorical", ("relu", "swish")),)}, "'swish' is not allowed"),
    ({"sampler": "bayes"}, "Sampler 'bayes' is not allowed"),
    ({"trials": 0}, "Trials = 0"),
])
def test_bad_space_gets_the_schema_message(changes, words):
    with pytest.raises(ConfigError) as info:
        small(**changes)
    assert words in str(info.value)


HOSTILE_LINKS = [
    ({"space_depth": "i:1:999999999"}, "has 999999999 layers: allowed 0-20"),
    ({"space_depth": "c:2,50000000,90000000,700000000,800000000"}, "and 1 more"),
    ({"space_width": "i:1:99999999999"}, "each width must be in [1, 4096]"),
    ({"space_depth": "i:1:" + "9" * 5000}, "at most 18 digits"),
    ({"space_lr": "c:" + ",".join(str(0.001 * i) for i in range(1, 5001))}, "lists 5000 values: at most 100"),
    ({f"space_knob{i}": "c:1,2" for i in range(2000)}, "and 1997 more"),
    ({"space_seed": "i:0:2000000000", "sweep_sampler": "grid"}, "Grid search over 2e+09 points"),
    ({"space_activation": "c:" + "x" * 20000 + ",relu"}, "characters)"),
]


@pytest.mark.parametrize("query, words", HOSTILE_LINKS)
def test_a_hostile_link_is_refused_with_a_short_message_before_anything_is_built(query, words):
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            SweepConfig.from_query(query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert words in str(info.value)
    assert len(str(info.value)) < 400
    assert peak < 4 * 2**20  # hidden=(width,) * 999999999 would take gigabytes


def test_a_stored_trial_deeper_than_the_schema_is_refused_before_its_layers_are_built():
    with pytest.raises(ConfigError, match="allowed 0-20 hidden layers"):
        trial_config(DIGITS, {"depth": 10**12})


@pytest.mark.parametrize("bad_url", ["sqlite:////nonexistent-folder/sub/studies.db", "postgresql://u:pw@127.0.0.1:1/x",
                                     "notadb://x"])
def test_unreachable_database_is_a_clear_message(isolated_cache, bad_url):
    with pytest.raises(SweepStorageError) as info:
        open_study(small(), bad_url)
    assert "GRADIENT_LAB_SWEEP_DB" in str(info.value) and "pw" not in str(info.value)
    events = []
    end = run_sweep(small(), events.append, storage=bad_url)
    assert end.kind == "failed" and "cannot be" in end.message


@pytest.mark.slow
def test_real_fashion_random_sweep_finds_a_good_trial(isolated_cache, tmp_path, shared_fashion):
    sweep = SWEEP_PRESETS["D-sweep-lecture"].sweep.replace(trials=3)
    end, events, study = run(sweep, tmp_path, RunStore())
    assert end.status == "finished"
    assert study.best_value > 0.6  # 10 classes: chance is 0.1
    figure = optuna.visualization.plot_optimization_history(study)
    best = next(trace for trace in figure.data if trace.name == "Best Value")
    assert all(b >= a for a, b in zip(best.y, best.y[1:]))
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert list(best.y) == pytest.approx([max(values[:i + 1]) for i in range(len(values))])


def test_cli_sweep_prints_the_best_trial_and_the_study(isolated_cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIENT_LAB_TORCH_THREADS": "1", DB_ENV: url(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "core", "sweep", "--preset", "digits-sweep", "--trials", "3",
                          "--set", "epochs=2", "--quiet"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "best trial" in out.stdout and f"stored in {url(tmp_path)}" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "core", "sweep", "--preset", "digits-sweep", "--sampler", "grid"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Grid search needs a finite list" in bad.stderr
