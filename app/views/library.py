"""The Run library view: the stored runs (filtered) in one table; one selected row opens in the Playground,
several are compared side by side (curves overlaid, the settings that differ); the ranking below.

The selection is kept as run keys (session state holds ids only), so it follows its runs when the table
changes under it (a filter, a new run, an eviction) and a run that left the store is said so.
"""
from __future__ import annotations

import threading

import streamlit as st

from core.engine.config import ConfigError, RunConfig
from core.serve.jobs import get_manager

from ..figures.compare import histogram_overlay_figure, overlay_figure
from ..figures.library import val_ranking_figure
from ..records.compare import histogram_at, shared_layers
from ..records.jobs import JobState
from ..records.library import (MAX_COMPARE, LibraryFilter, LibraryRow, compare_labels, compare_problem, config_diff,
                               filter_rows, grid_cells, library_rows, library_table, picked_keys, selection_update,
                               shared_words, val_ranking)
from ..records.run import weight_histories
from ..text import describe_run, plain, plural, upload_is_mine
from .charts import plotly_chart
from .jobs import cached, job_state, run_view
from .links import open_in_playground

SHOWN = "gl_library_shown"  # session: run keys of the table rows as last drawn
ROWS = "gl_library_rows"  # session: the table's selected rows as last drawn
PICKED = "gl_library_picked"  # session: run keys selected

_lock = threading.Lock()
_grid_cells: dict[tuple, dict] = {}  # (grid key, saved_at) -> grid_cells(...), process-wide


def stored_runs() -> list[tuple[RunConfig, dict]]:
    """(config, meta) of every stored single run this schema can load, newest first; runs on another
    browser's upload are left out (an upload is private)."""
    runs = []
    for meta in get_manager().store.list_runs(kind="run"):
        try:
            cfg = RunConfig.from_dict(meta.get("config") or {})
        except (ConfigError, TypeError):
            continue  # a run from an older schema: not loadable into the widgets
        if upload_is_mine(cfg.dataset):
            runs.append((cfg, meta))
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


def stored_rows() -> list[LibraryRow]:
    """Every stored single run as a library row, newest first (a spinner while the store is read: it takes seconds
    with many runs, and the page looked empty meanwhile)."""
    with st.spinner("Reading the runs stored on this server…", show_time=True):
        return library_rows(stored_runs(), stored_grid_cells())


def batched_with(key: str) -> int:
    """How many networks trained batched together with run ``key`` (itself included; 1 = alone)."""
    return stored_grid_cells().get(key, ("", 1))[1]


def _selection(key: str, listed: list[str], stored: set[str]) -> list[str]:
    """The selected run keys, the table's selection moved to their rows now; says when one left the store."""
    state = st.session_state.get(key)
    rows = list(state["selection"]["rows"]) if state and "selection" in state else []
    picked = picked_keys(rows, st.session_state.get(ROWS), st.session_state.get(SHOWN, []),
                         st.session_state.get(PICKED, []))
    kept, new_rows, gone = selection_update(picked, listed, stored)
    if gone:
        st.warning(f"{plural(gone, 'selected run')} {'is' if gone == 1 else 'are'} no longer stored and "
                   f"{'was' if gone == 1 else 'were'} unselected: the store drops its oldest runs when it is full. "
                   "Train it again in the Playground to see it here.", icon="🗑️")
    if new_rows != rows:
        st.session_state[key] = {"selection": {"rows": new_rows, "columns": []}}
    st.session_state[SHOWN], st.session_state[ROWS], st.session_state[PICKED] = listed, new_rows, kept
    return kept


