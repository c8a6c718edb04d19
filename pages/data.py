"""Data: look at a dataset before training on it (examples per class, class counts, splits)."""
from __future__ import annotations

import streamlit as st

from app import upload_ui, widgets
from app.datapreview import show_data_preview
from core.config import BUILTIN_DATASETS, RunConfig

st.title("Data")
st.caption("One example per class with its name, how many examples each class has, and how the data is split "
           "into train, validation and test sets. 2-D toy sets are drawn as points.")

last = st.session_state.get(widgets.LAST_VALID) or {}
try:
    cfg = RunConfig.from_query(last)
except Exception:
    cfg = RunConfig()
options = list(dict.fromkeys([*BUILTIN_DATASETS, *upload_ui.session_dataset_names(), cfg.dataset]))
name = st.selectbox("Dataset", options, index=options.index(cfg.dataset), format_func=upload_ui.dataset_label,
                    key="data_dataset")
if name != "digits" and not widgets.dataset_available(name):
    widgets.dataset_fallback_notice(name)
    name = "digits"
noise = cfg.data_noise
if name in ("spiral", "moons", "circles", "xor", "blobs"):
    noise = st.slider("Toy-set noise", 0.0, 1.0, float(cfg.data_noise), 0.05, key="data_noise")
show_data_preview(name, noise, cfg.val_fraction, cfg.seed, key="data_page")
