"""The Optimizers lesson's forms (writes): the 2-D race's settings (URL round-trip), the real race's
settings and family buttons, the loss surface's setup."""
from __future__ import annotations

import streamlit as st

from core.lab import race
from core.engine.config import OPTIMIZERS, ConfigError, RunConfig, knob_of
from core.lab.surface import DIRECTIONS, MAX_RESOLUTION, SurfaceConfig
from core.lessons import families
from core.lessons.setups import (OPTIMIZERS_FIRST_EPOCHS, SURFACE_FIRST_DIRECTIONS, SURFACE_FIRST_RESOLUTION,
                                 surface_first_training, surface_of)

from ..records import optimizers as records
from ..text import dataset_available, plain
from ..views.jobs import train_button
from . import url
from .fields import knob_widget, shown

PAGE = "optimizers"
RACE_SAVED = "opt_race_saved"
RACE_KEYS = {"fn": "opt_fn", "kappa": "opt_kappa", "x0": "opt_x0", "y0": "opt_y0", "optimizers": "opt_chosen",
             "lr": "opt_lr", "lr_adaptive": "opt_lr_adaptive", "momentum": "opt_momentum", "rms_alpha": "opt_rms_alpha",
             "beta1": "opt_beta1", "beta2": "opt_beta2", "steps": "opt_steps"}
SCHEDULE_KNOBS = ("lr_schedule", "lr_step_every_epochs", "lr_gamma", "warmup_epochs")
DIRECTION_LABELS = {"random": "random (filter-normalized)", "pca": "PCA of the path"}


def _on_function() -> None:
    """A new function brings its own start point and learning rates (the other settings stay)."""
    fresh = records.race_defaults(st.session_state["opt_fn"], st.session_state.get("opt_kappa", 10.0))
    for name in ("x0", "y0", "lr", "lr_adaptive"):
        st.session_state[RACE_KEYS[name]] = fresh[name]


def _knob_slider(column, name: str) -> float:
    k = knob_of(name)
    return column.slider(k.label, float(k.lo), float(k.hi), step=0.001, format="%.3f", key=f"opt_{name}", help=k.help)


def race_form() -> tuple[dict, int]:
    """The race's settings (loaded from a link, or this session's), drawn and written to the address bar;
    with the step up to which the paths are shown."""
    query = url.incoming_query(PAGE)
    if query is not None:  # a link or the first visit
        settings, notices = records.race_from_link(query)
        for name, key in RACE_KEYS.items():
            st.session_state[key] = settings[name]
        url.link_notices(notices)
    else:
        url.restore(RACE_SAVED, records.race_defaults(), RACE_KEYS.get)
    c1, c2, c3, c4 = st.columns(4)
    fn_name = c1.selectbox("Function", race.FUNCTIONS, key="opt_fn", on_change=_on_function,
                           format_func=lambda n: race.surface(n).title.split(" (")[0])
    kappa = c1.select_slider("Condition number κ", race.KAPPAS, key="opt_kappa",
                             disabled=fn_name != "quadratic", help="Curvature ratio of the quadratic's two axes.")
    fn = race.surface(fn_name, kappa)
    c2.number_input("Start x", *map(float, fn.x_range), key="opt_x0", step=0.1)
    c2.number_input("Start y", *map(float, fn.y_range), key="opt_y0", step=0.1)
    c3.multiselect("Optimizers", OPTIMIZERS, key="opt_chosen")
    c3.select_slider("Learning rate (SGD, momentum, Nesterov)", race.LEARNING_RATES, key="opt_lr")
    c3.select_slider("Learning rate (RMSProp, Adam, Nadam)", race.LEARNING_RATES, key="opt_lr_adaptive")
    for name in records.RACE_KNOBS:
        _knob_slider(c4, name)
    steps = c1.slider("Steps", 10, records.MAX_RACE_STEPS, step=10, key="opt_steps")
    settings = {name: st.session_state[key] for name, key in RACE_KEYS.items()}
    url.remember(RACE_SAVED, settings)
    url.write_query(PAGE, records.race_query(settings))
    upto = st.slider("Show the paths up to step", 0, steps, steps, key="opt_upto")
    return settings, upto


def families_form() -> dict:
    """Epochs, implementation and schedule for the D families, and one train button per family;
    returns slot -> (heading, label, grid) (empty, with an error shown, when the settings cannot train)."""
    epochs_knob = knob_of("epochs")
    e1, e2 = st.columns(2)
    epochs = e1.number_input("Epochs", int(epochs_knob.lo), int(epochs_knob.hi), OPTIMIZERS_FIRST_EPOCHS,
                             key="opt_epochs",
                             help="The preset trains 5 epochs; one epoch already separates the optimizers.")
    ours = e2.toggle("Train with our from-scratch rules (optimizer_impl = ours)", key="opt_ours",
                     help="The same formulas, run by the code above instead of torch.optim: the curves should match.")
    for name in SCHEDULE_KNOBS:
        st.session_state.setdefault(f"opt_{name}", getattr(RunConfig(), name))
    columns = st.columns(len(SCHEDULE_KNOBS))
    knob_widget("lr_schedule", "opt_lr_schedule", container=columns[0],
                help_extra="Applied to every network of the family: too high, too low, or decayed.")
    schedule = {"lr_schedule": st.session_state["opt_lr_schedule"]}
    for column, name in zip(columns[1:], SCHEDULE_KNOBS[1:]):
        if shown(name, schedule):
            schedule[name] = knob_widget(name, f"opt_{name}", container=column)
    try:
        grids = families.optimizer_family_grids(int(epochs), ours, schedule)
    except ConfigError as exc:
        st.error(plain(f"These settings cannot train: {exc}"))
        grids = {}
    for column, (slot, (_, label, grid)) in zip(st.columns(max(len(grids), 1)), grids.items()):
        with column:
            train_button(grid, slot, key=f"{slot}_train", label=label)
    return grids


def surface_form() -> SurfaceConfig:
    """The network, directions, grid and training of the loss surface."""
    networks = families.surface_networks()
    epochs_knob = knob_of("epochs")
    s1, s2, s3 = st.columns(3)
    network = s1.selectbox("Network", list(networks), key="opt_surface_net")
    batchnorm = s1.toggle("With BatchNorm", key="opt_surface_bn")
    directions = s2.radio("Directions", DIRECTIONS, index=DIRECTIONS.index(SURFACE_FIRST_DIRECTIONS),
                          key="opt_surface_dirs", horizontal=True, format_func=DIRECTION_LABELS.get)
    resolution = s2.select_slider("Grid points per axis", list(range(11, MAX_RESOLUTION + 1, 10)),
                                  value=SURFACE_FIRST_RESOLUTION, key="opt_surface_res")
    first_epochs, first_log = surface_first_training(families.optimizers_fallback(dataset_available) is not None)
    epochs = s3.number_input("Epochs", int(epochs_knob.lo), int(epochs_knob.hi), first_epochs,
                             key="opt_surface_epochs")
    log_every = s3.number_input("Record the weights every (steps)", 10, 1000, first_log, step=10,
                                key="opt_surface_log",
                                help="Each log point adds one point to the path (and to the PCA).")
    return surface_of(networks[network], batchnorm, directions, resolution, epochs, log_every)
