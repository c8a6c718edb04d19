"""The app shell's sidebar: which device trains, and how busy the job queue is."""
from __future__ import annotations

import functools

import streamlit as st

from core.jobs import get_manager


@functools.lru_cache(maxsize=1)
def device_label() -> str:
    """The GPU's name when there is one, else CPU (with its thread count)."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def sidebar_status() -> None:
    counts = get_manager().counts()
    st.sidebar.caption(f"Training on {device_label()} · jobs: {counts['running']} running, "
                       f"{counts['queued']} queued")
