"""Plotly figure builders: pure functions of a :class:`~app.records.run.RunView` or plain arrays.

No Streamlit here, so every figure is unit-testable. Figures are written as plain Plotly specs
and wrapped without Plotly's per-property validation (``_validate=False``): about ten times
cheaper to build, which matters while a run streams in. Text that may come from users (class
names) goes through :func:`plain_label`: Plotly reads a few HTML tags in labels, so names are
HTML-escaped and shown literally.
"""
from __future__ import annotations

import base64
import io
import math
from fractions import Fraction

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import get_colorscale, hex_to_rgb, qualitative, sample_colorscale, unlabel_rgb

from ..records.run import LogPoint, RunView, WeightHistory, downsample, finite_values, layer_matrix
from ..text import plain_label

CLASS_COLORS = qualitative.Plotly + qualitative.D3 + qualitative.Set3
TRAIN_COLOR, VAL_COLOR, CHANCE_COLOR = "#1f77b4", "#ff7f0e", "#8a8a8a"
HEIGHT = 330
GL_POINTS = 400  # a line of more points is drawn with WebGL (scattergl): far cheaper in the browser
# Explicit scales: a named scale would reach plotly.js unvalidated, where e.g. "Blues" runs dark to light.
VIRIDIS, BLUES = get_colorscale("Viridis"), get_colorscale("Blues")


def _array(values) -> np.ndarray:
    return np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)


def _title(text: str) -> dict:
    return {"text": text, "x": 0, "xanchor": "left", "font": {"size": 15}}


def legend_below(height: int, x_title: bool, top: int = 40) -> dict:
    """A horizontal legend under the x axis AND its title. Paper units scale with the plot area, so a fixed
    paper offset lands on the axis title in short charts: place it by pixels instead."""
    below = 30 + (26 if x_title else 0)  # tick labels, then the axis title
    plot = max(height - top - 10 - below - 50, 80)  # the plot area once the margins grew (about two legend rows)
    return {"orientation": "h", "yanchor": "top", "y": -(below + 8) / plot, "xanchor": "left", "x": 0}


def base_layout(title: str, height: int = HEIGHT, x_title: str | None = None, y_title: str | None = None,
                **extra) -> dict:
    layout = {"title": _title(title), "height": height, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
              "uirevision": "keep", "legend": legend_below(height, bool(x_title)),
              "xaxis": {"title": {"text": x_title}} if x_title else {},
              "yaxis": {"title": {"text": y_title}} if y_title else {}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def panel_domains(n_rows: int, n_cols: int, gap_x: Fraction, gap_y: Fraction) -> list[list[tuple[float, float, float, float]]]:
    """Paper domains (x0, x1, y0, y1) of a grid of panels, row 0 on top, computed in exact fractions.

    Subtracting float sums lands on values like -5.55e-17 for the bottom row, which Plotly rejects;
    with fractions the outer edges are exactly 0 and 1 and every panel lies inside [0, 1]."""
    width = (1 - gap_x * (n_cols - 1)) / n_cols
    height = (1 - gap_y * (n_rows - 1)) / n_rows
    return [[(float(c * (width + gap_x)), float(c * (width + gap_x) + width),
              float(1 - r * (height + gap_y) - height), float(1 - r * (height + gap_y)))
             for c in range(n_cols)] for r in range(n_rows)]


def figure_from_spec(data: list[dict], layout: dict) -> go.Figure:
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def waiting_figure(layout: dict, text: str = "Waiting for the first log point…") -> go.Figure:
    layout = {**layout, "xaxis": {"visible": False}, "yaxis": {"visible": False},
              "annotations": [{"text": text, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper",
                               "yref": "paper", "font": {"size": 13}}]}
    return figure_from_spec([], layout)


def _mode(n: int) -> str:
    return "lines+markers" if n <= 40 else "lines"


def _scatter_type(n: int) -> str:
    return "scattergl" if n > GL_POINTS else "scatter"


def _line(x, y, name: str, color: str, n: int, **extra) -> dict:
    return {"type": _scatter_type(n), "x": _array(x), "y": finite_values(y), "name": name, "mode": _mode(n),
            "line": {"color": color}, **extra}


def level_line(layout: dict, y: float, text: str, color: str = CHANCE_COLOR, yref: str = "y") -> dict:
    """``layout`` with a dotted horizontal line at ``y`` (on axis ``yref``) across the plot, labelled at its right
    end (a layout shape: no trace, no legend entry, no hover, nothing for the browser to pick)."""
    shape = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": yref, "y0": y, "y1": y, "layer": "below",
             "line": {"color": color, "dash": "dot", "width": 1.5},
             "label": {"text": text, "textposition": "end", "yanchor": "bottom", "font": {"size": 11, "color": color}}}
    return {**layout, "shapes": [*layout.get("shapes", []), shape]}


