"""A comparison of runs for display: editor rows, weight summaries, results, cell status.

Pure (no Streamlit). The family model and its shareable config (:class:`core.lab.compare.ComparisonConfig`)
live in core; this module turns the editor's table and the runs' events into what the page shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.lab.compare import ROW_COLUMNS, blank

from .reported import with_as_reported
from .run import RunView, WeightHistory, train_scoring_words as run_scoring_words

NEAR_ZERO_LABEL = "|w| < 0.001"


def records(frame: pd.DataFrame) -> list[dict]:
    """Data-editor rows as plain dicts (NaN / NA -> None), only the known columns."""
    out = []
    for row in frame.to_dict("records"):
        out.append({c: (None if blank(row.get(c)) else row.get(c)) for c in ROW_COLUMNS})
    return out


@dataclass
class WeightSnapshot:
    """The weight distribution of every layer of one run at one log point (from LayerStats)."""

    step: int
    epoch: float
    layers: list[str]
    near_zero: list[float]  # share of |w| < 1e-3 per layer
    bound: list[float]  # each layer's histogram range is [-bound, bound]
    hists: list[np.ndarray]  # counts over [-bound, bound] per layer
    sizes: list[int]  # weights per layer (0 when unknown)

    @property
    def overall_near_zero(self) -> float:
        """Share of all weights with |w| < 1e-3 (layers weighted by their size)."""
        if not self.near_zero:
            return float("nan")
        sizes = np.asarray(self.sizes[: len(self.near_zero)], dtype=float)
        if len(sizes) != len(self.near_zero) or sizes.sum() <= 0:
            return float(np.mean(self.near_zero))
        return float(np.dot(sizes, self.near_zero) / sizes.sum())


def weight_snapshot(events: list) -> WeightSnapshot | None:
    """The latest weight distribution recorded in a run's events (None before the first log point)."""
    stats = next((e for e in reversed(events) if e.kind == "layers" and getattr(e, "weight_hist", None)), None)
    if stats is None:
        return None
    started = next((e for e in events if e.kind == "started"), None)
    shapes = started.layer_shapes if started is not None else []
    sizes = [int(math.prod(s)) for s in shapes] if len(shapes) == len(stats.layers) else [0] * len(stats.layers)
    return WeightSnapshot(stats.step, stats.epoch, list(stats.layers), list(stats.near_zero),
                          list(stats.hist_bound or stats.weight_absmax),  # records before hist_bound: max|w|
                          [np.asarray(h) for h in stats.weight_hist], sizes)


# --- results -------------------------------------------------------------------------------------
RESULT_COLUMNS = ["variant", "status", "train loss", "val loss", "test loss", "train acc", "val acc", "test acc",
                  "gap", "weights ≈ 0", "params", "s/epoch", "trained"]
CE_COLUMNS = ["val cross-entropy", "test cross-entropy"]  # beside the losses when one is not cross-entropy


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def results_table(runs: list[tuple[str, RunView]], snapshots: list[WeightSnapshot | None] | None = None,
                  statuses: list[str] | None = None, groups: list[int] | None = None,
                  as_reported: bool = False) -> pd.DataFrame:
    """One row per run: final train / validation / test loss and accuracy, the gap, sparsity, size, speed; where
    any run's configured loss is not the true cross-entropy, also which loss each run's loss columns hold and
    every run's true cross-entropy ("trained on" and :data:`CE_COLUMNS`).

    ``groups``: how many runs trained batched together with each (1 = alone); a batched run's
    seconds per epoch are its whole group's, and the "trained" column says so. ``as_reported``: beside the test
    accuracy, the same as the coursework's reports computed it (:mod:`app.records.reported`)."""
    with_ce = any(view.shows_true_ce for _, view in runs)
    rows = []
    for i, (label, view) in enumerate(runs):
        fin = view.finished
        snap = snapshots[i] if snapshots else None
        train_acc, val_acc = _num(getattr(fin, "train_acc", None)), _num(getattr(fin, "val_acc", None))
        rows.append({
            "variant": str(label),
            "status": statuses[i] if statuses else view.status,
            "train loss": _num(getattr(fin, "train_loss", None)),
            "val loss": _num(getattr(fin, "val_loss", None)),
            "test loss": _num(getattr(fin, "test_loss", None)),
            "train acc": train_acc,
            "val acc": val_acc,
            "test acc": _num(getattr(fin, "test_acc", None)),
            "gap": train_acc - val_acc,
            "weights ≈ 0": snap.overall_near_zero if snap is not None else float("nan"),
            "params": _num(view.started.n_params if view.started is not None else None),
            "s/epoch": _num(view.seconds_per_epoch),
            "trained": trained_text(groups[i] if groups else 1),
        })
        if with_ce:
            ce = view.final_ce()
            rows[-1].update({"trained on": view.loss_name, "val cross-entropy": ce["val"],
                             "test cross-entropy": ce["test"]})
    columns = (RESULT_COLUMNS[:2] + ["trained on"] + RESULT_COLUMNS[2:5] + CE_COLUMNS + RESULT_COLUMNS[5:] if with_ce
               else RESULT_COLUMNS)
    table = pd.DataFrame(rows, columns=columns)
    return with_as_reported(table, "test acc", [len(view.classes) for _, view in runs]) if as_reported else table


