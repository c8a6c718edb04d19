"""Gradient-check views: a check job's status and result (which weights it checked, its chart, scatter, table
and notes), and the seed's 0.99999 beside the correct check. Checks compute on the job manager's workers;
the page only reads their results."""
from __future__ import annotations

import streamlit as st

from core.lab.gradcheck.mistakes import SEED_VARIANTS, reads_one
from core.lab.gradcheck.result import GradCheck
from core.lab.gradcheck.task import GradCheckConfig
from core.lessons.sentences import check_diagnosis, checked_weights_text, seed_check_lines

from ..figures.gradcheck import layer_bars_figure, scatter_figure
from ..records.jobs import JobState
from ..text import plain
from .charts import plotly_chart
from .jobs import config_status, job_state, polling_fragment, status_line

CHART = {"displaylogo": False}
POLL_SECONDS = 1.0


def check_results(state: JobState | None) -> list[GradCheck]:
    """Every check a job holds, one per initialization checked (none while it runs, or when it failed)."""
    return [GradCheck.from_event(e) for e in state.events if e.kind == "gradcheck"] if state is not None else []


def check_result(state: JobState | None) -> GradCheck | None:
    """The (first) check a finished job holds (None while it runs, or when it failed)."""
    return next(iter(check_results(state)), None)


def _check_part(key: str) -> None:
    state = job_state(key)
    if state is None:
        return
    status_line(state, None, what="gradient check", progress=False, started=True,
                cancel_help="Stop waiting for this check (a check that has started finishes first).")
    if not state.done:
        st.caption("Computing finite differences on the server's workers…")
        return
    result = check_result(state)
    if result is not None:
        check_view(result)


def check_job_view(check: GradCheckConfig | None, last_key: str | None) -> None:
    """The check of the form's settings when this server has it (done or under way), else this session's last."""
    shown = check.key() if check is not None and config_status(check) is not None else last_key
    if shown is None:
        st.caption("Press **Check the gradients** to compare backprop with finite differences for these settings.")
        return
    if check is None or shown != check.key():
        st.info("These are the results of your last check. The settings above have changed since: press "
                "**Check the gradients** to check them.", icon="ℹ️")
    polling_fragment(shown, lambda polling: _check_part(shown), every=POLL_SECONDS, name="gc_check")


def check_view(result: GradCheck) -> None:
    """Which weights, summary, notes, per-layer bar chart, scatter and table of one check."""
    s = result.settings
    st.markdown(plain(checked_weights_text(s)))
    st.metric("Relative difference, all checked entries", f"{result.overall:.2e}",
              help="‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖) over every checked entry at once.")
    headline, explanation = check_diagnosis(result)
    st.markdown(plain(headline))
    if explanation:
        st.info(plain(explanation), icon="🩺")
    st.caption(plain(f"{s['dtype']}, ε = {s['eps']:.0e}, {s['examples']} examples, backprop {s['backprop']}, "
                     f"checked at {s['where']}; {result.checked} of {result.total} entries."))
    for note in result.notes:
        st.info(plain(note), icon="ℹ️")
    left, right = st.columns(2)
    plotly_chart(layer_bars_figure(result.table()), "gc_bars", left, config=CHART)
    plotly_chart(scatter_figure(result.pairs), "gc_scatter", right, config=CHART)
    st.dataframe(result.table(), hide_index=True, width="stretch",
                 column_config={"rel diff": st.column_config.NumberColumn(format="%.2e")})


def seed_view(checks: tuple[GradCheckConfig, ...]) -> None:
    """The seed's three checks once this server has them (done or under way)."""
    if all(config_status(check) is None for check in checks):
        st.caption("Press **Check the B network three ways** to see them side by side.")
        return
    keys = [check.key() for check in checks]
    polling_fragment(keys, lambda polling: _seed_part(keys), every=POLL_SECONDS, name="gc_seed")


def _seed_part(keys: list[str]) -> None:
    states = [job_state(key) for key in keys]
    if any(state is None or not state.done for state in states):
        st.caption("Checking the B network three ways on the server's workers…")
        return
    results = [check_results(state) for state in states]
    if not all(results):
        for state in states:
            status_line(state, None, what="gradient check", progress=False, started=True)
        return
    seed_table(dict(zip(SEED_VARIANTS, results)))


def seed_table(variants: dict[str, list[GradCheck]]) -> None:
    """The B network's check done right and with each suspected cause of the seed's printed value (float32 at
    several initializations, one row each), and what they say."""
    rows = []
    for label, results in variants.items():
        for result in results:
            seed = f" (seed {result.settings['seed']})" if len(results) > 1 and "seed" in result.settings else ""
            row = {"check": label + seed, "all entries": result.overall, "1 − value": 1 - result.overall,
                   "≈1": reads_one(result.overall)}
            row |= {r.layer: r.rel_diff for r in result.layers}
            rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.3e") for k in rows[0]
                                if k not in ("check", "≈1")})
    right, float32, copy_ = variants.values()
    for line in seed_check_lines(right[0], float32, copy_[0]):
        st.markdown(plain(line))
