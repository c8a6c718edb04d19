"""Pure Plotly builders for the Optimizers lesson: the 2-D race and the real network's loss surface."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from core.lab.race import RaceResult, Surface2D

HEIGHT = 460
# one colour per optimizer, the same in every figure of the lesson
OPTIMIZER_COLORS = {"sgd": "#1f77b4", "momentum": "#ff7f0e", "nesterov": "#2ca02c", "rmsprop": "#d62728",
                    "adam": "#9467bd", "nadam": "#8c564b"}
FALLBACK_COLORS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def optimizer_color(label: str, index: int = 0) -> str:
    return OPTIMIZER_COLORS.get(label, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def _compressed(z: np.ndarray) -> np.ndarray:
    """log(1 + f - min f): contours that show both the steep walls and the flat valley floor."""
    return np.log1p(z - np.nanmin(z))


def race_contour_figure(fn: Surface2D, grid: tuple[np.ndarray, np.ndarray, np.ndarray],
                        results: Sequence[RaceResult], upto: int | None = None) -> go.Figure:
    """Contours of the function with every optimizer's path up to step ``upto`` (all steps if None)."""
    xs, ys, z = grid
    fig = go.Figure(go.Contour(x=xs, y=ys, z=_compressed(z), colorscale="Viridis", ncontours=30, showscale=False,
                               contours={"coloring": "heatmap"}, hoverinfo="skip", opacity=0.85))
    for i, res in enumerate(results):
        end = len(res.path) if upto is None else min(len(res.path), upto + 1)
        path = res.path[:end]
        color = optimizer_color(res.label, i)
        fig.add_trace(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", name=res.label,
                                 line={"color": color, "width": 2.5}, legendgroup=res.label))
        if len(path):
            fig.add_trace(go.Scatter(x=path[-1:, 0], y=path[-1:, 1], mode="markers", showlegend=False,
                                     marker={"color": color, "size": 10, "line": {"color": "white", "width": 1.5}},
                                     legendgroup=res.label, hovertext=f"{res.label}: step {end - 1}"))
    if fn.minima:
        mins = np.array(fn.minima)
        fig.add_trace(go.Scatter(x=mins[:, 0], y=mins[:, 1], mode="markers", name="minimum",
                                 marker={"symbol": "star", "size": 14, "color": "white", "line": {"color": "black",
                                                                                                  "width": 1}}))
    if results:
        start = results[0].path[0]
        fig.add_trace(go.Scatter(x=[start[0]], y=[start[1]], mode="markers", name="start",
                                 marker={"symbol": "x", "size": 12, "color": "black"}))
    fig.update_layout(height=HEIGHT, margin={"l": 40, "r": 10, "t": 40, "b": 40}, title=fn.title,
                      xaxis={"range": list(fn.x_range), "title": "x"},
                      yaxis={"range": list(fn.y_range), "title": "y", "scaleanchor": "x", "scaleratio": 1}
                      if fn.name != "rosenbrock" else {"range": list(fn.y_range), "title": "y"},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def race_loss_figure(results: Sequence[RaceResult], upto: int | None = None, log: bool = True) -> go.Figure:
    """f at each step for every optimizer (log scale when every value is positive)."""
    fig = go.Figure()
    positive = True
    for i, res in enumerate(results):
        losses = res.losses if upto is None else res.losses[:upto + 1]
        positive = positive and bool(np.all(losses > 0))
        fig.add_trace(go.Scatter(x=np.arange(len(losses)), y=losses, mode="lines", name=res.label,
                                 line={"color": optimizer_color(res.label, i)}))
    fig.update_layout(height=HEIGHT, margin={"l": 40, "r": 10, "t": 40, "b": 40}, title="Loss at each step",
                      xaxis={"title": "step"}, yaxis={"title": "f(x, y)", "type": "log" if log and positive else "linear"},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def _surface_z(rows: Sequence[Sequence[float] | None], n_cols: int) -> np.ndarray:
    return np.array([row if row is not None else [np.nan] * n_cols for row in rows], dtype=float)


def loss_surface_contour_figure(xs: Sequence[float], ys: Sequence[float], rows: Sequence[Sequence[float] | None],
                                path: Sequence[Sequence[float]], title: str = "Loss surface") -> go.Figure:
    """Contours of the loss over the plane (rows not filled yet stay blank) with the projected path."""
    z = _surface_z(rows, len(xs))
    fig = go.Figure(go.Contour(x=list(xs), y=list(ys), z=np.log(z), colorscale="Viridis", ncontours=25,
                               colorbar={"title": "ln loss"}, hovertemplate="a=%{x:.3g} b=%{y:.3g}<extra></extra>"))
    p = np.array(path, dtype=float).reshape(-1, 2)
    if len(p):
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines+markers", name="training path",
                                 line={"color": "white", "width": 2}, marker={"size": 4, "color": "white"}))
        fig.add_trace(go.Scatter(x=[p[0, 0]], y=[p[0, 1]], mode="markers", name="initial weights",
                                 marker={"symbol": "x", "size": 12, "color": "red"}))
        fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="final weights",
                                 marker={"symbol": "star", "size": 14, "color": "yellow", "line": {"color": "black",
                                                                                                   "width": 1}}))
    fig.update_layout(height=HEIGHT, margin={"l": 40, "r": 10, "t": 40, "b": 40}, title=title,
                      xaxis={"title": "direction 1", "range": [xs[0], xs[-1]]},
                      yaxis={"title": "direction 2", "range": [ys[0], ys[-1]]}, legend={"orientation": "h", "y": -0.15})
    return fig


def loss_surface_3d_figure(xs: Sequence[float], ys: Sequence[float], rows: Sequence[Sequence[float] | None],
                           path_losses: Sequence[float] | None = None, path: Sequence[Sequence[float]] = (),
                           title: str = "Loss surface (3-D)") -> go.Figure:
    """The same loss as a 3-D surface (ln loss as height), with the path when its losses are known."""
    z = np.log(_surface_z(rows, len(xs)))
    fig = go.Figure(go.Surface(x=list(xs), y=list(ys), z=z, colorscale="Viridis", showscale=False, opacity=0.95))
    if path_losses is not None and len(path):
        p = np.array(path, dtype=float)
        fig.add_trace(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=np.log(np.asarray(path_losses, dtype=float)),
                                   mode="lines", line={"color": "red", "width": 5}, name="path"))
    fig.update_layout(height=HEIGHT + 60, margin={"l": 0, "r": 0, "t": 40, "b": 0}, title=title,
                      scene={"xaxis_title": "direction 1", "yaxis_title": "direction 2", "zaxis_title": "ln loss"})
    return fig
