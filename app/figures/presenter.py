"""Figures for a projector (the presenter view): every text at least MIN_TEXT_PX, lines and markers thicker.

Applied to a copy where a figure is shown (app/views/charts.py), so cached figures stay as built.
"""
from __future__ import annotations

import re
from typing import Any

import plotly.graph_objects as go

from .run import figure_from_spec

MIN_TEXT_PX = 20  # the smallest text a room reads at 1280x720
BASE_TEXT_PX = 22  # what texts without a size of their own inherit
TITLE_TEXT_PX = 26
LINE_SCALE = 2.0
MARKER_SCALE = 1.6
DEFAULT_LINE_PX = 2  # Plotly's default line width
DEFAULT_MARKER_PX = 6  # Plotly's default marker size
LINED = ("scatter", "scattergl", "scatter3d")


def _bigger(size: Any) -> Any:
    if isinstance(size, (list, tuple)):
        return [max(MIN_TEXT_PX, s or 0) for s in size]
    return max(MIN_TEXT_PX, size or 0)


def _fonts_at_least(node: Any) -> None:
    """Every explicit font (``font``, ``tickfont``, ``textfont``, ...) in a figure's dict at least MIN_TEXT_PX."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("font") and isinstance(value, dict) and "size" in value:
                value["size"] = _bigger(value["size"])
            _fonts_at_least(value)
    elif isinstance(node, list):
        for value in node:
            _fonts_at_least(value)


def _scaled(size: Any, default: float, scale: float) -> Any:
    if isinstance(size, (list, tuple)):
        return [(s if s is not None else default) * scale for s in size]
    return (size if size is not None else default) * scale


def _font_at_least(owner: dict, key: str = "font", size: int = MIN_TEXT_PX) -> None:
    font = owner.setdefault(key, {})
    font["size"] = _bigger(font.get("size")) if size == MIN_TEXT_PX else max(size, font.get("size") or 0)


def _axis(axis: dict) -> None:
    """An axis's ticks and title: explicit, since a theme's template sets its own (smaller) sizes."""
    _font_at_least(axis, "tickfont")
    title = axis.setdefault("title", {})
    if isinstance(title, dict):
        _font_at_least(title)


def for_room(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` that reads from the back of a room: fonts, lines and markers scaled."""
    spec = fig.to_dict()
    layout = spec.setdefault("layout", {})
    _fonts_at_least(spec)
    _font_at_least(layout, size=BASE_TEXT_PX)
    title = layout.setdefault("title", {})
    _font_at_least(title, size=TITLE_TEXT_PX)
    _font_at_least(title.setdefault("subtitle", {}))
    legend = layout.setdefault("legend", {})
    _font_at_least(legend)
    _font_at_least(legend.setdefault("title", {}))
    _font_at_least(layout.setdefault("hoverlabel", {}), size=BASE_TEXT_PX)  # Plotly's own is 13 px
    _axis(layout.setdefault("coloraxis", {}).setdefault("colorbar", {}))
    three_d = any(t.get("type") in ("scatter3d", "surface", "mesh3d") for t in spec.get("data", []))
    if not three_d:
        layout.setdefault("xaxis", {})
        layout.setdefault("yaxis", {})
    for name, value in list(layout.items()):
        if isinstance(value, dict) and re.fullmatch(r"[xy]axis\d*", name):
            _axis(value)
        if isinstance(value, dict) and re.fullmatch(r"scene\d*", name):
            for axis in ("xaxis", "yaxis", "zaxis"):
                _axis(value.setdefault(axis, {}))
    for trace in spec.get("data", []):
        if "colorbar" in trace or trace.get("type") in ("heatmap", "contour", "surface", "histogram2d"):
            _axis(trace.setdefault("colorbar", {}))
        if isinstance(trace.get("marker"), dict) and "colorbar" in trace["marker"]:
            _axis(trace["marker"]["colorbar"])
    for trace in spec.get("data", []):
        if trace.get("type", "scatter") not in LINED:
            continue
        mode = trace.get("mode", "lines+markers")
        if "lines" in mode:
            line = trace.setdefault("line", {})
            line["width"] = _scaled(line.get("width"), DEFAULT_LINE_PX, LINE_SCALE)
        if "markers" in mode:
            marker = trace.setdefault("marker", {})
            marker["size"] = _scaled(marker.get("size"), DEFAULT_MARKER_PX, MARKER_SCALE)
    return figure_from_spec(spec.get("data", []), layout)
