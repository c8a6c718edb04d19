"""The app shell's sidebar: which device trains, how busy the job queue is, which data is here; the
browser cookie (app.views.jobs.keep_browser_cookie)."""
from __future__ import annotations

import functools

import streamlit as st
import torch

from core.serve.jobs import get_manager

from ..text import FALLBACK_DATASET, dataset_available, dataset_title, plain
from .jobs import keep_browser_cookie

DOWNLOADABLE = ("mnist", "fashion-mnist")
STORE_NOTICES_SEEN = "gl_store_notices_seen"  # session: the run store's notices this session has been shown


@functools.lru_cache(maxsize=1)
def device_label() -> str:
    """The GPU's name when there is one, else CPU (with its thread count)."""
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def missing_datasets() -> list[str]:
    """Titles of the built-in datasets whose files are not on this server."""
    return [dataset_title(name) for name in DOWNLOADABLE if not dataset_available(name)]


def warmup_line(workers: list[dict]) -> str | None:
    """What the sidebar says while the training processes warm up (None once they are ready)."""
    waiting = [w for w in workers if w["state"] != "ready"]
    if not waiting:
        return None
    return (f"Warming up the trainer ({len(workers) - len(waiting)} of {len(workers)} ready): importing the "
            "engine, loading the default data, one tiny training step. Train works now; the first run may "
            "wait a few seconds.")


def sidebar_status() -> None:
    keep_browser_cookie(st.sidebar)  # a reload is then the same browser: its quota, uploads and runs
    manager = get_manager()
    manager.start()  # idempotent: app.launch started them with the server; plain `streamlit run`, now
    counts = manager.counts()
    st.sidebar.caption(f"Training on {device_label()} · jobs: {counts['running']} running, "
                       f"{counts['queued']} queued")
    warming = warmup_line(manager.warmup_status())
    if warming:
        st.sidebar.caption(warming)
    store = manager.store
    if store.health():
        st.sidebar.warning(plain(store.health()), icon="💾")
    seen = st.session_state.setdefault(STORE_NOTICES_SEEN, set())
    for problem in store.problems[-2:]:  # e.g. a damaged database moved aside: said once per session
        if problem not in seen:
            seen.add(problem)
            st.sidebar.warning(plain(problem), icon="💾")
    missing = missing_datasets()
    if missing:
        st.sidebar.caption(f"Not on this server: {' and '.join(missing)}. Lessons that use them run on "
                           f"{dataset_title(FALLBACK_DATASET)} (scikit-learn's digits, no download) instead.")
