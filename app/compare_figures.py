"""Several runs side by side: weight summaries, overlaid curves, weight histograms, a results table.

Pure functions of :class:`~app.runview.RunView` objects and run events (no Streamlit), so any
page comparing runs can use them. Variant labels may be typed by users: they reach Plotly
only through :func:`app.figures.plain_label` (escaped) and tables as plain cell text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .figures import HEIGHT, plain_label
from .runview import RunView

VARIANT_COLORS = qualitative.Plotly + qualitative.D3
MAX_HIST_LAYERS = 8
NEAR_ZERO_LABEL = "|w| < 0.001"


def variant_color(index: int) -> str:
    return VARIANT_COLORS[index % len(VARIANT_COLORS)]


@dataclass
class WeightSnapshot:
    """The weight distribution of every layer of one run at one log point (from LayerStats)."""

    step: int
    epoch: float
    layers: list[str]
    near_zero: list[float]  # share of |w| < 1e-3 per layer
    absmax: list[float]
    hists: list[np.ndarray]  # 40 counts over [-absmax, absmax] per layer
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
                          list(stats.weight_absmax), [np.asarray(h) for h in stats.weight_hist], sizes)


# --- curves --------------------------------------------------------------------------------------
def _layout(title: str, height: int = HEIGHT, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=56, b=10), uirevision="keep", hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.16, xanchor="left", x=0,
                                  font=dict(size=11)), **layout)
    fig.update_xaxes(title_standoff=4)
    return fig


def _zoom_range(values: list[np.ndarray], top: float | None = None, floor: float | None = None) -> list[float] | None:
    """A y range that skips the first, far-off points (the 3rd percentile up), so late differences show."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if not finite.size:
        return None
    low, high = float(np.quantile(finite, 0.03)), float(finite.max()) if top is None else top
    if floor is not None:
        low = max(low, floor)
    pad = max((high - low) * 0.06, 1e-3)
    return [low - pad, high + pad]


def _waiting(fig: go.Figure, text: str = "Waiting for the first log point…") -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def overlay_figure(runs: list[tuple[str, RunView]], metric: str) -> go.Figure:
    """Train (dashed) and validation (solid) ``loss`` or ``acc`` of every run, one colour per run."""
    name = {"loss": "Loss", "acc": "Accuracy"}[metric]
    fig = _layout(f"{name}: validation (solid) vs train (dashed)", height=HEIGHT + 80, xaxis_title="epoch",
                  yaxis_title=name.lower())
    if not any(len(view.evals) for _, view in runs):
        return _waiting(fig)
    if metric == "acc":  # zoomed on where the variants differ; drag or double-click to see it all
        values = [_finite(view.evals[c]) for _, view in runs for c in ("train_acc", "val_acc") if len(view.evals)]
        fig.update_yaxes(range=_zoom_range(values, top=1.0, floor=0.0))
    for i, (label, view) in enumerate(runs):
        ev = view.evals
        if not len(ev):
            continue
        shown, color = plain_label(label, 30), variant_color(i)
        fig.add_scatter(x=ev["epoch"], y=_finite(ev[f"val_{metric}"]), name=shown, legendgroup=str(i), mode="lines",
                        line=dict(color=color, width=2),
                        hovertemplate=f"{shown}<br>epoch %{{x:.2f}}<br>validation {name.lower()} %{{y:.4f}}"
                                      "<extra></extra>")
        fig.add_scatter(x=ev["epoch"], y=_finite(ev[f"train_{metric}"]), name=shown, legendgroup=str(i),
                        showlegend=False, mode="lines", line=dict(color=color, width=1.5, dash="dash"),
                        hovertemplate=f"{shown}<br>epoch %{{x:.2f}}<br>train {name.lower()} %{{y:.4f}}<extra></extra>")
    return fig


def gap_figure(runs: list[tuple[str, RunView]]) -> go.Figure:
    """Generalization gap (train accuracy minus validation accuracy) of every run over time."""
    fig = _layout("Generalization gap: train − validation accuracy", height=HEIGHT + 80, xaxis_title="epoch",
                  yaxis_title="gap", yaxis_tickformat=".0%")
    if not any(len(view.evals) for _, view in runs):
        return _waiting(fig)
    gaps = []
    for i, (label, view) in enumerate(runs):
        ev = view.evals
        if not len(ev):
            continue
        shown = plain_label(label, 30)
        gap = _finite(ev["train_acc"]) - _finite(ev["val_acc"])
        gaps.append(gap)
        fig.add_scatter(x=ev["epoch"], y=gap, name=shown, mode="lines", line=dict(color=variant_color(i), width=2),
                        hovertemplate=f"{shown}<br>epoch %{{x:.2f}}<br>gap %{{y:.1%}}<extra></extra>")
    fig.add_hline(y=0, line_dash="dot", line_color="gray")
    finite = np.abs(np.concatenate(gaps)) if gaps else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size:  # symmetric around 0, leaving out the first epochs' far-off points
        reach = max(float(np.quantile(finite, 0.97)) * 1.2, 0.02)
        fig.update_yaxes(range=[-reach, reach])
    return fig


