"""Navigation that carries a setup in the URL, so it works however the session began."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.engine.config import RunConfig

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"


def open_in_playground(cfg: RunConfig) -> None:
    """Switch to the Playground with ``cfg`` in the address bar (a stored result replays there at once)."""
    st.switch_page(PAGES_DIR / "playground.py", query_params=cfg.to_query())
