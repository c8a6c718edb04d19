"""Schema-driven widgets: one widget per RunConfig knob, its range, default and help from core.engine.config.

:func:`knob_widget` draws the widget of one field under any session key; :func:`shown` says
whether a form should show it (``config.knob_applies`` plus the few value rules below);
:func:`validate` turns widget values into a RunConfig or problems by field.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import streamlit as st
import torch

from core.engine.config import TOY_DATASETS, WIDTH_LISTS, ConfigError, RunConfig, format_value, knob_applies, knob_of

FLOAT_STEPS = {"data_noise": 0.05, "val_fraction": 0.05, "init_std": 0.01, "dropout": 0.05, "l1": 0.0001,
               "l2": 0.0001, "lr": 0.0001, "momentum": 0.01, "rms_alpha": 0.001, "rms_momentum": 0.01, "beta1": 0.01,
               "beta2": 0.001, "weight_decay": 0.0001}
INT_STEPS = {"batch_size": 8, "log_every": 10}


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


VALUE_RULES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "data_noise": lambda v: v.get("dataset") in TOY_DATASETS,
    "init_std": lambda v: v.get("init") == "normal",
    "dropout_impl": lambda v: _positive(v.get("dropout")),
}


def shown(name: str, values: Mapping[str, Any]) -> bool:
    """Whether a knob matters for the other values (hidden knobs keep their values)."""
    return VALUE_RULES.get(name, lambda v: True)(values) and knob_applies(name, values)


def field_type(name: str) -> str:
    return RunConfig.__dataclass_fields__[name].type


def widget_value(cfg: RunConfig, name: str) -> Any:
    """A config value in the form its widget holds."""
    value = getattr(cfg, name)
    if name in WIDTH_LISTS:
        return format_value(value)
    kind = field_type(name)
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return value


def allowed_text(name: str, hi: float | None = None) -> str:
    k = knob_of(name)
    hi = k.hi if hi is None else hi
    if field_type(name) == "int":
        return f"Allowed {int(k.lo)}–{int(hi)}."
    return f"Allowed {'above' if k.lo_open else 'from'} {k.lo:g} to {hi:g}."


def knob_widget(name: str, key: str, *, container: Any = None, label: str | None = None, help_extra: str = "",
                options: list | None = None, format_func: Callable[[Any], str] | None = None,
                hi: float | None = None, on_change: Callable | None = None, args: tuple = ()) -> Any:
    """The widget of RunConfig field ``name`` under session key ``key`` (label, range, help from its Knob).

    ``options`` replaces a choice field's options (e.g. datasets incl. uploads); ``hi`` narrows the
    upper limit where a task allows less (e.g. a grid's width)."""
    where = container if container is not None else st
    k = knob_of(name)
    label = label or k.label
    help_text = f"{k.help} {help_extra}".strip()
    kind = field_type(name)
    common = {"key": key, "on_change": on_change, "args": args}
    if name == "hidden":
        return where.text_input(label, help=help_text + " Leave empty for no hidden layer (a linear model).",
                                placeholder="e.g. 128,64", **common)
    if name in WIDTH_LISTS:
        return where.text_input(label, help=help_text, placeholder="e.g. 32,32", **common)
    if kind == "bool":
        return where.checkbox(label, help=help_text, **common)
    if name == "activation" and options is None:  # one name for all layers, or one per layer, typed like hidden
        return where.text_input(label, help=f"{help_text} Allowed names: {', '.join(k.choices or ())}.",
                                placeholder="e.g. relu or relu,relu,sigmoid", **common)
    if k.choices or options is not None:
        choices = list(options if options is not None else k.choices)
        if st.session_state.get(key) not in choices:
            st.session_state[key] = getattr(RunConfig(), name) if getattr(RunConfig(), name) in choices else choices[0]
        return where.selectbox(label, choices, help=help_text, format_func=format_func or str, **common)
    top = k.hi if hi is None else hi
    if kind == "int":
        return where.number_input(label, min_value=int(k.lo), max_value=int(top), step=INT_STEPS.get(name, 1),
                                  help=f"{help_text} {allowed_text(name, top)}", **common)
    return where.number_input(label, min_value=float(k.lo), max_value=float(top), step=FLOAT_STEPS.get(name, 0.01),
                              format="%g", help=f"{help_text} {allowed_text(name, top)}", **common)


def validate(values: Mapping[str, Any]) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {}) or (None, problems by field), including checks that need this server."""
    raw, problems = {}, {}
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
    if values.get("device") == "cuda" and not torch.cuda.is_available():
        problems["device"] = "Device (device) = 'cuda', but this server has no CUDA GPU: choose auto or cpu"
    return (cfg if not problems else None), problems
