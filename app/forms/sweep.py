"""The sweep form (Sweeps page): which knobs to search and their distributions, drawn from the RunConfig schema.

Every limit, label and help text comes from the knob's :class:`core.engine.config.Knob`; values are
checked by :class:`core.lab.sweep.space.SweepConfig` (so a bad range gets the schema's message). The form
round-trips through the URL (``SweepConfig.to_query``). The Run, two-sampler and MNIST transfer
buttons are the kit's :func:`app.views.jobs.train_button`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, FIELDS, MAX_HIDDEN_LAYERS, MAX_WIDTH, TOY_DATASETS, ConfigError, format_value, knob_of
from core.lab.grid import GridConfig
from core.lessons.families import SWEEP_PRESETS
from core.lessons.setups import SWEEP_FIRST_PRESET, SweepSetup, sweep_pair, sweep_preset, sweeps_setup
from core.lab.sweep.space import (MAX_TRIALS, PRUNER_TITLES, PRUNERS, SAMPLER_TITLES, SAMPLERS, Dist, SweepConfig,
                                  data_shape)
from core.serve import budget

from ..text import dataset_available, dataset_label, dataset_title, plain
from ..views.jobs import config_status, submit_job, train_button
from ..views.sweep import JOB, PAIR, TRANSFER
from . import url

SEARCHABLE = ("depth", "width", "activation", "init", "norm", "dropout", "l1", "l2", "optimizer", "lr", "momentum",
              "weight_decay", "batch_size", "epochs")
DERIVED_LABELS = {"depth": ("Hidden layers (depth)", f"Number of hidden layers, 0-{MAX_HIDDEN_LAYERS}; with width "
                            "it builds the hidden layers.", 0, MAX_HIDDEN_LAYERS),
                  "width": ("Units per hidden layer (width)", f"Width of every hidden layer, 1-{MAX_WIDTH}.", 1,
                            MAX_WIDTH)}
KIND_LABELS = {"categorical": "list of values", "int": "whole-number range", "log": "log-uniform range"}
IMAGE_DATASETS = [d for d in BUILTIN_DATASETS if d not in TOY_DATASETS and d != "fashion3"]
PAGE, PRESET_KEY, SAVED_KEY = "sweeps", "sw_preset", "sw_saved"


def label_of(name: str) -> str:
    return DERIVED_LABELS[name][0] if name in DERIVED_LABELS else knob_of(name).label


def _help(name: str) -> str:
    return DERIVED_LABELS[name][1] if name in DERIVED_LABELS else knob_of(name).help


def _bounds(name: str) -> tuple[float, float]:
    if name in DERIVED_LABELS:
        return DERIVED_LABELS[name][2], DERIVED_LABELS[name][3]
    k = knob_of(name)
    return k.lo, k.hi


def _type(name: str) -> str:
    return "int" if name in DERIVED_LABELS else FIELDS[name].type


def kinds_for(name: str) -> list[str]:
    if name not in DERIVED_LABELS and knob_of(name).choices:
        return ["categorical"]
    return ["categorical", "int"] if _type(name) == "int" else ["categorical", "log"]


def load(sweep: SweepConfig) -> None:
    """Put a sweep into the widget keys (from a callback or before the widgets render)."""
    state = st.session_state
    state["sw_dataset"], state["sw_epochs"] = sweep.base.dataset, sweep.base.epochs
    state["sw_sampler"], state["sw_pruner"] = sweep.sampler, sweep.pruner
    state["sw_trials"], state["sw_seed"] = sweep.trials, sweep.seed
    state["sw_base"] = sweep.base
    state["sw_knobs"] = [d.name for d in sweep.space]
    for d in sweep.space:
        state[f"sw_kind_{d.name}"] = d.kind
        if d.kind == "categorical":
            state[f"sw_vals_{d.name}"] = (list(d.choices) if kinds_for(d.name) == ["categorical"]
                                          else ", ".join(format_value(v) for v in d.choices))
        else:
            state[f"sw_lo_{d.name}"], state[f"sw_hi_{d.name}"] = d.low, d.high


def load_preset() -> None:
    _load_setup(sweep_preset(st.session_state[PRESET_KEY], dataset_available))


def _load_setup(setup: SweepSetup) -> None:
    if setup.fallback:  # the lesson without the files: say so, use digits
        st.session_state["sw_fallback"] = setup.fallback
    else:
        st.session_state.pop("sw_fallback", None)
    load(setup.sweep)


def _dist_widgets(name: str) -> Dist:
    kinds = kinds_for(name)
    kind_key = f"sw_kind_{name}"
    if st.session_state.get(kind_key) not in kinds:
        st.session_state[kind_key] = kinds[0]
    if len(kinds) > 1:
        st.radio(f"{label_of(name)}: search as", kinds, key=kind_key, format_func=KIND_LABELS.get, horizontal=True)
    kind = st.session_state[kind_key]
    lo, hi = _bounds(name)
    if kind == "categorical":
        if kinds == ["categorical"]:
            key = f"sw_vals_{name}"
            choices = list(knob_of(name).choices)
            st.session_state[key] = [v for v in st.session_state.get(key, choices) if v in choices]
            values = st.multiselect(label_of(name), choices, key=key, help=_help(name))
            return Dist(name, "categorical", tuple(values))
        key = f"sw_vals_{name}"
        st.session_state.setdefault(key, "")
        text = st.text_input(f"{label_of(name)}: values", key=key, help=f"{_help(name)} Separate values with commas.")
        return Dist(name, "categorical", tuple(v.strip() for v in text.split(",") if v.strip()))
    lo_key, hi_key = f"sw_lo_{name}", f"sw_hi_{name}"
    left, right = st.columns(2)
    if kind == "int":
        for key, default in ((lo_key, lo), (hi_key, min(hi, lo + 3))):
            st.session_state[key] = int(st.session_state.get(key, default))
        low = left.number_input(f"{label_of(name)} from", int(lo), int(hi), key=lo_key, help=_help(name))
        high = right.number_input("to", int(lo), int(hi), key=hi_key)
    else:
        for key, default in ((lo_key, 1e-4), (hi_key, 1e-2)):
            st.session_state[key] = float(st.session_state.get(key, default))
        low = left.number_input(f"{label_of(name)} from", key=lo_key, format="%.3g", help=_help(name))
        high = right.number_input("to", key=hi_key, format="%.3g")
    return Dist(name, kind, (), low, high)


def sweep_form() -> tuple[SweepConfig | None, dict[str, str]]:
    """Draw the form; returns the sweep (None when invalid) and the problems by field."""
    state = st.session_state
    state.setdefault(PRESET_KEY, SWEEP_FIRST_PRESET)
    query = url.incoming_query(PAGE)
    if query and any(k.startswith("space_") for k in query):  # a shared link
        try:
            setup = sweeps_setup(query, dataset_available)
        except Exception as exc:  # a hostile link may raise anything a parser meets: a notice, never a traceback
            url.link_notices([url.invalid_link_notice(exc, instead="a preset is loaded")])
            load_preset()
        else:
            _load_setup(setup)
    elif query is not None:  # first visit: the chosen preset (on a first visit, the one sweeps_setup names)
        load_preset()
    elif "sw_knobs" not in state:  # a page switch dropped the widgets: this session's last sweep
        load(SweepConfig.from_json(state[SAVED_KEY])) if SAVED_KEY in state else load_preset()
    st.selectbox("Preset", list(SWEEP_PRESETS), key=PRESET_KEY, on_change=load_preset,
                 format_func=lambda n: SWEEP_PRESETS[n].title)
    if "sw_fallback" in state:
        missing = state["sw_fallback"]
        st.warning(plain(f"{dataset_title(missing)} is not available on this server, so this page "
                         f"uses {dataset_title('digits')} instead: the same lesson offline."),
                   icon="⚠️")
    base = state["sw_base"]
    left, right = st.columns(2)
    with left:
        st.selectbox(knob_of("dataset").label, IMAGE_DATASETS, key="sw_dataset", format_func=dataset_label,
                     help=knob_of("dataset").help)
        st.number_input(knob_of("epochs").label, int(knob_of("epochs").lo), int(knob_of("epochs").hi),
                        key="sw_epochs", help="Epochs of every trial (unless epochs is searched).")
        st.multiselect("Knobs to search", list(SEARCHABLE), key="sw_knobs", format_func=label_of,
                       help="Every other setting is the base run's.")
    with right:
        st.radio("Sampler", list(SAMPLERS), key="sw_sampler", format_func=SAMPLER_TITLES.get, horizontal=True)
        st.radio("Pruner", list(PRUNERS), key="sw_pruner", format_func=PRUNER_TITLES.get, horizontal=True,
                 help="Stops a trial early when its validation accuracy at an epoch end is behind the others'.")
        st.number_input("Trials (budget)", 1, MAX_TRIALS, key="sw_trials")
        st.number_input("Sampler seed", 0, 2**31 - 1, key="sw_seed")
    space = []
    for name in state["sw_knobs"]:
        with st.container(border=True):
            space.append(_dist_widgets(name))
    try:
        changes: dict[str, Any] = {"dataset": state["sw_dataset"], "epochs": int(state["sw_epochs"])}
        sweep = SweepConfig(base.replace(**changes), tuple(space), state["sw_sampler"], state["sw_pruner"],
                            int(state["sw_trials"]), int(state["sw_seed"]))
    except ConfigError as exc:
        return None, exc.problems
    state[SAVED_KEY] = sweep.to_json()
    url.write_query(PAGE, sweep.to_query())
    return sweep, {}


@dataclass(frozen=True)
class SweepForm:
    """The form's sweep (None while a field is invalid), its estimated cost and whether it is above the cap."""

    sweep: SweepConfig | None
    trial_gflop: float = 0.0
    budget_problem: str | None = None

    @property
    def ready(self) -> SweepConfig | None:
        """The sweep when it may run now."""
        return self.sweep if self.budget_problem is None else None