def layer_colors(n: int) -> list[str]:
    """First layer dark, last layer light, so depth order reads off the colours."""
    return sample_colorscale("Viridis", [i / max(n - 1, 1) * 0.9 for i in range(n)]) if n else []


# --- curves ---------------------------------------------------------------------------------
def loss_figure(view: RunView) -> go.Figure:
    """Train and validation loss per log point, against epochs; where the configured loss is not the true
    cross-entropy, that too (dotted; on its own right-hand axis beside MSE, whose scale is far smaller)."""
    title = (f"Loss: {view.loss_name} (solid) and true cross-entropy (dotted)" if view.shows_true_ce
             else "Loss (train vs validation)")
    layout = base_layout(title, x_title="epoch", y_title=f"loss ({view.loss_name})" if view.shows_true_ce else "loss")
    ev = view.evals
    if not len(ev):
        return waiting_figure(layout)
    n, steps = len(ev), _array(ev["step"])
    data = [
        _line(ev["epoch"], ev["train_loss"], "train", TRAIN_COLOR, n, customdata=steps,
              hovertemplate="epoch %{x:.2f} (step %{customdata})<br>train loss %{y:.4f}<extra></extra>"),
        _line(ev["epoch"], ev["val_loss"], "validation", VAL_COLOR, n, customdata=steps,
              hovertemplate="epoch %{x:.2f} (step %{customdata})<br>validation loss %{y:.4f}<extra></extra>"),
    ]
    if view.shows_true_ce:
        axis = {"yaxis": "y2"} if view.loss == "mse" else {}
        if axis:
            layout["yaxis2"] = {"title": {"text": "true cross-entropy"}, "overlaying": "y", "side": "right"}
        for split, words, color in (("train", "train", TRAIN_COLOR), ("val", "validation", VAL_COLOR)):
            data.append(_line(ev["epoch"], ev[f"{split}_ce"], f"{words} (true cross-entropy)", color, n,
                              customdata=steps, **axis, line={"color": color, "dash": "dot"},
                              hovertemplate=f"epoch %{{x:.2f}} (step %{{customdata}})<br>{words} true cross-entropy "
                                            "%{y:.4f}<extra></extra>"))
    return figure_from_spec(data, uniform_guess_line(layout, data, len(view.classes), view.loss == "mse"))


LOSS_HEADROOM = 1.15  # the loss axis ends this far above its highest value (or ln C): room for the line's label


