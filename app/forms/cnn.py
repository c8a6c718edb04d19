"""The CNN lesson's forms (writes): the run's data and length (RunConfig knobs over the lesson's CNN preset), and
what to look inside (test image, conv layer, channel, output position), all in the address bar.

The preset (core.lessons.presets.CNN_LESSON) fixes the network; the page's knobs are :data:`KNOBS`. The picks'
ranges come from the trained network itself (its test set and its maps), never from constants of the page.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, TOY_DATASETS, ConfigError, RunConfig, format_value
from core.engine.data import DatasetUnavailable
from core.engine.task import query_int
from core.lab.compare import ComparisonConfig
from core.lab.convnet import cnn_against_mlp_here
from core.lessons.presets import CNN_LESSON
from core.serve import budget

from ..text import FALLBACK_DATASET, dataset_available, picker_labels, plain
from ..views.jobs import submit
from . import url
from .fields import knob_widget, widget_value

PAGE = "cnn"
KNOBS = ("dataset", "train_limit", "epochs", "seed")
PICKS = ("image", "layer", "channel", "row", "col")
PICK_LABELS = {"image": "Test image", "layer": "Conv layer", "channel": "Output channel", "row": "Output row",
               "col": "Output column"}
PICK_DEFAULTS = {"image": 0, "layer": 1, "channel": 0, "row": 0, "col": 0}
SAVED = "cnn_form"
FALLBACK = "cnn_dataset_fallback"  # session: the chosen dataset the fallback replaced
IMAGE_DATASETS = tuple(d for d in BUILTIN_DATASETS if d not in TOY_DATASETS)


def widget_key(name: str) -> str:
    return f"cnn_{name}"


@dataclass
class CnnForm:
    config: RunConfig | None
    problems: dict[str, str]
    notices: list[str] = field(default_factory=list)
    fallback: str | None = None  # the chosen dataset this server lacks (Digits trains instead)
    versus: ComparisonConfig | None = None  # the CNN and the MLP of at least as many parameters, trained together


def lesson_base() -> RunConfig:
    """The lesson's CNN as it trains here (its Digits settings where MNIST is missing)."""
    return CNN_LESSON.for_server(dataset_available)[0].config


def config_from_link(query: dict) -> tuple[RunConfig, list[str]]:
    """The lesson's CNN with the link's knobs (a bad one is ignored with a notice, the rest kept)."""
    base = lesson_base()
    own = {k: v for k, v in query.items() if k in KNOBS}
    return url.parse_link(own, set(KNOBS), lambda kept: base.replace(**{
        k: getattr(RunConfig.from_query(kept), k) for k in kept}), lambda: base)


def picks_from_link(query: dict) -> tuple[dict[str, int], list[str]]:
    picks, notices = dict(PICK_DEFAULTS), []
    for name in PICKS:
        try:
            value = query_int(query, name)
        except ConfigError as exc:
            notices.append(url.ignored_notice(name, query.get(name), str(exc)))
            continue
        if value is not None:
            picks[name] = value
    return picks, notices


def _apply_fallback() -> None:
    key = widget_key("dataset")
    name = st.session_state.get(key)
    if name != FALLBACK_DATASET and not dataset_available(name):
        st.session_state[FALLBACK] = name
        st.session_state[key] = FALLBACK_DATASET


def _on_dataset() -> None:
    st.session_state.pop(FALLBACK, None)
    _apply_fallback()


