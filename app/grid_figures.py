"""A grid of runs (core.grid) reduced for pages, and its figures: pure functions, no Streamlit.

:func:`reduce_grid` turns a grid job's events into a :class:`GridView`: one
:class:`~app.runview.RunView` per cell (so every single-run figure works on a cell) placed in a
table whose columns are depths and whose rows are everything else that varies (activation,
init, norm, variant). The builders below draw what only a grid has: the accuracy table as a
heatmap, small multiples of loss curves, a cell's gradient norms with the vanishing band
marked, and per-layer gradient profiles of several cells side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .compare_figures import variant_color
from .figures import (HEIGHT, TRAIN_COLOR, VAL_COLOR, VIRIDIS, base_layout, figure_from_spec, finite_values, plain_label,
                      waiting_figure)
from .runview import RunView, layer_matrix, reduce_events, run_status

VANISHING_RATIO = 1e-3  # a layer whose gradient norm is below this share of the output layer's "has vanished"
STUCK_LOSS = 0.05  # loss within this of ln(classes) ...
STUCK_ACC = 0.5  # ... and accuracy within this fraction of 1/classes: it learned nothing


@dataclass
class GridCell:
    index: int
    label: str
    config: dict
    row: str  # what varies apart from depth, e.g. "sigmoid"
    depth: int
    view: RunView

    @property
    def n_classes(self) -> int:
        return len(self.view.classes) or 10

    @property
    def latest(self) -> dict | None:
        """Latest metrics: the final ones once finished, else the last log point's (validation)."""
        fin = self.view.finished
        if fin is not None and fin.test_acc is not None:
            return {"acc": fin.test_acc, "loss": fin.test_loss, "split": "test"}
        ev = self.view.evals
        if len(ev):
            last = ev.iloc[-1]
            return {"acc": float(last["val_acc"]), "loss": float(last["val_loss"]), "split": "validation"}
        return None

    @property
    def stuck(self) -> bool:
        """Loss at ln(classes) and accuracy near 1/classes: it learned nothing (and usually gives every
        input the same answer, so its accuracy is that class's share of the data)."""
        latest, k = self.latest, self.n_classes
        if latest is None or not all(map(math.isfinite, (latest["acc"], latest["loss"]))):
            return False
        return abs(latest["loss"] - math.log(k)) <= STUCK_LOSS and abs(latest["acc"] - 1 / k) <= STUCK_ACC / k

    @property
    def top_prediction(self) -> tuple[float, float] | None:
        """After the test: (share of test predictions that go to the most predicted class, that class's
        share of the test set). A stuck network predicts one class: (~1.0, its accuracy)."""
        fin = self.view.finished
        if fin is None or not fin.confusion:
            return None
        confusion = np.asarray(fin.confusion, dtype=float)
        total = confusion.sum()
        if not total:
            return None
        top = int(confusion.sum(axis=0).argmax())
        return float(confusion[:, top].sum() / total), float(confusion[top].sum() / total)


@dataclass
class GridView:
    started: object | None = None  # core.events.GridStarted
    cells: list[GridCell] = field(default_factory=list)
    end: object | None = None  # the grid's RunFinished / RunFailed
    n_events: int = 0

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(c.row for c in self.cells))

    @property
    def depths(self) -> list[int]:
        return sorted({c.depth for c in self.cells})

    def cell_at(self, row: str, depth: int) -> GridCell | None:
        return next((c for c in self.cells if c.row == row and c.depth == depth), None)

    @property
    def status(self) -> str:
        return run_status(self.started, self.end)

    @property
    def done_cells(self) -> int:
        return sum(1 for c in self.cells if c.view.end is not None)


def _row_label(label: str, depth: int) -> str:
    parts = [p for p in label.split() if p != f"x{depth}"]
    return " ".join(parts) or f"x{depth}"


def reduce_grid(events: list) -> GridView:
    """Build a :class:`GridView` from a grid job's events (any prefix of them, in order)."""
    grid = GridView(n_events=len(events))
    per_cell: dict[int, list] = {}
    for event in events:
        if event.kind == "grid_started":
            grid.started = event
        elif event.kind == "cell":
            per_cell.setdefault(event.cell, []).append(event.event)
        elif event.kind in ("finished", "failed"):
            grid.end = event
    if grid.started is None:
        return grid
    for i, cell in enumerate(grid.started.cells):
        depth = len(cell["config"].get("hidden", []))
        grid.cells.append(GridCell(i, cell["label"], cell["config"], _row_label(cell["label"], depth), depth,
                                   reduce_events(per_cell.get(i, []))))
    return grid


