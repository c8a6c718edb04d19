"""A sweep as one job: :func:`run_sweep` drives its Optuna study by ask-and-tell.

It asks a batch of trials (in the sampler's own order: asking several at once changes nothing a random
sampler picks), trains them as one family (:func:`core.engine.family.train_family`: those that share a
data stream train batched as one mixed stack, see :func:`plan_trials`, the others alone, each as
:func:`core.engine.train.train` would), reports each trial's validation accuracy at epoch ends to the
pruner, and tells Optuna the result. A trial whose run is already in the run store is told from the
store without training; a diverged trial is told as failed and the sweep goes on. A cancelled, killed
or orphaned sweep resumes (see :mod:`core.lab.sweep.study`). Registered as kind "sweep" in
:mod:`core.serve.runners`.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from core.engine import data as datasets
from core.engine.config import ConfigError, RunConfig
from core.engine.events import (SERVED_FROM_STORE, CellEvent, Event, RunFailed, RunFinished, StoredRun, SweepStarted,
                               TrialDone)
from core.engine.family import FamilyPlan, plan_family, train_family
from core.lab.sweep.lease import Lease
from core.lab.sweep.space import PRUNER_TITLES, SweepConfig, trial_config
from core.lab.sweep.study import (WITHDRAWN, SweepStorageError, ask_again, counted, open_storage, open_study, redact,
                                  requeue_interrupted, storage_url)

BOUNDARIES = ("asked", "suggesting", "training", "telling")  # where a sweep may be killed, for at_boundary
WAIT_S = 1.0  # how often a sweep whose last trials another front-end is running looks again
Boundary = Callable[[str, int], None]


def run_sweep(sweep: SweepConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
              file_run: Callable[[str, RunConfig, list[Event]], None] | None = None,
              read_run: Callable[[str], StoredRun | None] | None = None,
              storage: optuna.storages.BaseStorage | str | None = None,
              at_boundary: Boundary | None = None) -> RunFinished | RunFailed:
    """Search the space (see the module docstring); returns the sweep's terminal event.

    ``read_run`` looks a trial's run up in the run store, ``file_run`` hands a trained trial's run
    to the job manager to store (the manager is the store's only writer). ``at_boundary(name, trial)``
    is called at each of BOUNDARIES a trial passes (tests kill the sweep there). When ``emit`` raises
    (a dying worker's broken pipe) the sweep stops: its trials in flight are interrupted, not failed."""
    t0 = time.perf_counter()
    stop = _Stop(cancel or threading.Event())
    emit = stop.guard(emit)
    at_boundary = at_boundary or (lambda name, number: None)
    try:
        storage = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
        study = open_study(sweep, storage)
        storage_text = redact(getattr(storage, "url", None) or storage_url())
    except (ConfigError, SweepStorageError, datasets.DatasetUnavailable) as exc:
        end = RunFailed(0, str(exc), type(exc).__name__, time.perf_counter() - t0)
        emit(end)
        return end
    with Lease(study, storage) as lease:
        requeued = requeue_interrupted(study, storage, lease.id)
        done = sum(counted(t) for t in study.get_trials(deepcopy=False))
        notes = []
        if sweep.sampler == "grid" and sweep.trials > sweep.grid_size:
            notes.append(f"The grid has {sweep.grid_size:g} points: {sweep.n_trials} trials visit each once")
        emit(SweepStarted(sweep.key(), sweep.study_name(), storage_text, sweep.n_trials, done, requeued, notes,
                          time.time()))
        while not stop.is_set():
            room = _room(sweep, study, storage, lease)
            if room is None:
                break
            if room == 0:  # another front-end runs the last trials: wait for them (or for their runner to die)
                stop.cancel.wait(WAIT_S)
                continue
            asked = [_ask(study, sweep, at_boundary, lease) for _ in range(min(sweep.batch, room))]
            _run_batch(sweep, study, storage, [t for t in asked if t is not None], emit, stop, file_run, read_run,
                       at_boundary)
    return _finish(sweep, study, stop, t0, emit)


def _room(sweep: SweepConfig, study: optuna.Study, storage: optuna.storages.BaseStorage, lease: Lease) -> int | None:
    """How many trials this runner may ask now: the budget less the trials counted and those other runners
    (front-ends sharing the study) are running; None when the budget is used up. Orphans are asked again first."""
    requeue_interrupted(study, storage, lease.id)
    trials = study.get_trials(deepcopy=False)
    done = sum(counted(t) for t in trials)
    if done >= sweep.n_trials:
        return None
    return max(0, sweep.n_trials - done - sum(t.state == TrialState.RUNNING for t in trials))


class _Stop:
    """What stops a sweep: its cancel flag, or an event sink that raised (the worker it streams to is gone)."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.broken = threading.Event()

    def is_set(self) -> bool:
        return self.cancel.is_set() or self.broken.is_set()

    def guard(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        def send(event: Event) -> None:
            if self.broken.is_set():
                return
            try:
                emit(event)
            except Exception:  # BrokenPipeError and the like: nobody is listening any more
                self.broken.set()
        return send


def _ask(study: optuna.Study, sweep: SweepConfig, at_boundary: Boundary, lease: Lease) -> optuna.Trial | None:
    """A new trial, stamped as this runner's, with a value for every knob of the space; None (the trial
    withdrawn) when another front-end asked the budget's last trial at the same moment."""
    trial = study.ask()
    lease.stamp(trial)
    at_boundary("asked", trial.number)
    # Alone on the study, a runner asks only the room it counted; shared, the last trial may be asked twice.
    if lease.shared(study) and _past_budget(study, trial.number, sweep.n_trials):
        trial.set_user_attr("outcome", WITHDRAWN)
        study.tell(trial, state=TrialState.FAIL)
        return None
    for k, dist in enumerate(sweep.space):
        if k:
            at_boundary("suggesting", trial.number)
        dist.suggest(trial)
    return trial


def _past_budget(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether the trials before trial ``number`` that count or run already fill the budget (trial numbers
    are unique and increasing, so of two runners racing for the last trial exactly one gets it). A runner that
    joined before this trial was asked had written its lease before asking, so the asker sees it."""
    before = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(counted(t) or t.state == TrialState.RUNNING for t in before) >= budget


def _run_batch(sweep: SweepConfig, study: optuna.Study, storage: optuna.storages.BaseStorage,
               asked: list[optuna.Trial], emit: Callable[[Event], None], stop: _Stop,
               file_run: Callable[[str, RunConfig, list[Event]], None] | None,
               read_run: Callable[[str], StoredRun | None] | None, at_boundary: Boundary) -> int:
    """Train (or serve from the store) one batch of asked trials; returns how many were told."""
    configs: dict[int, RunConfig] = {}
    told, told_numbers = 0, set()

    def tell(trial: optuna.Trial, state: TrialState, value: float | None, outcome: str, reason: str = "",
             test_acc: float | None = None, elapsed: float = 0.0) -> None:
        nonlocal told
        trial.set_user_attr("outcome", outcome)
        if reason:
            trial.set_user_attr("reason", reason[:500])
        if test_acc is not None:
            trial.set_user_attr("test_acc", test_acc)
        at_boundary("telling", trial.number)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        told += 1
        told_numbers.add(trial.number)
        key = trial.user_attrs.get("key", "")
        emit(TrialDone(trial.number, dict(trial.params), state.name, value, key, outcome, reason, test_acc, elapsed))

    for trial in asked:
        try:
            cfg = trial_config(sweep.base, trial.params)
        except ConfigError as exc:  # a combination the schema refuses (ranges were checked end by end)
            tell(trial, TrialState.FAIL, None, "failed", str(exc))
            continue
        trial.set_user_attr("key", cfg.key())
        stored = read_run(cfg.key()) if read_run is not None else None
        if stored is not None and stored.meta.get("status") in SERVED_FROM_STORE:
            _tell_stored(trial, stored, tell)
        else:
            configs[trial.number] = cfg
    by_number = {t.number: t for t in asked}
    numbers = list(configs)
    hooks = [lane_hooks(sweep, by_number[n], configs[n], emit, file_run, tell, at_boundary) for n in numbers]
    cells = [(f"trial {n}", configs[n]) for n in numbers]
    if cells:  # every trial may have been served from the store
        train_family([cfg for _, cfg in cells], [h[0] for h in hooks], plan_trials(cells), stop,
                     prune=lambda i: hooks[i][1]())
    for number in numbers:  # cancelled before or while training: asked again on resume
        if number not in told_numbers:
            ask_again(study, storage, number)
    return told


def plan_trials(cells: Sequence[tuple[str, RunConfig]]) -> FamilyPlan:
    """Which trials train batched and which alone: the trials asked together are grouped by what must be
    in lockstep (the data stream: batch size, epochs, seed...), and each group is one mixed stack whatever
    the widths, depths, optimizers, activations and inits Optuna picked (core.engine.batched.stack_key with
    ``mixed``). Batching a stack of one gains nothing (bench_sweep measured it slower than the single-run
    lanes), so it trains alone."""
    return plan_family(cells, min_stack=2, mixed=True)


def lane_hooks(sweep: SweepConfig, trial: optuna.Trial, cfg: RunConfig, emit: Callable[[Event], None],
               file_run: Callable[[str, RunConfig, list[Event]], None] | None, tell: Callable[..., None],
               at_boundary: Boundary) -> tuple[Callable[[Event], None], Callable[[], str | None]]:
    """(the trial's event sink, its pruning question): epoch-end accuracies reported to the pruner, the
    trial told when its run ends."""
    history: list[Event] = []

    def on_event(event: Event) -> None:
        history.append(event)
        if event.kind == "eval":
            emit(CellEvent(trial.number, f"trial {trial.number}", event))
            if float(event.epoch).is_integer() and event.epoch >= 1:
                trial.report(event.val_acc, int(event.epoch))
                at_boundary("training", trial.number)
        elif event.kind in ("finished", "failed"):
            _tell_end(trial, cfg, event, history, file_run, tell)

    def should_prune() -> str | None:
        last = next((e for e in reversed(history) if e.kind == "eval"), None)
        if last is None or last.epoch >= cfg.epochs or not trial.should_prune():
            return None
        return f"pruned by the {PRUNER_TITLES[sweep.pruner].lower()} after epoch {int(last.epoch)}"
    return on_event, should_prune


def _epoch_ends(events: Sequence[Event]) -> list[tuple[int, float]]:
    return [(int(e.epoch), e.val_acc) for e in events if e.kind == "eval" and float(e.epoch).is_integer()
            and e.epoch >= 1]


def _tell_stored(trial: optuna.Trial, stored: StoredRun, tell: Callable[..., None]) -> None:
    """Tell a trial from its stored run (its epoch-end accuracies too, for the pruner), without training."""
    end = next((e for e in reversed(stored.events) if e.kind == "finished"), None)
    if end is None:
        tell(trial, TrialState.FAIL, None, "failed", "the stored run could not be read")
        return
    for epoch, val_acc in _epoch_ends(stored.events):
        trial.report(val_acc, epoch)
    if end.status == "diverged":
        tell(trial, TrialState.FAIL, None, "diverged", f"(from the run store) {end.reason}")
    else:
        tell(trial, TrialState.COMPLETE, end.val_acc, "stored", "served from the run store", end.test_acc)


def _tell_end(trial: optuna.Trial, cfg: RunConfig, event: Event, history: list[Event],
              file_run: Callable[[str, RunConfig, list[Event]], None] | None, tell: Callable[..., None]) -> None:
    if event.kind == "failed":
        tell(trial, TrialState.FAIL, None, "failed", event.message, elapsed=event.elapsed)
        return
    if event.status == "cancelled":
        return  # interrupted: asked again when the sweep resumes
    if event.status in SERVED_FROM_STORE and file_run is not None:
        try:  # so the Playground replays the trial; a disk problem does not stop the sweep
            file_run(cfg.key(), cfg, history)
        except Exception:  # disk full etc.: the study still holds the trial's result
            pass
    if event.status == "finished":
        tell(trial, TrialState.COMPLETE, event.val_acc, "finished", "", event.test_acc, event.elapsed)
    elif event.status == "pruned":
        tell(trial, TrialState.PRUNED, None, "pruned", event.reason, elapsed=event.elapsed)
    else:
        tell(trial, TrialState.FAIL, None, "diverged", event.reason, elapsed=event.elapsed)


def _finish(sweep: SweepConfig, study: optuna.Study, cancel: _Stop, t0: float,
            emit: Callable[[Event], None]) -> RunFinished:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if counted(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    counts = (f"{states.count(TrialState.COMPLETE)} finished, {states.count(TrialState.PRUNED)} pruned, "
              f"{states.count(TrialState.FAIL)} failed")
    best_text = (f"best validation accuracy {best.value:.4f} (trial {best.number})" if best is not None
                 else "no trial finished")
    status = "cancelled" if cancel.is_set() and len(states) < sweep.n_trials else "finished"
    end = RunFinished(status=status, step=len(states), epoch=0.0, elapsed=time.perf_counter() - t0,
                      reason=f"{len(states)} of {sweep.n_trials} trials: {counts}; {best_text}",
                      val_acc=best.value if best is not None else None,
                      test_acc=best.user_attrs.get("test_acc") if best is not None else None)
    emit(end)
    return end
