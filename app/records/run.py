"""Reduce a run's events to tables and arrays for figures, metrics and exports.

Pure functions of a list of events (no Streamlit), so any page, including ones that show
several runs at once, can build the same frames: ``view = reduce_events(events)``.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.engine.train import scored_train_examples

EVAL_COLUMNS = ["step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "penalty", "elapsed", "train_ce",
                "val_ce"]
LAYER_COLUMNS = ["step", "epoch", "layer", "layer_index", "grad_norm", "weight_change", "weight_delta", "saturation"]
DONE_STATUSES = ("finished", "cancelled", "diverged", "failed", "paused")
# What each configured loss is called beside the true cross-entropy (which cross_entropy itself is).
LOSS_NAMES = {"cross_entropy": "cross-entropy", "mse": "MSE", "softmax_cross_entropy": "softmax twice"}


def run_status(started, end) -> str:
    """waiting (not started), running, or the terminal status of a RunFinished / RunFailed ``end``."""
    if end is not None:
        return "failed" if end.kind == "failed" else end.status
    return "running" if started is not None else "waiting"


@dataclass
class LogPoint:
    """Per-layer |W_t - W_0| matrices (pooled to <= 64x64) recorded at one log point."""

    step: int
    epoch: float
    heatmaps: list[np.ndarray]


@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: float
    total_epochs: int
    elapsed: float
    eta: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


@dataclass
class RunView:
    """Everything a page draws about one run, reduced from its events."""

    started: object | None = None  # core.engine.events.RunStarted
    end: object | None = None  # RunFinished or RunFailed
    evals: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVAL_COLUMNS))
    step_losses: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["step", "loss"]))
    layers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LAYER_COLUMNS))
    log_points: list[LogPoint] = field(default_factory=list)
    boundary: object | None = None  # the latest DecisionBoundary holding its grid (2-D sets)
    n_events: int = 0

    # --- what the run is ------------------------------------------------------------
    @property
    def config(self) -> dict:
        return dict(self.started.config) if self.started is not None else {}

    @property
    def classes(self) -> list[str]:
        return list(self.started.dataset.get("classes", [])) if self.started is not None else []

    @property
    def layer_names(self) -> list[str]:
        return list(self.started.layers) if self.started is not None else []

    @property
    def loss(self) -> str:
        """The configured loss (cross_entropy, mse or softmax_cross_entropy)."""
        return str(self.config.get("loss", "cross_entropy"))

    @property
    def loss_name(self) -> str:
        return LOSS_NAMES.get(self.loss, self.loss)

    @property
    def shows_true_ce(self) -> bool:
        """Whether the configured loss is not the true cross-entropy, which is then shown beside it."""
        return self.loss != "cross_entropy"

    @property
    def train_scored(self) -> int | None:
        """How many training examples the train metrics were scored on (None before the run started)."""
        if self.started is None or "n_train" not in self.started.dataset:
            return None
        return scored_train_examples(int(self.started.dataset["n_train"]))

    @property
    def status(self) -> str:
        """waiting (no events yet), running, or the terminal status."""
        return run_status(self.started, self.end)

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def finished(self):
        """The RunFinished event (also for cancelled/diverged runs), else None."""
        return self.end if self.end is not None and self.end.kind == "finished" else None

    @property
    def reason(self) -> str:
        if self.end is None:
            return ""
        return self.end.message if self.end.kind == "failed" else (self.end.reason or "")

    @property
    def chance_accuracy(self) -> float | None:
        """Accuracy of always guessing the test set's most common class: from the test set's class counts,
        known from the start (runs recorded before they were: the test confusion matrix's rows, once finished;
        None until then, never another definition)."""
        counts = self.started.dataset.get("test_counts") if self.started is not None else None
        fin = self.finished
        if not counts and fin is not None and fin.confusion:
            counts = np.asarray(fin.confusion).sum(axis=1)
        if counts is None or not len(counts) or not sum(counts):
            return None
        return float(max(counts) / sum(counts))

    @property
    def seconds_per_epoch(self) -> float | None:
        fin = self.finished
        if fin is not None and fin.epoch_seconds:
            return float(np.mean(fin.epoch_seconds))
        return None

    def progress(self, now: float | None = None) -> Progress | None:
        """Step, epoch, elapsed and estimated time left (ETA from the pace so far)."""
        if self.started is None:
            return None
        total = int(self.started.total_steps)
        per_epoch = max(int(self.started.steps_per_epoch), 1)
        epochs = int(self.config.get("epochs", math.ceil(total / per_epoch)))
        step = 0
        if len(self.step_losses):
            step = int(self.step_losses["step"].iloc[-1])
        if len(self.evals):
            step = max(step, int(self.evals["step"].iloc[-1]))
        if self.end is not None:
            step = max(step, int(self.end.step))
            return Progress(step, total, step / per_epoch, epochs, float(self.end.elapsed), 0.0)
        elapsed = max(0.0, (now or time.time()) - float(self.started.started_at))
        eta = None
        if len(self.evals) and step > 0:  # evals' elapsed is training seconds (the engine's clock starts at step 1)
            last = self.evals.iloc[-1]
            eta = float(last["elapsed"]) / int(last["step"]) * (total - int(last["step"]))
        return Progress(step, total, step / per_epoch, epochs, elapsed, eta)

    @property
    def decision_grid(self) -> dict | None:
        """The latest class regions of a 2-D set as {"xs", "ys", "pred" [ny][nx], "confidence" 0-1 [ny][nx]}: the
        last log point's, or for a run recorded before they were sent live, its RunFinished's (None: neither)."""
        b = self.boundary
        if b is not None:
            return {"xs": b.xs, "ys": b.ys, "pred": b.pred, "confidence": b.confidence / 255.0}
        return getattr(self.finished, "decision_grid", None)

    def final_ce(self) -> dict[str, float]:
        """The true cross-entropy at the end, per split prefix (train from the last log point; NaN where unknown)."""
        fin = self.finished
        last = self.evals.iloc[-1] if len(self.evals) else None
        return {"train": _num(last["train_ce"]) if fin is not None and last is not None else float("nan"),
                "val": _num(getattr(fin, "val_ce", None)), "test": _num(getattr(fin, "test_ce", None))}

    def final_metrics(self) -> pd.DataFrame:
        """Rows train / validation / test with loss and accuracy (NaN where unknown), and the true cross-entropy
        where the configured loss is another."""
        fin = self.finished
        ce = self.final_ce()
        rows = []
        for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
            loss = getattr(fin, f"{prefix}_loss", None) if fin is not None else None
            acc = getattr(fin, f"{prefix}_acc", None) if fin is not None else None
            row = {"split": split, "loss": _num(loss), "accuracy": _num(acc)}
            if self.shows_true_ce:
                row = {"split": split, f"loss ({self.loss_name})": row["loss"], "true cross-entropy": ce[prefix],
                       "accuracy": row["accuracy"]}
            rows.append(row)
        return pd.DataFrame(rows)


def finite_values(values) -> np.ndarray:
    """Floats with inf/NaN as NaN (a gap in a Plotly line); lists, arrays or pandas series."""
    a = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def reduce_events(events: list) -> RunView:
    """Build a :class:`RunView` from a run's events (any prefix of them, in order)."""
    view = RunView(n_events=len(events))
    evals, layer_rows, step_chunks = [], [], []
    for event in events:
        kind = event.kind
        if kind == "started":
            view.started = event
        elif kind == "steps":
            step_chunks.append((event.first_step, event.losses, event.penalties, event.stride))
        elif kind == "eval":
            evals.append([event.step, event.epoch, event.train_loss, event.train_acc, event.val_loss,
                          event.val_acc, event.penalty, event.elapsed, event.train_ce, event.val_ce])
        elif kind == "layers":
            for i, name in enumerate(event.layers):
                sat = event.saturation[i] if i < len(event.saturation) else None
                layer_rows.append([event.step, event.epoch, name, i, event.grad_norm[i], event.weight_change[i],
                                   event.weight_delta[i], np.nan if sat is None else sat])
            if event.heatmaps:
                view.log_points.append(LogPoint(event.step, event.epoch, list(event.heatmaps)))
        elif kind == "boundary" and event.kept:
            view.boundary = event
        elif kind in ("finished", "failed"):
            view.end = event
    if evals:
        view.evals = pd.DataFrame(evals, columns=EVAL_COLUMNS)
    if layer_rows:
        view.layers = pd.DataFrame(layer_rows, columns=LAYER_COLUMNS)
    if step_chunks:
        steps = np.concatenate([first + stride * np.arange(len(losses)) for first, losses, _, stride in step_chunks])
        losses = np.concatenate([np.asarray(losses, dtype=float) for _, losses, _, _ in step_chunks])
        # the L1/L2 penalty of each step, its own series (NaN where none is on)
        pens = np.concatenate([np.asarray(p, dtype=float) if len(p) == len(losses) else np.full(len(losses), np.nan)
                               for _, losses, p, _ in step_chunks])
        view.step_losses = pd.DataFrame({"step": steps, "loss": losses, "penalty": pens})
    return view


