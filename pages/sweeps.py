"""Sweeps (seed 003 Q4, Q5, Q10): grid, random and Bayesian search with Optuna, watched live."""
from __future__ import annotations

import streamlit as st

from app.figures import sweep as sf
from app.forms.sweep import sweep_form
from app.text import dataset_available, plain
from app.views.jobs import cancel, polling_fragment, submit
from core.config import ConfigError
from core.grid import GridConfig, cell_events
from core.jobs import get_manager
from core.sweep import (SAMPLER_TITLES, SweepConfig, SweepStorageError, check_budget, data_shape, load_study,
                        max_cost, redact, storage_url, top_configs)

POLL_SECONDS = 2.0
JOB, PAIR, TRANSFER = "sw_job", "sw_pair", "sw_transfer"  # session state holds sweep JSON and job keys only

st.title("Sweeps")
st.caption("Which settings make the best network? Instead of guessing, search: declare which knobs may vary and "
           "how, give a budget of trials, and let Optuna choose the trials. Trials that share a data stream train "
           "side by side as one batched job; every trial is a normal run you can open in the Playground.")
manager = get_manager()

# --- 1 · the search space -------------------------------------------------------------------------
st.subheader("1 · The search space", divider="gray")
sweep, problems = sweep_form()
for message in problems.values():
    st.error(plain(message), icon="🚫")

cost_problem = None
if sweep is not None:
    shape = data_shape(sweep.base)
    trial_gflop = sweep.trial_cost(shape)
    try:
        check_budget(sweep, shape)
    except ConfigError as exc:
        cost_problem = str(exc)
    with st.expander("Grid, random or Bayesian? This space's numbers", expanded=True):
        st.markdown(sf.explain_space(sweep, trial_gflop, max_cost()))
    if cost_problem:
        st.error(plain(cost_problem), icon="🚫")


def _submit(config: SweepConfig) -> str | None:
    try:
        return submit(config)
    except SweepStorageError as exc:
        st.error(plain(exc), icon="🚫")
        return None


ready = sweep is not None and cost_problem is None
left, mid, right = st.columns(3)
if left.button("Run sweep", type="primary", icon="▶️", disabled=not ready, key="sw_run",
               help="Resumes a cancelled or interrupted sweep with its finished trials."):
    if _submit(sweep):
        st.session_state[JOB] = sweep.to_json()
        st.session_state.pop(PAIR, None)
if mid.button("Same budget, two samplers", icon="⚖️", disabled=not ready or sweep.sampler == "grid", key="sw_pair_run",
              help="Random search and TPE on this space with this budget, one after the other, best-so-far overlaid."):
    pair = [sweep.replace(sampler="random"), sweep.replace(sampler="tpe")]
    if all(_submit(c) for c in pair):
        st.session_state[PAIR] = [c.to_json() for c in pair]
        st.session_state.pop(JOB, None)


def _jobs() -> list[SweepConfig]:
    if PAIR in st.session_state:
        return [SweepConfig.from_json(t) for t in st.session_state[PAIR]]
    return [SweepConfig.from_json(st.session_state[JOB])] if JOB in st.session_state else []


jobs = _jobs()
if jobs and right.button("Cancel", icon="⏹️", key="sw_cancel", help="Finished trials are kept; Run resumes."):
    for config in jobs:
        cancel(config.key())


# --- 2 · the study, live --------------------------------------------------------------------------
def _status(config: SweepConfig) -> tuple[str, bool]:
    snap = manager.snapshot(config.key())
    if snap is None:
        return "not started", True
    told = sum(e.kind == "trial_done" for e in snap.events)
    start = next((e for e in snap.events if e.kind == "sweep_started"), None)
    before = start.done_before if start else 0
    end = next((e for e in reversed(snap.events) if e.kind in ("finished", "failed")), None)
    text = f"{SAMPLER_TITLES[config.sampler]}: {snap.status}"
    if snap.status == "queued":
        text += f" (position {snap.queue_position + 1 if snap.queue_position is not None else '?'} in the queue)"
    elif end is not None:
        text += f" · {getattr(end, 'reason', '') or getattr(end, 'message', '')}"
    else:
        text += f" · {before + told} of {config.n_trials} trials told to the study"
    return text, snap.done