def library_view(rows: list[LibraryRow], chosen: LibraryFilter | None = None, key: str = "library_table") -> None:
    """The table of ``rows`` that pass ``chosen``, the selected runs compared, the validation ranking."""
    for problem in get_manager().store.problems:
        st.warning(plain(problem))
    if not rows:
        st.info("No stored runs yet. Train something in the Playground.")
        return
    listed = filter_rows(rows, chosen or LibraryFilter())
    picked = _selection(key, [row.key for row in listed], {row.key for row in rows})
    if not listed:
        st.info(f"None of the {plural(len(rows), 'stored run')} passes these filters.")
        return
    st.caption(f"{plural(len(listed), 'run')} of {len(rows)} stored. Select one to open it in the Playground, "
               f"or up to {MAX_COMPARE} to compare them.")
    st.dataframe(library_table(listed), hide_index=True, on_select="rerun", selection_mode="multi-row", key=key,
                 placeholder="n/a",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "val accuracy": st.column_config.NumberColumn(
                                    format="%.4f", help="Validation accuracy at the end of training."),
                                "s/epoch": st.column_config.NumberColumn(
                                    format="%.2f", help="Seconds per epoch of a run trained alone. A run "
                                    "trained batched with others has no time of its own."),
                                "hidden": st.column_config.TextColumn(width="medium"),
                                "label": st.column_config.TextColumn("lesson / variant", width="large"),
                                "lr": st.column_config.NumberColumn(format="%g")})
    by_key = {row.key: row for row in listed}
    selected = [by_key[k] for k in picked]
    if len(selected) == 1:
        st.caption(plain(describe_run(selected[0].config)))
        if st.button("Open in Playground", type="primary", icon="🧪", key=f"{key}_open"):
            open_in_playground(selected[0].config)
    if selected:
        compare_view(selected)
    ranking_view(listed)


def compare_view(selected: list[LibraryRow]) -> None:
    """The selected runs' curves overlaid and the settings that differ (at most MAX_COMPARE runs)."""
    problem = compare_problem(len(selected))
    if problem:
        st.warning(problem, icon="✋")
        return
    present, views, states, missing = [], [], [], 0
    for row in selected:
        state = job_state(row.key)
        if state is None or not state.events:
            missing += 1
            continue
        present.append(row)
        views.append(run_view(state))
        states.append(state)
    if missing:
        st.warning(f"{plural(missing, 'selected run')} could not be read from the store (evicted or damaged "
                   "since the table was listed), so it is left out.", icon="🗑️")
    if not present:
        return
    labels, shared = shared_words(compare_labels(present))
    runs = list(zip(labels, views))
    if len(present) > 1:
        st.subheader(f"{len(present)} runs side by side" + (f" ({shared})" if shared else ""))
    left, right = st.columns(2)
    plotly_chart(overlay_figure(runs, "loss"), "library_cmp_loss", left)
    plotly_chart(overlay_figure(runs, "acc"), "library_cmp_acc", right)
    histogram_overlay_view(labels, states)
    if len(present) > 1:
        diff = config_diff(present, labels)
        if diff.empty:
            st.caption("These runs have the same settings.")
        else:
            st.markdown("**Settings that differ** (every other setting is the same in these runs)")
            st.dataframe(diff, hide_index=True, key="library_diff")


HIST_AT = {"at the first log point": 0.0, "a quarter of the way through": 0.25, "halfway through": 0.5,
           "three quarters of the way through": 0.75, "at the last log point": 1.0}  # words -> share of the log points


def histogram_overlay_view(labels: list[str], states: list[JobState]) -> None:
    """One chosen layer's weight histograms of the compared runs overlaid (TensorBoard's runs overlaid), at a
    chosen point of their training."""
    histories = [cached(state.version, "weight_histories", lambda n=len(state.events), s=state: weight_histories(
        s.events[:n])) for state in states]
    layers = shared_layers(histories)
    if not layers:
        return
    left, right = st.columns([1, 2])
    layer = left.selectbox("Layer", layers, key="library_hist_layer",
                           help="Weight layers in forward order: fc1 reads the input, the last one gives the classes.")
    at = right.select_slider("When", list(HIST_AT), value="at the last log point", key="library_hist_at",
                             help="Each run's log point this far through its own training.")
    runs = []
    for i, (label, layer_histories) in enumerate(zip(labels, histories)):
        history = next((h for h in layer_histories if h.layer == layer), None)
        hist = histogram_at(history, HIST_AT[at]) if history is not None else None
        if hist is not None:
            runs.append((i, label, hist))
    plotly_chart(histogram_overlay_figure(layer, runs, at), "library_cmp_hist")


def ranking_view(listed: list[LibraryRow]) -> None:
    """Validation accuracy of the listed runs, best first."""
    ranking = val_ranking(listed)
    if ranking.empty:
        return
    plotly_chart(val_ranking_figure(ranking), "library_ranking")
    st.caption("Each bar is a run's best validation accuracy at the end of an epoch, on its own validation split: "
               "runs on different datasets are not comparable. Hover a bar for the run and that epoch.")