def uniform_guess_line(layout: dict, data: list[dict], n_classes: int, beside_mse: bool) -> dict:
    """``layout`` with the cross-entropy of a uniform guess, ln C, drawn on the cross-entropy axis (the right-hand
    one beside MSE), and every loss axis from 0 to just above its highest value and ln C: a flat loss at ln C
    stays flat instead of being magnified into oscillation by autoscaling."""
    ce_axis = "y2" if beside_mse else "y"
    for axis in ("y", "y2") if beside_mse else ("y",):
        values = [v for trace in data if trace.get("yaxis", "y") == axis for v in np.asarray(trace["y"], dtype=float)
                  if math.isfinite(v)]
        top = max(values + ([math.log(n_classes)] if axis == ce_axis and n_classes > 1 else []), default=0.0)
        if top > 0:
            name = "yaxis" if axis == "y" else "yaxis2"
            layout[name] = {**layout.get(name, {}), "range": [0, top * LOSS_HEADROOM]}
    if n_classes > 1:
        ln_c = math.log(n_classes)
        layout = level_line(layout, ln_c, f"ln {n_classes} = {ln_c:.4f} (uniform guess)", yref=ce_axis)
    return layout


def accuracy_figure(view: RunView) -> go.Figure:
    """Train and validation accuracy per log point, with the chance level for reference."""
    layout = base_layout("Accuracy (train vs validation)", x_title="epoch", y_title="accuracy",
                     yaxis={"range": [0, 1.02]})
    ev = view.evals
    if not len(ev):
        return waiting_figure(layout)
    n = len(ev)
    data = [_line(ev["epoch"], ev["train_acc"], "train", TRAIN_COLOR, n,
                  hovertemplate="epoch %{x:.2f}<br>train accuracy %{y:.4f}<extra></extra>"),
            _line(ev["epoch"], ev["val_acc"], "validation", VAL_COLOR, n,
                  hovertemplate="epoch %{x:.2f}<br>validation accuracy %{y:.4f}<extra></extra>")]
    chance = view.chance_accuracy
    if chance is not None:
        layout = level_line(layout, chance, f"chance ({chance:.3f})")
    return figure_from_spec(data, layout)


