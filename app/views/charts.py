"""THE place a Plotly figure is shown: as built, or scaled for a projector in the presenter view."""
from __future__ import annotations

from typing import Any

import streamlit as st

from ..figures.presenter import for_room

PRESENTING = "gl_presenting"  # session: the presenter view is on (set by app/forms/lecture.py)
CHART_CONFIG = {"displaylogo": False}


def presenting() -> bool:
    return bool(st.session_state.get(PRESENTING))


def plotly_chart(fig, key: str, slot: Any = None, config: dict | None = None, **kwargs) -> None:
    """``st.plotly_chart`` in ``slot`` (a column, or the page), scaled when presenting."""
    shown = for_room(fig) if presenting() else fig
    (slot or st).plotly_chart(shown, key=key, config=config or CHART_CONFIG, **kwargs)