# --- figures ---------------------------------------------------------------------------------------
def accuracy_heatmap_figure(grid: GridView) -> go.Figure:
    """Rows x depths table of each cell's current accuracy; stuck cells are marked."""
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
            mark = " ⊘" if cell.stuck else (" ✕" if status == "diverged" else "")
            text[r][c] = f"{latest['acc']:.2f}{mark}"
            hover[r][c] = (f"{plain_label(cell.label)}<br>{latest['split']} accuracy {latest['acc']:.4f}"
                           f"<br>{latest['split']} loss {latest['loss']:.4f}<br>{status}"
                           + ("<br>stuck: loss ≈ ln(classes), accuracy ≈ 1/classes" if cell.stuck else ""))
    return figure_from_spec([{"type": "heatmap", "x": [str(d) for d in depths], "y": [plain_label(r, 30) for r in rows],
                     "z": z, "zmin": 0.0, "zmax": 1.0, "colorscale": VIRIDIS, "text": text,
                     "texttemplate": "%{text}", "customdata": hover, "hovertemplate": "%{customdata}<extra></extra>",
                     "xgap": 2, "ygap": 2, "colorbar": {"title": {"text": "accuracy"}, "thickness": 12}}], layout)


def loss_multiples_figure(grid: GridView) -> go.Figure:
    """Small multiples: train and validation loss of every cell against epochs, ln(classes) dotted.

    Built as a raw spec with hand-placed axes (make_subplots and validated traces take ~50x longer,
    while the training threads wait for the GIL)."""
    if not grid.cells:
        return waiting_figure(base_layout("Loss of every network"), "Waiting for the grid to start…")
    rows, depths = grid.rows, grid.depths
    n_classes = grid.cells[0].n_classes
    ceiling = math.log(n_classes)
    n_rows, n_cols = len(rows), len(depths)
    gap_x, gap_y = 0.012, min(0.1, 0.5 / n_rows)
    width, height = (1 - gap_x * (n_cols - 1)) / n_cols, (1 - gap_y * (n_rows - 1)) / n_rows
    layout = {"title": {"text": f"Loss of every network (dotted: ln {n_classes} = {ceiling:.3f}, the loss of a "
                                "network that learned nothing)", "x": 0, "xanchor": "left", "font": {"size": 15}},
              "height": 120 + 150 * n_rows, "margin": {"l": 10, "r": 10, "t": 84, "b": 10}, "uirevision": "keep",
              "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0 + 34 / (150 * n_rows), "xanchor": "right",
                         "x": 1},
              "annotations": [], "shapes": []}
    data, top = [], ceiling * 1.3
    for r, row in enumerate(rows):
        for c, depth in enumerate(depths):
            cell = grid.cell_at(row, depth)
            if cell is None:
                continue
            i = r * n_cols + c + 1
            suffix = "" if i == 1 else str(i)
            x0, y1 = c * (width + gap_x), 1 - r * (height + gap_y)
            shared = {"matches": "x"} if i > 1 else {}
            layout[f"xaxis{suffix}"] = {"domain": [max(0.0, x0), min(1.0, x0 + width)], "anchor": f"y{suffix}",
                                        "tickfont": {"size": 9}, "showticklabels": r == n_rows - 1, **shared}
            layout[f"yaxis{suffix}"] = {"domain": [max(0.0, y1 - height), min(1.0, y1)], "anchor": f"x{suffix}",
                                        "tickfont": {"size": 9}, "showticklabels": c == 0,
                                        **({"matches": "y"} if i > 1 else {})}
            layout["annotations"].append({"text": plain_label(cell.label, 24), "x": x0 + width / 2, "y": y1,
                                          "xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                          "showarrow": False, "font": {"size": 11}})
            layout["shapes"].append({"type": "line", "xref": f"x{suffix} domain", "x0": 0, "x1": 1,
                                     "yref": f"y{suffix}", "y0": ceiling, "y1": ceiling,
                                     "line": {"dash": "dot", "color": "gray", "width": 1}})
            ev = cell.view.evals
            for column, color, name in (("train_loss", TRAIN_COLOR, "train"), ("val_loss", VAL_COLOR, "validation")):
                if not len(ev):
                    continue
                y = finite_values(ev[column])
                if np.isfinite(y).any():
                    top = max(top, min(float(np.nanmax(y)), ceiling * 3))
                data.append({"type": "scatter", "x": ev["epoch"].to_numpy(), "y": y, "mode": "lines", "name": name,
                             "legendgroup": name, "showlegend": len(data) < 2, "xaxis": f"x{suffix}",
                             "yaxis": f"y{suffix}", "line": {"color": color, "width": 1.5},
                             "hovertemplate": f"{plain_label(cell.label)}<br>epoch %{{x:.2f}}<br>{name} loss "
                                              "%{y:.4f}<extra></extra>"})
    layout["yaxis"] = {**layout.get("yaxis", {}), "range": [0, top]}
    return figure_from_spec(data, layout)


def vanishing_mask(view: RunView, ratio: float = VANISHING_RATIO) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(layer names, steps, gradient norms [layers x steps], where a layer's norm is below ``ratio`` x the
    output layer's at that step)."""
    names, steps, matrix = layer_matrix(view, "grad_norm")
    matrix = finite_values(matrix)
    if not len(steps) or not len(names):
        return names, steps, matrix, np.zeros(matrix.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        vanished = matrix < ratio * matrix[-1:, :]
    return names, steps, matrix, vanished


def gradient_band_figure(view: RunView, label: str = "", ratio: float = VANISHING_RATIO) -> go.Figure:
    """Layer x time heatmap of the gradient norm (log10), the vanishing band (< ratio x the output layer) marked."""
    title = f"Gradient norm per layer over time (log10){': ' + plain_label(label, 30) if label else ''}"
    layout = base_layout(title, x_title="step", yaxis={"autorange": "reversed", "title": {"text": "layer (input at top)"}},
                     height=max(HEIGHT, 140 + 26 * len(view.layer_names)))
    names, steps, matrix, vanished = vanishing_mask(view, ratio)
    if not len(steps):
        return waiting_figure(layout)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(np.where(matrix > 0, matrix, np.nan))
    y = [plain_label(n) for n in names]
    data = [{"type": "heatmap", "x": steps.tolist(), "y": y, "z": np.round(z, 3).tolist(), "colorscale": VIRIDIS,
             "colorbar": {"title": {"text": "log10 ‖∇W‖"}, "thickness": 12},
             "hovertemplate": "%{y}<br>step %{x}<br>log10 ‖∇W‖ = %{z:.2f}<extra></extra>"}]
    rows, cols = np.nonzero(vanished)
    if len(rows):
        data.append({"type": "scatter", "x": steps[cols].tolist(), "y": [y[r] for r in rows], "mode": "markers",
                     "marker": {"symbol": "x-thin", "size": 9, "line": {"width": 2, "color": "#ff4d4d"}},
                     "name": f"vanishing: below {ratio:g} × the output layer's", "hoverinfo": "skip"})
    layout["legend"] = {**layout["legend"], "y": -0.25}
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


def cells_table(grid: GridView) -> pd.DataFrame:
    """One row per cell: status, accuracy and loss, what a network that learned nothing scores, stuck,
    and how much weaker the first layer's gradient is than the output layer's at the latest log point."""
    rows = []
    for cell in grid.cells:
        latest = cell.latest or {}
        names, steps, matrix, _ = vanishing_mask(cell.view)
        ratio = float(matrix[0, -1] / matrix[-1, -1]) if len(steps) and matrix[-1, -1] > 0 else float("nan")
        top = cell.top_prediction
        rows.append({"network": cell.label, "status": cell.view.status,
                     "accuracy": latest.get("acc"), "loss": latest.get("loss"), "stuck": cell.stuck,
                     "most predicted class: share of answers": top[0] if top else None,
                     "its share of the test set": top[1] if top else None,
                     "ln(classes)": math.log(cell.n_classes), "first / last layer gradient": ratio})
    return pd.DataFrame(rows)
