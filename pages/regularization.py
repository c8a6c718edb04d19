"""Regularization: one network, several regularizers, trained side by side on the same data order."""
from __future__ import annotations

import streamlit as st

from app.forms import upload
from app.forms.reported import as_reported_switch
from app.forms.compare import Keys, base_split, family_editor, submit_comparison, use_dataset
from app.text import dataset_label, plain, plural
from app.views.compare import comparison_view, family_status, gap_runs, shown_family
from app.views.jobs import train_button
from core.lessons import sentences as lessons

st.title("Regularization")
st.caption("Train one network several times, each with a different regularizer (none, L1, L2, dropout, BatchNorm, "
           "LayerNorm or a mix), all with the same seed: the same data split, initial weights and batch order. "
           "Watch where training and validation accuracy drift apart, and what each regularizer does to the "
           "weights. Load a lesson below, or edit the table.")


def upload_area(keys: Keys) -> None:
    """Your own data, offered as the base network's dataset."""
    with st.expander("Upload your own data", icon="📤", expanded=bool(st.session_state.get("reg_upload_file"))):
        val_fraction, seed = base_split(keys)
        upload.upload_widget("reg_upload", val_fraction=val_fraction, seed=seed,
                             on_use=lambda name: use_dataset(keys, name), use_label="Train the variants on this dataset")


form = family_editor("reg", upload_area, page="regularization")
as_reported = as_reported_switch()
slot = form.keys.family  # [{"label", "key", "grid"?, "cell"?}]: job ids only
left, right = st.columns([1, 4], vertical_alignment="center")
with left:
    train_button(form.config, slot, key="reg_train", label=f"Train {plural(len(form.family), 'variant')}",
                 submit=submit_comparison, status=lambda config: family_status(st.session_state.get(slot), config),
                 help="Trains every variant with the same seed (same data order and initial weights). Variants "
                      "trained before, by anyone, load from the run store at once.")
if form.family:
    cfg = form.family[0][1]
    right.caption(plain(f"{plural(len(form.family), 'network')} on {dataset_label(cfg.dataset)}, "
                        f"{plural(cfg.epochs, 'epoch')} each, batch {cfg.batch_size}, seed {cfg.seed}. New variants "
                        "train together in one job (batched where their shapes allow); variants trained before load "
                        "from the run store at once."))
runs = shown_family(form.family, slot)
if runs:
    if [r["key"] for r in runs] != [c.key() for _, c in form.family]:
        st.info("These are the results of the variants you trained last. The settings above have changed since: "
                "press **Train** to run them.", icon="ℹ️")
    st.subheader("3 · Compare", divider="gray")
    finals = gap_runs(runs)
    if "none" in finals:  # a family with an unregularized baseline: say what the regularizers did to its gap
        st.markdown(plain(lessons.regularization_sentence(finals, "none")))
    comparison_view(runs, prefix="reg_cmp", as_reported=as_reported)
