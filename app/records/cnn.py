"""A CNN run's live filters, from its events: the latest first-layer filters and their smoothness at every log
point (core.engine.events.ConvFilters). Pure: no Streamlit, no Plotly."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LiveFilters:
    """The first conv layer's filters at the latest log point that kept them, and the mean smoothness per log point."""

    layer: str
    step: int  # of the filters drawn
    total: int  # filters in the layer
    filters: np.ndarray  # [shown, in, kh, kw]
    smoothness: np.ndarray  # per shown filter, at ``step``
    steps: list[int]  # every log point
    means: list[float]  # the layer's mean smoothness at each of ``steps``
    initial: float  # the mean at initialization


def live_filters(events: list) -> LiveFilters | None:
    """The run's live filters (None before its first log point, or for a network without a convolution)."""
    series = [e for e in events if e.kind == "filters"]
    latest = next((e for e in reversed(series) if e.kept), None)
    if latest is None:
        return None
    return LiveFilters(latest.layer, latest.step, latest.total, np.asarray(latest.filters),
                       np.asarray(latest.smoothness, dtype=float), [e.step for e in series],
                       [e.mean_smoothness for e in series], latest.initial_smoothness)
