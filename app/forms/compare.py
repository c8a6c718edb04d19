"""The comparison form: lesson buttons, the base network, the variant table -> a ComparisonConfig.

Widget values live under ``<prefix>_*`` session keys; the variant table's rows under
``<prefix>_rows``. The address bar holds the comparison (:meth:`ComparisonConfig.to_query`)
and the lesson button last pressed (``lesson=``), so a copied link reopens the same family.
:func:`submit_comparison` queues a family: variants stored or already training are served as
their own jobs, the new ones (two or more) train together as ONE grid job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.engine.config import BUILTIN_DATASETS, DEPTH, ConfigError, RunConfig, knob_of
from core.lab.compare import ROW_COLUMNS, ComparisonConfig, family_from_runs, family_jobs, variant_configs
from core.lab.grid import GridConfig
from core.engine.events import SERVED_FROM_STORE
from core.serve.jobs import get_manager
from core.lessons.families import TOUR, TOUR_BASE
from core.lessons.presets import PRESETS
from core.lessons.setups import (REGULARIZATION_FAMILIES, REGULARIZATION_LINK_KEYS, regularization_family,
                                 regularization_setup)

from ..records.compare import records
from ..text import FALLBACK_DATASET, dataset_available, picker_labels, plain, with_math
from ..views.data import dataset_fallback_notice
from ..views.jobs import submit
from . import upload, url
from .fields import knob_widget, validate, widget_value

BASE_FIELDS = ("dataset", "hidden", "activation", "optimizer", "lr", "batch_size", "epochs", "seed")
NORM_NAMES = {"none": "none", "batchnorm": "BatchNorm", "layernorm": "LayerNorm"}
DROPOUT_NAMES = {"torch": "nn.Dropout", "inverted": "ours (inverted)"}
LINK_KEYS = REGULARIZATION_LINK_KEYS


@dataclass(frozen=True)
class FamilyPreset:
    """A button that loads a family: a lesson's preset family, or the built-in tour of techniques."""

    button: str
    help: str
    runs: tuple[tuple[str, RunConfig], ...]
    lesson: str = ""
    description: str = ""
    hint: str = ""
    preset: str = ""  # the core.lessons.presets name of a lesson's family


def _lesson(name: str, button: str, hint: str = "") -> FamilyPreset:
    preset = PRESETS[REGULARIZATION_FAMILIES[name]]
    return FamilyPreset(button, f"Lesson {preset.lesson}: {preset.title}", preset.runs, preset.lesson,
                        preset.description, hint, preset.name)


FAMILY_PRESETS: dict[str, FamilyPreset] = {
    "tour": FamilyPreset("Every technique (fast)",
                         "None, L1, L2, dropout (nn.Dropout and our inverted class), BatchNorm, LayerNorm and "
                         "LayerNorm + dropout on the 8×8 digits: trains in seconds.",
                         TOUR),
    "B": _lesson("B", "LESSONS B · your image folder",
                 "To use your own images, open “Upload your own data” below, upload a zip with one folder per "
                 "class, and press “Train the variants on this dataset”."),
    "B-overfit": _lesson("B-overfit", "LESSONS B · overfitting on purpose"),
    "C": _lesson("C", "LESSONS C · LayerNorm + dropout"),
    "E": _lesson("E", "LESSONS E · eight networks"),
}


