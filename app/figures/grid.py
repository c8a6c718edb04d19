"""Figures only a grid has: the accuracy table as a heatmap, small multiples of loss curves, a cell's
gradient norms with the vanishing band marked, per-layer gradient profiles of several cells.
Pure Plotly specs of :mod:`app.records.grid` views, no Streamlit.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import plotly.graph_objects as go

from core.lessons.sentences import collapse_cause_words
from core.lessons.verdicts import VANISHING_TEXT

from ..records.grid import COLLAPSED_MARK, STUCK_MARK, GridView, vanishing_mask
from ..records.reported import as_reported as reported, reported_label
from ..records.run import RunView, finite_values, layer_matrix
from ..text import plain_label
from .compare import variant_color
from .run import HEIGHT, TRAIN_COLOR, VAL_COLOR, VIRIDIS, base_layout, figure_from_spec, panel_domains, waiting_figure

PANEL_GAP = 0.12  # the gap between two columns of the loss small multiples, in widths of a panel

def accuracy_heatmap_figure(grid: GridView, as_reported: bool = False) -> go.Figure:
    """Rows x depths table of each cell's current accuracy; collapsed (↯) and stuck (⊘) cells are marked.
    ``as_reported``: each hover also shows the accuracy as the coursework's reports computed it
    (app/records/reported.py)."""
    layout = base_layout("Accuracy per network (validation while training, test when done)", x_title="hidden layers",
                     height=max(HEIGHT - 40, 120 + 46 * len(grid.rows)),
                     yaxis={"autorange": "reversed", "type": "category"}, xaxis={"type": "category"})
    if not grid.cells:
        return waiting_figure(layout, "Waiting for the grid to start…")
    rows, depths = grid.rows, grid.depths
    z = [[None] * len(depths) for _ in rows]
    text = [[""] * len(depths) for _ in rows]
    hover = [[""] * len(depths) for _ in rows]
    for r, row in enumerate(rows):
        for c, depth in enumerate(depths):
            cell = grid.cell_at(row, depth)
            if cell is None:
                continue
            latest = cell.latest
            status = cell.view.status
            if latest is None:
                hover[r][c] = f"{plain_label(cell.label)}<br>{status}"
                continue
            z[r][c] = round(float(latest["acc"]), 4)
            collapse = cell.collapse
            mark = (f" {COLLAPSED_MARK}" if collapse is not None else "") + (
                f" {STUCK_MARK}" if cell.stuck else (" ✕" if status == "diverged" else ""))
            text[r][c] = f"{latest['acc']:.2f}{mark}"
            hover[r][c] = (f"{plain_label(cell.label)}<br>{latest['split']} accuracy {latest['acc']:.4f}"
                           f"<br>{latest['split']} loss {latest['loss']:.4f}<br>{status}"
                           + ("<br>stuck: loss ≈ ln(classes), accuracy ≈ its predicted class's share" if cell.stuck else "")
                           + (f"<br>collapsed: {collapse.answers:.0%} of its test answers one class<br>cause: "
                              f"{collapse_cause_words(collapse)}" if collapse is not None else "")
                           + (f"<br>vanishing: its first layer's gradient below {VANISHING_TEXT} of the output layer's"
                              if cell.vanishing else ""))
            if as_reported:
                what = reported_label(f"{latest['split']} accuracy")
                hover[r][c] += f"<br>{what} {reported(latest['acc'], cell.n_classes):.4f}"
    return figure_from_spec([{"type": "heatmap", "x": [str(d) for d in depths], "y": [plain_label(r, 30) for r in rows],
                     "z": z, "zmin": 0.0, "zmax": 1.0, "colorscale": VIRIDIS, "text": text,
                     "texttemplate": "%{text}", "customdata": hover, "hovertemplate": "%{customdata}<extra></extra>",
                     "xgap": 2, "ygap": 2, "colorbar": {"title": {"text": "accuracy"}, "thickness": 12}}], layout)


def loss_multiples_figure(grid: GridView) -> go.Figure:
    """Small multiples: train and validation loss of every cell against epochs, ln(classes) dotted.

    Drawn on one x axis (the columns side by side, each from 0 to the last epoch, hover shows the true
    epoch) and one y axis per row, not one subplot per cell: a browser draws a subplot's axes, ticks and
    margins one by one, and 24 of them cost more than all the other charts of the page together. Built as a
    raw spec (make_subplots and validated traces take ~50x longer, while the training threads wait for the GIL)."""
    if not grid.cells:
        return waiting_figure(base_layout("Loss of every network"), "Waiting for the grid to start…")
    rows, depths = grid.rows, grid.depths
    n_classes = grid.cells[0].n_classes
    ceiling = math.log(n_classes)
    n_rows, n_cols = len(rows), len(depths)
    row_gap = min(Fraction(1, 10), Fraction(1, 2 * n_rows))
    domains = panel_domains(n_rows, 1, Fraction(0), row_gap)
    last_epoch = max((float(c.view.evals["epoch"].max()) for c in grid.cells if len(c.view.evals)), default=1.0)
    span = max(last_epoch, 1e-9)
    gap = span * PANEL_GAP
    offsets = [c * (span + gap) for c in range(n_cols)]
    ticks = [0.0, last_epoch / 2]  # each panel's right end is the next one's start: no label there to collide
    layout = {"title": {"text": f"Loss of every network (dotted: ln {n_classes} = {ceiling:.3f}, the loss of a "
                                "network that learned nothing)", "x": 0, "xanchor": "left", "font": {"size": 15}},
              "height": 120 + 150 * n_rows, "margin": {"l": 10, "r": 10, "t": 84, "b": 10}, "uirevision": "keep",
              "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0 + 34 / (150 * n_rows), "xanchor": "right",
                         "x": 1},
              "xaxis": {"range": [-gap / 2, offsets[-1] + span + gap / 2], "anchor": f"y{n_rows if n_rows > 1 else ''}",
                        "tickvals": [o + t for o in offsets for t in ticks],
                        "ticktext": [f"{t:.3g}" for _ in offsets for t in ticks], "tickfont": {"size": 9},
                        "showgrid": False, "zeroline": False},
              "annotations": [], "shapes": []}
    data, top = [], ceiling * 1.3
    for r, row in enumerate(rows):
        suffix = "" if r == 0 else str(r + 1)
        _, _, y0, y1 = domains[r][0]
        layout[f"yaxis{suffix}"] = {"domain": [y0, y1], "anchor": "x", "tickfont": {"size": 9},
                                    **({"matches": "y"} if r else {})}
        for c, depth in enumerate(depths):
            cell = grid.cell_at(row, depth)
            if cell is None:
                continue
            x0, x1 = offsets[c], offsets[c] + span
            layout["annotations"].append({"text": plain_label(cell.label, 24), "x": (x0 + x1) / 2, "y": y1,
                                          "xref": "x", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                          "showarrow": False, "font": {"size": 11}})
            layout["shapes"].append({"type": "line", "xref": "x", "x0": x0, "x1": x1,
                                     "yref": f"y{suffix}", "y0": ceiling, "y1": ceiling,
                                     "line": {"dash": "dot", "color": "gray", "width": 1}})
            ev = cell.view.evals
            if not len(ev):
                continue
            epochs = ev["epoch"].to_numpy(dtype=np.float32)
            for column, color, name in (("train_loss", TRAIN_COLOR, "train"), ("val_loss", VAL_COLOR, "validation")):
                y = finite_values(ev[column])
                if np.isfinite(y).any():
                    top = max(top, min(float(np.nanmax(y)), ceiling * 3))
                data.append({"type": "scatter", "x": (epochs + np.float32(x0)).astype(np.float32),
                             "y": y.astype(np.float32), "customdata": epochs, "mode": "lines", "name": name,
                             "legendgroup": name, "showlegend": len(data) < 2, "xaxis": "x", "yaxis": f"y{suffix}",
                             "line": {"color": color, "width": 1.5},
                             "hovertemplate": f"{plain_label(cell.label)}<br>epoch %{{customdata:.2f}}<br>{name} loss "
                                              "%{y:.4f}<extra></extra>"})
    layout["yaxis"] = {**layout["yaxis"], "range": [0, top]}
    return figure_from_spec(data, layout)


NO_GRADIENT = ("No layer has a nonzero, finite gradient at any log point: nothing flows back to train the weights "
               "(see the collapse cause in the table below).")


MAX_MARKS_PER_ROW = 24  # visible ✕ per layer: spaced out, so the cells between them stay in view
MARK_SIZE = 8


def shown_mark_sizes(rows: np.ndarray, cols: np.ndarray, n_steps: int) -> list[int]:
    """A size per vanished cell (row-major, as np.nonzero gives them): MARK_SIZE for the first vanished cell of
    each stretch of ``n_steps / MAX_MARKS_PER_ROW`` steps in its row, 0 (drawn as nothing) for the rest. Every
    cell keeps its point, but a long run shows a dotted row of ✕ instead of a solid red bar over the heatmap."""
    stride = max(1, -(-n_steps // MAX_MARKS_PER_ROW))
    seen, sizes = set(), []
    for r, c in zip(rows.tolist(), cols.tolist()):
        sizes.append(0 if (r, c // stride) in seen else MARK_SIZE)
        seen.add((r, c // stride))
    return sizes


def gradient_band_figure(view: RunView, label: str = "") -> go.Figure:
    """Layer x time heatmap of the gradient norm (log10), the layers core.lessons.verdicts calls vanished marked."""
    title = f"Gradient norm per layer over time (log10){': ' + plain_label(label, 30) if label else ''}"
    layout = base_layout(title, x_title="step", yaxis={"autorange": "reversed", "title": {"text": "layer (input at top)"}},
                     height=max(HEIGHT, 140 + 26 * len(view.layer_names)))
    names, steps, matrix, vanished = vanishing_mask(view)
    if not len(steps):
        return waiting_figure(layout)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(np.where(matrix > 0, matrix, np.nan))
    if np.isnan(z).all():  # e.g. a dead ReLU network: every norm exactly 0, an empty chart would say nothing
        return waiting_figure(layout, NO_GRADIENT)
    y = [plain_label(n) for n in names]
    data = [{"type": "heatmap", "x": steps.tolist(), "y": y, "z": np.round(z, 3).tolist(), "colorscale": VIRIDIS,
             "colorbar": {"title": {"text": "log10 ‖∇W‖"}, "thickness": 12},
             "hovertemplate": "%{y}<br>step %{x}<br>log10 ‖∇W‖ = %{z:.2f}<extra></extra>"}]
    rows, cols = np.nonzero(vanished)
    if len(rows):
        data.append({"type": "scatter", "x": steps[cols].tolist(), "y": [y[r] for r in rows], "mode": "markers",
                     "marker": {"symbol": "x-thin", "size": shown_mark_sizes(rows, cols, len(steps)),
                                "line": {"width": 1.5, "color": "#ff4d4d"}},
                     "name": f"vanishing: below {VANISHING_TEXT} × the output layer's", "hoverinfo": "skip"})
    return figure_from_spec(data, layout)


def gradient_profile_figure(runs: list[tuple[str, RunView]]) -> go.Figure:
    """Gradient norm of each layer at the latest log point, one line per network (log scale)."""
    layout = base_layout("Gradient norm per layer at the latest log point (log scale)", x_title="layer (input → output)",
                     y_title="‖∇W‖", yaxis={"type": "log", "tickformat": "~g"})
    data = []
    for i, (label, view) in enumerate(runs):
        names, steps, matrix = layer_matrix(view, "grad_norm")
        if not len(steps):
            continue
        values = finite_values(matrix[:, -1])
        values[values <= 0] = np.nan
        shown = plain_label(label, 30)
        data.append({"type": "scatter", "x": list(range(1, len(names) + 1)), "y": values.tolist(), "name": shown,
                     "mode": "lines+markers", "line": {"color": variant_color(i), "width": 2},
                     "customdata": [plain_label(n) for n in names],
                     "hovertemplate": f"{shown}<br>%{{customdata}}<br>‖∇W‖ %{{y:.3g}}<extra></extra>"})
    if not data:
        return waiting_figure(layout)
    layout["xaxis"] = {**layout["xaxis"], "dtick": 1}
    return figure_from_spec(data, layout)
