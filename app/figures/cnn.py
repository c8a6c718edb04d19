"""Inside a CNN, drawn: first-layer filters as small images with their smoothness, one image's feature maps,
the predicted class probabilities, and one convolution worked through by hand (patch, kernel, product).

Pure functions of arrays (core.lab.convnet's results) -> Plotly figures. Many small maps are tiled into one
heatmap with blank gaps (one trace, however many channels), each tile labelled by an annotation.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from core.lab.convnet import HandConvolution

from ..text import plain_label
from .run import base_layout, figure_from_spec

GAP = 1  # blank cells between tiles
TILE_PX = 56  # largest drawn size of one tile
WIDTH_PX = 820  # a mosaic is drawn at most this wide (the tiles shrink, down to MIN_CELL_PX a cell)
MIN_CELL_PX = 2
LABEL_PX = 14  # room above each tile for its label
# Explicit colour scales: the specs go to plotly.js unvalidated, which knows neither "gray" nor a "_r" suffix.
DIVERGING = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]  # negative blue, 0 white, positive red
GREY = [[0.0, "#000000"], [1.0, "#ffffff"]]
MAX_HAND_CHANNELS = 4  # input channels the hand convolution draws (a deeper layer reads 32)


def mosaic(tiles: np.ndarray, cols: int, row_gap: int = GAP) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tiles [k, h, w] laid out ``cols`` per row, GAP blank (NaN) columns and ``row_gap`` blank rows between them:
    (the 2-D mosaic, each tile's top-left (x, y))."""
    tiles = np.asarray(tiles, dtype=float)
    k, h, w = tiles.shape
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    out = np.full((rows * (h + row_gap) - row_gap, cols * (w + GAP) - GAP), np.nan)
    corners = []
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = r * (h + row_gap), c * (w + GAP)
        out[y:y + h, x:x + w] = tiles[i]
        corners.append((x, y))
    return out, corners


