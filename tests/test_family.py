"""The one trainer of a batched family (core/engine/family.py): a run trained within a sweep, a grid or a
co-batch is the run train() trains, by-hand backprop included, and is stored under its own key as such."""
from __future__ import annotations

import numpy as np
import pytest

from core.engine.config import RunConfig, knob_of
from core.engine.events import CellEvent
from core.engine.family import plan_family, train_family
from core.engine.train import LOCKSTEP_FIELDS, train
from core.lab.sweep.runner import run_sweep
from core.lab.sweep.space import Dist, SweepConfig, trial_config
from core.lab.sweep.study import open_study
from core.lab.grid import GridConfig, cell_events, run_grid
from core.serve.cobatch import CoBatch, run_cobatch
from core.serve.jobs import JobManager
from core.serve.store import RunStore

BY_HAND = RunConfig(dataset="digits", epochs=1, batch_size=32, log_every=10, val_fraction=0.2, hidden=(16,),
                    optimizer="sgd", lr=0.1, activation="tanh", backprop="by_hand")
AUTOGRAD = BY_HAND.replace(backprop="autograd")
EXACT = 1e-9  # the same lanes on the CPU reproduce a run exactly; autograd differs from by hand by ~1e-7


def _alone(cfg: RunConfig) -> list:
    events: list = []
    train(cfg, [events.append])
    return events


def _steps(events) -> list[float]:
    return [v for e in events if e.kind == "steps" for v in e.losses]


def _evals(events) -> list[tuple]:
    return [(e.step, e.train_loss, e.val_loss, e.val_acc) for e in events if e.kind == "eval"]


def _end(events):
    return next(e for e in reversed(events) if e.kind == "finished")


def _assert_is(events, cfg: RunConfig, tol: float = EXACT) -> None:
    """``events`` are the run train(cfg) trains (within ``tol``), and not its twin with the other backprop."""
    alone = _alone(cfg)
    twin = _alone(cfg.replace(backprop="autograd" if cfg.backprop == "by_hand" else "by_hand"))
    assert _steps(alone) != _steps(twin)  # the two backprops are told apart at this tolerance
    assert _steps(events) == pytest.approx(_steps(alone), rel=0, abs=tol)
    assert _evals(events) == pytest.approx(_evals(alone), rel=0, abs=tol)
    end, end_alone = _end(events), _end(alone)
    for name in ("status", "step"):
        assert getattr(end, name) == getattr(end_alone, name)
    for name in ("val_acc", "val_loss", "test_acc", "test_loss"):
        assert getattr(end, name) == pytest.approx(getattr(end_alone, name), rel=0, abs=tol)


def test_a_by_hand_sweep_trial_is_the_by_hand_run_and_is_stored_as_it(isolated_cache, tmp_path):
    store = RunStore()
    manager = JobManager(store, processes=False)
    space = (Dist("backprop", "categorical", ("autograd", "by_hand")),
             Dist("activation", "categorical", ("tanh", "relu")))
    sweep = SweepConfig(AUTOGRAD, space, "grid", "none", 4)
    end = run_sweep(sweep, lambda e: None, storage=f"sqlite:///{tmp_path / 'studies.db'}",
                       file_run=manager.file_run, read_run=manager.read_run)
    assert end.status == "finished"
    study = open_study(sweep, f"sqlite:///{tmp_path / 'studies.db'}")
    by_hand = [t for t in study.trials if t.params["backprop"] == "by_hand"]
    assert len(by_hand) == 2
    for trial in by_hand:
        cfg = trial_config(sweep.base, trial.params)
        stored = store.get(cfg.key())
        assert stored is not None and stored.events[0].config["backprop"] == "by_hand"
        _assert_is(stored.events, cfg)
        alone = _end(_alone(cfg))
        assert trial.value == pytest.approx(alone.val_acc, rel=0, abs=EXACT)
        assert trial.user_attrs["test_acc"] == pytest.approx(alone.test_acc, rel=0, abs=EXACT)


def test_a_by_hand_grid_cell_is_the_by_hand_run_and_is_stored_as_it(isolated_cache):
    store = RunStore()
    manager = JobManager(store, processes=False)
    grid = GridConfig(base=AUTOGRAD, activations=("tanh", "relu"),
                      variants=(("autograd", {"backprop": "autograd"}), ("by hand", {"backprop": "by_hand"})))
    events: list = []
    end = run_grid(grid, events.append, file_run=manager.file_run)
    assert end.status == "finished"
    started = events[0]
    cells = grid.cells()
    by_hand = [i for i, (_, cfg) in enumerate(cells) if cfg.backprop == "by_hand"]
    assert sorted(started.alone) == by_hand and [len(g) for g in started.batched] == [2]
    per_cell = cell_events(events)
    for i in by_hand:
        cfg = cells[i][1]
        _assert_is(per_cell[i], cfg)
        stored = store.get(cfg.key())
        assert stored is not None and stored.events[0].config["backprop"] == "by_hand"
        _assert_is(stored.events, cfg)


def test_a_by_hand_run_in_a_co_batch_is_the_by_hand_run_with_its_weights(isolated_cache):
    runs = (AUTOGRAD, BY_HAND, AUTOGRAD.replace(activation="relu"), BY_HAND.replace(activation="relu"))
    events: list = []
    ends = run_cobatch(CoBatch(runs), events.append)
    assert [e.status for e in ends] == ["finished"] * 4
    lanes: dict[int, list] = {}
    for event in events:
        assert isinstance(event, CellEvent) and event.label == runs[event.cell].key()
        lanes.setdefault(event.cell, []).append(event.event)
    assert [e.lanes for e in (lanes[i][0] for i in range(4))] == [2, 1, 2, 1]  # by hand trains alone
    for i in (1, 3):
        _assert_is(lanes[i], runs[i])
        weights = next(e for e in lanes[i] if e.kind == "weights")
        alone = next(e for e in _alone(runs[i]) if e.kind == "weights")
        assert weights.weights.keys() == alone.weights.keys()
        assert all(np.array_equal(weights.weights[k], alone.weights[k]) for k in alone.weights)
    for i in (0, 2):  # the batched lanes: the stacked kernels round differently from one nn.Module
        assert _end(lanes[i]).val_acc == pytest.approx(_end(_alone(runs[i])).val_acc, abs=1.5e-3)


def test_a_plan_must_place_every_run_once():
    with pytest.raises(ValueError, match="each of the 2 runs once"):
        train_family([AUTOGRAD, BY_HAND], [lambda e: None] * 2, plan_family([("a", AUTOGRAD)]))


def test_the_note_on_separate_passes_speaks_in_the_widgets_words_not_field_names():
    """Issue 26.9: the Vanishing page listed "dataset, data_noise, val_fraction, seed, train_limit, ..."."""
    cells = [(f"seed {i // 2}", RunConfig(dataset="blobs", hidden=(4,), seed=i // 2)) for i in range(4)]
    notes = plan_family(cells).notes
    assert len(notes) == 1 and "2 separate batched passes" in notes[0]
    assert not any("_" in word for word in notes[0].split()), notes[0]
    assert all(knob_of(name).label.lower() in notes[0] for name in LOCKSTEP_FIELDS)
