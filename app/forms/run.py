"""The Playground's form: every RunConfig knob in the sidebar, the lesson preset picker, URL sync.

Widget values live under ``cfg_<field>`` keys in session state. They are filled, before the
widgets render, from the URL when it holds a link (a shared setup, "Open in Playground", a
reload), else from this session's last values. The address bar holds the config
(:meth:`RunConfig.to_query`, non-default fields, seed included), the preset and its run, and
the dataset the user chose even where this server lacks it (the form then trains on the
offline fallback and says so).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, DEPTH, GROUPS, RunConfig, fields_by_group
from core.engine.task import clipped
from core.lessons.presets import PRESETS, Preset
from core.lessons.setups import PLAYGROUND_LINK_KEYS, RunSetup, playground_setup, run_on_server

from ..text import FALLBACK_DATASET, dataset_available, picker_labels, plain
from . import upload, url
from .fields import knob_widget, shown, validate, widget_value

PAGE = "playground"
FIELD_NAMES = [f.name for f in dataclasses.fields(RunConfig)]
SAVED = "gl_run_form"  # this session's widget values
DATASET_NOTICE = "gl_dataset_fallback"  # the chosen dataset that the fallback replaced
PRESET_KEY, PRESET_RUN_KEY, PRESET_LOADED = "gl_preset", "gl_preset_run", "gl_preset_loaded"
LINK_KEYS = PLAYGROUND_LINK_KEYS  # page keys of the URL besides the config's fields
ALWAYS_OPEN = ("Data", "Architecture", "Optimization")


def widget_key(name: str) -> str:
    return f"cfg_{name}"


@dataclass
class RunForm:
    """What the sidebar produced: a valid config (or None), problems, link notices, the preset."""

    config: RunConfig | None
    problems: dict[str, str]
    notices: list[str] = field(default_factory=list)
    preset: Preset | None = None
    preset_run: str | None = None
    preset_modified: bool = False
    dataset_fallback: str | None = None


# --- where values come from ----------------------------------------------------------------------
def setup_from_query(query: dict) -> tuple[RunSetup, list[str]]:
    """The run a link trains here (core.lessons.setups, as a prepared lecture warms it); a bad or stale one gives
    the defaults plus a notice."""
    return url.parse_link({k: v for k, v in query.items() if k not in LINK_KEYS}, set(FIELD_NAMES) | {DEPTH},
                          lambda kept: playground_setup(kept, dataset_available),
                          lambda: run_on_server(RunConfig(), dataset_available))


def load_into_widgets(cfg: RunConfig) -> None:
    """Put a config into the widget keys (before the widgets render, or from a callback)."""
    for name in FIELD_NAMES:
        st.session_state[widget_key(name)] = widget_value(cfg, name)
    st.session_state.pop(DATASET_NOTICE, None)
    _apply_dataset_fallback()


def _apply_dataset_fallback() -> None:
    key = widget_key("dataset")
    name = st.session_state.get(key, FALLBACK_DATASET)
    if name != FALLBACK_DATASET and not dataset_available(name):
        st.session_state[DATASET_NOTICE] = name
        st.session_state[key] = FALLBACK_DATASET


def _load_preset_run(preset: Preset, index: int) -> None:
    """Load one run of a lesson, with the lesson's Digits settings where its dataset is missing here."""
    index = min(max(index, 0), len(preset.runs) - 1)
    here, missing = preset.for_server(dataset_available)
    load_into_widgets(here.runs[index][1])
    if missing:
        st.session_state[DATASET_NOTICE] = missing
    st.session_state[PRESET_LOADED] = _current_values()


def _on_preset() -> None:
    preset = PRESETS.get(st.session_state.get(PRESET_KEY) or "")
    st.session_state[PRESET_RUN_KEY] = 0
    if preset is not None:
        _load_preset_run(preset, 0)


def _on_preset_run() -> None:
    preset = PRESETS.get(st.session_state.get(PRESET_KEY) or "")
    if preset is not None:
        _load_preset_run(preset, int(st.session_state.get(PRESET_RUN_KEY) or 0))


def _on_reset() -> None:
    for key in (PRESET_KEY, PRESET_RUN_KEY, PRESET_LOADED):
        st.session_state.pop(key, None)
    load_into_widgets(RunConfig())


def _on_dataset() -> None:
    st.session_state.pop(DATASET_NOTICE, None)
    _apply_dataset_fallback()


def _current_values() -> dict[str, Any]:
    saved = st.session_state.get(SAVED) or {}
    return {name: st.session_state.get(widget_key(name), saved.get(name, widget_value(RunConfig(), name)))
            for name in FIELD_NAMES}


