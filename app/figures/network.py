"""The network diagram (issue 24.2): each neuron a small map of its activation over the input plane, each edge
coloured by its weight's sign and as thick as its size; and one neuron's map drawn large over the data.

Pure Plotly specs of :class:`app.records.network.NetworkDiagram` (no Streamlit). Neurons sit on a plane of their
own: column c (inputs, hidden layers, classes) at x = c * COLUMN_GAP, unit j of n at y = ((n - 1) / 2 - j) *
ROW_GAP, each map a unit square. One invisible marker per neuron takes the click (:data:`NODES_TRACE` names it).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..records.network import NetworkDiagram
from ..text import plain_label
from .run import CLASS_COLORS, base_layout, figure_from_spec

COLUMN_GAP = 3.2
ROW_GAP = 1.35
NEGATIVE, POSITIVE = "#e8772e", "#1f77b4"  # orange below zero, blue above (weights and activations alike)
DIVERGING = [[0.0, NEGATIVE], [0.5, "#f7f7f7"], [1.0, POSITIVE]]
EDGE_WIDTHS = 6  # edges are drawn in this many widths per sign (one trace each)
NODES_TRACE = "neurons"


def node_centres(diagram: NetworkDiagram) -> list[list[tuple[float, float]]]:
    """Per column, per neuron: the centre of its map on the diagram's plane."""
    return [[(c * COLUMN_GAP, ((len(m) - 1) / 2 - j) * ROW_GAP) for j in range(len(m))]
            for c, m in enumerate(diagram.maps)]


def map_range(values: np.ndarray, probability: bool) -> tuple[float, float]:
    """A map's colour range: 0..1 for a probability, else symmetric about 0 (white is zero)."""
    if probability:
        return 0.0, 1.0
    top = float(np.max(np.abs(values))) if values.size else 0.0
    return -(top or 1e-6), top or 1e-6


def _map_trace(values: np.ndarray, centre: tuple[float, float], probability: bool) -> dict:
    ny, nx = values.shape
    low, high = map_range(values, probability)
    return {"type": "heatmap", "z": np.round(values, 4), "x0": centre[0] - 0.5 + 0.5 / nx, "dx": 1 / nx,
            "y0": centre[1] - 0.5 + 0.5 / ny, "dy": 1 / ny, "zmin": low, "zmax": high, "colorscale": DIVERGING,
            "showscale": False, "hoverinfo": "skip"}


def edge_traces(diagram: NetworkDiagram, centres: list[list[tuple[float, float]]]) -> list[dict]:
    """The weights as lines between neighbouring columns, grouped by sign and width (few traces), then one invisible
    marker per edge at its middle carrying the weight for the hover (customdata: [weight, column, to, from])."""
    top = max((float(np.abs(w).max()) for w in diagram.weights if w.size), default=0.0) or 1.0
    groups: dict[tuple[bool, int], tuple[list, list]] = {}
    mid_x, mid_y, custom, text = [], [], [], []
    for c, w in enumerate(diagram.weights):
        for to in range(w.shape[0]):
            for fro in range(w.shape[1]):
                (x0, y0), (x1, y1) = centres[c][fro], centres[c + 1][to]
                value = float(w[to, fro])
                width = min(EDGE_WIDTHS - 1, int(abs(value) / top * EDGE_WIDTHS))
                xs, ys = groups.setdefault((value >= 0, width), ([], []))
                xs += [x0 + 0.5, x1 - 0.5, None]
                ys += [y0, y1, None]
                mid_x.append((x0 + x1) / 2)
                mid_y.append((y0 + y1) / 2)
                custom.append([value, c, to, fro])
                text.append(f"{diagram.labels[c][fro]} → {diagram.labels[c + 1][to]}")
    traces = [{"type": "scatter", "mode": "lines", "x": xs, "y": ys, "hoverinfo": "skip", "showlegend": False,
               "line": {"color": POSITIVE if positive else NEGATIVE, "width": 0.6 + 1.1 * width},
               "opacity": 0.35 + 0.1 * width}
              for (positive, width), (xs, ys) in sorted(groups.items())]
    traces.append({"type": "scatter", "mode": "markers", "x": mid_x, "y": mid_y, "customdata": custom,
                   "text": [plain_label(t) for t in text], "showlegend": False, "name": "weights",
                   "marker": {"size": 6, "opacity": 0}, "hovertemplate": "%{text}<br>w = %{customdata[0]:.3f}<extra></extra>"})
    return traces


