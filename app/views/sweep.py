"""Sweep views (Sweeps page): the space's numbers, a study live (one sampler or two side by side),
its trial table, and the top trials trained on MNIST. Session state holds sweep JSON and job keys only."""
from __future__ import annotations

import optuna
import streamlit as st

from core.lab.grid import cell_events
from core.lab.sweep.space import SAMPLER_TITLES, SweepConfig
from core.lab.sweep.study import load_study, top_configs
from core.serve import budget

from ..figures import sweep as sf
from ..records.jobs import JobState
from ..text import plain
from .charts import plotly_chart
from .jobs import config_status, job_state, polling_fragment, status_line

POLL_SECONDS = 2.0
JOB, PAIR, TRANSFER = "sw_job", "sw_pair", "sw_transfer"  # session: a sweep's JSON, a pair's JSON, (grid key, trials)
TRIAL_COLUMNS = {"playground": st.column_config.LinkColumn("Playground", display_text="open run"),
                 "val acc": st.column_config.NumberColumn(format="%.4f"),
                 "test acc": st.column_config.NumberColumn(format="%.4f")}


def space_view(sweep: SweepConfig, trial_gflop: float, budget_problem: str | None = None) -> None:
    """Grid, random or Bayesian: what this space's size and cost mean for each sampler (and why it may not run)."""
    try:
        limit = budget.cap("GRADIENT_LAB_MAX_SWEEP_COST")
    except budget.Refused:  # the same words are the budget problem below
        limit = None
    if limit is not None:
        with st.expander("Grid, random or Bayesian? This space's numbers", expanded=True):
            st.markdown(sf.explain_space(sweep, trial_gflop, limit))
    if budget_problem:
        st.error(plain(budget_problem), icon="🚫")


def shown_sweeps(sweep: SweepConfig | None = None) -> list[SweepConfig]:
    """The form's ``sweep`` when this server has it and this session did not start it (a link or a fresh
    browser shows a stored study at once), else the sweeps this session started last: the sampler pair, or
    one sweep, or none."""
    if PAIR in st.session_state:
        started = [SweepConfig.from_json(t) for t in st.session_state[PAIR]]
    else:
        started = [SweepConfig.from_json(st.session_state[JOB])] if JOB in st.session_state else []
    if sweep is not None and sweep not in started and config_status(sweep) is not None:
        return [sweep]
    return started


def _end(state: JobState):
    return next((e for e in reversed(state.events) if e.kind in ("finished", "failed")), None)


def trials_line(config: SweepConfig, state: JobState | None) -> str:
    """'Random search: running · 3 of 8 trials told to the study' (or the sweep's outcome)."""
    title = SAMPLER_TITLES[config.sampler]
    if state is None:
        return f"{title}: not started"
    end = _end(state)
    if end is not None:
        return f"{title}: {state.status} · {getattr(end, 'reason', '') or getattr(end, 'message', '')}"
    start = next((e for e in state.events if e.kind == "sweep_started"), None)
    told = (start.done_before if start else 0) + sum(e.kind == "trial_done" for e in state.events)
    return f"{title}: {state.status} · {told} of {config.n_trials} trials told to the study"


def _sweep_status(config: SweepConfig) -> None:
    state = job_state(config.key())
    st.markdown(plain(trials_line(config, state)))
    if state is not None:
        status_line(state, None, what="sweep", progress=False,
                    started=any(e.kind == "sweep_started" for e in state.events),
                    cancel_help="Stop the sweep; finished trials are kept and Run sweep resumes it.")


def _studies(configs: list[SweepConfig]) -> list[tuple[str, optuna.Study]]:
    studies = []
    for config in configs:
        study = load_study(config)
        if study is not None and sf.completed(study):
            studies.append((SAMPLER_TITLES[config.sampler], study))
    return studies


def trial_table(config: SweepConfig, study: optuna.Study) -> None:
    """Every trial with its parameters, accuracies and a link that opens its run in the Playground."""
    st.dataframe(sf.trial_table(config, study), hide_index=True, key="sw_trials_table", column_config=TRIAL_COLUMNS)


def _one_study(config: SweepConfig, study: optuna.Study) -> None:
    figures = sf.study_figures(study)
    tabs = st.tabs(["Parallel coordinates", "Parameter importances", "Slice plots", "Trials"])
    for tab, name in zip(tabs[:3], ("parallel", "importance", "slice")):
        with tab:
            figure = figures[name]
            if isinstance(figure, str):
                st.info(figure)
            else:
                plotly_chart(figure, f"sw_{name}")
    with tabs[3]:
        trial_table(config, study)


def _study_part(configs: list[SweepConfig]) -> None:
    for config in configs:
        _sweep_status(config)
    studies = _studies(configs)
    if not studies:
        st.info("The charts appear when the first trial has finished.", icon="⏳")
        return
    plotly_chart(sf.history_figure(studies), "sw_history")
    if len(configs) == 2:  # the two-sampler view: best-so-far overlaid, then who won
        st.markdown(f"**Conclusion.** {sf.compare_samplers(studies) if len(studies) == 2 else 'Waiting for both.'}")
    else:
        _one_study(configs[0], studies[0][1])


def study_view(configs: list[SweepConfig]) -> None:
    """The study (or the sampler pair) live: status, best-so-far history, Optuna's plots, trials."""
    names = " and ".join(f"“{c.study_name()}”" for c in configs)
    st.caption(plain(f"The server saves every finished trial (study {names}): a sweep cut short picks up where it "
                     "stopped when it runs again."))
    polling_fragment([c.key() for c in configs], lambda polling: _study_part(configs), every=POLL_SECONDS,
                     name="sw_study")


def transfer_source(configs: list[SweepConfig]) -> SweepConfig | None:
    """The one finished Fashion-MNIST sweep whose top trials can be tried on MNIST, if shown."""
    if len(configs) != 1 or configs[0].base.dataset != "fashion-mnist":
        return None
    state = job_state(configs[0].key())
    return configs[0] if state is not None and state.done else None


def top_trials(config: SweepConfig) -> list[tuple[optuna.trial.FrozenTrial, object]]:
    """The sweep's three best trials with their run configs (none before a trial finished)."""
    study = load_study(config)
    return top_configs(config, study) if study is not None else []


def _transfer_part(key: str, top: list) -> None:
    state = job_state(key)
    if state is None:
        st.info("This MNIST job is not known on this server any more.")
        return
    per_cell = cell_events(state.events)
    status_line(state, None, what="MNIST job", progress=False, started=bool(per_cell))
    ends = {i: next((e for e in reversed(ev) if e.kind in ("finished", "failed")), None) for i, ev in per_cell.items()}
    st.dataframe(sf.transfer_table(top, {i: e for i, e in ends.items() if e is not None}), hide_index=True)


def transfer_view(top: list) -> None:
    """The top trials' MNIST job, live, when this session trained these very trials."""
    job = st.session_state.get(TRANSFER)
    if job and top and [t.number for t, _ in top] == list(job[1]):
        polling_fragment(job[0], lambda polling: _transfer_part(job[0], top), every=POLL_SECONDS, name="sw_transfer")
