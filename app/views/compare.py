"""The comparison view: a family of runs live, overlaid curves, the gap, weights, one results table.

A family is given as job ids only, ``[{"label", "key", "grid"?, "cell"?}]``: a variant that
trains as a cell of a grid job is read from that job while it is known here, else from the
run filed under its own key (e.g. after a restart).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.engine.events import SERVED_FROM_STORE
from core.lab.compare import ComparisonConfig
from core.lab.grid import cell_events
from core.serve.jobs import get_manager
from core.lessons.sentences import GapRun, gap_run

from ..figures import compare as cf
from ..records.compare import (CE_COLUMNS, cell_status, outcome_summary, results_table, status_text,
                               train_scoring_words, weight_snapshot)
from ..records.jobs import JobState
from ..records.reported import SWITCH_HELP, reported_label
from ..text import plain
from .charts import plotly_chart
from .jobs import cached, cancel, job_state, polling_fragment, run_view

POLL_SECONDS = 1.0
REDRAW_SECONDS = 2.0
SMALL_VALIDATION = 100  # below this many validation examples, say how coarse validation accuracy is


def _cells(grid: JobState) -> dict[int, list]:
    n = len(grid.events)
    return cached(grid.version, "cells", lambda: cell_events(grid.events[:n]), 64)


def family_states(runs: list[dict]) -> tuple[list[JobState | None], list[str], list[int]]:
    """(a state per variant, notes of its grid jobs, how many variants trained batched with each)."""
    grids: dict[str, JobState | None] = {}
    states, notes, groups = [], [], []
    for run in runs:
        grid_key = run.get("grid")
        if grid_key:
            if grid_key not in grids:
                grids[grid_key] = job_state(grid_key)
                started = next((e for e in grids[grid_key].events if e.kind == "grid_started"), None) \
                    if grids[grid_key] else None
                notes += list(started.notes) if started is not None else []
            grid = grids[grid_key]
            if grid is not None:
                events = _cells(grid).get(run["cell"], [])
                started = next((e for e in grid.events if e.kind == "grid_started"), None)
                group = next((len(g) for g in (started.batched if started else []) if run["cell"] in g), 1)
                status = cell_status(grid.status, grid.done, events)
                states.append(JobState(run["key"], status, events, grid.from_cache, grid.saved_at,
                                       grid.error if status == "failed" else "",
                                       grid.queue_position if grid.status == "queued" else None))
                groups.append(group)
                continue
        states.append(job_state(run["key"]))
        groups.append(1)
    return states, notes, groups


def gap_runs(runs: list[dict]) -> dict[str, GapRun | None]:
    """label -> each variant's final train and validation accuracy with their example counts (None until it
    finished), for core.lessons.sentences.regularization_sentence."""
    states, _, _ = family_states(runs)
    return {run["label"]: gap_run(state.events) if state is not None else None for run, state in zip(runs, states)}


def job_keys(runs: list[dict]) -> list[str]:
    """The jobs a family's variants train in (grid jobs and single runs)."""
    return list(dict.fromkeys(r.get("grid") or r["key"] for r in runs))


def shown_family(family: list[tuple[str, Any]], slot: str) -> list[dict] | None:
    """The family a page shows: what this session started from ``slot`` when it is this family; else the
    family's own variants when this server has every one of them (a link or a fresh browser shows stored
    results at once); else what this session started last (None before any)."""
    started = st.session_state.get(slot)
    entries = [{"label": label, "key": cfg.key()} for label, cfg in family]
    if started and [r["key"] for r in started] == [e["key"] for e in entries]:
        return started
    manager = get_manager()
    if entries and all(manager.snapshot(entry["key"]) is not None for entry in entries):
        return entries
    return started


def family_status(runs: list[dict] | None, config: ComparisonConfig | None = None) -> str | None:
    """'running' while any of the family's jobs is queued or running; 'finished' when every variant of ``config``
    has a stored result on this server (its button then says "again"); else None."""
    manager = get_manager()
    for key in job_keys(runs or []):
        snap = manager.snapshot(key)
        if snap is not None and not snap.done:
            return "running"
    if config is not None and all((snap := manager.snapshot(cfg.key())) is not None
                                  and snap.status in SERVED_FROM_STORE for _, cfg in config.family()):
        return "finished"
    return None


