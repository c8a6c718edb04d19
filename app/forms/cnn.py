"""The CNN lesson's forms (writes): the run's data, length and network (RunConfig knobs over the lesson's CNN preset),
two presets (the lesson's fast CNN, seed 004's Network #8), and what to look inside (test image, conv layer, channel,
output position), all in the address bar.

The page's knobs are :data:`KNOBS`; their ranges, help and checks are the schema's (core.engine.config), a shape that
does not fit the chosen images included. The picks' ranges come from the trained network itself (its test set and
its maps), never from constants of the page.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, TOY_DATASETS, ConfigError, RunConfig, format_value, parse_value
from core.engine.data import DatasetUnavailable
from core.engine.task import query_int
from core.lab.compare import ComparisonConfig
from core.lab.convnet import cnn_against_mlp_here
from core.lessons.presets import CNN_LESSON, CNN_SLOW
from core.serve import budget

from ..text import FALLBACK_DATASET, dataset_available, picker_labels, plain
from ..views.jobs import submit
from . import upload, url
from .fields import knob_widget, widget_value

PAGE = "cnn"
DATA_KNOBS = ("dataset", "train_limit", "epochs", "batch_size", "seed")
NETWORK_KNOBS = ("conv_channels", "conv_kernel", "conv_stride", "conv_padding", "conv_pool")
HEAD_KNOBS = ("hidden", "norm", "dropout")
KNOBS = DATA_KNOBS + NETWORK_KNOBS + HEAD_KNOBS
# The presets a click loads into the knobs: label -> config (its KNOBS are read), the fast one first.
PRESET_BUTTONS = {"The lesson's small CNN (fast)": "lesson",
                  "Seed 004's Network #8 (slow: a GPU or patience)": "slow"}
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


def preset_config(which: str) -> RunConfig:
    """``"lesson"``: the lesson's CNN as it trains here; ``"slow"``: seed 004's Network #8 (E #8)."""
    return CNN_SLOW if which == "slow" else lesson_base()


def _load_preset(which: str) -> None:
    cfg = preset_config(which)
    for name in KNOBS:
        st.session_state[widget_key(name)] = widget_value(cfg, name)
    st.session_state.pop(FALLBACK, None)
    _apply_fallback()


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
    presets = st.columns([1, 2, 3], vertical_alignment="center")
    presets[0].markdown("**Load a network:**")
    for column, (label, which) in zip(presets[1:], PRESET_BUTTONS.items()):
        column.button(label, key=f"cnn_preset_{which}", on_click=_load_preset, args=(which,), width="stretch",
                      help=_preset_help(which))
    _dataset_field()
    for names in (DATA_KNOBS[1:], NETWORK_KNOBS, HEAD_KNOBS):
        for column, name in zip(st.columns(len(names)), names):
            knob_widget(name, widget_key(name), container=column)
    values = {n: st.session_state.get(widget_key(n)) for n in KNOBS}
    problems: dict[str, str] = {}
    cfg = None
    empty = [n for n, v in values.items() if v is None]
    try:
        if empty:  # an emptied number box
            raise ConfigError({n: f"{n} needs a value" for n in empty})
        cfg = lesson_base().replace(**{n: parse_value(n, v) for n, v in values.items()})
    except ValueError as exc:  # a ConfigError naming each bad knob, or a value that does not parse
        problems = exc.problems if isinstance(exc, ConfigError) else {"form": str(exc)}
    versus = None
    if cfg is not None:
        try:
            versus = cnn_against_mlp_here(cfg)
        except (ValueError, ConfigError, DatasetUnavailable) as exc:
            problems = {"arch": " ".join(exc.problems.values()) if isinstance(exc, ConfigError) else str(exc)}
            cfg = None
    return CnnForm(cfg, problems, notices, st.session_state.get(FALLBACK), versus)


def _preset_help(which: str) -> str:
    cfg = preset_config(which)
    if which == "slow":
        return ("Seed 004's Network #8: conv 32 3x3 -> conv 32 3x3 -> 128 -> 64 on all of Fashion-MNIST, batch 64, "
                f"{cfg.epochs} epochs. One epoch took 238 s on a two-thread CPU: train it on a GPU, or be patient.")
    return ("The lesson's CNN: small enough to train beside its MLP in about a minute on a CPU "
            f"(conv {format_value(cfg.conv_channels)}, pooling {cfg.conv_pool}, {cfg.epochs} epochs).")


def _dataset_field() -> None:
    """The image datasets and this browser's uploads (a CNN trains at an upload's own image size)."""
    key = widget_key("dataset")
    options = list(IMAGE_DATASETS) + [n for n in upload.session_dataset_names() if n not in IMAGE_DATASETS]
    if st.session_state.get(key) not in options:
        options.append(st.session_state.get(key))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    knob_widget("dataset", key, container=left, options=options, format_func=picker_labels(options),
                on_change=_on_dataset)
    with right:
        upload.picker_uploader(key)


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