def space_form() -> SweepForm:
    """The search space with its field errors under it, checked against the server's cost cap."""
    sweep, problems = sweep_form()
    for message in problems.values():
        st.error(plain(message), icon="🚫")
    if sweep is None:
        return SweepForm(None)
    shape = data_shape(sweep.base)
    try:
        budget.check_sweep(sweep, shape)
    except budget.Refused as exc:
        return SweepForm(sweep, sweep.trial_cost(shape), str(exc))
    return SweepForm(sweep, sweep.trial_cost(shape))


_pair = sweep_pair


def _busy(configs: list[SweepConfig]) -> str | None:
    """'running' while any of them is queued or running; otherwise None, so a click resumes (never forces)."""
    return "running" if any(config_status(c) in ("queued", "running") for c in configs) else None


def _submit_one(sweep: SweepConfig, force: bool) -> str:
    submit_job(sweep, False)
    st.session_state.pop(PAIR, None)
    return sweep.to_json()


def _submit_pair(sweep: SweepConfig, force: bool) -> list[str]:
    for config in _pair(sweep):
        submit_job(config, False)
    st.session_state.pop(JOB, None)
    return [c.to_json() for c in _pair(sweep)]


def run_buttons(sweep: SweepConfig | None) -> None:
    """Run sweep, and the same budget with random search and TPE (disabled while the sweep is not ready)."""
    left, right, _ = st.columns(3)
    with left:
        train_button(sweep, JOB, key="sw_run", label="Run sweep", submit=_submit_one, status=lambda c: _busy([c]),
                     help="Resumes a cancelled or interrupted sweep with its finished trials.")
    with right:
        train_button(sweep if sweep is not None and sweep.sampler != "grid" else None, PAIR, key="sw_pair_run",
                     label="Same budget, two samplers", submit=_submit_pair, status=lambda c: _busy(_pair(c)),
                     help="Random search and TPE on this space with this budget, one after the other, best-so-far "
                          "overlaid.")


def transfer_button(top: list) -> None:
    """Train the sweep's top trials on MNIST as one batched grid job (slot: its key and the trial numbers)."""
    if not dataset_available("mnist"):
        st.info("MNIST is not available on this server, so the transfer cannot run here.")
        return
    if not top:
        return
    grid = GridConfig.from_runs([(f"trial {t.number}", cfg.replace(dataset="mnist")) for t, cfg in top])
    numbers = [t.number for t, _ in top]
    train_button(grid, TRANSFER, key="sw_transfer_run", label="Train the top three on MNIST",
                 submit=lambda config, force: (submit_job(config, force), numbers))
