"""The Data page's form: which dataset to look at and how it is split (RunConfig's data knobs), URL sync."""
from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, RunConfig

from ..text import FALLBACK_DATASET, dataset_available, picker_labels, plain
from . import upload, url
from .fields import knob_widget, shown, validate, widget_value

PAGE = "data"
SAVED = "data_form"
FIELDS = ("dataset", "data_noise", "val_fraction", "seed")
KEYS = {name: f"data_{name}" for name in FIELDS}  # data_dataset, data_noise, ...
KEYS["data_noise"] = "data_noise"


@dataclass
class DataForm:
    config: RunConfig  # what to show: the chosen data, or the fallback where it is missing
    chosen: str  # the dataset the user chose (kept in the link)
    notices: list[str] = field(default_factory=list)

    @property
    def fallback(self) -> str | None:
        return self.chosen if self.chosen != self.config.dataset else None


def _load(cfg: RunConfig) -> None:
    for name in FIELDS:
        st.session_state[KEYS[name]] = widget_value(cfg, name)


def data_form() -> DataForm:
    """Dataset picker (built-ins and this session's uploads), noise for toy sets, split settings."""
    query = url.incoming_query(PAGE)
    notices: list[str] = []
    if query is not None:
        cfg, notices = url.parse_link(query, set(FIELDS), RunConfig.from_query, RunConfig)
        _load(cfg)
    else:
        url.restore(SAVED, {n: widget_value(RunConfig(), n) for n in FIELDS}, KEYS.get)
    options = list(dict.fromkeys([*BUILTIN_DATASETS, *upload.session_dataset_names(),
                                  st.session_state[KEYS["dataset"]]]))
    left, mid, right = st.columns([3, 2, 2])
    knob_widget("dataset", KEYS["dataset"], container=left, options=options, format_func=picker_labels(options))
    knob_widget("val_fraction", KEYS["val_fraction"], container=mid)
    knob_widget("seed", KEYS["seed"], container=right)
    values = {name: st.session_state[KEYS[name]] for name in FIELDS}
    if shown("data_noise", values):
        knob_widget("data_noise", KEYS["data_noise"])
    url.remember(SAVED, values)
    chosen = values["dataset"]
    cfg, problems = validate(values)
    for problem in problems.values():
        st.error(plain(problem))
    if cfg is None:
        cfg = RunConfig(dataset=chosen if chosen in BUILTIN_DATASETS else FALLBACK_DATASET)
    else:
        url.write_query(PAGE, cfg.to_query())
    if chosen != FALLBACK_DATASET and not dataset_available(chosen):
        cfg = cfg.replace(dataset=FALLBACK_DATASET)
    return DataForm(cfg, chosen, notices)