def _study_view(configs: list[SweepConfig]) -> None:
    statuses = [_status(c) for c in configs]
    for text, _ in statuses:
        st.markdown(plain(text))
    studies = []
    for config in configs:
        study = load_study(config)
        if study is not None and sf.completed(study):
            studies.append((SAMPLER_TITLES[config.sampler], study))
    if not studies:
        st.info("The charts appear when the first trial has finished.", icon="⏳")
        return
    st.plotly_chart(sf.history_figure(studies), key="sw_history")
    if len(configs) == 2:
        st.markdown(f"**Conclusion.** {sf.compare_samplers(studies) if len(studies) == 2 else 'Waiting for both.'}")
        return
    config, (_, study) = configs[0], studies[0]
    figures = sf.study_figures(study)
    tabs = st.tabs(["Parallel coordinates", "Parameter importances", "Slice plots", "Trials"])
    for tab, name in zip(tabs[:3], ("parallel", "importance", "slice")):
        with tab:
            figure = figures[name]
            st.plotly_chart(figure, key=f"sw_{name}") if not isinstance(figure, str) else st.info(figure)
    with tabs[3]:
        st.dataframe(sf.trial_table(config, study), hide_index=True, key="sw_trials_table",
                     column_config={"playground": st.column_config.LinkColumn("Playground", display_text="open run"),
                                    "val acc": st.column_config.NumberColumn(format="%.4f"),
                                    "test acc": st.column_config.NumberColumn(format="%.4f")})


if jobs:
    st.subheader("2 · The study", divider="gray")
    st.caption(plain(f"Stored in {redact(storage_url())} as {', '.join(c.study_name() for c in jobs)}."))
    polling_fragment([c.key() for c in jobs], lambda polling: _study_view(jobs), every=POLL_SECONDS,
                     name="sw_study")

# --- 3 · transfer to MNIST (seed 003 Q10) ---------------------------------------------------------
if len(jobs) == 1 and jobs[0].base.dataset == "fashion-mnist" and _status(jobs[0])[1]:
    st.subheader("3 · The top three on MNIST", divider="gray")
    st.caption("Do settings found on Fashion-MNIST carry over to handwritten digits? The three best trials train "
               "on MNIST as one batched job (the Playground's D-mnist-transfer preset holds three picked by hand).")
    study = load_study(jobs[0])
    top = top_configs(jobs[0], study) if study is not None else []
    if not dataset_available("mnist"):
        st.info("MNIST is not available on this server, so the transfer cannot run here.")
    elif top and st.button("Train the top three on MNIST", icon="🔁", key="sw_transfer_run"):
        grid = GridConfig.from_runs([(f"trial {t.number}", cfg.replace(dataset="mnist")) for t, cfg in top])
        st.session_state[TRANSFER] = (submit(grid), [t.number for t, _ in top])
    if TRANSFER in st.session_state and top and [t.number for t, _ in top] == st.session_state[TRANSFER][1]:
        key = st.session_state[TRANSFER][0]

        def _transfer(polling: bool) -> None:
            snap = manager.snapshot(key)
            per_cell = cell_events(snap.events) if snap else {}
            ends = {i: next((e for e in reversed(ev) if e.kind in ("finished", "failed")), None)
                    for i, ev in per_cell.items()}
            st.markdown(plain(f"MNIST job: {snap.status if snap else 'not started'}"))
            st.dataframe(sf.transfer_table(top, {i: e for i, e in ends.items() if e is not None}), hide_index=True)

        polling_fragment(key, _transfer, every=POLL_SECONDS, name="sw_transfer")
