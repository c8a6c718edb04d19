"""Config widgets generated from the RunConfig schema, the preset picker, and URL sync.

Widget values live under ``cfg_<field>`` keys in session state. They are filled, before the
widgets render, from (in this order) the URL on a session's first run, a config another page
asked for (:func:`request_config`), a preset, or the last valid config (so values survive page
switches and hidden knobs). The current valid config is written back to the query string with
:meth:`RunConfig.to_query` (readable keys, only non-default fields, seed included).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import streamlit as st

from core import data as datasets
from core import paths
from core.config import (BUILTIN_DATASETS, GROUPS, TOY_DATASETS, UPLOAD_PREFIX, ConfigError, RunConfig, knob_applies,
                         fields_by_group, format_value, knob_of)
from core.presets import PRESETS, Preset

FALLBACK_DATASET = "digits"
LAST_VALID = "gl_query"  # last valid config as a query dict (plain strings)
PENDING = "gl_pending_query"  # a config another page asked to load
URL_LOADED = "gl_url_loaded"
DATASET_NOTICE = "gl_dataset_fallback"  # dataset that was replaced by the fallback
PRESET_KEY, PRESET_RUN_KEY, PRESET_LOADED = "gl_preset", "gl_preset_run", "gl_preset_loaded"

DATASET_TITLES = {
    "digits": "Digits 8×8 (scikit-learn, offline)",
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "fashion3": "Fashion-MNIST, 3 classes (image folder)",
    "spiral": "Spiral (2-D toy set)",
    "moons": "Moons (2-D toy set)",
    "circles": "Circles (2-D toy set)",
    "xor": "XOR (2-D toy set)",
    "blobs": "Blobs (2-D toy set)",
}
FLOAT_STEPS = {"data_noise": 0.05, "val_fraction": 0.05, "init_std": 0.01, "dropout": 0.05, "l1": 0.0001,
               "l2": 0.0001, "lr": 0.0001, "momentum": 0.01, "rms_alpha": 0.001, "rms_momentum": 0.01, "beta1": 0.01, "beta2": 0.001,
               "weight_decay": 0.0001}
INT_STEPS = {"batch_size": 8, "log_every": 10}
ALWAYS_OPEN = ("Data", "Architecture", "Optimization")


def widget_key(name: str) -> str:
    return f"cfg_{name}"


def plain(text: object) -> str:
    """Text safe to pass to Markdown-rendering elements (st.error, st.warning...): every ASCII
    punctuation character is backslash-escaped, so user text shows literally."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def relevant(name: str, values: Mapping[str, Any]) -> bool:
    """Whether a knob matters for the other values (irrelevant knobs are hidden, their values kept)."""
    rules = {
        "data_noise": lambda v: v.get("dataset") in TOY_DATASETS,
        "init_std": lambda v: v.get("init") == "normal",
        "dropout_impl": lambda v: _positive(v.get("dropout")),
    }
    return rules.get(name, lambda v: True)(values) and knob_applies(name, values)


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def widget_value(cfg: RunConfig, name: str) -> Any:
    """A config value in the form its widget holds."""
    value = getattr(cfg, name)
    if name == "hidden":
        return format_value(value)
    kind = RunConfig.__dataclass_fields__[name].type
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return value


