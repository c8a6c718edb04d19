"""Gradient-check figures: pure functions of a check's rows and (numeric, analytic) pairs.

Plain Plotly specs (like the other figure builders): a per-layer log-scale bar chart with the
1e-7 and 1e-5 lines the seeds quote, and a scatter of numeric against analytic entries.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go

from core.lab.gradcheck.result import GOOD, SUSPECT

VERDICT_COLORS = {"right": "#2ca02c", "doubtful": "#ff7f0e", "wrong": "#d62728"}
FLOOR = 1e-17  # a difference of exactly 0 is drawn at this height (log axes have no 0)
HEIGHT = 360


def _layout(title: str, **extra) -> dict:
    layout = {"title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}}, "height": HEIGHT,
              "margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "showlegend": False}
    layout.update(extra)
    return layout


def layer_bars_figure(rows: list[dict], title: str = "Relative difference per layer") -> go.Figure:
    """One bar per layer (log scale) coloured by verdict, with dashed lines at 1e-7 and 1e-5.

    ``rows``: dicts with layer, rel diff, verdict, entries checked, total entries (GradCheck.table())."""
    heights = [max(r["rel diff"], FLOOR) if math.isfinite(r["rel diff"]) else 1.0 for r in rows]
    top = max([1.0] + heights)
    bars = {"type": "bar", "x": [r["layer"] for r in rows], "y": heights,
            "marker": {"color": [VERDICT_COLORS[r["verdict"]] for r in rows]},
            "text": [f"{r['rel diff']:.1e}" for r in rows], "textposition": "outside",
            "customdata": [[r["entries checked"], r["total entries"], r["verdict"]] for r in rows],
            "hovertemplate": "%{x}: %{text}<br>%{customdata[0]} of %{customdata[1]} entries checked"
                             "<br>%{customdata[2]}<extra></extra>"}
    lines = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": level, "y1": level,
              "line": {"dash": "dash", "color": color, "width": 1.5}} for level, color in
             ((GOOD, VERDICT_COLORS["right"]), (SUSPECT, VERDICT_COLORS["wrong"]))]
    notes = [{"xref": "paper", "x": 1, "y": math.log10(level), "text": label, "showarrow": False,
              "xanchor": "right", "yanchor": "bottom", "font": {"size": 11, "color": color}} for level, label, color in
             ((GOOD, "1e-7: right", VERDICT_COLORS["right"]), (SUSPECT, "1e-5: wrong above", VERDICT_COLORS["wrong"]))]
    low = min([GOOD / 100] + heights)
    layout = _layout(title, shapes=lines, annotations=notes,
                     yaxis={"type": "log", "title": {"text": "‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖)"},
                            "range": [math.floor(math.log10(low)) - 0.5, math.log10(top) + 0.7], "exponentformat": "power"},
                     xaxis={"title": {"text": "layer (input → output)"}, "type": "category"})
    return go.Figure({"data": [bars], "layout": layout}, _validate=False)


def scatter_figure(pairs: list[dict], title: str = "Numeric vs analytic entries") -> go.Figure:
    """Each sampled entry as (numeric, analytic), one colour per layer, with the line numeric = analytic."""
    layers = list(dict.fromkeys(p["layer"] for p in pairs))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    data = []
    for i, layer in enumerate(layers):
        mine = [p for p in pairs if p["layer"] == layer]
        data.append({"type": "scattergl", "mode": "markers", "name": layer,
                     "x": [p["analytic"] for p in mine], "y": [p["numeric"] for p in mine],
                     "marker": {"size": 6, "opacity": 0.7, "color": palette[i % len(palette)]},
                     "hovertemplate": f"{layer}<br>analytic %{{x:.3e}}<br>numeric %{{y:.3e}}<extra></extra>"})
    values = [abs(v) for p in pairs for v in (p["numeric"], p["analytic"]) if math.isfinite(v)]
    reach = max(values + [1e-12]) * 1.05
    data.insert(0, {"type": "scatter", "mode": "lines", "name": "numeric = analytic", "x": [-reach, reach],
                    "y": [-reach, reach], "line": {"dash": "dot", "color": "#8a8a8a"}, "hoverinfo": "skip"})
    layout = _layout(title, showlegend=True,
                     legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
                     xaxis={"title": {"text": "analytic (backprop)"}, "range": [-reach, reach], "exponentformat": "e"},
                     yaxis={"title": {"text": "numeric (central difference)"}, "range": [-reach, reach],
                            "exponentformat": "e"})
    return go.Figure({"data": data, "layout": layout}, _validate=False)
