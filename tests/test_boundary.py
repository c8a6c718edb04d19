"""The live decision boundary of a 2-D set: sent at every log point, the model's own predictions, the same for
lanes trained together as alone, and only the latest kept in full in a history."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.records.run import reduce_events
from core.engine.batched import StackedLanes
from core.engine.catalog import load_dataset
from core.engine.config import RunConfig
from core.engine.events import DecisionBoundary, decode_events, encode_events, keep_latest
from core.engine.models import build_model
from core.engine.train import DECISION_GRID_SIZE, grid_inputs
from core.serve.jobs import JobManager
from core.serve.store import RunStore
from helpers import of_kind, train_events, train_lanes_events

MOONS = RunConfig(dataset="moons", hidden=(16, 16), epochs=6, lr=0.01, log_every=10)


def _model_regions(cfg: RunConfig, weights: dict, boundary: DecisionBoundary) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: (predicted class, its probability) of the model built from ``weights`` on the boundary's grid."""
    model = build_model(cfg, (2,), load_dataset(cfg.dataset, cfg.data_noise).n_classes)
    model.load_state_dict({name: torch.from_numpy(w) for name, w in weights.items()})
    model.eval()
    with torch.no_grad():
        probs = model(grid_inputs(torch.from_numpy(boundary.xs), torch.from_numpy(boundary.ys))).softmax(dim=1)
    confidence, pred = probs.max(dim=1)
    shape = (len(boundary.ys), len(boundary.xs))
    return pred.reshape(shape).numpy(), confidence.reshape(shape).numpy()


@pytest.mark.parametrize("cfg", [MOONS, MOONS.replace(dataset="spiral", norm="batchnorm", dropout=0.2),
                                 MOONS.replace(backprop="by_hand", activation="tanh")],
                         ids=["moons", "spiral-batchnorm-dropout", "by-hand"])
def test_the_last_log_points_boundary_is_the_final_models_predictions(cfg):
    end, events = train_events(cfg)
    assert end.status == "finished"
    boundaries, evals = of_kind(events, "boundary"), of_kind(events, "eval")
    # redrawn at every log interval and at the end (not at the epoch ends between: those are validation points)
    drawn = [e.step for e in evals if e.step % cfg.log_every == 0 or e is evals[-1]]
    assert [b.step for b in boundaries] == drawn and len(drawn) > 2
    last = boundaries[-1]
    assert last.step == end.step and last.pred.shape == (len(last.ys), len(last.xs))
    assert len(last.xs) <= 100 and len(last.ys) <= 100
    weights = of_kind(events, "weights")[0].weights
    pred, confidence = _model_regions(cfg, weights, last)
    np.testing.assert_array_equal(last.pred, pred)
    np.testing.assert_allclose(last.confidence / 255.0, confidence, atol=0.5 / 255 + 1e-6)
    # what was learned: better than chance, and the regions hold more than one class
    k = load_dataset(cfg.dataset, cfg.data_noise).n_classes
    assert end.test_acc > 1 / k and end.test_loss < math.log(k) and len(np.unique(pred)) > 1


def test_lanes_trained_together_draw_the_boundary_each_draws_alone():
    configs = [MOONS, MOONS.replace(lr=0.03), MOONS.replace(activation="tanh")]
    ends, lanes = train_lanes_events(configs, StackedLanes, live_boundary=True)
    assert all(e.status == "finished" for e in ends)
    for cfg, together in zip(configs, lanes):
        alone = of_kind(train_events(cfg)[1], "boundary")
        together = of_kind(together, "boundary")
        assert [b.step for b in together] == [b.step for b in alone]
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a.xs, b.xs)
            np.testing.assert_allclose(a.ys, b.ys)
            # two classes: a cell may differ only where the run alone is a coin flip within rounding
            differ = a.pred != b.pred
            assert (np.abs(b.confidence[differ].astype(int) - 128) <= 2).all(), (cfg.lr, b.step, differ.sum())
            assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 2


def test_no_boundary_for_image_data_or_when_asked_not_to():
    assert not of_kind(train_events(RunConfig(dataset="digits", hidden=(16,), epochs=1))[1], "boundary")
    assert not of_kind(train_events(MOONS.replace(epochs=1), live_boundary=False)[1], "boundary")


def test_only_the_latest_boundary_keeps_its_grid():
    grid = np.zeros((DECISION_GRID_SIZE, DECISION_GRID_SIZE), dtype=np.uint8)
    axis = np.linspace(-1, 1, DECISION_GRID_SIZE, dtype=np.float32)
    events = [DecisionBoundary(s, s / 10, axis, axis, grid + s, grid) for s in (10, 20)]
    assert [old.step for old, _ in keep_latest(events, "boundary")] == [10]
    assert [e.kept for e in events] == [False, True] and events[0].step == 10
    events.append(DecisionBoundary(30, 3.0, axis, axis, grid + 30, grid))
    assert len(keep_latest(events, "boundary")) == 1 and [e.kept for e in events] == [False, False, True]
    text, blob = encode_events(events)
    decoded, _ = decode_events(text, blob)
    assert [e.kept for e in decoded] == [False, False, True]
    np.testing.assert_array_equal(decoded[-1].pred, grid + 30)
    assert reduce_events(decoded).decision_grid["pred"][0, 0] == 30


def test_a_jobs_history_and_its_stored_run_keep_only_the_latest_boundary(isolated_cache):
    manager = JobManager(RunStore(isolated_cache / "runs"))
    key = manager.submit(MOONS)
    snap = manager.wait(key, timeout=120)
    assert snap.status == "finished"
    boundaries = of_kind(snap.events, "boundary")
    assert [b.step for b in boundaries] == [b.step for b in of_kind(train_events(MOONS)[1], "boundary")]
    assert len(boundaries) > 2 and [b.kept for b in boundaries] == [False] * (len(boundaries) - 1) + [True]
    stored = of_kind(manager.store.get(key).events, "boundary")
    assert [b.step for b in stored] == [b.step for b in boundaries] and [b.kept for b in stored][-1]
    assert sum(b.kept for b in stored) == 1
    view = reduce_events(snap.events)
    assert view.boundary.step == view.finished.step
    # a view of the run mid-way shows the regions of the last log point it has seen
    cut = snap.events.index(boundaries[1]) + 1
    assert reduce_events(snap.events[:cut]).boundary is None  # that one was thinned in the history
    alone = train_events(MOONS)[1]
    middle = alone[:alone.index(of_kind(alone, "boundary")[1]) + 1]
    assert reduce_events(middle).boundary.step == of_kind(alone, "boundary")[1].step
