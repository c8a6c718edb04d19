"""Figures for a projector (the presenter view): every text at least MIN_TEXT_PX, lines and markers thicker.

Applied to a copy where a figure is shown (app/views/charts.py), so cached figures stay as built.
"""
from __future__ import annotations

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


def for_room(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` that reads from the back of a room: fonts, lines and markers scaled."""
    spec = fig.to_dict()
    layout = spec.setdefault("layout", {})
    _fonts_at_least(spec)
    font = layout.setdefault("font", {})
    font["size"] = max(BASE_TEXT_PX, font.get("size") or 0)
    title = layout.get("title")
    if isinstance(title, dict) and title.get("text"):
        title.setdefault("font", {})["size"] = max(TITLE_TEXT_PX, title.get("font", {}).get("size") or 0)
    layout.setdefault("hoverlabel", {}).setdefault("font", {})["size"] = BASE_TEXT_PX  # Plotly's own is 13 px
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
