"""Every lesson preset's finished-run view draws valid figures (issue 9.11: a deep preset's weight-change
panels got a y-axis domain of -5.55e-17, which Plotly rejects). Digits, one epoch, so it stays fast."""
from __future__ import annotations

from fractions import Fraction

import plotly.graph_objects as go
import pytest

from app.figures import compare as cf
from app.figures import run as figures
from app.records.compare import weight_snapshot
from app.records.run import reduce_events
from core.lessons.presets import PRESET_LIST
from helpers import train_events

CONFIGS = list(dict.fromkeys(cfg.replace(dataset="digits", epochs=1, log_every=20, batch_size=64)
                             for preset in PRESET_LIST for _, cfg in preset.runs))


def checked(fig: go.Figure) -> go.Figure:
    """Plotly's own validation of the whole spec (our builders skip it for speed)."""
    return go.Figure(fig.to_dict())


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 12, 15, 21])
def test_panel_domains_lie_in_the_unit_square(n):
    """Float sums put the bottom row of 9 panels at -5.55e-17; exact fractions keep every edge in [0, 1]."""
    rows = -(-n // 4)
    for fractions in ((1, 25), (3, 250)):
        domains = figures.panel_domains(rows, min(n, 4), Fraction(*fractions), Fraction(3, 25 * rows))
        flat = [d for row in domains for d in row]
        assert all(0.0 <= v <= 1.0 for d in flat for v in d)
        assert flat[0][3] == 1.0 and domains[-1][0][2] == 0.0  # top edge exactly 1, bottom exactly 0
        assert all(d[0] < d[1] and d[2] < d[3] for d in flat)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.activation}-x{c.depth}-{c.norm}-{c.optimizer}")
def test_finished_view_of_every_preset_on_digits_draws(cfg):
    end, events = train_events(cfg)
    assert end.kind == "finished"
    view = reduce_events(events)
    fin = view.finished
    shapes = view.started.layer_shapes
    assert len(view.log_points[-1].heatmaps) == len(view.layer_names) >= cfg.depth + 1
    for fig in (figures.loss_figure(view), figures.accuracy_figure(view), figures.step_loss_figure(view),
                figures.grad_norm_figure(view), figures.saturation_figure(view),
                figures.layer_heatmap_figure(view, "weight_delta"), figures.layer_heatmap_figure(view, "grad_norm"),
                figures.weight_heatmaps_figure(view.log_points[-1], view.layer_names, shapes),
                figures.confusion_figure(fin.confusion, view.classes),
                cf.weight_hist_figure([("run", weight_snapshot(events))])):
        checked(fig)