# --- session state --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """Session-state keys of one family editor (``prefix`` keeps two editors apart)."""

    prefix: str

    def field(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    @property
    def rest(self) -> str:  # the base config's other settings (query-string form)
        return f"{self.prefix}_base_rest"

    @property
    def saved(self) -> str:  # the form's values, to re-seed the widgets after a page switch
        return f"{self.prefix}_base_saved"

    @property
    def rows(self) -> str:
        return f"{self.prefix}_rows"

    @property
    def edited(self) -> str:
        return f"{self.prefix}_rows_edited"

    @property
    def version(self) -> str:
        return f"{self.prefix}_rows_version"

    @property
    def preset(self) -> str:
        return f"{self.prefix}_preset"

    @property
    def fallback(self) -> str:
        return f"{self.prefix}_dataset_fallback"

    @property
    def family(self) -> str:  # [{"label", "key"}] of the family last submitted: job keys only
        return f"{self.prefix}_family"

    @property
    def editor(self) -> str:
        return f"{self.prefix}_variants_{st.session_state.get(self.version, 0)}"


def _form_value(cfg: RunConfig, name: str) -> Any:
    return widget_value(cfg, name)


def load_family(keys: Keys, runs, preset: str | None = None) -> None:
    """Put a family into the form and the variant table (before they render, or from a callback)."""
    load_rows(keys, *family_from_runs(runs), preset)


def runs_here(name: str) -> tuple[tuple, str | None]:
    """A family's runs as they train on this server (a lesson's Digits settings where its dataset is
    missing), and the missing dataset's name."""
    return regularization_family(name, dataset_available)


def load_lesson(keys: Keys, name: str) -> None:
    """Load a family button: a lesson's family with its Digits settings where its dataset is missing here."""
    runs, missing = runs_here(name)
    load_family(keys, runs, name)
    if missing:
        st.session_state[keys.fallback] = missing


def load_rows(keys: Keys, base: RunConfig, rows: list[dict], preset: str | None = None) -> None:
    state = st.session_state
    for name in BASE_FIELDS:
        state[keys.field(name)] = _form_value(base, name)
    state[keys.rest] = base.to_query()
    state[keys.rows] = rows
    state.pop(keys.edited, None)
    state[keys.version] = state.get(keys.version, 0) + 1
    state[keys.preset] = preset
    state.pop(keys.fallback, None)
    _apply_dataset_fallback(keys)
    state[keys.saved] = {name: state[keys.field(name)] for name in BASE_FIELDS}


def _apply_dataset_fallback(keys: Keys) -> None:
    """A dataset that cannot load here is replaced by the offline fallback (and remembered for a notice)."""
    field_key = keys.field("dataset")
    name = st.session_state.get(field_key, FALLBACK_DATASET)
    if name != FALLBACK_DATASET and not dataset_available(name):
        st.session_state[keys.fallback] = name
        st.session_state[field_key] = FALLBACK_DATASET


def _prepare(keys: Keys, page: str) -> list[str]:
    """Fill the form from a link, or (first visit) the fast tour, or this session's values; returns notices."""
    state = st.session_state
    query = url.incoming_query(page)
    notices: list[str] = []
    if query:
        known = set(RunConfig.__dataclass_fields__) | {"variants", DEPTH} | set(LINK_KEYS)
        setup, notices = url.parse_link(query, known, lambda kept: regularization_setup(kept, dataset_available),
                                        lambda: regularization_setup({"lesson": "tour"}, dataset_available))
        load_rows(keys, setup.config.base, setup.config.rows(), setup.lesson)
        if setup.fallback:
            state[keys.fallback] = setup.fallback
    elif keys.rows not in state:
        load_family(keys, FAMILY_PRESETS["tour"].runs, "tour")
    saved = state.get(keys.saved, {})
    for name in BASE_FIELDS:  # widgets not drawn on the last run (another page) lost their state
        if keys.field(name) not in state:
            state[keys.field(name)] = saved.get(name, _form_value(TOUR_BASE, name))
    if keys.editor not in state and keys.edited in state:  # the table's edits survive a page switch
        state[keys.rows] = state.pop(keys.edited)
        state[keys.version] = state.get(keys.version, 0) + 1
    return notices


# --- the editor ------------------------------------------------------------------------------------
def preset_buttons(keys: Keys) -> None:
    """One button per family preset (LESSONS B, C, E and the fast tour), each as wide as its whole label (the row
    wraps); a click loads it."""
    with st.container(horizontal=True, gap="small"):
        for name, preset in FAMILY_PRESETS.items():
            st.button(preset.button, key=f"{keys.prefix}_load_{name}", help=preset.help, width="content",
                      on_click=load_lesson, args=(keys, name),
                      type="primary" if st.session_state.get(keys.preset) == name else "secondary")
    loaded = FAMILY_PRESETS.get(st.session_state.get(keys.preset) or "")
    if loaded is not None and loaded.lesson:
        hint = f"  \n{plain(loaded.hint)}" if loaded.hint else ""
        description = loaded.description
        if loaded.preset and st.session_state.get(keys.fallback):  # the lesson as it trains here
            description = PRESETS[loaded.preset].on_fallback().description
        st.info(f"**{plain(loaded.help)}.** {with_math(description)}{hint}", icon="📖")


def _on_dataset_change(keys: Keys) -> None:
    st.session_state.pop(keys.fallback, None)
    _apply_dataset_fallback(keys)


def base_form(keys: Keys) -> tuple[RunConfig | None, dict[str, str]]:
    """The settings every variant shares; returns (base config or None, problems by field)."""
    state = st.session_state
    uploads = upload.session_dataset_names()
    options = list(BUILTIN_DATASETS) + [n for n in uploads if n not in BUILTIN_DATASETS]
    if state.get(keys.field("dataset")) not in options:
        options.append(state.get(keys.field("dataset")))
    top = st.columns([3, 2, 2, 2])
    knob_widget("dataset", keys.field("dataset"), container=top[0], options=options, format_func=picker_labels(options),
                help_extra="Or upload your own below.", on_change=_on_dataset_change, args=(keys,))
    knob_widget("hidden", keys.field("hidden"), container=top[1])
    knob_widget("activation", keys.field("activation"), container=top[2])
    knob_widget("optimizer", keys.field("optimizer"), container=top[3])
    low = st.columns(4)
    knob_widget("lr", keys.field("lr"), container=low[0], help_extra="A variant may set its own.")
    knob_widget("batch_size", keys.field("batch_size"), container=low[1])
    knob_widget("epochs", keys.field("epochs"), container=low[2])
    knob_widget("seed", keys.field("seed"), container=low[3],
                help_extra="Every variant uses this seed: the same split, initial weights and batch order, so "
                           "the regularization is the only difference.")
    values = {name: state.get(keys.field(name)) for name in BASE_FIELDS}
    state[keys.saved] = dict(values)
    rest = dict(state.get(keys.rest) or {})
    try:
        merged = RunConfig.from_query(rest).to_dict()
    except ConfigError:
        merged = RunConfig().to_dict()
    merged.update(values)
    cfg, problems = validate(merged)
    fallback = state.get(keys.fallback)
    if fallback and values["dataset"] == FALLBACK_DATASET:
        family = FAMILY_PRESETS.get(state.get(keys.preset) or "")
        lesson = PRESETS[family.preset].fallback if family is not None and family.preset else None
        dataset_fallback_notice(fallback, keys.field("dataset"), changed=lesson.why if lesson else None)
    elif fallback:
        state.pop(keys.fallback, None)
    for problem in problems.values():
        st.error(plain(problem))
    return cfg, problems


def _variant_columns() -> dict:
    cc = st.column_config

    def number(label: str, help: str, **kw) -> Any:
        return cc.NumberColumn(label, help=help, format="%g", width=62, **kw)

    return {
        "variant": cc.TextColumn("Variant", help="A name for this variant (plain text).", max_chars=60,
                                 required=True, width=150),
        "norm": cc.SelectboxColumn("Norm", options=list(NORM_NAMES), format_func=NORM_NAMES.get, width=84,
                                   default="none", help="Normalization. " + knob_of("norm").help),
        "dropout": cc.NumberColumn("Dropout", help=knob_of("dropout").help, format="%g", width=80,
                                   min_value=knob_of("dropout").lo, max_value=knob_of("dropout").hi, step=0.05,
                                   default=0.0),
        "dropout_impl": cc.SelectboxColumn("Dropout class", options=list(DROPOUT_NAMES), format_func=DROPOUT_NAMES.get,
                                           default="torch", width=108,
                                           help="nn.Dropout, or the project's from-scratch InvertedDropout (same "
                                                "maths: drop with probability p, scale the rest by 1/(1−p), off in "
                                                "eval mode)."),
        "l1": number("L1 λ", knob_of("l1").help, min_value=knob_of("l1").lo, max_value=knob_of("l1").hi, step=0.0001,
                     default=0.0),
        "l2": number("L2 λ", knob_of("l2").help, min_value=knob_of("l2").lo, max_value=knob_of("l2").hi, step=0.0001,
                     default=0.0),
        "lr": cc.NumberColumn("lr", help="Learning rate. Empty = the base network's.", format="%g",
                              width=55, min_value=knob_of("lr").lo, max_value=knob_of("lr").hi),
        "hidden": cc.TextColumn("Hidden", width=70, help="Hidden layers. Empty = the base network's, e.g. 128,64."),
        "arch": cc.SelectboxColumn("Arch", options=["mlp", "cnn"], width=50,
                                   help="Empty = the base network's (cnn: two 3×3 conv layers of 32 filters before "
                                        "the hidden layers)."),
    }


def variant_table(keys: Keys) -> list[dict]:
    """The editable table of variants (one row each); returns its rows as plain dicts."""
    frame = pd.DataFrame(st.session_state[keys.rows], columns=list(ROW_COLUMNS))
    frame = frame.astype({"lr": "float64", "dropout": "float64", "l1": "float64", "l2": "float64"})
    edited = st.data_editor(frame, key=keys.editor, num_rows="dynamic", hide_index=True, width="stretch",
                            placeholder="(base)", column_config=_variant_columns())
    rows = records(edited)
    st.session_state[keys.edited] = rows
    return rows


@dataclass
class ComparisonForm:
    """What the editor produced: the comparison (None while invalid), its family, problems, link notices."""

    config: ComparisonConfig | None
    family: list[tuple[str, RunConfig]]
    problems: list[str]
    notices: list[str]
    keys: Keys


def family_editor(prefix: str = "reg", upload_area: Callable[[Keys], None] | None = None,
                  page: str | None = None) -> ComparisonForm:
    """Lesson buttons, the base network, (an upload area), the variant table; writes the URL."""
    keys = Keys(prefix)
    notices = _prepare(keys, page or prefix)
    url.link_notices(notices)
    preset_buttons(keys)
    st.subheader("1 · Data and the network every variant shares", divider="gray")
    base, base_problems = base_form(keys)
    if upload_area is not None:
        upload_area(keys)
    st.subheader("2 · Variants", divider="gray")
    st.caption("One row per network. Each row sets its own regularization; “(base)” means the setting above. "
               "Click a cell to change it, add a row at the bottom, or tick rows on the left and press the bin to "
               "delete them.")
    rows = variant_table(keys)
    if base is None:
        return ComparisonForm(None, [], ["Fix the base network's settings above."], notices, keys)
    family, problems = variant_configs(base, rows)
    for problem in problems:
        st.error(plain(problem))
    if not rows:
        problems.append("Add at least one variant.")
    config = None
    if not problems:
        try:
            config = ComparisonConfig.from_rows(base, rows)
        except ConfigError as exc:
            problems.append(" ".join(exc.problems.values()))
    if config is not None:
        lesson = st.session_state.get(keys.preset)
        named = lesson in FAMILY_PRESETS  # the link names the family: the lesson's own variants are left out
        query = config.to_query(ComparisonConfig.from_runs(runs_here(lesson)[0]) if named else None)
        fallback = st.session_state.get(keys.fallback)
        if fallback and base.dataset == FALLBACK_DATASET:
            query["dataset"] = fallback  # the link keeps what the user chose
        if lesson:
            query["lesson"] = lesson
        url.write_query(page or prefix, query)
    return ComparisonForm(config, family, problems, notices, keys)


def base_split(keys: Keys) -> tuple[float, int]:
    """(validation fraction, seed) of the base network: how every variant splits its data."""
    rest = st.session_state.get(keys.rest) or {}
    try:
        fraction = float(rest.get("val_fraction", RunConfig().val_fraction))
    except ValueError:
        fraction = RunConfig().val_fraction
    seed = st.session_state.get(keys.field("seed"))
    return fraction, int(seed) if isinstance(seed, int) else 0


def use_dataset(keys: Keys, name: str) -> None:
    """Callback: make ``name`` the base network's dataset."""
    st.session_state[keys.field("dataset")] = name
    st.session_state.pop(keys.fallback, None)
    saved = st.session_state.setdefault(keys.saved, {})
    saved["dataset"] = name


# --- training -------------------------------------------------------------------------------------
def _trained_or_training(manager, cfg: RunConfig, force: bool = False) -> bool:
    """Whether ``cfg`` is already queued / running as its own job, or (unless ``force``) stored with a
    deterministic outcome."""
    snap = manager.snapshot(cfg.key())
    return snap is not None and snap.status in ("queued", "running") + (() if force else SERVED_FROM_STORE)


def submit_family(family: list[tuple[str, RunConfig]], force: bool = False) -> list[dict]:
    """Queue the family; returns one ``{"label", "key"}`` per variant (``key``: its run key).

    Variants stored or already training are served as their own jobs; the others (two or more)
    train together as ONE grid job (core.lab.grid: batched where shapes allow) and also get
    ``"grid"`` (the grid's job key) and ``"cell"`` (their index in it). Each finished cell is
    filed under its own run key, so the next time it is served from the store like any run. ``force``: the
    stored variants train again too (the button's "again").
    """
    manager = get_manager()
    entries = [{"label": label, "key": cfg.key()} for label, cfg in family]
    fresh: dict[str, tuple[str, RunConfig]] = {}
    for (label, cfg), entry in zip(family, entries):
        if entry["key"] not in fresh and not _trained_or_training(manager, cfg, force):
            fresh[entry["key"]] = (label, cfg)
    cells: dict[str, int] = {}
    grid_key = None
    together = family_jobs(list(fresh.values())) if len(fresh) >= 2 else []
    if len(together) == 1 and isinstance(together[0], GridConfig):  # else the variants train one by one
        grid_key = submit(together[0], force)
        cells = {key: i for i, key in enumerate(fresh)}
    for (label, cfg), entry in zip(family, entries):
        if entry["key"] in cells:
            entry.update(grid=grid_key, cell=cells[entry["key"]])
        else:  # stored (not forced), already training (joined), or a duplicate row
            submit(cfg, force and entry["key"] in fresh)
    return entries




def submit_comparison(config: ComparisonConfig, force: bool = False) -> list[dict]:
    """Train-button submit: queue the comparison's family; returns its job ids (see :func:`submit_family`)."""
    return submit_family(config.family(), force)