OVERFITTING_WORDS = ("Overfitting shows as a validation loss that rises while the training loss keeps falling, and "
                     "as a growing gap. Click a variant in a legend to hide it, double-click to show it alone.")
L1_L2_WORDS = ("Compare the shapes: L1 drives many weights to (almost) zero, which shows as a spike in the middle "
               "and a large share near 0; L2 shrinks all weights towards zero.")


def comparison_view(runs: list[dict], poll_seconds: float = POLL_SECONDS, prefix: str = "cmp",
                    as_reported: bool = False, curves_words: str = OVERFITTING_WORDS,
                    weights_words: str = L1_L2_WORDS,
                    live: Callable[[list[JobState | None], bool], None] | None = None) -> None:
    """Live comparison of a family: polls while any of its jobs is queued or running (``as_reported``: the results
    table also shows each test accuracy as the coursework's reports computed it). ``curves_words`` and
    ``weights_words``: the lesson's captions of the curves and of the weights. ``live(states, polling)``: a
    lesson's own live part, drawn under the curves in the same fragment (a state per variant)."""
    if runs:
        polling_fragment(job_keys(runs), lambda polling: _comparison(runs, polling, prefix, as_reported,
                                                                     curves_words, weights_words, live),
                         every=poll_seconds,
                         name=f"{prefix}_compare")


_drawn_lock = threading.Lock()
_drawn: OrderedDict = OrderedDict()  # family -> (monotonic time, data version) of the charts last built


def _chart_version(family: tuple, version: tuple, polling: bool) -> tuple:
    """Which data version to chart: the newest, except while training, when charts are rebuilt at most every
    REDRAW_SECONDS (process-wide, so every viewer of a family shares them): building Plotly figures holds the
    GIL that the training threads need."""
    key = (family, tuple(v[0] for v in version))
    now = time.monotonic()
    with _drawn_lock:
        last = _drawn.get(key)
        if polling and last is not None and now - last[0] < REDRAW_SECONDS:
            return last[1]
        _drawn[key] = (now, version + (family,))
        _drawn.move_to_end(key)
        while len(_drawn) > 64:
            _drawn.popitem(last=False)
        return version + (family,)


