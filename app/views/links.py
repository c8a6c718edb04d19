"""Navigation that carries a setup in the URL, so it works however the session began."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.engine.config import RunConfig
from core.lessons.presets import get_preset

from ..text import dataset_available

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"


def open_in_playground(cfg: RunConfig) -> None:
    """Switch to the Playground with ``cfg`` in the address bar (a stored result replays there at once)."""
    st.switch_page(PAGES_DIR / "playground.py", query_params=cfg.to_query())


def open_preset_in_playground(name: str) -> None:
    """Switch to the Playground with lesson preset ``name`` loaded as it trains here (its Digits settings where
    its dataset is missing)."""
    here, _ = get_preset(name).for_server(dataset_available)
    st.switch_page(PAGES_DIR / "playground.py", query_params={**here.config.to_query(), "preset": name})
