"""Data: look at a dataset before training on it (examples per class, class counts, splits)."""
from __future__ import annotations

import streamlit as st

from app.forms.data import data_form
from app.forms.url import link_notices
from app.views.data import dataset_fallback_notice, show_data_preview

st.title("Data")
st.caption("One example per class with its name, how many examples each class has, and how the data is split "
           "into train, validation and test sets. 2-D toy sets are drawn as points.")

form = data_form()
link_notices(form.notices)
if form.fallback:
    dataset_fallback_notice(form.fallback, "data_dataset")
cfg = form.config
show_data_preview(cfg.dataset, cfg.data_noise, cfg.val_fraction, cfg.seed, key="data_page")
