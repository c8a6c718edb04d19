"""Plotly figure builders: pure functions of a :class:`~app.runview.RunView` or plain arrays.

No Streamlit here, so every figure is unit-testable. Text that may come from users (class
names) goes through :func:`plain_label`: Plotly reads a few HTML tags in labels, so names are
HTML-escaped and shown literally.
"""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from .runview import LogPoint, RunView, downsample, layer_matrix

CLASS_COLORS = qualitative.Plotly + qualitative.D3 + qualitative.Set3
TRAIN_COLOR, VAL_COLOR, CHANCE_COLOR = "#1f77b4", "#ff7f0e", "#8a8a8a"
HEIGHT = 330


def plain_label(text: object, limit: int = 40) -> str:
    """User text as a literal Plotly label (HTML-escaped, one line, truncated)."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def _base(title: str, height: int = HEIGHT, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=40, b=10), uirevision="keep",
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0), **layout)
    return fig


def _waiting(fig: go.Figure, text: str = "Waiting for the first log point…") -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _mode(n: int) -> str:
    return "lines+markers" if n <= 40 else "lines"


def layer_colors(n: int) -> list[str]:
    """First layer dark, last layer light, so depth order reads off the colours."""
    return sample_colorscale("Viridis", [i / max(n - 1, 1) * 0.9 for i in range(n)]) if n else []


# --- curves ---------------------------------------------------------------------------------
def loss_figure(view: RunView) -> go.Figure:
    """Train and validation loss per log point, against epochs."""
    fig = _base("Loss (train vs validation)", xaxis_title="epoch", yaxis_title="loss")
    ev = view.evals
    if not len(ev):
        return _waiting(fig)
    mode = _mode(len(ev))
    fig.add_scatter(x=ev["epoch"], y=_finite(ev["train_loss"]), name="train", mode=mode, customdata=ev["step"],
                    line=dict(color=TRAIN_COLOR),
                    hovertemplate="epoch %{x:.2f} (step %{customdata})<br>train loss %{y:.4f}<extra></extra>")
    fig.add_scatter(x=ev["epoch"], y=_finite(ev["val_loss"]), name="validation", mode=mode, customdata=ev["step"],
                    line=dict(color=VAL_COLOR),
                    hovertemplate="epoch %{x:.2f} (step %{customdata})<br>validation loss %{y:.4f}<extra></extra>")
    return fig


def accuracy_figure(view: RunView) -> go.Figure:
    """Train and validation accuracy per log point, with the chance level for reference."""
    fig = _base("Accuracy (train vs validation)", xaxis_title="epoch", yaxis_title="accuracy",
                yaxis_range=[0, 1.02])
    ev = view.evals
    if not len(ev):
        return _waiting(fig)
    mode = _mode(len(ev))
    fig.add_scatter(x=ev["epoch"], y=_finite(ev["train_acc"]), name="train", mode=mode, line=dict(color=TRAIN_COLOR),
                    hovertemplate="epoch %{x:.2f}<br>train accuracy %{y:.4f}<extra></extra>")
    fig.add_scatter(x=ev["epoch"], y=_finite(ev["val_acc"]), name="validation", mode=mode, line=dict(color=VAL_COLOR),
                    hovertemplate="epoch %{x:.2f}<br>validation accuracy %{y:.4f}<extra></extra>")
    chance = view.chance_accuracy
    if chance is not None:
        fig.add_scatter(x=[0, max(float(ev["epoch"].max()), 1e-9)], y=[chance, chance], mode="lines",
                        name=f"chance ({chance:.2f})", line=dict(color=CHANCE_COLOR, dash="dot", width=1.5),
                        hovertemplate="always guessing the most common class: %{y:.3f}<extra></extra>")
    return fig


def step_loss_figure(view: RunView, max_points: int = 1500) -> go.Figure:
    """Training loss of every step (binned when long) and its moving average."""
    fig = _base("Training loss per step", xaxis_title="step", yaxis_title="loss")
    steps = view.step_losses
    if not len(steps):
        return _waiting(fig)
    clean = steps.assign(loss=_finite(steps["loss"]))
    small = downsample(clean, "step", "loss", max_points)
    fig.add_scatter(x=small["step"], y=small["loss"], name="per step", mode="lines",
                    line=dict(width=1, color="rgba(120,120,120,0.45)"))
    smooth = small["loss"].ewm(span=max(3, len(small) // 25), ignore_na=True).mean()
    fig.add_scatter(x=small["step"], y=smooth, name="moving average", mode="lines",
                    line=dict(width=2, color=TRAIN_COLOR))
    return fig


def grad_norm_figure(view: RunView) -> go.Figure:
    """Gradient norm of every weight layer over time, log scale (vanishing = lines far below)."""
    fig = _base("Gradient norm per layer (log scale)", xaxis_title="step", yaxis_title="‖∇W‖")
    fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    names, steps, matrix = layer_matrix(view, "grad_norm")
    if not len(steps):
        return _waiting(fig)
    for name, color, row in zip(names, layer_colors(len(names)), matrix):
        values = _finite(row)
        values[values <= 0] = np.nan
        fig.add_scatter(x=steps, y=values, name=plain_label(name), mode=_mode(len(steps)), line=dict(color=color),
                        hovertemplate=f"{plain_label(name)}<br>step %{{x}}<br>‖∇W‖ %{{y:.3g}}<extra></extra>")
    return fig


def layer_heatmap_figure(view: RunView, value: str = "weight_delta") -> go.Figure:
    """Layer x time heatmap of log10 of a per-layer quantity (mean |ΔW| or gradient norm)."""
    titles = {"weight_delta": "Mean |ΔW| per layer between log points (log10)",
              "weight_change": "Mean |W − W₀| per layer (log10)",
              "grad_norm": "Gradient norm per layer (log10)"}
    fig = _base(titles.get(value, value), xaxis_title="step")
    names, steps, matrix = layer_matrix(view, value)
    if not len(steps):
        return _waiting(fig)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(_finite(matrix))
    z[~np.isfinite(z)] = np.nan
    fig.add_heatmap(x=steps, y=[plain_label(n) for n in names], z=np.round(z, 3), colorscale="Viridis",
                    colorbar=dict(title="log10", thickness=12),
                    hovertemplate="%{y}<br>step %{x}<br>log10 = %{z:.2f}<extra></extra>")
    fig.update_yaxes(autorange="reversed", title="layer (input at top)")
    return fig


def saturation_figure(view: RunView) -> go.Figure:
    """Fraction of dead ReLU units or saturated sigmoid/tanh units per layer over time."""
    activation = view.config.get("activation", "")
    if activation == "relu":
        title = "Dead ReLU units per layer (zero for every probe example)"
    elif activation in ("sigmoid", "tanh"):
        title = f"Saturated {activation} units per layer (slope < 10% of its maximum)"
    else:
        title = "Dead / saturated units per layer"
    fig = _base(title, xaxis_title="step", yaxis_title="fraction of units", yaxis_range=[0, 1.02],
                yaxis_tickformat=".0%")
    names, steps, matrix = layer_matrix(view, "saturation")
    measured = [(n, c, r) for n, c, r in zip(names, layer_colors(len(names)), matrix) if np.isfinite(r).any()]
    if not len(steps):
        return _waiting(fig)
    if not measured:
        return _waiting(fig, f"Not measured for the {activation or 'chosen'} activation "
                             "(only ReLU, sigmoid and tanh have dead/saturated units).")
    for name, color, row in measured:
        fig.add_scatter(x=steps, y=_finite(row), name=plain_label(name), mode=_mode(len(steps)),
                        line=dict(color=color),
                        hovertemplate=f"{plain_label(name)}<br>step %{{x}}<br>%{{y:.1%}}<extra></extra>")
    return fig


# --- weight-change matrices -----------------------------------------------------------------
def weight_heatmaps_figure(point: LogPoint, layer_names: list[str], layer_shapes: list | None = None,
                           per_row: int = 4) -> go.Figure:
    """|W_t − W_0| of every layer at one log point, on one shared log10 colour scale."""
    n = len(point.heatmaps)
    rows = max(1, math.ceil(n / per_row))
    cols = max(1, min(n, per_row))
    titles = []
    for i in range(n):
        name = layer_names[i] if i < len(layer_names) else f"layer {i + 1}"
        shape = layer_shapes[i] if layer_shapes and i < len(layer_shapes) else None
        titles.append(plain_label(name) + (f" [{shape[0]}×{math.prod(shape[1:])}]" if shape else ""))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or None, horizontal_spacing=0.04,
                        vertical_spacing=0.12)
    logs = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for m in point.heatmaps:
            logs.append(np.log10(np.asarray(m, dtype=float)))
    finite = np.concatenate([z[np.isfinite(z)] for z in logs]) if logs else np.array([])
    zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (-6.0, 0.0)
    if zmin == zmax:
        zmin -= 1
    # exactly unchanged weights (e.g. into dead ReLU units) are drawn with the darkest colour, not left blank
    logs = [np.where(np.isfinite(z), z, zmin) for z in logs]
    for i, z in enumerate(logs):
        fig.add_heatmap(z=np.round(z, 3), row=i // cols + 1, col=i % cols + 1, coloraxis="coloraxis",
                        hovertemplate="out %{y}, in %{x}<br>log10 |ΔW| = %{z:.2f}<extra></extra>")
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=zmin, cmax=zmax,
                                     colorbar=dict(title="log10", thickness=12)),
                      title=dict(text=f"How far each weight moved from its start, |W − W₀|, at step {point.step} "
                                      f"(epoch {point.epoch:g}); log10, one colour scale for all layers",
                                 x=0, font=dict(size=15)),
                      height=60 + 240 * rows, margin=dict(l=10, r=10, t=80, b=10))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return fig


# --- results ---------------------------------------------------------------------------------
def confusion_figure(confusion: list[list[int]], classes: list[str]) -> go.Figure:
    """Counts of (true, predicted) classes on the test set."""
    z = np.asarray(confusion, dtype=int)
    k = z.shape[0]
    names = [plain_label(c, 18) for c in classes[:k]] + [str(i) for i in range(len(classes), k)]
    fig = _base("Confusion matrix (test set)", height=max(HEIGHT, 120 + 28 * k))
    fig.add_heatmap(z=z, x=list(range(k)), y=list(range(k)), colorscale="Blues", showscale=False,
                    text=z, texttemplate="%{text}" if k <= 20 else None,
                    customdata=np.array([[[names[t], names[p]] for p in range(k)] for t in range(k)]),
                    hovertemplate="true %{customdata[0]}<br>predicted %{customdata[1]}<br>%{z} examples<extra></extra>")
    fig.update_xaxes(title="predicted class", tickvals=list(range(k)), ticktext=names, side="bottom")
    fig.update_yaxes(title="true class", tickvals=list(range(k)), ticktext=names, autorange="reversed")
    return fig


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

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
    fig = go.Figure()
    for i in range(k):
        img = images[i]
        rgb = np.repeat(img, 3, axis=0) if c == 1 else img[:3]
        rgb = np.transpose(rgb, (1, 2, 0)).repeat(scale, axis=0).repeat(scale, axis=1)
        r, col = divmod(i, cols)
        y0, x0 = r * cell_h + pad, col * cell_w + pad
        mosaic[y0:y0 + th, x0:x0 + tw] = rgb
        text = "<br>".join(plain_label(line, 16) for line in str(labels[i]).split("\n")) if i < len(labels) else ""
        fig.add_annotation(x=x0 + tw / 2, y=y0 + th + 3, text=text, showarrow=False, yanchor="top",
                           font=dict(size=11, color="#31333F"), xref="x", yref="y")
    fig.add_trace(go.Image(source=_png_data_uri(mosaic), hoverinfo="skip"))
    width, height = mosaic.shape[1], mosaic.shape[0]
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=15)), width=width + 20, height=height + 60,
                      margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white")
    fig.update_xaxes(visible=False, range=[0, width])
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return fig


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


def _class_colorscale(k: int) -> list:
    scale = []
    for i in range(k):
        color = CLASS_COLORS[i % len(CLASS_COLORS)]
        scale += [[i / k, color], [(i + 1) / k, color]]
    return scale


def toy_scatter_figure(x: np.ndarray, y: np.ndarray, classes: list[str], title: str = "Data",
                       grid: dict | None = None) -> go.Figure:
    """2-D points coloured by class; with ``grid`` (RunFinished.decision_grid) the decision regions."""
    fig = _base(title, height=420, xaxis_title="x₁", yaxis_title="x₂")
    k = len(classes)
    if grid:
        fig.add_heatmap(x=grid["xs"], y=grid["ys"], z=grid["pred"], zmin=-0.5, zmax=k - 0.5,
                        colorscale=_class_colorscale(k), opacity=0.35, showscale=False, hoverinfo="skip")
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    for i, cls in enumerate(classes):
        pts = x[y == i]
        fig.add_scatter(x=np.round(pts[:, 0], 4), y=np.round(pts[:, 1], 4), mode="markers", name=plain_label(cls),
                        marker=dict(size=5, color=CLASS_COLORS[i % len(CLASS_COLORS)],
                                    line=dict(width=0.5, color="white")))
    fig.update_yaxes(scaleanchor="x")
    return fig


def class_counts_figure(counts: list[int], classes: list[str], title: str = "Examples per class") -> go.Figure:
    fig = _base(title, xaxis_title="class", yaxis_title="examples")
    k = len(counts)
    names = [plain_label(classes[i], 18) if i < len(classes) else str(i) for i in range(k)]
    fig.add_bar(x=list(range(k)), y=counts, marker_color=[CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(k)],
                customdata=names, hovertemplate="%{customdata}: %{y}<extra></extra>")
    fig.update_xaxes(tickvals=list(range(k)), ticktext=names)
    return fig