def cnn_form() -> CnnForm:
    """The run's knobs (from a link, or this session's), drawn in one row; the picks are read into session state for
    :func:`picks_form`. Call :func:`write_link` after the picks are drawn."""
    query = url.incoming_query(PAGE)
    notices: list[str] = []
    if query is not None:
        cfg, notices = config_from_link(query)
        picks, pick_notices = picks_from_link(query)
        notices += pick_notices
        st.session_state.pop(FALLBACK, None)
        for name in KNOBS:
            st.session_state[widget_key(name)] = widget_value(cfg, name)
        for name in PICKS:
            st.session_state[widget_key(name)] = picks[name]
    else:
        base = lesson_base()
        url.restore(SAVED, {**{n: widget_value(base, n) for n in KNOBS}, **PICK_DEFAULTS}, widget_key)
    _apply_fallback()
    columns = st.columns(len(KNOBS))
    knob_widget("dataset", widget_key("dataset"), container=columns[0], options=list(IMAGE_DATASETS),
                format_func=picker_labels(list(IMAGE_DATASETS)), on_change=_on_dataset)
    for column, name in zip(columns[1:], KNOBS[1:]):
        knob_widget(name, widget_key(name), container=column)
    values = {n: st.session_state.get(widget_key(n)) for n in KNOBS}
    problems: dict[str, str] = {}
    cfg = None
    try:
        cfg = lesson_base().replace(**values)
    except ConfigError as exc:
        problems = exc.problems
    except TypeError:  # an emptied number box
        problems = {n: f"{n} needs a value" for n, v in values.items() if v is None}
    versus = None
    if cfg is not None:
        try:
            versus = cnn_against_mlp_here(cfg)
        except (ValueError, ConfigError, DatasetUnavailable) as exc:
            problems = {"arch": " ".join(exc.problems.values()) if isinstance(exc, ConfigError) else str(exc)}
            cfg = None
    return CnnForm(cfg, problems, notices, st.session_state.get(FALLBACK), versus)


def submit_each(config: ComparisonConfig, force: bool = False) -> list[dict]:
    """Train-button submit: the CNN and the MLP each as its own run (a grid's cells keep no trained weights, and the
    page looks inside the CNN's); one seed gives both the same split, subset and batch order. Both are checked
    against the server's caps first (:class:`core.serve.budget.Refused` names the cap and the estimate), so a refused
    MLP never leaves its CNN training alone. Returns their job ids, ``[{"label", "key"}]``."""
    for _, cfg in config.family():
        budget.check(cfg)
    return [{"label": label, "key": submit(cfg, force)} for label, cfg in config.family()]


def picks_form(limits_for: Callable[[int], dict[str, int]]) -> dict[str, int]:
    """Number inputs for the picks, each within the trained network's limits (``limits_for(layer)``: name -> how many
    there are); a value out of range (a link's, or one left from a larger layer) is brought in with a notice."""
    columns = st.columns(len(PICKS))
    picks: dict[str, int] = {}
    limits = limits_for(1)
    for column, name in zip(columns, PICKS):
        if name == "channel":  # the channels, rows and columns of the chosen layer's output
            limits = limits_for(picks["layer"])
        key = widget_key(name)
        low = 1 if name == "layer" else 0
        high = limits[name] if name == "layer" else limits[name] - 1
        value = st.session_state.get(key, PICK_DEFAULTS[name])
        if not isinstance(value, int) or not low <= value <= high:
            st.warning(plain(f"{PICK_LABELS[name]} {value} is out of range: there are {limits[name]:,} "
                             f"({low}-{high:,}), so {low} is shown."), icon="🔗")
            st.session_state[key] = low
        picks[name] = int(column.number_input(PICK_LABELS[name], low, high, step=1, key=key))
    return picks


def write_link(form: CnnForm, picks: dict[str, int] | None) -> None:
    """The knobs that differ from the lesson's CNN, the dataset the user chose, and the picks: the address bar."""
    values = {n: st.session_state.get(widget_key(n)) for n in KNOBS}
    saved = dict(values)
    for name in PICKS:
        saved[name] = st.session_state.get(widget_key(name), PICK_DEFAULTS[name])
    url.remember(SAVED, saved)
    if form.config is None:
        return
    base = lesson_base()
    query = {n: format_value(getattr(form.config, n)) for n in KNOBS if getattr(form.config, n) != getattr(base, n)}
    if form.fallback:
        query["dataset"] = form.fallback
    chosen = picks if picks is not None else {n: saved[n] for n in PICKS}
    query.update({n: str(v) for n, v in chosen.items() if v is not None and v != PICK_DEFAULTS[n]})
    url.write_query(PAGE, query)
