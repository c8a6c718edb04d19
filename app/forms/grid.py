"""The Vanishing-gradients form: a grid of activations x depths (GridConfig), its fixes, URL sync.

Every range, default and help text comes from the schema: RunConfig's knobs for the training
settings, core.lab.grid's limits for the grid's own (depths, width, number of cells). The lesson's
setup (LESSONS A: MNIST, width 10, SGD lr 0.2, batch 32) is a GridConfig, not a second schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from core.engine.config import ACTIVATIONS, BUILTIN_DATASETS, MAX_HIDDEN_LAYERS, ConfigError, RunConfig
from core.lab.grid import MAX_CELLS, MAX_GRID_WIDTH, GridConfig
from core.lessons.families import VANISHING_LESSON, VANISHING_QUICK, lesson_fixes, vanishing_fallback, vanishing_log_every
from core.lessons.presets import A_FIXES_DEPTH, A_LESSON_FIXES_DEPTH
from core.lessons.setups import (VANISHING_LINK_KEYS, VanishingSetup, vanishing_fields_on_server, vanishing_grid_of,
                                 vanishing_setup, vanishing_setup_of)

from ..text import FALLBACK_DATASET, dataset_available, dataset_label
from . import url
from .fields import knob_widget, widget_value

PAGE = "vanishing"
SAVED = "vg_form"
FALLBACK = "vg_dataset_fallback"  # the chosen dataset the fallback replaced
LESSON = "vg_lesson"
DATASETS = [d for d in BUILTIN_DATASETS if d != "fashion3"]
# field -> widget key (the keys are the page's public names: tests and links use them)
RUN_KEYS = {"dataset": "vg_dataset", "lr": "vg_lr", "optimizer": "vg_optimizer", "epochs": "vg_epochs",
            "batch_size": "vg_batch", "init": "vg_init", "norm": "vg_norm", "seed": "vg_seed"}
GRID_KEYS = {"activations": "vg_activations", "depths": "vg_depths", "width": "vg_width"}
FIX_DEPTH = "vg_fix_depth"
LINK_KEYS = VANISHING_LINK_KEYS


@dataclass
class GridForm:
    grid: GridConfig | None
    problem: str | None
    fixes: GridConfig | None
    fix_depth: int
    notices: list[str] = field(default_factory=list)
    dataset_fallback: str | None = None
    lesson: bool = False


def grid_values(grid: GridConfig, fix_depth: int | None = None) -> dict:
    """Widget values (by widget key) of a grid."""
    values = {key: widget_value(grid.base, name) for name, key in RUN_KEYS.items()}
    depths = grid.depths or (grid.base.depth,)
    values.update({"vg_activations": list(grid.activations or (grid.base.activation,)),
                   "vg_depths": (min(depths), max(depths)), "vg_width": int(grid.width),
                   FIX_DEPTH: int(fix_depth if fix_depth is not None else A_FIXES_DEPTH)})
    return values


def _load(setup: VanishingSetup, lesson: bool = False) -> None:
    """Put a setup (as it trains here: core.lessons.setups) into the widgets, with its fallback notice."""
    for key, value in grid_values(setup.grid, setup.fix_depth).items():
        st.session_state[key] = value
    if setup.fallback:
        st.session_state[FALLBACK] = setup.fallback
    else:
        st.session_state.pop(FALLBACK, None)
    st.session_state[LESSON] = lesson


def load_lesson() -> None:
    """Callback of the LESSONS A button."""
    _load(vanishing_setup_of(VANISHING_LESSON, A_LESSON_FIXES_DEPTH, dataset_available), lesson=True)


def _apply_dataset_fallback() -> None:
    fields = {name: st.session_state.get(key) for name, key in RUN_KEYS.items()}
    fields["dataset"] = fields["dataset"] or FALLBACK_DATASET
    fields, fallback = vanishing_fields_on_server(fields, dataset_available)
    if fallback:
        st.session_state[FALLBACK] = fallback
        st.session_state["vg_dataset"] = fields["dataset"]
        st.session_state["vg_epochs"] = fields["epochs"]


def _on_dataset() -> None:
    st.session_state.pop(FALLBACK, None)
    _apply_dataset_fallback()


def _prepare() -> list[str]:
    query = url.incoming_query(PAGE)
    if query is None:
        url.restore(SAVED, grid_values(VANISHING_QUICK), lambda key: key)
        _apply_dataset_fallback()
        return []
    if not query:
        _load(vanishing_setup_of(VANISHING_QUICK, None, dataset_available))
        return []
    known = set(RunConfig.__dataclass_fields__) | set(GRID_KEYS) | {"inits", "norms", "variants"} | set(LINK_KEYS)
    setup, notices = url.parse_link(query, known, lambda kept: vanishing_setup(kept, dataset_available),
                                    lambda: vanishing_setup_of(VANISHING_QUICK, None, dataset_available))
    _load(setup, lesson=query.get("lesson") == "A" and not notices)
    return notices


def _values() -> dict:
    return {key: st.session_state.get(key) for key in list(RUN_KEYS.values()) + list(GRID_KEYS.values()) + [FIX_DEPTH]}


def build(values: dict) -> tuple[GridConfig | None, str | None]:
    """(grid, None) or (None, the problem) from the widget values."""
    try:
        if not values["vg_activations"]:
            return None, "Pick at least one activation."
        return vanishing_grid_of({name: values[key] for name, key in RUN_KEYS.items()}, values["vg_activations"],
                                 values["vg_depths"], values["vg_width"]), None
    except ConfigError as exc:
        return None, f"{' '.join(exc.problems.values())} (at most {MAX_CELLS} networks per grid)."


def grid_form() -> GridForm:
    """The grid's controls in three columns, LESSONS A's button; returns the grid and writes the URL."""
    notices = _prepare()
    st.button("LESSONS A preset", icon="🎓", on_click=load_lesson, key="vg_preset",
              help="The coursework's setup: MNIST, sigmoid/tanh/ReLU with 1–8 hidden layers of 10 units, "
                   f"SGD lr 0.2, batch 32, 5 epochs; the fixes and seeds of sigmoid x{A_LESSON_FIXES_DEPTH}.")
    left, mid, right = st.columns(3)
    with left:
        knob_widget("dataset", "vg_dataset", options=DATASETS, format_func=dataset_label, on_change=_on_dataset)
        st.multiselect("Activations", list(ACTIVATIONS), key="vg_activations",
                       help="One row of the table per activation, after every hidden layer.")
        st.slider("Hidden layers (depths)", 0, MAX_HIDDEN_LAYERS, key="vg_depths",
                  help="One column per depth in this range.")
    with mid:
        st.number_input("Width (units per hidden layer)", 1, MAX_GRID_WIDTH, key="vg_width",
                        help=f"Units in every hidden layer of every network. Allowed 1–{MAX_GRID_WIDTH} in a grid "
                             "(all its networks are in memory at once).")
        knob_widget("lr", "vg_lr")
        knob_widget("optimizer", "vg_optimizer")
        knob_widget("epochs", "vg_epochs")
    with right:
        knob_widget("batch_size", "vg_batch")
        knob_widget("init", "vg_init")
        knob_widget("norm", "vg_norm")
        knob_widget("seed", "vg_seed")
    values = _values()
    grid, problem = build(values)
    fallback = st.session_state.get(FALLBACK)
    if values["vg_dataset"] != FALLBACK_DATASET:
        st.session_state.pop(FALLBACK, None)
        fallback = None
    lesson = (bool(st.session_state.get(LESSON)) and grid is not None
              and grid == _fallen_back(VANISHING_LESSON, fallback))
    return GridForm(grid, problem, None, int(values[FIX_DEPTH] or 1), notices, fallback, lesson)


def _fallen_back(grid: GridConfig, fallback: str | None) -> GridConfig:
    return vanishing_fallback(grid) if fallback and grid.base.dataset == fallback else grid


def _set_fix_depth(depth: int) -> None:
    st.session_state[FIX_DEPTH] = depth


def fixes_form(form: GridForm, stuck: dict[int, bool] | None = None) -> GridForm:
    """The depth of the deep sigmoid network to fix (the fixes grid follows the grid's settings); writes the URL.
    ``stuck``: depth -> whether the grid above left this sigmoid network stuck (None: no such results), read
    against the chosen depth, with a button to the shallowest stuck one."""
    st.slider("Depth of the network to fix", 1, MAX_HIDDEN_LAYERS, key=FIX_DEPTH,
              help="The fixes show a rescue only where the plain sigmoid network is stuck.")
    form.fix_depth = int(st.session_state[FIX_DEPTH])
    if stuck is not None:
        _stuck_depth_note(stuck, form.fix_depth)
    if form.grid is not None:
        form.fixes = lesson_fixes(form.grid, form.fix_depth)
    url.remember(SAVED, _values())
    if form.grid is not None:
        query = form.grid.to_query()
        if form.dataset_fallback:
            query["dataset"] = form.dataset_fallback
            query.pop("log_every", None)
            shared = form.grid.base.replace(dataset=form.dataset_fallback,
                                            log_every=vanishing_log_every(form.dataset_fallback))
            query.update({k: v for k, v in shared.to_query().items() if k == "log_every"})
        query["fix_depth"] = str(form.fix_depth)
        if form.lesson:
            query["lesson"] = "A"
        url.write_query(PAGE, query)
    return form


def _stuck_depth_note(stuck: dict[int, bool], depth: int) -> None:
    """Whether the grid above left sigmoid x``depth`` stuck, and a button to the shallowest depth it did."""
    stuck_depths = [d for d, is_stuck in stuck.items() if is_stuck]
    if not stuck_depths:
        st.info("No sigmoid network of the grid above is stuck, so its fixes can only show how much faster each "
                "learns. Deeper networks, or fewer epochs, get stuck.", icon="ℹ️")
        return
    where = ", ".join(f"x{d}" for d in stuck_depths)
    if stuck.get(depth):
        st.caption(f"In the grid above sigmoid x{depth} is stuck (⊘; stuck there: {where}): the fixes start from a "
                   "stuck network.")
        return
    said = (f"In the grid above sigmoid x{depth} is not stuck, so its fixes cannot show a rescue." if depth in stuck
            else f"The grid above has no sigmoid x{depth}.")
    st.warning(f"{said} Stuck there: {where}.", icon="⚠️")
    st.button(f"Fix sigmoid x{stuck_depths[0]}, the shallowest stuck one", key="vg_fix_stuck", on_click=_set_fix_depth,
              args=(stuck_depths[0],), help="Sets the depth of the network to fix to one the grid above left stuck.")
