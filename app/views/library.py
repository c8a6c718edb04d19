"""The Run library view: every stored run in one table; a selected row opens in the Playground."""
from __future__ import annotations

import threading

import streamlit as st

from core.config import ConfigError, RunConfig
from core.jobs import get_manager

from ..records.library import grid_cells, library_table
from ..text import describe_run, plain
from .links import open_in_playground

_lock = threading.Lock()
_grid_cells: dict[tuple, dict] = {}  # (grid key, saved_at) -> grid_cells(...), process-wide


def stored_runs() -> list[tuple[RunConfig, dict]]:
    """(config, meta) of every stored single run this schema can load, newest first."""
    runs = []
    for meta in get_manager().store.list_runs(kind="run"):
        try:
            runs.append((RunConfig.from_dict(meta.get("config") or {}), meta))
        except (ConfigError, TypeError):
            continue  # a run from an older schema: not loadable into the widgets
    return runs


def stored_grid_cells() -> dict[str, tuple[str, int]]:
    """Labels and batched-group sizes of every cell of the stored grids (read once per stored grid)."""
    store = get_manager().store
    out: dict[str, tuple[str, int]] = {}
    for meta in store.list_runs(kind="grid"):
        version = (meta.get("key"), meta.get("saved_at"))
        with _lock:
            known = _grid_cells.get(version)
        if known is None:
            stored = store.get(meta["key"])
            started = next((e for e in stored.events if e.kind == "grid_started"), None) if stored else None
            known = grid_cells(started) if started is not None else {}
            with _lock:
                _grid_cells[version] = known
        out.update(known)
    return out


def batched_with(key: str) -> int:
    """How many networks trained batched together with run ``key`` (itself included; 1 = alone)."""
    return stored_grid_cells().get(key, ("", 1))[1]


def library_view(key: str = "library_table") -> None:
    runs = stored_runs()
    for problem in get_manager().store.problems:
        st.warning(plain(problem))
    if not runs:
        st.info("No stored runs yet. Train something in the Playground.")
        return
    table = library_table(runs, stored_grid_cells())
    picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key=key,
                          placeholder="n/a",
                          column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                         "val accuracy": st.column_config.NumberColumn(format="%.4f"),
                                         "s/epoch": st.column_config.NumberColumn(
                                             format="%.2f", help="Seconds per epoch of a run trained alone. A run "
                                             "trained batched with others has no time of its own."),
                                         "hidden": st.column_config.TextColumn(width="medium"),
                                         "label": st.column_config.TextColumn("lesson / variant", width="medium"),
                                         "lr": st.column_config.NumberColumn(format="%g")})
    rows = picked.selection.rows if picked is not None else []
    if rows:
        cfg = runs[rows[0]][0]
        st.caption(plain(describe_run(cfg)))
        if st.button("Open in Playground", type="primary", icon="🧪", key=f"{key}_open"):
            open_in_playground(cfg)