def _tiled(tiles: np.ndarray, labels: list[str], title: str, cols: int, colorscale: list | str, zmin: float,
           zmax: float, hover: str, tile_px: int = TILE_PX) -> go.Figure:
    """The tiles as one heatmap of fixed pixel size (draw it with width="content"), each label above its tile."""
    tiles = np.asarray(tiles, dtype=float)
    k, h, w = tiles.shape
    cols = max(1, min(cols, k))
    span = cols * (w + GAP) - GAP
    scale = max(MIN_CELL_PX, min(round(tile_px / max(h, w)), WIDTH_PX // span))
    label_rows = math.ceil(LABEL_PX / scale) if any(labels) else 0
    grid, corners = mosaic(tiles, cols, GAP + label_rows)
    heat = {"type": "heatmap", "z": np.round(grid, 4), "colorscale": colorscale, "zmin": zmin, "zmax": zmax,
            "hoverongaps": False, "hovertemplate": hover + "<extra></extra>",
            "colorbar": {"thickness": 10, "len": 0.9}}
    notes = [{"x": x + (w - 1) / 2, "y": y - 0.5, "text": plain_label(label, 24), "showarrow": False,
              "yanchor": "bottom", "font": {"size": 10}} for (x, y), label in zip(corners, labels) if label]
    top = label_rows
    layout = base_layout(title, height=(grid.shape[0] + top) * scale + 60, width=grid.shape[1] * scale + 90,
                         annotations=notes, plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 45, "b": 10},
                         xaxis={"visible": False, "range": [-0.5, grid.shape[1] - 0.5]},
                         yaxis={"visible": False, "range": [grid.shape[0] - 0.5, -0.5 - top]})
    return figure_from_spec([heat], layout)


def filters_figure(weight: np.ndarray, smoothness: np.ndarray, title: str = "First-layer filters") -> go.Figure:
    """Each filter [out, in, kh, kw] as a small image (its input channels averaged), blue negative, red positive on
    one symmetric scale, labelled with its number and its smoothness I."""
    weight = np.asarray(weight, dtype=float)
    tiles = weight.mean(axis=1)
    bound = float(np.abs(tiles).max()) or 1.0
    labels = [f"{i}: I={s:+.2f}" for i, s in enumerate(np.asarray(smoothness))]
    return _tiled(tiles, labels, title, cols=16, colorscale=DIVERGING, zmin=-bound, zmax=bound, hover="w = %{z:.3f}",
                  tile_px=40)


def feature_maps_figure(maps: np.ndarray, title: str, cols: int = 8) -> go.Figure:
    """Every channel's map [channels, H, W] of one stage, on one shared scale (so channels compare)."""
    maps = np.asarray(maps, dtype=float)
    low, high = float(np.nanmin(maps)), float(np.nanmax(maps))
    if high <= low:
        high = low + 1.0
    labels = [f"ch {i}" for i in range(len(maps))]
    return _tiled(maps, labels, title, cols=cols, colorscale="Viridis", zmin=low, zmax=high,
                  hover="row %{y}, col %{x}: %{z:.3f}")


def image_figure(image: np.ndarray, title: str) -> go.Figure:
    """One input image [channels, H, W] in [0, 1] (its channels averaged), grey."""
    return _tiled(np.asarray(image, dtype=float).mean(axis=0, keepdims=True), [""], title, cols=1,
                  colorscale=GREY, zmin=0.0, zmax=1.0, hover="row %{y}, col %{x}: %{z:.3f}", tile_px=168)


def probabilities_figure(probabilities: np.ndarray, classes: list[str], true_label: int | None = None,
                         title: str = "Predicted class probabilities") -> go.Figure:
    """One horizontal bar per class; the true class green, the others grey."""
    probabilities = np.asarray(probabilities, dtype=float)
    names = [plain_label(classes[i], 18) if i < len(classes) else str(i) for i in range(len(probabilities))]
    colors = ["#2ca02c" if i == true_label else "#9aa0a6" for i in range(len(probabilities))]
    bars = {"type": "bar", "orientation": "h", "x": np.round(probabilities, 4), "y": list(range(len(names))),
            "marker": {"color": colors}, "text": [f"{p:.1%}" for p in probabilities], "textposition": "outside",
            "hovertemplate": "%{customdata}: %{x:.3f}<extra></extra>", "customdata": names}
    layout = base_layout(title, height=max(240, 60 + 22 * len(names)), x_title="probability", showlegend=False,
                         xaxis={"range": [0, 1.15]},
                         yaxis={"tickvals": list(range(len(names))), "ticktext": names, "autorange": "reversed",
                                "automargin": True})
    return figure_from_spec([bars], layout)


def hand_convolution_figure(hand: HandConvolution, layer: int = 1) -> go.Figure:
    """Input patch, kernel and their elementwise product side by side with their numbers, one row per input
    channel (the first few); the title gives the sum plus the bias."""
    channels = min(len(hand.patch), MAX_HAND_CHANNELS)
    panels = [("input patch", hand.patch), ("kernel", hand.kernel), ("patch × kernel", hand.product)]
    data, layout_axes, notes = [], {}, []
    n_cols = len(panels)
    for r in range(channels):
        for c, (name, values) in enumerate(panels):
            i = r * n_cols + c + 1
            x0, x1 = c / n_cols + 0.02, (c + 1) / n_cols - 0.02
            y1, y0 = 1 - r / channels - 0.06 / channels, 1 - (r + 1) / channels + 0.02 / channels
            z = np.asarray(values[r], dtype=float)
            bound = float(np.abs(z).max()) or 1.0
            scale = (GREY, 0.0, max(1.0, float(z.max()))) if name == "input patch" else (DIVERGING, -bound, bound)
            data.append({"type": "heatmap", "z": np.round(z, 4), "text": [[f"{v:.2f}" if round(v, 2) else "0.00" for v in row] for row in z],
                         "texttemplate": "%{text}", "colorscale": scale[0], "zmin": scale[1], "zmax": scale[2],
                         "showscale": False, "xaxis": f"x{i}", "yaxis": f"y{i}",
                         "hovertemplate": f"{name}<br>%{{z:.4f}}<extra></extra>"})
            layout_axes[f"xaxis{i}"] = {"domain": [x0, x1], "visible": False, "anchor": f"y{i}"}
            layout_axes[f"yaxis{i}"] = {"domain": [y0, y1], "visible": False, "autorange": "reversed",
                                        "anchor": f"x{i}"}
            if r == 0:
                notes.append({"xref": "paper", "yref": "paper", "x": (x0 + x1) / 2, "y": 1.0, "yanchor": "bottom",
                              "text": name, "showarrow": False, "font": {"size": 12}})
    more = len(hand.patch) - channels
    shown = f" (input channels 0-{channels - 1} of {len(hand.patch)})" if more else ""
    title = (f"Conv layer {layer}, channel {hand.out_channel}, output ({hand.row}, {hand.col}): "
             f"Σ product {hand.product.sum():+.4f} + bias {hand.bias:+.4f} = {hand.value:+.4f}{shown}")
    layout = base_layout(title, height=70 + 150 * channels, showlegend=False, annotations=notes,
                         margin={"l": 10, "r": 10, "t": 70, "b": 10}, **layout_axes)
    layout.pop("xaxis", None)
    layout.pop("yaxis", None)
    return figure_from_spec(data, layout)


def smoothness_history_figure(steps: list[int], means: list[float], initial: float, random: float,
                              title: str = "Mean filter smoothness while training") -> go.Figure:
    """The first layer's mean smoothness at each log point, against its value at initialization and the
    expected value of random filters (two dotted levels)."""
    line = {"type": "scatter", "mode": "lines+markers" if len(steps) < 60 else "lines", "x": [0] + list(steps),
            "y": np.round([initial] + list(means), 4), "name": "mean smoothness I", "line": {"color": "#1f77b4"},
            "hovertemplate": "step %{x}: I = %{y:.3f}<extra></extra>"}
    levels = [("at initialization", initial, "#7f7f7f"), ("random filters", random, "#d62728")]
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
               "line": {"dash": "dot", "color": color, "width": 1}} for _, y, color in levels]
    notes = [{"xref": "paper", "x": 1, "xanchor": "right", "y": y, "yanchor": "bottom" if y >= random else "top",
              "text": f"{name}: {y:+.3f}", "showarrow": False, "font": {"size": 10, "color": color}}
             for name, y, color in levels]
    layout = base_layout(title, height=260, x_title="step", y_title="Moran's I", shapes=shapes, annotations=notes,
                         showlegend=False)
    return figure_from_spec([line], layout)
