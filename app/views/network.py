"""The Playground's network diagram (issue 24.2): a 2-D set's small network drawn neuron by neuron, live.

:func:`network_view` draws a run job's latest diagram (redrawn at each log point while it trains); clicking a neuron
shows its map large beside it, over the training points. A network too large to draw gets the reason, naming the
limit (core.engine.neurons), and the rest of the page as usual.
"""
from __future__ import annotations

import streamlit as st

from core.engine.config import TOY_DATASETS, RunConfig
from core.engine.neurons import DIAGRAM_LIMIT, diagram_problem

from ..figures.network import network_figure, neuron_figure
from ..records.jobs import JobState
from ..records.network import network_diagram
from ..text import plain
from .charts import plotly_chart
from .jobs import cached, job_state, polling_fragment, run_view
from .run import LAYERS_POLL_SECONDS, training_points

PICKED = "gl_network_neuron"  # session: {job key: (column, unit)} of the neuron shown large


def network_view(key: str) -> None:
    """A run job's network diagram (on a 2-D set only), polling while it trains; or why it has none."""
    state = job_state(key)
    if state is None:
        return
    config = run_view(state).config
    if config and config.get("dataset") not in TOY_DATASETS:
        return  # known not to be drawn (a job not started yet is decided inside the fragment)
    polling_fragment(key, lambda polling: _network_part(key), every=LAYERS_POLL_SECONDS, name=f"network_{key}")


def _network_part(key: str) -> None:
    state = job_state(key)
    config = run_view(state).config if state is not None else {}
    if config.get("dataset") not in TOY_DATASETS:
        return
    try:
        problem = diagram_problem(RunConfig.from_dict(config, strict=False))
    except Exception as exc:  # a config this version cannot read: say so, keep the rest
        problem = f"No network diagram: this run's settings cannot be read here ({exc})."
    st.subheader("The network, neuron by neuron", divider="gray")
    if problem:
        st.info(plain(problem), icon="🕸️")
        return
    st.caption(plain(f"Each square is one neuron: its output over the whole input plane (the plane of the decision "
                     f"regions above; blue above 0, orange below, white at 0; each map on its own scale), the inputs "
                     f"on the left, each class's probability on the right. Each line is a weight: blue positive, "
                     f"orange negative, thicker when larger. Redrawn every “Log every” steps and at the end. "
                     f"Click a neuron to see its map large. Drawn for networks within a limit: {DIAGRAM_LIMIT}."))
    _diagram_part(state)


def _chart_key(key: str) -> str:
    return f"network_{key}"


def _picked(key: str) -> None:
    """on_select: keep the clicked neuron (the chart's own selection empties when the next log point redraws it)."""
    chart = st.session_state.get(_chart_key(key))
    points = chart["selection"]["points"] if chart and "selection" in chart else []
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, (list, tuple)) and len(custom) == 2:
            st.session_state.setdefault(PICKED, {})[key] = (int(custom[0]), int(custom[1]))
            return


def _diagram_part(state: JobState) -> None:
    key, view = state.key, run_view(state)
    diagram = network_diagram(view.boundary, view.config, view.classes)
    if diagram is None:
        st.caption("The diagram appears at the first log point." if not state.done else
                   "This run has no network diagram recorded (it was trained before runs kept one).")
        return
    picked = st.session_state.get(PICKED, {}).get(key)
    picked = picked if picked is not None and diagram.neuron(*picked) is not None else None
    left, right = st.columns([3, 2]) if picked is not None else (st.container(), None)
    drawn = (state.key, state.token, diagram.step)
    fig = cached(drawn + (picked,), "network", lambda: network_figure(diagram, picked))
    plotly_chart(fig, _chart_key(key), left, on_select=lambda: _picked(key), selection_mode="points")
    if right is None:
        return
    try:
        cfg = RunConfig.from_dict(view.config, strict=False)
        points, labels = cached(("training points", cfg.key()), "points", lambda: training_points(cfg))
    except Exception:  # the data went away: the map alone
        points = labels = None
    plotly_chart(cached(drawn + (picked,), "neuron", lambda: neuron_figure(diagram, *picked, points, labels,
                                                                          view.classes)),
                 f"neuron_{key}", right)
    if right.button("Close the large map", key=f"neuron_close_{key}", icon="✖️"):
        st.session_state.get(PICKED, {}).pop(key, None)
        st.rerun(scope="fragment")