def _comparison(runs: list[dict], polling: bool, prefix: str, as_reported: bool = False,
                curves_words: str = OVERFITTING_WORDS, weights_words: str = L1_L2_WORDS,
                live: Callable[[list[JobState | None], bool], None] | None = None) -> None:
    states, grid_notes, groups = family_states(runs)
    labels = [r["label"] for r in runs]
    views = [run_view(s) if s is not None else None for s in states]
    present = [(label, view) for label, view in zip(labels, views) if view is not None]
    snapshots = [cached(s.version, "weights", lambda s=s: weight_snapshot(s.events)) if s is not None else None
                 for s in states]
    vkey = _chart_version(tuple(labels), tuple(s.version if s else (r["key"], None, 0)
                                               for r, s in zip(runs, states)), polling)

    def chart(name: str, build: Callable[[], Any]) -> None:
        plotly_chart(cached(vkey, name, build), f"{prefix}_{name}")

    statuses = [status_text(s.status if s else None, bool(s and s.from_cache), s.queue_position if s else None)
                for s in states]
    if polling:
        _progress_table(labels, states, views, statuses)
        if grid_notes:
            st.caption(plain("Variants of the same shape train batched in one job; " + "; ".join(grid_notes) + "."))
        if st.button("Cancel all", icon="⏹️", key=f"{prefix}_cancel",
                     help="Stop every variant still queued or running; the charts keep what they have learned."):
            for key in job_keys(runs):
                cancel(key)
    reasons = [(v.reason if v is not None else "") or (s.error if s else "") for s, v in zip(states, views)]
    for line in outcome_summary(labels, [s.status if s else None for s in states], reasons):
        st.warning(plain(line), icon="⚠️")

    left, right = st.columns(2)
    with left:
        chart("loss", lambda: cf.overlay_figure(present, "loss"))
    with right:
        chart("acc", lambda: cf.overlay_figure(present, "acc"))
    left, right = st.columns(2)
    with left:
        chart("gap", lambda: cf.gap_figure(present))
    with right:
        chart("nearzero", lambda: cf.near_zero_figure(list(zip(labels, snapshots))))
    st.caption(f"{curves_words} Train metrics are scored like validation, in eval mode (dropout off, BatchNorm on "
               f"its running statistics), on {train_scoring_words(views)}, so the gap compares like with like.")
    n_val = min((int(v.started.dataset.get("n_val") or 0) for v in views if v is not None and v.started is not None),
                default=0)
    if 0 < n_val < SMALL_VALIDATION:
        st.info(f"The validation set has only {n_val} examples, so validation accuracy moves in steps of "
                f"1/{n_val} = {1 / n_val:.0%}: small differences between variants are noise. More examples per "
                "class (or a larger validation fraction) give smoother curves.", icon="ℹ️")
    if live is not None:
        live(states, polling)

    st.subheader("Results", divider="gray")
    keep = [i for i, v in enumerate(views) if v is not None]
    table = results_table([(labels[i], views[i]) for i in keep], [snapshots[i] for i in keep],
                          [statuses[i] for i in keep], [groups[i] for i in keep], as_reported)
    four = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(table, hide_index=True, width="stretch", key=f"{prefix}_results", placeholder="n/a",
                 column_config={
                     **{c: four for c in ("train loss", "val loss", "test loss", "train acc", "val acc", "test acc")},
                     **{c: st.column_config.NumberColumn(format="%.4f", help="The true cross-entropy of the run's "
                                                         "predictions, beside the loss it trained on.")
                        for c in CE_COLUMNS},
                     "trained on": st.column_config.TextColumn(help="The loss the run trained on, which its loss "
                                                                    "columns hold."),
                     "gap": st.column_config.NumberColumn(format="%.4f", help="Train minus validation accuracy."),
                     "weights ≈ 0": st.column_config.NumberColumn(format="percent",
                                                                  help="Share of all weights with |w| < 0.001."),
                     "params": st.column_config.NumberColumn(format="localized"),
                     "s/epoch": st.column_config.NumberColumn(
                         format="%.2f", help="Seconds per epoch; for variants trained batched, of the whole group."),
                     "trained": st.column_config.TextColumn(help="Alone, or batched with other variants in one "
                                                                 "model (then the time is the group's)."),
                     reported_label("test acc"): st.column_config.NumberColumn(format="%.4f", help=SWITCH_HELP)})
    chance = next((v.chance_accuracy for v in views if v is not None and v.chance_accuracy is not None), None)
    if chance is not None:
        st.caption(f"Final metrics of each variant. Chance level (always guessing the most common class): "
                   f"{chance:.3f}. Losses are data losses (without the L1/L2 penalty)"
                   + (", each the loss its variant trained on (“trained on”); the true cross-entropy columns compare "
                      "across variants." if "trained on" in table else ", so they compare across variants."))
    st.subheader("Inside the weights", divider="gray")
    st.caption(weights_words)
    chart("hist", lambda: cf.weight_hist_figure(list(zip(labels, snapshots))))


def _progress_table(labels: list[str], states, views, statuses: list[str]) -> None:
    rows = []
    for label, state, view, status in zip(labels, states, views, statuses):
        prog = view.progress() if view is not None else None
        last = view.evals.iloc[-1] if view is not None and len(view.evals) else None
        rows.append({"variant": label, "status": status,
                     "progress": prog.fraction if prog is not None else (1.0 if state and state.done else 0.0),
                     "epoch": prog.epoch if prog is not None else None,
                     "validation accuracy": float(last["val_acc"]) if last is not None else None})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", placeholder="n/a",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                            format="percent"),
                                "epoch": st.column_config.NumberColumn(format="%.1f"),
                                "validation accuracy": st.column_config.NumberColumn(format="%.4f")})