def network_figure(diagram: NetworkDiagram, selected: tuple[int, int] | None = None) -> go.Figure:
    """The diagram: every neuron's map in its column, the weights between columns, ``selected`` neuron outlined."""
    centres = node_centres(diagram)
    last = len(diagram.maps) - 1
    tallest = max(len(m) for m in diagram.maps)
    data = edge_traces(diagram, centres)
    for c, maps in enumerate(diagram.maps):
        data += [_map_trace(m, centres[c][j], c == last) for j, m in enumerate(maps)]
    nodes = [(c, j) for c in range(len(centres)) for j in range(len(centres[c]))]
    data.append({"type": "scatter", "mode": "markers", "name": NODES_TRACE, "showlegend": False,
                 "x": [centres[c][j][0] for c, j in nodes], "y": [centres[c][j][1] for c, j in nodes],
                 "customdata": [[c, j] for c, j in nodes],
                 "text": [plain_label(diagram.labels[c][j]) for c, j in nodes],
                 "marker": {"symbol": "square", "size": 24, "opacity": 0},
                 "hovertemplate": "%{text}<br>click to see its map large<extra></extra>"})
    span = (tallest - 1) / 2 * ROW_GAP + 0.5
    layout = base_layout(f"The network at step {diagram.step:,}", height=int(110 + 56 * max(tallest, 4)),
                         xaxis={"visible": False, "range": [-0.8, last * COLUMN_GAP + 0.8]},
                         yaxis={"visible": False, "scaleanchor": "x", "range": [-span - 0.3, span + 0.9]},
                         showlegend=False, hovermode="closest", clickmode="event+select",
                         margin={"l": 10, "r": 10, "t": 60, "b": 10})
    layout["annotations"] = [{"text": plain_label(title), "x": c * COLUMN_GAP, "y": span + 0.2, "xref": "x",
                              "yref": "y", "showarrow": False, "yanchor": "bottom", "font": {"size": 11}}
                             for c, title in enumerate(diagram.titles)]
    if selected is not None and diagram.neuron(*selected) is not None:
        x, y = centres[selected[0]][selected[1]]
        layout["shapes"] = [{"type": "rect", "x0": x - 0.58, "x1": x + 0.58, "y0": y - 0.58, "y1": y + 0.58,
                             "line": {"color": "black", "width": 3}}]
    return figure_from_spec(data, layout)


def neuron_figure(diagram: NetworkDiagram, column: int, unit: int, points: np.ndarray | None = None,
                  labels: np.ndarray | None = None, classes: list[str] = ()) -> go.Figure:
    """One neuron's map large over the input plane, with the training points (coloured by class) on top."""
    label, values = diagram.neuron(column, unit)
    low, high = map_range(values, column == len(diagram.maps) - 1)
    layout = base_layout(f"{plain_label(label)} at step {diagram.step:,}", height=420, x_title="x₁", y_title="x₂",
                         yaxis={"scaleanchor": "x"})
    data = [{"type": "heatmap", "x": np.round(diagram.xs, 4), "y": np.round(diagram.ys, 4), "z": np.round(values, 4),
             "zmin": low, "zmax": high, "colorscale": DIVERGING, "colorbar": {"thickness": 12, "title": {"text": "output"}},
             "hovertemplate": "x₁ %{x:.2f}, x₂ %{y:.2f}<br>output %{z:.3f}<extra></extra>"}]
    if points is not None and labels is not None:
        for k, name in enumerate(classes):
            pts = points[labels == k]
            data.append({"type": "scatter", "mode": "markers", "x": np.round(pts[:, 0], 4), "y": np.round(pts[:, 1], 4),
                         "name": plain_label(name), "hoverinfo": "skip",
                         "marker": {"size": 4, "color": CLASS_COLORS[k % len(CLASS_COLORS)], "opacity": 0.7,
                                    "line": {"width": 0.5, "color": "white"}}})
    return figure_from_spec(data, layout)
