"""Weight histograms over time (issue 24.6): every log point's per-layer histogram is torch.histc of the model's
weights at that moment over a power-of-two range, and the run view's history puts all log points on one fixed
set of bins per layer (app.records.run.weight_histories) without losing or moving a weight."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import core.engine.train as loop
from app.figures.run import weight_histories_figure
from app.records.run import rebinned, weight_histories
from core.engine.config import RunConfig
from core.engine.lanes import ModuleLanes
from core.engine.models import weight_layers
from core.engine.probes import HIST_BINS, hist_bound
from core.engine.train import train_lanes

RUN = RunConfig(dataset="spiral", hidden=(16, 16), activation="tanh", optimizer="adam", lr=0.05, epochs=4,
                batch_size=32, log_every=10, seed=7)


def trained_with_weights(cfg: RunConfig) -> tuple[list, list[list[torch.Tensor]]]:
    """A run's events, and the model's weight matrices copied at each of its log points (as the loop emits them)."""
    made, events, at_logs = [], [], []

    def make_lanes(*args):
        made.append(ModuleLanes(*args))
        return made[-1]

    def record(event):
        events.append(event)
        if event.kind == "layers":
            at_logs.append([layer.weight.detach().clone() for _, layer in weight_layers(made[0].model)])

    (end,) = train_lanes([cfg], make_lanes, [record])
    assert end.status == "finished"
    return events, at_logs


@pytest.fixture(scope="module")
def run():
    return trained_with_weights(RUN)


def test_each_log_points_histogram_is_histc_of_the_weights_then(run):
    events, at_logs = run
    stats = [e for e in events if e.kind == "layers"]
    assert len(stats) == len(at_logs) > 3
    for event, weights in zip(stats, at_logs):
        for i, w in enumerate(weights):
            bound, top = event.hist_bound[i], float(w.abs().max())
            assert top <= bound < 2 * top and math.log2(bound).is_integer()  # the power of two just above max|w|
            expected = torch.histc(w.flatten(), bins=HIST_BINS, min=-bound, max=bound).to(torch.int64)
            assert torch.equal(torch.from_numpy(np.asarray(event.weight_hist[i])).to(torch.int64), expected)


def test_the_history_puts_every_log_point_on_the_widest_fixed_bins(run):
    events, at_logs = run
    histories = weight_histories(events)
    assert [h.layer for h in histories] == [e for e in events if e.kind == "layers"][0].layers
    steps = [e.step for e in events if e.kind == "layers"]
    for i, history in enumerate(histories):
        top = max(hist_bound(float(w[i].abs().max())) for w in at_logs)
        np.testing.assert_array_equal(history.edges, np.linspace(-top, top, HIST_BINS + 1))
        assert history.counts.shape == (HIST_BINS, len(steps)) and list(history.steps) == steps
        assert (history.counts.sum(axis=0) == at_logs[0][i].numel()).all()  # no weight lost
        for t, weights in enumerate(at_logs):
            expected = torch.histc(weights[i].flatten(), bins=HIST_BINS, min=-top, max=top).to(torch.int64).numpy()
            np.testing.assert_array_equal(history.counts[:, t], expected)


def test_rebinning_onto_a_range_a_power_of_two_wider_equals_histc_there():
    w = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 0.3
    bound = hist_bound(float(w.abs().max()))
    counts = torch.histc(w, bins=HIST_BINS, min=-bound, max=bound).numpy()
    for factor in (1, 2, 4, 32):
        wide = torch.histc(w, bins=HIST_BINS, min=-bound * factor, max=bound * factor).numpy()
        np.testing.assert_array_equal(rebinned(counts, bound, bound * factor), wide)


def test_the_history_is_bounded_like_the_log_points(monkeypatch):
    monkeypatch.setattr(loop, "MAX_LOG_POINTS", 6)
    cfg = RUN.replace(log_every=1, epochs=2)
    events, _ = trained_with_weights(cfg)
    (history, *_) = weight_histories(events)
    assert len(history.steps) <= 6 + cfg.epochs  # at most MAX_LOG_POINTS log points, plus epoch ends


def test_the_figure_draws_one_heatmap_per_layer_of_shares(run):
    events, _ = run
    histories = weight_histories(events)
    fig = weight_histories_figure(histories)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == len(histories)
    for trace in heatmaps:
        np.testing.assert_allclose(np.asarray(trace.z).sum(axis=0), 1.0, atol=1e-3)
    assert weight_histories_figure([]).layout.title.text.startswith("How each layer")