# --- where values come from ----------------------------------------------------------------------
def config_from_query(query: Mapping[str, Any]) -> tuple[RunConfig, list[str]]:
    """Config from a query string; a bad or stale one gives the defaults plus a notice."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    notices = []
    unknown = sorted(k for k in query if k not in names)
    if unknown:
        notices.append(f"The link had settings this version does not know, which were ignored: {', '.join(unknown)}.")
    try:
        return RunConfig.from_query({k: v for k, v in query.items() if k in names}), notices
    except ConfigError as exc:
        details = " ".join(exc.problems.values())
        notices.append(f"The link's settings are not valid, so the defaults are loaded instead. {details}")
        return RunConfig(), notices


def dataset_available(name: str) -> bool:
    try:
        return datasets.available(name)
    except Exception:  # a damaged upload registry or data folder: treat as unavailable
        return False


def load_into_widgets(cfg: RunConfig) -> None:
    """Put a config into the widget keys (before the widgets render, or from a callback)."""
    for f in dataclasses.fields(RunConfig):
        st.session_state[widget_key(f.name)] = widget_value(cfg, f.name)
    _apply_dataset_fallback()


def _apply_dataset_fallback() -> None:
    key = widget_key("dataset")
    name = st.session_state.get(key, FALLBACK_DATASET)
    if name != FALLBACK_DATASET and not dataset_available(name):
        st.session_state[DATASET_NOTICE] = name
        st.session_state[key] = FALLBACK_DATASET


def request_config(cfg: RunConfig) -> None:
    """Ask the Playground to load ``cfg`` into its widgets on its next render (from any page)."""
    st.session_state[PENDING] = cfg.to_query()


def _on_preset() -> None:
    preset = PRESETS.get(st.session_state.get(PRESET_KEY) or "")
    st.session_state[PRESET_RUN_KEY] = 0
    if preset is not None:
        _load_preset_run(preset, 0)


def _on_preset_run() -> None:
    preset = PRESETS.get(st.session_state.get(PRESET_KEY) or "")
    if preset is not None:
        _load_preset_run(preset, int(st.session_state.get(PRESET_RUN_KEY) or 0))


def _load_preset_run(preset: Preset, index: int) -> None:
    index = min(max(index, 0), len(preset.runs) - 1)
    load_into_widgets(preset.runs[index][1])
    st.session_state[PRESET_LOADED] = _current_values()


def _on_reset() -> None:
    for key in (PRESET_KEY, PRESET_RUN_KEY, PRESET_LOADED, DATASET_NOTICE):
        st.session_state.pop(key, None)
    load_into_widgets(RunConfig())


def _download_dataset(name: str) -> None:
    """Callback: load (and so download) a dataset, then select it."""
    try:
        datasets.load_dataset(name)
    except Exception as exc:
        st.session_state["gl_download_error"] = f"{name}: {exc}"
        return
    st.session_state[widget_key("dataset")] = name
    st.session_state.pop(DATASET_NOTICE, None)


def _current_values() -> dict[str, Any]:
    last = st.session_state.get(LAST_VALID) or {}
    base = RunConfig.from_query(last) if last else RunConfig()
    return {f.name: st.session_state.get(widget_key(f.name), widget_value(base, f.name))
            for f in dataclasses.fields(RunConfig)}


def _prepare_state() -> list[str]:
    """Fill the widget keys before rendering; returns notices to show."""
    notices: list[str] = []
    if not st.session_state.get(URL_LOADED):
        st.session_state[URL_LOADED] = True
        cfg, notices = config_from_query(st.query_params.to_dict())
        load_into_widgets(cfg)
    elif PENDING in st.session_state:
        cfg, notices = config_from_query(st.session_state.pop(PENDING))
        load_into_widgets(cfg)
    else:  # after a page switch (or for hidden knobs) widget keys are gone: restore the last config
        last = st.session_state.get(LAST_VALID) or {}
        try:
            base = RunConfig.from_query(last)
        except ConfigError:
            base = RunConfig()
        for f in dataclasses.fields(RunConfig):
            st.session_state.setdefault(widget_key(f.name), widget_value(base, f.name))
        _apply_dataset_fallback()
    return notices


# --- validation ------------------------------------------------------------------------------------
def validate(values: Mapping[str, Any]) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {}) or (None, problems by field), including checks that need this server."""
    raw = {}
    problems: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            problems[name] = f"{knob_of(name).label} ({name}) needs a value"
        else:
            raw[name] = value
    cfg = None
    try:
        cfg = RunConfig.from_dict(raw)
    except ConfigError as exc:
        problems.update(exc.problems)
    if values.get("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems["device"] = "Device (device) = 'cuda', but this server has no CUDA GPU: choose auto or cpu"
    return (cfg if not problems else None), problems


# --- rendering -------------------------------------------------------------------------------------
@dataclass
class ConfigForm:
    """What the sidebar produced: a valid config (or None), problems, notices, the preset."""

    config: RunConfig | None
    problems: dict[str, str]
    notices: list[str] = field(default_factory=list)
    preset: Preset | None = None
    preset_run: str | None = None
    preset_modified: bool = False
    dataset_fallback: str | None = None


def dataset_label(name: str) -> str:
    title = DATASET_TITLES.get(name) or (f"Uploaded dataset {name[len(UPLOAD_PREFIX):][:10]}"
                                         if name.startswith(UPLOAD_PREFIX) else name)
    return title if dataset_available(name) else f"{title} (not on this server)"


def _render_field(name: str, problems: Mapping[str, str]) -> None:
    k = knob_of(name)
    key = widget_key(name)
    help_text = k.help
    kind = RunConfig.__dataclass_fields__[name].type
    if name == "dataset":
        from app import upload_ui  # upload_ui imports this module inside its functions: no import cycle

        options = list(BUILTIN_DATASETS) + [n for n in upload_ui.session_dataset_names() if n not in BUILTIN_DATASETS]
        current = st.session_state.get(key)
        if current not in options:
            options.append(current)
        st.selectbox(k.label, options, key=key, help=help_text, format_func=upload_ui.dataset_label)
        upload_ui.picker_uploader(key)
    elif name == "hidden":
        st.text_input(k.label, key=key, help=help_text + " Leave empty for no hidden layer (a linear model).",
                      placeholder="e.g. 128,64")
    elif k.choices:
        st.selectbox(k.label, list(k.choices), key=key, help=help_text)
    elif kind == "int":
        st.number_input(k.label, min_value=int(k.lo), max_value=int(k.hi), step=INT_STEPS.get(name, 1), key=key,
                        help=f"{help_text} Allowed {int(k.lo)}–{int(k.hi)}.")
    else:
        allowed = f"{'above' if k.lo_open else 'from'} {k.lo:g} to {k.hi:g}"
        st.number_input(k.label, min_value=float(k.lo), max_value=float(k.hi), step=FLOAT_STEPS.get(name, 0.01),
                        format="%g", key=key, help=f"{help_text} Allowed {allowed}.")
    if name in problems:
        st.error(plain(problems[name]))


def _sanitize_choices() -> None:
    """Selectbox values must be among their options (a stale session or URL may hold others)."""
    for f in dataclasses.fields(RunConfig):
        k = f.metadata["knob"]
        key = widget_key(f.name)
        if k.choices and st.session_state.get(key) not in k.choices:
            st.session_state[key] = getattr(RunConfig(), f.name)


def preset_picker() -> tuple[Preset | None, str | None]:
    """Preset selectbox (lessons A–E) and, for a family, the run within it; choosing loads it."""
    names = list(PRESETS)
    st.selectbox("Preset (lessons A–E)", names, index=None, key=PRESET_KEY, on_change=_on_preset,
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
    return preset, labels[run_index or 0]


def config_sidebar() -> ConfigForm:
    """Render the preset picker and the grouped config widgets in the sidebar."""
    notices = _prepare_state()
    _sanitize_choices()
    values = _current_values()
    cfg, problems = validate(values)
    with st.sidebar:
        preset, run_label = preset_picker()
        for group in GROUPS:
            names = [f.name for f in fields_by_group()[group] if relevant(f.name, values)]
            has_problem = any(n in problems for n in names)
            open_ = group in ALWAYS_OPEN or has_problem or any(
                values.get(n) != widget_value(RunConfig(), n) for n in names)
            with st.expander(group, expanded=open_):
                for name in names:
                    _render_field(name, problems)
        st.button("Reset to defaults", on_click=_on_reset, help="Every setting back to its default.")
    if cfg is not None:
        query = cfg.to_query()
        st.session_state[LAST_VALID] = query
        if st.query_params.to_dict() != query:
            st.query_params.from_dict(query)
    fallback = st.session_state.get(DATASET_NOTICE)
    if values.get("dataset") != FALLBACK_DATASET:
        st.session_state.pop(DATASET_NOTICE, None)
        fallback = None
    loaded = st.session_state.get(PRESET_LOADED)
    modified = preset is not None and loaded is not None and loaded != values
    return ConfigForm(cfg, problems, notices, preset, run_label, modified, fallback)


def dataset_fallback_notice(original: str) -> None:
    """The visible notice for a dataset replaced by the offline fallback (+ a download offer)."""
    title = DATASET_TITLES.get(original, original)
    st.warning(plain(f"{title} is not available on this server (its files are not in the data folder"
                     f"{'' if paths.downloads_allowed() else ' and downloads are off'}), so the settings use "
                     f"{DATASET_TITLES[FALLBACK_DATASET]} instead, which needs no download. "
                     "Everything else is unchanged."), icon=":material/warning:")
    if paths.downloads_allowed() and not original.startswith(UPLOAD_PREFIX):
        st.button(f"Download {title} and use it", on_click=_download_dataset, args=(original,),
                  help="Downloads the official files once (tens of MB) into the app's cache.")
    error = st.session_state.pop("gl_download_error", None)
    if error:
        st.error(plain(f"Download failed: {error}"))


def describe(cfg: RunConfig) -> str:
    """One line summary of a config, e.g. 'MLP 64-64 relu · adam lr 0.001 · batch 64 · 10 epochs'."""
    from app import upload_ui  # imports this module: import here, not at the top
    arch = "CNN + MLP" if cfg.arch == "cnn" else "MLP"
    layers = "-".join(str(w) for w in cfg.hidden) or "no hidden layer"
    extras = [x for x in (cfg.norm if cfg.norm != "none" else "", f"dropout {cfg.dropout:g}" if cfg.dropout else "",
                          f"L1 {cfg.l1:g}" if cfg.l1 else "", f"L2 {cfg.l2:g}" if cfg.l2 else "") if x]
    return " · ".join([upload_ui.dataset_label(cfg.dataset), f"{arch} {layers} {cfg.activation}",
                       *extras, f"{cfg.optimizer} lr {cfg.lr:g}", f"batch {cfg.batch_size}",
                       f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}", f"seed {cfg.seed}"])