@dataclass
class WeightHistory:
    """One weight layer's histograms across the log points on one fixed set of bins (TensorBoard's
    histogram view): ``counts[b, t]`` weights in bin b (``edges[b]``..``edges[b + 1]``) at ``steps[t]``."""

    layer: str
    steps: np.ndarray
    edges: np.ndarray
    counts: np.ndarray


def rebinned(counts: np.ndarray, bound: float, new_bound: float) -> np.ndarray:
    """A histogram over [-bound, bound] moved onto as many bins over the wider [-new_bound, new_bound]: each
    bin's count goes to the new bin holding its centre. Exact when new_bound / bound is a power of two of at
    most bins / 2 (the ranges core.engine.probes.hist_bound records are nested so)."""
    n = len(counts)
    centres = -bound + (np.arange(n) + 0.5) * (2 * bound / n)
    where = np.clip(np.floor((centres + new_bound) * (n / (2 * new_bound))).astype(int), 0, n - 1)
    return np.bincount(where, weights=np.asarray(counts, dtype=float), minlength=n).round().astype(np.int64)


def weight_histories(events: list) -> list[WeightHistory]:
    """Per weight layer, its weight histograms at every log point re-binned onto the widest range any of them
    used (history bounded like the log points: core.engine.train.MAX_LOG_POINTS)."""
    stats = [e for e in events if e.kind == "layers" and e.weight_hist]
    if not stats:
        return []
    names = list(stats[-1].layers)
    stats = [e for e in stats if list(e.layers) == names and len(e.weight_hist) == len(names)]
    out = []
    for i, name in enumerate(names):
        bounds = [float((e.hist_bound or e.weight_absmax)[i]) or 1e-12 for e in stats]
        top = max(bounds)
        columns = [rebinned(np.asarray(e.weight_hist[i]), b, top) for e, b in zip(stats, bounds)]
        out.append(WeightHistory(name, np.array([e.step for e in stats]), np.linspace(-top, top, len(columns[0]) + 1),
                                 np.stack(columns, axis=1)))
    return out