# --- weights -------------------------------------------------------------------------------------
def near_zero_figure(snapshots: list[tuple[str, WeightSnapshot | None]]) -> go.Figure:
    """Share of weights with |w| < 0.001 per run (all layers together; per layer on hover)."""
    fig = _layout(f"Near-zero weights ({NEAR_ZERO_LABEL}), latest log point", height=HEIGHT + 60,
                  yaxis_title="share of weights", yaxis_tickformat=".1%", showlegend=False)
    present = [(i, label, snap) for i, (label, snap) in enumerate(snapshots) if snap is not None]
    if not present:
        return _waiting(fig)
    labels = [plain_label(label, 24) for _, label, _ in present]
    details = ["<br>".join(f"{plain_label(n, 12)}: {z:.1%}" for n, z in zip(snap.layers, snap.near_zero))
               for _, _, snap in present]
    fig.add_bar(x=list(range(len(present))), y=[snap.overall_near_zero for _, _, snap in present],
                marker_color=[variant_color(i) for i, _, _ in present], customdata=np.array([labels, details]).T,
                hovertemplate="%{customdata[0]}<br>all layers: %{y:.2%}<br>%{customdata[1]}<extra></extra>")
    fig.update_xaxes(tickvals=list(range(len(present))), ticktext=labels)
    return fig


def weight_hist_figure(snapshots: list[tuple[str, WeightSnapshot | None]]) -> go.Figure:
    """Small multiples: one row per run, one histogram per weight layer (share of weights per bin)."""
    rows = [(i, label, snap) for i, (label, snap) in enumerate(snapshots) if snap is not None]
    if not rows:
        return _waiting(_layout("Weight histograms per layer"))
    n_cols = min(MAX_HIST_LAYERS, max(len(snap.layers) for _, _, snap in rows))
    titles = []
    for _, label, snap in rows:
        for j in range(n_cols):
            if j >= len(snap.layers):
                titles.append("")
                continue
            layer = f"{plain_label(snap.layers[j], 12)}: {snap.near_zero[j]:.1%} near 0"
            titles.append(f"<b>{plain_label(label, 28)}</b> · {layer}" if j == 0 else layer)
    fig = make_subplots(rows=len(rows), cols=n_cols, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=min(0.09, 0.6 / len(rows)))
    traces, trace_rows, trace_cols, axes = [], [], [], {}
    for r, (i, label, snap) in enumerate(rows):
        for j in range(min(n_cols, len(snap.layers))):
            counts = np.asarray(snap.hists[j], dtype=float)
            top = snap.absmax[j] or 1e-12
            edges = np.linspace(-top, top, len(counts) + 1)
            share = counts / counts.sum() if counts.sum() else counts
            traces.append(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=share, width=np.diff(edges),
                                 marker_color=variant_color(i), marker_line_width=0, showlegend=False,
                                 hovertemplate=f"{plain_label(label, 24)} · {plain_label(snap.layers[j], 12)}"
                                               "<br>w ≈ %{x:.3g}<br>%{y:.1%} of the weights<extra></extra>"))
            trace_rows.append(r + 1)
            trace_cols.append(j + 1)
            index = r * n_cols + j + 1
            axes[f"xaxis{index if index > 1 else ''}"] = dict(tickvals=[-top, 0, top],
                                                              ticktext=[f"{-top:.2g}", "0", f"{top:.2g}"])
    fig.add_traces(traces, rows=trace_rows, cols=trace_cols)  # one call: far faster than one per subplot
    fig.update_layout(axes)
    fig.update_annotations(font_size=11)
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(tickfont_size=9)
    fig.update_layout(title=dict(text="Weights of every layer at the latest log point: share of weights per bin, "
                                      "from −max|w| to +max|w|", x=0, font=dict(size=15)),
                      height=90 + 150 * len(rows), margin=dict(l=10, r=10, t=90, b=10), bargap=0,
                      uirevision="keep")
    return fig


# --- results -------------------------------------------------------------------------------------
RESULT_COLUMNS = ["variant", "status", "train loss", "val loss", "test loss", "train acc", "val acc", "test acc",
                  "gap", "weights ≈ 0", "params", "s/epoch"]


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def results_table(runs: list[tuple[str, RunView]], snapshots: list[WeightSnapshot | None] | None = None,
                  statuses: list[str] | None = None) -> pd.DataFrame:
    """One row per run: final train / validation / test loss and accuracy, the gap, sparsity, size, speed."""
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
            "params": view.started.n_params if view.started is not None else None,
            "s/epoch": _num(view.seconds_per_epoch),
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
