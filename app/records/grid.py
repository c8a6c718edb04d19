"""A grid of runs (core.lab.grid) reduced for pages: pure functions of a grid job's events, no Streamlit.

:func:`reduce_grid` turns a grid job's events into a :class:`GridView`: one
:class:`~app.records.run.RunView` per cell (so every single-run figure works on a cell) placed in
a table whose columns are depths and whose rows are everything else that varies (activation,
init, norm, variant). :func:`cells_table` is the final table; :func:`stuck_note` explains the stuck (⊘)
and collapsed (↯) cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.lessons import verdicts
from core.lessons.sentences import REPORTED_BUG, collapse_cause_words, collapsed_sentence, printed_as_reported

from ..text import epoch_text, training_clock
from .run import RunView, finite_values, layer_matrix, reduce_events, run_status

STUCK_MARK, COLLAPSED_MARK = "⊘", "↯"


@dataclass
class GridCell:
    index: int
    label: str
    config: dict
    row: str  # what varies apart from depth, e.g. "sigmoid"
    depth: int
    view: RunView
    events: list = field(default_factory=list)  # the cell's own single-run events, as the view was reduced from

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
        """core.lessons.verdicts.is_stuck on the latest metrics (the test's, with its confusion matrix, once
        finished: what the lesson's sentences read)."""
        latest = self.latest
        if latest is None:
            return False
        fin = self.view.finished
        confusion = fin.confusion if fin is not None and latest["split"] == "test" else None
        return verdicts.is_stuck(latest["acc"], latest["loss"], self.n_classes, confusion=confusion)

    @property
    def vanishing(self) -> bool:
        """core.lessons.verdicts.is_vanishing: the band chart marks the first layer early in training."""
        _, _, matrix = layer_matrix(self.view, "grad_norm")
        return verdicts.is_vanishing(matrix.T.tolist())

    @property
    def collapse(self) -> verdicts.Collapse | None:
        """core.lessons.verdicts.run_collapse of the cell's events (what the sentences read): None until it has a
        test, or when it has not collapsed."""
        return verdicts.run_collapse(self.events)

    @property
    def top_prediction(self) -> tuple[float, float] | None:
        """After the test: (share of test predictions that go to the most predicted class, that class's
        share of the test set). A stuck network predicts one class: (~1.0, its accuracy)."""
        fin = self.view.finished
        if fin is None or not fin.confusion:
            return None
        answers, share = verdicts.predicted_class_share(fin.confusion)
        return (answers, share) if math.isfinite(answers) else None


@dataclass
class GridView:
    started: object | None = None  # core.engine.events.GridStarted
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
        own = per_cell.get(i, [])
        grid.cells.append(GridCell(i, cell["label"], cell["config"], _row_label(cell["label"], depth), depth,
                                   reduce_events(own), own))
    return grid


def vanishing_mask(view: RunView) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(layer names, steps, gradient norms [layers x steps], where core.lessons.verdicts.vanishing_marks marks
    a layer at that step)."""
    names, steps, matrix = layer_matrix(view, "grad_norm")
    matrix = finite_values(matrix)
    if not len(steps) or not len(names):
        return names, steps, matrix, np.zeros(matrix.shape, dtype=bool)
    vanished = np.array(verdicts.vanishing_marks(matrix.T.tolist()), dtype=bool).T
    return names, steps, matrix, vanished


def cells_table(grid: GridView) -> pd.DataFrame:
    """One row per cell: status, accuracy and loss, what a network that learned nothing scores, stuck,
    collapsed and its cause, vanishing, and how much weaker the first layer's gradient is than the output layer's at the latest log point."""
    rows = []
    for cell in grid.cells:
        latest = cell.latest or {}
        names, steps, matrix, _ = vanishing_mask(cell.view)
        ratio = float(matrix[0, -1] / matrix[-1, -1]) if len(steps) and matrix[-1, -1] > 0 else float("nan")
        top = cell.top_prediction
        collapse = cell.collapse
        rows.append({"network": cell.label, "status": cell.view.status,
                     "accuracy": latest.get("acc"), "loss": latest.get("loss"), "stuck": cell.stuck,
                     "collapsed": collapse is not None,
                     "collapse cause": collapse_cause_words(collapse) if collapse is not None else None,
                     "most predicted class: share of answers": top[0] if top else None,
                     "its share of the test set": top[1] if top else None,
                     "ln(classes)": math.log(cell.n_classes), "vanishing": cell.vanishing,
                     "first / last layer gradient": ratio})
    return pd.DataFrame(rows)


def stuck_note(grid: GridView) -> str | None:
    """Why the ⊘ networks are stuck, with one of them as the example, and which ↯ networks collapsed and why
    (None when none is either)."""
    collapsed = {c.label: c.collapse for c in grid.cells}
    collapse_words = (f"{COLLAPSED_MARK} marks a collapsed network: nearly every test answer is one class. "
                      + collapsed_sentence(collapsed)) if any(collapsed.values()) else ""
    stuck = [c for c in grid.cells if c.stuck]
    if not stuck:
        return collapse_words or None
    k = stuck[0].n_classes
    example = next((c for c in stuck if c.top_prediction is not None), None)
    detail = ""
    if example is not None:
        answers, share = example.top_prediction
        detail = (f" For example {example.label} gives {answers:.0%} of the test inputs the same answer, so its "
                  f"accuracy ({example.latest['acc']:.3f}) is just that class's share of the test set ({share:.3f}).")
    reported = ""
    if example is not None:
        reported = (f" As the report did it, {example.label} would print "
                    f"{printed_as_reported(example.latest['acc'], k):.4f}.")
    return (f"{STUCK_MARK} marks a stuck network ({len(stuck)} here): its loss sits at ln {k} = {math.log(k):.4f}, the "
            f"loss of guessing uniformly, and its accuracy is the share of the class it predicts.{detail} (The "
            f"coursework printed 0.0099 for such networks: {REPORTED_BUG}.{reported}) {collapse_words}").strip()


def default_cell(grid: GridView) -> str | None:
    """The cell to look inside first: the deepest stuck or collapsed one, else the deepest of the first row."""
    if not grid.cells:
        return None
    stuck = [c.label for c in grid.cells if c.stuck or c.collapse is not None]
    return stuck[-1] if stuck else max(grid.cells, key=lambda c: (c.row == grid.rows[0], c.depth)).label


def grid_progress(grid: GridView) -> tuple[float, str]:
    """(fraction, text) of a grid's progress: networks done, the epoch of the first started cell."""
    total = len(grid.cells)
    first = next((c.view for c in grid.cells if c.view.started is not None), None)
    progress = first.progress() if first is not None else None
    parts = [f"{grid.done_cells} of {total} networks done"] if total else ["starting"]
    if progress is not None:
        parts += [epoch_text(progress.epoch, progress.total_epochs).lower(), training_clock(progress.elapsed)]
    return (progress.fraction if progress is not None else 0.0), " · ".join(parts)
