"""Regularization: one network, several regularizers, trained side by side on the same data order."""
from __future__ import annotations

import streamlit as st

from app import compare, upload_ui

st.title("Regularization")
st.caption("Train one network several times, each with a different regularizer (none, L1, L2, dropout, BatchNorm, "
           "LayerNorm or a mix), all with the same seed: the same data split, initial weights and batch order. "
           "Watch where training and validation accuracy drift apart, and what each regularizer does to the "
           "weights. Load a lesson below, or edit the table.")


def upload_area(keys: compare.Keys) -> None:
    """Your own data, offered as the base network's dataset."""
    opened = bool(st.session_state.get("reg_upload_file"))
    with st.expander("Upload your own data", icon=":material/upload_file:", expanded=opened):
        val_fraction, seed = compare.base_split(keys)
        upload_ui.upload_widget("reg_upload", val_fraction=val_fraction, seed=seed,
                                on_use=lambda name: compare.use_dataset(keys, name),
                                use_label="Train the variants on this dataset")


family, problems = compare.family_editor("reg", upload_area)
compare.train_button(family, problems, "reg")
runs = st.session_state.get(compare.Keys("reg").family)
if runs:
    st.subheader("3 · Compare", divider="gray")
    compare.comparison_view(runs, prefix="reg_cmp")