def step_loss_figure(view: RunView, max_points: int = 1500) -> go.Figure:
    """Training loss of every step (binned when long) and its moving average."""
    layout = base_layout("Training loss per step (data loss)", x_title="step", y_title="loss")
    steps = view.step_losses
    if not len(steps):
        return waiting_figure(layout)
    small = downsample(steps.assign(loss=finite_values(steps["loss"])), "step", "loss", max_points)
    smooth = small["loss"].ewm(span=max(3, len(small) // 25), ignore_na=True).mean()
    penalty = []
    if "penalty" in steps and steps["penalty"].notna().any():  # what the L1/L2 regularizer adds, its own line
        pen = downsample(steps, "step", "penalty", max_points)
        penalty = [{"type": _scatter_type(len(pen)), "x": _array(pen["step"]), "y": _array(pen["penalty"]),
                    "name": "L1/L2 penalty",
                    "mode": "lines", "line": {"width": 2, "dash": "dot", "color": VAL_COLOR}}]
    kind = _scatter_type(len(small))
    return figure_from_spec([
        {"type": kind, "x": _array(small["step"]), "y": _array(small["loss"]), "name": "per step",
         "mode": "lines", "line": {"width": 1, "color": "rgba(120,120,120,0.45)"}},
        {"type": kind, "x": _array(small["step"]), "y": _array(smooth), "name": "moving average",
         "mode": "lines", "line": {"width": 2, "color": TRAIN_COLOR}},
        *penalty,
    ], layout)


def grad_norm_figure(view: RunView) -> go.Figure:
    """Gradient norm of every weight layer over time, log scale (vanishing = lines far below)."""
    layout = base_layout("Gradient norm per layer (log scale)", x_title="step", y_title="‖∇W‖",
                     yaxis={"type": "log", "tickformat": "~g"})
    names, steps, matrix = layer_matrix(view, "grad_norm")
    if not len(steps):
        return waiting_figure(layout)
    data = []
    positive = finite_values(matrix)
    positive = positive[positive > 0]
    if positive.size:  # labels at 1-2-5 within a decade or two, one per decade across wider ranges
        span = np.log10(positive.max() / positive.min())
        layout["yaxis"]["dtick"] = 1 if span >= 2 else "D2"
    for name, color, row in zip(names, layer_colors(len(names)), matrix):
        values = finite_values(row)
        values[values <= 0] = np.nan
        label = plain_label(name)
        data.append(_line(steps, values, label, color, len(steps),
                          hovertemplate=f"{label}<br>step %{{x}}<br>‖∇W‖ %{{y:.3g}}<extra></extra>"))
    return figure_from_spec(data, layout)


def layer_heatmap_figure(view: RunView, value: str = "weight_delta") -> go.Figure:
    """Layer x time heatmap of log10 of a per-layer quantity (mean |ΔW| or gradient norm)."""
    titles = {"weight_delta": "Mean |ΔW| per layer between log points (log10)",
              "weight_change": "Mean |W − W₀| per layer (log10)",
              "grad_norm": "Gradient norm per layer (log10)"}
    layout = base_layout(titles.get(value, value), x_title="step",
                     yaxis={"autorange": "reversed", "title": {"text": "layer (input at top)"}})
    names, steps, matrix = layer_matrix(view, value)
    if not len(steps):
        return waiting_figure(layout)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(finite_values(matrix))
    z[~np.isfinite(z)] = np.nan
    return figure_from_spec([{"type": "heatmap", "x": _array(steps), "y": [plain_label(n) for n in names],
                     "z": np.round(z, 3), "colorscale": VIRIDIS,
                     "colorbar": {"title": {"text": "log10"}, "thickness": 12},
                     "hovertemplate": "%{y}<br>step %{x}<br>log10 = %{z:.2f}<extra></extra>"}], layout)


def saturation_figure(view: RunView) -> go.Figure:
    """Fraction of dead ReLU units or saturated sigmoid/tanh units per layer over time."""
    activation = view.config.get("activation", "")
    if activation == "relu":
        title = "Dead ReLU units per layer (zero for every probe example)"
    elif activation in ("sigmoid", "tanh"):
        title = f"Saturated {activation} units per layer (slope < 10% of its maximum)"
    else:
        title = "Dead / saturated units per layer"
    layout = base_layout(title, x_title="step", y_title="fraction of units",
                     yaxis={"range": [0, 1.02], "tickformat": ".0%"})
    names, steps, matrix = layer_matrix(view, "saturation")
    if not len(steps):
        return waiting_figure(layout)
    data = []
    for name, color, row in zip(names, layer_colors(len(names)), matrix):
        if np.isfinite(row).any():
            label = plain_label(name)
            data.append(_line(steps, row, label, color, len(steps),
                              hovertemplate=f"{label}<br>step %{{x}}<br>%{{y:.1%}}<extra></extra>"))
    if not data:
        return waiting_figure(layout, f"Not measured for the {activation or 'chosen'} activation "
                                "(only ReLU, sigmoid and tanh have dead/saturated units).")
    return figure_from_spec(data, layout)


# --- weight-change matrices -----------------------------------------------------------------
def weight_heatmaps_figure(point: LogPoint, layer_names: list[str], layer_shapes: list | None = None,
                           per_row: int = 4) -> go.Figure:
    """|W_t − W_0| of every layer at one log point, on one shared log10 colour scale."""
    n = len(point.heatmaps)
    cols = max(1, min(n, per_row))
    rows = max(1, math.ceil(n / cols))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = [np.log10(np.asarray(m, dtype=float)) for m in point.heatmaps]
    finite = np.concatenate([z[np.isfinite(z)] for z in logs]) if logs else np.array([])
    zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (-6.0, 0.0)
    if zmin == zmax:
        zmin -= 1
    # exactly unchanged weights (e.g. into dead ReLU units) get the darkest colour, not a blank cell
    logs = [np.where(np.isfinite(z), z, zmin) for z in logs]
    domains = panel_domains(rows, cols, Fraction(1, 25), Fraction(3, 25 * rows))
    layout = {"title": _title(f"How far each weight moved from its start, |W − W₀|, at step {point.step} "
                              f"(epoch {point.epoch:g}); log10, one colour scale for all layers"),
              "height": 60 + 240 * rows, "margin": {"l": 10, "r": 10, "t": 80, "b": 10}, "uirevision": "keep",
              "coloraxis": {"colorscale": VIRIDIS, "cmin": zmin, "cmax": zmax,
                            "colorbar": {"title": {"text": "log10"}, "thickness": 12}},
              "annotations": []}
    data = []
    for i, z in enumerate(logs):
        r, c = divmod(i, cols)
        x0, x1, y0, y1 = domains[r][c]
        suffix = "" if i == 0 else str(i + 1)
        layout[f"xaxis{suffix}"] = {"domain": [x0, x1], "anchor": f"y{suffix}", "showticklabels": False}
        layout[f"yaxis{suffix}"] = {"domain": [y0, y1], "anchor": f"x{suffix}", "showticklabels": False,
                                    "autorange": "reversed"}
        name = layer_names[i] if i < len(layer_names) else f"layer {i + 1}"
        shape = layer_shapes[i] if layer_shapes and i < len(layer_shapes) else None
        label = plain_label(name) + (f" [{shape[0]}×{shape[1]} channels]" if shape and len(shape) == 4
                                     else f" [{shape[0]}×{math.prod(shape[1:])}]" if shape else "")
        layout["annotations"].append({"text": label, "x": (x0 + x1) / 2, "y": y1, "xref": "paper", "yref": "paper",
                                      "xanchor": "center", "yanchor": "bottom", "showarrow": False})
        data.append({"type": "heatmap", "z": np.round(z, 3), "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     "coloraxis": "coloraxis",
                     "hovertemplate": "out %{y}, in %{x}<br>log10 |ΔW| = %{z:.2f}<extra></extra>"})
    return figure_from_spec(data, layout)


def weight_histories_figure(histories: list[WeightHistory], per_row: int = 3) -> go.Figure:
    """Each layer's weight distribution across the log points (TensorBoard's histogram view): a heatmap of the
    share of the layer's weights per bin (rows: w, fixed bins per layer) against the step."""
    title = "How each layer's weights spread out while training: share of the layer's weights per bin, per log point"
    if not histories:
        return waiting_figure({"title": _title(title), "height": HEIGHT})
    n = len(histories)
    cols = max(1, min(n, per_row))
    rows = math.ceil(n / cols)
    domains = panel_domains(rows, cols, Fraction(1, 20), Fraction(3, 25 * rows))
    layout = {"title": _title(title), "height": 80 + 230 * rows, "margin": {"l": 10, "r": 10, "t": 80, "b": 10},
              "uirevision": "keep", "annotations": [],
              "coloraxis": {"colorscale": VIRIDIS, "cmin": 0, "colorbar": {"title": {"text": "share"}, "thickness": 12}}}
    data = []
    for i, history in enumerate(histories):
        r, c = divmod(i, cols)
        x0, x1, y0, y1 = domains[r][c]
        suffix = "" if i == 0 else str(i + 1)
        totals = history.counts.sum(axis=0, keepdims=True)
        share = np.divide(history.counts, totals, out=np.zeros(history.counts.shape), where=totals > 0)
        centres = (history.edges[:-1] + history.edges[1:]) / 2
        layout[f"xaxis{suffix}"] = {"domain": [x0, x1], "anchor": f"y{suffix}", "tickfont": {"size": 9},
                                    "title": {"text": "step", "font": {"size": 10}} if r == rows - 1 else None}
        layout[f"yaxis{suffix}"] = {"domain": [y0, y1], "anchor": f"x{suffix}", "tickfont": {"size": 9},
                                    "title": {"text": "w", "font": {"size": 10}} if c == 0 else None}
        layout["annotations"].append({"text": plain_label(history.layer), "x": (x0 + x1) / 2, "y": y1, "xref": "paper",
                                      "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False})
        data.append({"type": "heatmap", "x": history.steps, "y": centres, "z": np.round(share, 4),
                     "coloraxis": "coloraxis", "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     "hovertemplate": "step %{x}<br>w ≈ %{y:.3g}<br>%{z:.1%} of the weights<extra></extra>"})
    return figure_from_spec(data, layout)


# --- results ---------------------------------------------------------------------------------
def confusion_figure(confusion: list[list[int]], classes: list[str]) -> go.Figure:
    """Counts of (true, predicted) classes on the test set."""
    z = np.asarray(confusion, dtype=int)
    k = z.shape[0]
    names = [plain_label(c, 18) for c in classes[:k]] + [str(i) for i in range(len(classes), k)]
    ticks = list(range(k))
    layout = base_layout("Confusion matrix (test set)", height=max(HEIGHT, 120 + 28 * k),
                     xaxis={"title": {"text": "predicted class"}, "tickvals": ticks, "ticktext": names,
                            "tickangle": -45, "automargin": True},
                     yaxis={"title": {"text": "true class"}, "tickvals": ticks, "ticktext": names,
                            "autorange": "reversed"})
    trace = {"type": "heatmap", "z": z, "x": ticks, "y": ticks, "colorscale": BLUES, "showscale": False,
             "customdata": np.array([[[names[t], names[p]] for p in range(k)] for t in range(k)]),
             "hovertemplate": "true %{customdata[0]}<br>predicted %{customdata[1]}<br>%{z} examples<extra></extra>"}
    if k <= 20:
        trace.update(text=z, texttemplate="%{text}")
    return figure_from_spec([trace], layout)


def _png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_grid_figure(images: np.ndarray, labels: list[str], title: str, cols: int = 8,
                      tile: int = 72, label_lines: int = 2) -> go.Figure:
    """Images (uint8 [k, C, H, W]) in a grid with a plain-text label under each.

    Labels are ``\\n``-separated lines, escaped here. The figure has a fixed pixel size (draw
    it with width="content") so the labels stay under their images.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    k, c, h, w = images.shape
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    scale = max(1, round(tile / max(h, w)))
    th, tw = h * scale, w * scale
    pad, band = 6, 16 * label_lines + 6
    cell_w, cell_h = tw + 2 * pad, th + pad + band
    mosaic = np.full((rows * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    annotations = []
    for i in range(k):
        img = images[i]
        rgb = np.repeat(img, 3, axis=0) if c == 1 else img[:3]
        rgb = np.transpose(rgb, (1, 2, 0)).repeat(scale, axis=0).repeat(scale, axis=1)
        r, col = divmod(i, cols)
        y0, x0 = r * cell_h + pad, col * cell_w + pad
        mosaic[y0:y0 + th, x0:x0 + tw] = rgb
        text = "<br>".join(plain_label(line, 16) for line in str(labels[i]).split("\n")) if i < len(labels) else ""
        annotations.append({"x": x0 + tw / 2, "y": y0 + th + 3, "text": text, "showarrow": False, "yanchor": "top",
                            "font": {"size": 11, "color": "#31333F"}, "xref": "x", "yref": "y"})
    height, width = mosaic.shape[:2]
    layout = {"title": _title(title), "width": width + 20, "height": height + 60,
              "margin": {"l": 10, "r": 10, "t": 50, "b": 10}, "plot_bgcolor": "white", "annotations": annotations,
              "xaxis": {"visible": False, "range": [0, width]},
              "yaxis": {"visible": False, "range": [height, 0], "scaleanchor": "x"}}
    return figure_from_spec([{"type": "image", "source": _png_data_uri(mosaic), "hoverinfo": "skip"}], layout)


def misclassified_figure(images: np.ndarray, misclassified: list[dict], classes: list[str],
                         cols: int = 9) -> go.Figure:
    """Wrongly classified test images with their true and predicted class names."""
    def name(i: int) -> str:
        return str(classes[i]) if 0 <= i < len(classes) else str(i)

    labels = [f"true: {name(m['true'])}\npred: {name(m['pred'])}" for m in misclassified[: len(images)]]
    return image_grid_figure(images, labels, f"Misclassified test images (first {len(images)})", cols=cols)


def examples_figure(images: np.ndarray, classes: list[str], cols: int = 10) -> go.Figure:
    """One example image per class with its class name."""
    return image_grid_figure(images, [str(c) for c in classes], "One example per class", cols=cols, label_lines=1)


def _class_shade_colorscale(k: int) -> list:
    """Per class a band from a pale tint (a coin flip between the classes) to its full colour (certain)."""
    scale = []
    for i in range(k):
        color = CLASS_COLORS[i % len(CLASS_COLORS)]
        scale += [[i / k, _tint(color, 0.85)], [(i + 1) / k, color]]
    return scale


def _tint(color: str, white: float) -> str:
    """``color`` (#rrggbb or rgb(r, g, b)) mixed with ``white`` parts of white."""
    rgb = hex_to_rgb(color) if color.startswith("#") else unlabel_rgb(color)
    return "rgb({}, {}, {})".format(*(round(c + (255 - c) * white) for c in rgb))


def region_values(pred: np.ndarray, confidence: np.ndarray | None, k: int) -> np.ndarray:
    """Heatmap values of class regions: the class, plus how far its probability is from a coin flip (1/k)
    toward certainty, within the class's band of :func:`_class_shade_colorscale`."""
    pred = np.asarray(pred, dtype=float)
    if confidence is None or k < 2:
        return pred + 0.999
    sure = (np.asarray(confidence, dtype=float) - 1 / k) / (1 - 1 / k)
    return pred + np.clip(sure, 0.0, 0.999)


def toy_scatter_figure(x: np.ndarray, y: np.ndarray, classes: list[str], title: str = "Data",
                       grid: dict | None = None) -> go.Figure:
    """2-D points coloured by class; with ``grid`` (:attr:`app.records.run.RunView.decision_grid`) the decision
    regions, paler where the network is less sure."""
    layout = base_layout(title, height=420, x_title="x₁", y_title="x₂", yaxis={"scaleanchor": "x"})
    k = len(classes)
    data = []
    if grid:
        z = region_values(grid["pred"], grid.get("confidence"), k)
        data.append({"type": "heatmap", "x": np.round(np.asarray(grid["xs"], dtype=float), 4),
                     "y": np.round(np.asarray(grid["ys"], dtype=float), 4), "z": np.round(z, 3), "zmin": 0, "zmax": k,
                     "colorscale": _class_shade_colorscale(k), "opacity": 0.6, "showscale": False,
                     "hoverinfo": "skip"})
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    for i, cls in enumerate(classes):
        pts = x[y == i]
        data.append({"type": _scatter_type(len(pts)), "x": np.round(pts[:, 0], 4), "y": np.round(pts[:, 1], 4),
                     "mode": "markers",
                     "name": plain_label(cls),
                     "marker": {"size": 5, "color": CLASS_COLORS[i % len(CLASS_COLORS)],
                                "line": {"width": 0.5, "color": "white"}}})
    return figure_from_spec(data, layout)


def class_counts_figure(counts: list[int], classes: list[str], title: str = "Examples per class") -> go.Figure:
    """One horizontal bar per class, its name beside it on the left (every name shown in full, however many)."""
    k = len(counts)
    names = [plain_label(classes[i], 18) if i < len(classes) else str(i) for i in range(k)]
    layout = base_layout(title, height=max(HEIGHT, 60 + 18 * k), x_title="examples",
                         yaxis={"tickvals": list(range(k)), "ticktext": names, "autorange": "reversed",
                                "automargin": True})
    return figure_from_spec([{"type": "bar", "orientation": "h", "y": list(range(k)), "x": list(counts),
                              "customdata": names,
                              "marker": {"color": [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(k)]},
                              "hovertemplate": "%{customdata}: %{x}<extra></extra>"}], layout)