def _load_link(query: dict) -> list[str]:
    setup, notices = setup_from_query(query)
    load_into_widgets(setup.config)
    if setup.fallback:
        st.session_state[DATASET_NOTICE] = setup.fallback
    for key in (PRESET_KEY, PRESET_RUN_KEY, PRESET_LOADED):
        st.session_state.pop(key, None)
    preset = PRESETS.get(query.get("preset") or "")
    if query.get("preset") and preset is None:
        notices.append(f"The link named a lesson preset this version does not know, which was ignored: "
                       f"{clipped(query['preset'], 60)}.")
    if preset is not None:
        st.session_state[PRESET_KEY] = preset.name
        try:
            index = min(max(int(query.get("run") or 0), 0), len(preset.runs) - 1)
        except ValueError:
            index = 0
        st.session_state[PRESET_RUN_KEY] = index
        here, _ = preset.for_server(dataset_available)
        st.session_state[PRESET_LOADED] = {n: widget_value(here.runs[index][1], n) for n in FIELD_NAMES}
    return notices


def _prepare_state() -> list[str]:
    """Fill the widget keys before rendering; returns notices to show."""
    query = url.incoming_query(PAGE)
    if query is not None:
        return _load_link(query)
    url.restore(SAVED, {n: widget_value(RunConfig(), n) for n in FIELD_NAMES}, widget_key)
    _apply_dataset_fallback()
    return []


# --- rendering -------------------------------------------------------------------------------------
def _dataset_field(values: dict) -> None:
    key = widget_key("dataset")
    options = list(BUILTIN_DATASETS) + [n for n in upload.session_dataset_names() if n not in BUILTIN_DATASETS]
    if st.session_state.get(key) not in options:
        options.append(st.session_state.get(key))
    knob_widget("dataset", key, options=options, format_func=picker_labels(options), on_change=_on_dataset)
    upload.picker_uploader(key)


def preset_picker() -> tuple[Preset | None, str | None]:
    """Preset selectbox (lessons A–E) and, for a family, the run within it; choosing loads it."""
    st.selectbox("Preset (lessons A–E)", list(PRESETS), index=None, key=PRESET_KEY, on_change=_on_preset,
                 placeholder="Choose an experiment…",
                 format_func=lambda n: f"{PRESETS[n].lesson} · {PRESETS[n].title}",
                 help="Loads a lesson's experiment into the settings below.")
    preset = PRESETS.get(st.session_state.get(PRESET_KEY) or "")
    if preset is None:
        return None, None
    labels = [label for label, _ in preset.runs]
    run_index = 0
    if len(labels) > 1:
        if st.session_state.get(PRESET_RUN_KEY) not in range(len(labels)):
            st.session_state[PRESET_RUN_KEY] = 0
        run_index = st.selectbox("Run of this experiment", list(range(len(labels))), key=PRESET_RUN_KEY,
                                 format_func=lambda i: labels[i], on_change=_on_preset_run)
    return preset, labels[run_index]


def config_sidebar() -> RunForm:
    """The preset picker and the grouped config widgets in the sidebar; writes the URL."""
    notices = _prepare_state()
    values = _current_values()
    cfg, problems = validate(values)
    with st.sidebar:
        preset, run_label = preset_picker()
        for group in GROUPS:
            names = [f.name for f in fields_by_group()[group] if shown(f.name, values)]
            open_ = group in ALWAYS_OPEN or any(n in problems for n in names) or any(
                values.get(n) != widget_value(RunConfig(), n) for n in names)
            with st.expander(group, expanded=open_):
                for name in names:
                    if name == "dataset":
                        _dataset_field(values)
                    else:
                        knob_widget(name, widget_key(name))
                    if name in problems:
                        st.error(plain(problems[name]))
        st.button("Reset to defaults", on_click=_on_reset, help="Every setting back to its default.")
    values = _current_values()
    url.remember(SAVED, values)
    fallback = st.session_state.get(DATASET_NOTICE)
    if values.get("dataset") != FALLBACK_DATASET:
        st.session_state.pop(DATASET_NOTICE, None)
        fallback = None
    if cfg is not None:
        query = cfg.to_query()
        if fallback:
            query["dataset"] = fallback  # the link keeps what the user chose
        if preset is not None:
            query["preset"] = preset.name
            if len(preset.runs) > 1:
                query["run"] = str(st.session_state.get(PRESET_RUN_KEY) or 0)
        url.write_query(PAGE, query)
    loaded = st.session_state.get(PRESET_LOADED)
    modified = preset is not None and loaded is not None and loaded != values
    if preset is not None:  # the lesson as it trains here (its description says what the fallback changed)
        preset = preset.for_server(dataset_available)[0]
    return RunForm(cfg, problems, notices, preset, run_label, modified, fallback)