def train_scoring_words(views: list[RunView | None]) -> str:
    """Which training examples the variants' train metrics were scored on, from their own splits."""
    words = list(dict.fromkeys(run_scoring_words(v) for v in views if v is not None and v.started is not None))
    if not words:
        return "a fixed subset of the training examples"
    return words[0] if len(words) == 1 else "; ".join(words) + ", depending on the variant"


# --- a variant trained as a cell of a grid job --------------------------------------------------------
def cell_status(grid_status: str, grid_done: bool, events: list) -> str:
    """A grid cell's status from its own events and the job's (queued until it starts)."""
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if end is not None:
        return "failed" if end.kind == "failed" else end.status
    if grid_done:  # the job ended without this cell ending: it was cancelled, or the job failed
        return "cancelled" if grid_status == "cancelled" else "failed"
    return "queued" if grid_status == "queued" or not events else "running"


def status_text(status: str | None, from_cache: bool = False, queue_position: int | None = None) -> str:
    """A variant's status for the progress and results tables."""
    if status is None:
        return "unknown (removed from the run store)"
    if status == "queued":
        return "waiting for its turn" if queue_position is None else f"queued ({queue_position} ahead)"
    if from_cache and status in ("finished", "diverged", "cancelled"):
        return f"{status} · cached"
    return status


def outcome_summary(labels: list[str], statuses: list[str | None], reasons: list[str]) -> list[str]:
    """One line per outcome that needs saying (cancelled, diverged, failed), naming its variants once."""
    lines = []
    for status, verb in (("cancelled", "Cancelled"), ("diverged", "Diverged"), ("failed", "Failed")):
        hit = [(label, reason) for label, s, reason in zip(labels, statuses, reasons) if s == status]
        if not hit:
            continue
        names = ", ".join(label for label, _ in hit)
        if status == "cancelled":
            lines.append(f"{verb} before the end: {names}. Their curves show what they learned until then.")
        else:  # a reason shared by several variants (e.g. their grid job failed) is said once
            by_reason: dict[str, list[str]] = {}
            for label, reason in hit:
                by_reason.setdefault(reason, []).append(label)
            details = "; ".join(f"{', '.join(group)}: {reason}" if reason else ", ".join(group)
                                for reason, group in by_reason.items())
            lines.append(f"{verb}: {details}")
    return lines


def trained_text(group: int) -> str:
    """How a run trained: 'alone', or 'batched, 5 runs' (its time per epoch is then the group's)."""
    return "alone" if group <= 1 else f"batched, {group} runs (time is the group's)"


@dataclass
class HistogramAt:
    """One run's histogram of one layer's weights at one log point: the share of its weights per bin, and that share
    per unit of w (``density``: what runs binned differently can be compared by)."""

    step: int
    centres: np.ndarray
    widths: np.ndarray
    share: np.ndarray

    @property
    def density(self) -> np.ndarray:
        return self.share / self.widths


def histogram_at(history: WeightHistory, at: float = 1.0) -> HistogramAt | None:
    """``history`` at the log point ``at`` of the way through (0: the first, 1: the last), on its own bins."""
    n = history.counts.shape[1] if history.counts.ndim == 2 else 0
    if not n:
        return None
    t = min(n - 1, max(0, round(at * (n - 1))))
    counts = history.counts[:, t].astype(float)
    total = counts.sum()
    return HistogramAt(int(history.steps[t]), (history.edges[:-1] + history.edges[1:]) / 2, np.diff(history.edges),
                       counts / total if total else counts)


def shared_layers(histories: list[list[WeightHistory]]) -> list[str]:
    """Every weight layer some run has histories of, in the order first met (the overlay's choices)."""
    names: list[str] = []
    for layers in histories:
        names += [h.layer for h in layers if h.layer not in names]
    return names
