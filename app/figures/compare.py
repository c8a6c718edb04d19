"""Several runs side by side: overlaid curves, the generalization gap, weight histograms.

Pure Plotly specs of :class:`~app.records.run.RunView` objects and
:class:`~app.records.compare.WeightSnapshot` records (no Streamlit). Variant labels may be typed
by users: they reach Plotly only through :func:`app.text.plain_label` (escaped).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from ..records.compare import NEAR_ZERO_LABEL, HistogramAt, WeightSnapshot
from ..records.run import RunView, finite_values
from ..text import plain_label
from .run import HEIGHT, base_layout, figure_from_spec, legend_below, panel_domains, waiting_figure

VARIANT_COLORS = qualitative.Plotly + qualitative.D3
MAX_HIST_LAYERS = 8


def variant_color(index: int) -> str:
    return VARIANT_COLORS[index % len(VARIANT_COLORS)]


# --- plain Plotly specs (the builders of app/figures.py, with this page's taller, denser layout) ---
def _layout(title: str, height: int = HEIGHT + 80, x_title: str | None = None, y_title: str | None = None,
            **extra) -> dict:
    overrides: dict = {"hovermode": "closest", "margin": {"t": 56},
                       "legend": {**legend_below(height, bool(x_title), top=56), "font": {"size": 11}}}
    if x_title:
        overrides["xaxis"] = {"title": {"text": x_title, "standoff": 4}}
    for key, value in extra.items():
        overrides[key] = {**overrides[key], **value} if isinstance(value, dict) and isinstance(
            overrides.get(key), dict) else value
    return base_layout(title, height, x_title, y_title, **overrides)


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


# --- curves --------------------------------------------------------------------------------------
def overlay_figure(runs: list[tuple[str, RunView]], metric: str) -> go.Figure:
    """Train (dashed) and validation (solid) ``loss`` or ``acc`` of every run, one colour per run; with ``loss``,
    a run whose configured loss is not the true cross-entropy also draws its validation cross-entropy (dotted)."""
    name = {"loss": "Loss", "acc": "Accuracy"}[metric]
    true_ce = metric == "loss" and any(view.shows_true_ce for _, view in runs)
    layout = _layout(f"{name}: validation (solid) vs train (dashed)"
                     + (", true cross-entropy (dotted)" if true_ce else ""), x_title="epoch", y_title=name.lower())
    if not any(len(view.evals) for _, view in runs):
        return waiting_figure(layout)
    data = []
    for i, (label, view) in enumerate(runs):
        ev = view.evals
        if not len(ev):
            continue
        shown, color, epochs = plain_label(label, 30), variant_color(i), finite_values(ev["epoch"])
        mode = "lines" if len(ev) > 1 else "markers"  # a 1-epoch run has one point: a line would draw nothing
        for split, dash, width in (("val", None, 2), ("train", "dash", 1.5)):
            words = "validation" if split == "val" else "train"
            data.append({"type": "scatter", "x": epochs, "y": finite_values(ev[f"{split}_{metric}"]), "name": shown,
                         "legendgroup": str(i), "showlegend": split == "val", "mode": mode,
                         "line": {"color": color, "width": width, **({"dash": dash} if dash else {})},
                         "hovertemplate": f"{shown}<br>epoch %{{x:.2f}}<br>{words} {name.lower()} %{{y:.4f}}"
                                          "<extra></extra>"})
        if metric == "loss" and view.shows_true_ce:
            data.append({"type": "scatter", "x": epochs, "y": finite_values(ev["val_ce"]),
                         "name": f"{shown} · true cross-entropy", "legendgroup": str(i), "showlegend": False,
                         "mode": mode, "line": {"color": color, "width": 2, "dash": "dot"},
                         "hovertemplate": f"{shown}<br>epoch %{{x:.2f}}<br>validation true cross-entropy "
                                          "%{y:.4f}<extra></extra>"})
    if metric == "acc":  # zoomed on where the variants differ; drag or double-click to see it all
        zoom = _zoom_range([t["y"] for t in data], top=1.0, floor=0.0)
        if zoom:
            layout["yaxis"] = {**layout["yaxis"], "range": zoom}
    return figure_from_spec(data, layout)


def gap_figure(runs: list[tuple[str, RunView]]) -> go.Figure:
    """Generalization gap (train accuracy minus validation accuracy) of every run over time."""
    layout = _layout("Generalization gap: train − validation accuracy", x_title="epoch", y_title="gap",
                     yaxis={"tickformat": ".0%"})
    if not any(len(view.evals) for _, view in runs):
        return waiting_figure(layout)
    data = []
    for i, (label, view) in enumerate(runs):
        ev = view.evals
        if not len(ev):
            continue
        shown = plain_label(label, 30)
        gap = finite_values(ev["train_acc"]) - finite_values(ev["val_acc"])
        data.append({"type": "scatter", "x": finite_values(ev["epoch"]), "y": gap, "name": shown, "mode": "lines",
                     "line": {"color": variant_color(i), "width": 2},
                     "hovertemplate": f"{shown}<br>epoch %{{x:.2f}}<br>gap %{{y:.1%}}<extra></extra>"})
    layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": 0, "y1": 0,
                         "line": {"dash": "dot", "color": "gray", "width": 1}}]
    gaps = np.abs(np.concatenate([t["y"] for t in data]))
    gaps = gaps[np.isfinite(gaps)]
    if gaps.size:  # symmetric around 0, leaving out the first epochs' far-off points
        reach = max(float(np.quantile(gaps, 0.97)) * 1.2, 0.02)
        layout["yaxis"] = {**layout["yaxis"], "range": [-reach, reach]}
    return figure_from_spec(data, layout)


# --- weights -------------------------------------------------------------------------------------
SHARE_TICKS = 5  # about this many ticks on a share axis


def share_tickformat(largest: float) -> str:
    """A percent tick format with enough decimals that ticks about largest/SHARE_TICKS apart read differently
    (1.2% at most: ".1%", not 0%, 0%, 1%, 1%)."""
    if not largest > 0:
        return ".0%"
    spacing = 100 * largest / SHARE_TICKS  # in percent
    return f".{min(6, max(0, -math.floor(math.log10(spacing))))}%"


def near_zero_figure(snapshots: list[tuple[str, WeightSnapshot | None]]) -> go.Figure:
    """Share of weights with |w| < 0.001 per run, as horizontal bars (all layers together; per layer on hover)."""
    present = [(i, label, snap) for i, (label, snap) in enumerate(snapshots) if snap is not None]
    largest = max((snap.overall_near_zero for _, _, snap in present), default=0.0)
    layout = _layout(f"Near-zero weights ({NEAR_ZERO_LABEL}), latest log point", x_title="share of weights",
                     xaxis={"tickformat": share_tickformat(largest), "nticks": SHARE_TICKS + 1,
                            "rangemode": "tozero"}, showlegend=False)
    if not present:
        return waiting_figure(layout)
    labels = [plain_label(label, 28) for _, label, _ in present]
    details = ["<br>".join(f"{plain_label(n, 12)}: {z:.1%}" for n, z in zip(snap.layers, snap.near_zero))
               for _, _, snap in present]
    positions = list(range(len(present)))
    layout["yaxis"] = {"tickvals": positions, "ticktext": labels, "autorange": "reversed", "automargin": True}
    return figure_from_spec([{"type": "bar", "orientation": "h", "y": positions,
                     "x": [snap.overall_near_zero for _, _, snap in present],
                     "marker": {"color": [variant_color(i) for i, _, _ in present]},
                     "customdata": [[label, detail] for label, detail in zip(labels, details)],
                     "hovertemplate": "%{customdata[0]}<br>all layers: %{x:.2%}<br>%{customdata[1]}<extra></extra>"}],
                   layout)


def weight_hist_figure(snapshots: list[tuple[str, WeightSnapshot | None]]) -> go.Figure:
    """Small multiples: one row per run, one histogram per weight layer (share of weights per bin)."""
    rows = [(i, label, snap) for i, (label, snap) in enumerate(snapshots) if snap is not None]
    title = ("Weights of every layer at the latest log point: share of weights per bin, from −b to +b "
             "(b: the power of two just above the largest |w|)")
    if not rows:
        return waiting_figure(_layout(title))
    n_rows, n_cols = len(rows), min(MAX_HIST_LAYERS, max(len(snap.layers) for _, _, snap in rows))
    domains = panel_domains(n_rows, n_cols, Fraction(1, 25), min(Fraction(9, 100), Fraction(3, 5 * n_rows)))
    layout = {"title": {"text": title, "x": 0, "font": {"size": 15}}, "height": 90 + 150 * n_rows,
              "margin": {"l": 10, "r": 10, "t": 90, "b": 10}, "bargap": 0, "uirevision": "keep",
              "showlegend": False}
    data, annotations = [], []
    for r, (i, label, snap) in enumerate(rows):
        for j in range(min(n_cols, len(snap.layers))):
            n = r * n_cols + j + 1
            suffix = "" if n == 1 else str(n)
            x0, x1, y0, top_y = domains[r][j]
            counts = np.asarray(snap.hists[j], dtype=float)
            top = snap.bound[j] or 1e-12
            edges = np.linspace(-top, top, len(counts) + 1)
            layer = plain_label(snap.layers[j], 12)
            data.append({"type": "bar", "x": (edges[:-1] + edges[1:]) / 2,
                         "y": counts / counts.sum() if counts.sum() else counts, "width": np.diff(edges),
                         "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "marker": {"color": variant_color(i),
                                                                                    "line": {"width": 0}},
                         "hovertemplate": f"{plain_label(label, 24)} · {layer}<br>w ≈ %{{x:.3g}}"
                                          "<br>%{y:.1%} of the weights<extra></extra>"})
            layout[f"xaxis{suffix}"] = {"domain": [x0, x1], "anchor": f"y{suffix}",
                                        "tickvals": [-top, 0, top], "tickfont": {"size": 9},
                                        "ticktext": [f"{-top:.2g}", "0", f"{top:.2g}"]}
            layout[f"yaxis{suffix}"] = {"domain": [y0, top_y], "anchor": f"x{suffix}",
                                        "showticklabels": False}
            text = f"{layer}: {snap.near_zero[j]:.1%} near 0"
            annotations.append({"text": f"<b>{plain_label(label, 28)}</b> · {text}" if j == 0 else text,
                                "x": (x0 + x1) / 2, "y": top_y, "xref": "paper", "yref": "paper",
                                "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                                "font": {"size": 11}})
    layout["annotations"] = annotations
    return figure_from_spec(data, layout)


def histogram_overlay_figure(layer: str, runs: list[tuple[int, str, HistogramAt]], at_words: str) -> go.Figure:
    """One layer's weight histograms of several runs overlaid, one line per run (its colour in the comparison): each
    run on its own bins, as a density (the share of the layer's weights per bin over the bin's width), so runs whose
    weights spread over different ranges (wider bins) compare (``runs``: (colour index, label, histogram))."""
    title = f"Weights of {plain_label(layer, 16)} {at_words}: how they are spread, one line per run"
    layout = _layout(title, x_title="w", y_title="share of the weights per unit of w")
    if not runs:
        return waiting_figure(layout, f"No selected run has a layer {plain_label(layer, 16)} with weight histograms.")
    data = [{"type": "scatter", "mode": "lines", "x": hist.centres, "y": hist.density, "customdata": hist.share,
             "name": plain_label(label, 40), "line": {"shape": "hvh", "color": variant_color(i), "width": 2},
             "hovertemplate": f"{plain_label(label, 24)} · step {hist.step:,}<br>w ≈ %{{x:.3g}} (bin width "
                              f"{hist.widths[0]:.3g})<br>%{{customdata:.1%}} of the weights<extra></extra>"}
            for i, label, hist in runs]
    return figure_from_spec(data, layout)