def downsample(frame: pd.DataFrame, x: str, y: str, max_points: int = 1500) -> pd.DataFrame:
    """Bin means of ``y`` over ``x`` so a long curve stays cheap to send and draw."""
    n = len(frame)
    if n <= max_points:
        return frame[[x, y]]
    bins = np.arange(n) * max_points // n
    return frame[[x, y]].groupby(bins).mean()


def layer_matrix(view: RunView, value: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(layer names, log steps, [layers x steps] matrix) of one per-layer quantity."""
    if not len(view.layers):
        return view.layer_names, np.array([]), np.zeros((len(view.layer_names), 0))
    n_layers = len(view.layer_names)
    index = view.layers["layer_index"].to_numpy()
    if n_layers and len(index) % n_layers == 0 and (index.reshape(-1, n_layers) == np.arange(n_layers)).all():
        # the usual case: every log point lists every layer in order -> a plain reshape
        steps = view.layers["step"].to_numpy()[::n_layers]
        matrix = view.layers[value].to_numpy(dtype=float).reshape(-1, n_layers).T
        return list(view.layer_names), steps, matrix
    wide = view.layers.pivot_table(index="layer_index", columns="step", values=value, aggfunc="last", dropna=False)
    names = [view.layer_names[i] if i < len(view.layer_names) else str(i) for i in wide.index]
    return names, wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def metrics_table(view: RunView) -> pd.DataFrame:
    """Per-log-point metrics plus one final row per split: what the CSV export holds."""
    table = view.evals.copy()
    table.insert(0, "row", "log point")
    fin = view.finished
    if fin is not None:
        final = {"row": "final", "step": fin.step, "epoch": fin.epoch, "elapsed": fin.elapsed,
                 "train_loss": fin.train_loss, "train_acc": fin.train_acc, "val_loss": fin.val_loss,
                 "val_acc": fin.val_acc, "test_loss": fin.test_loss, "test_acc": fin.test_acc,
                 "train_ce": view.final_ce()["train"], "val_ce": fin.val_ce, "test_ce": fin.test_ce}
        table = pd.concat([table, pd.DataFrame([final])], ignore_index=True)
    return table


def metrics_csv(view: RunView) -> str:
    buf = io.StringIO()
    metrics_table(view).to_csv(buf, index=False)
    return buf.getvalue()


def config_json(view: RunView) -> str:
    return json.dumps(view.config, indent=2, sort_keys=True)


def scored_accuracies(view: RunView) -> list[tuple[str, float, int]]:
    """(split, final accuracy, examples it was scored on) of the summary's accuracies that have both."""
    fin, data = view.finished, view.started.dataset if view.started is not None else {}
    if fin is None:
        return []
    out = [("test", fin.test_acc, data.get("n_test")), ("validation", fin.val_acc, data.get("n_val")),
           ("train", fin.train_acc, view.train_scored)]
    return [(split, float(acc), int(n)) for split, acc, n in out if acc is not None and n]


# --- captions ----------------------------------------------------------------------------------------
def loss_caption(view: RunView) -> str:
    """What the losses on screen are: data losses, and, where the configured loss is not the true cross-entropy,
    which loss it is and that the cross-entropy stands beside it (softmax twice: that the run reproduces report
    004's mistake, and the floor that loss cannot go below)."""
    text = "Losses are data losses, without the L1/L2 penalty."
    test_ce = view.final_ce()["test"]
    measured = f" (test set: {test_ce:.4f})" if math.isfinite(test_ce) else ""
    if view.loss == "softmax_cross_entropy":
        k = len(view.classes)
        floor = f"ln(1 + {k - 1}/e) = {math.log(1 + (k - 1) / math.e):.4f}" if k > 1 else "a floor above 0"
        return (f"This run reproduces report 004's mistake on purpose: the network's output goes through a softmax "
                f"and cross-entropy applies another, so the loss it trained on (“{view.loss_name}”) cannot fall "
                f"below {floor} however well it classifies. The true cross-entropy of its predictions stands beside "
                f"it{measured}. {text}")
    if view.loss == "mse":
        return (f"This run trains on MSE: the mean over the classes of (softmax − one-hot)². The true cross-entropy "
                f"of its predictions stands beside it{measured}, to compare with cross-entropy runs. {text}")
    return text


def train_scoring_words(view: RunView) -> str:
    """Which training examples the train metrics were scored on, from the run's own split."""
    scored = view.train_scored
    if scored is None:
        return "a fixed subset of the training examples"
    if scored == int(view.started.dataset["n_train"]):
        return f"all {scored:,} training examples"
    return f"a fixed subset of {scored:,} of the {int(view.started.dataset['n_train']):,} training examples"
