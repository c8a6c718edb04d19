"""Sweeps (seed 003 Q4, Q5, Q10): grid, random and Bayesian search with Optuna, watched live."""
from __future__ import annotations

import streamlit as st

from app.forms.sweep import run_buttons, space_form, transfer_button
from app.views.sweep import shown_sweeps, space_view, study_view, top_trials, transfer_source, transfer_view

st.title("Sweeps")
st.caption("Which settings make the best network? Instead of guessing, search: declare which knobs may vary and "
           "how, give a budget of trials, and let Optuna choose the trials. Trials that share a data stream train "
           "side by side as one batched job; every trial is a normal run you can open in the Playground.")

st.subheader("1 · The search space", divider="gray")
form = space_form()
if form.sweep is not None:
    space_view(form.sweep, form.trial_gflop, form.budget_problem)
run_buttons(form.ready)

sweeps = shown_sweeps(form.sweep)
if sweeps:
    st.subheader("2 · The study", divider="gray")
    study_view(sweeps)

source = transfer_source(sweeps)  # seed 003 Q10: a finished Fashion-MNIST sweep
if source is not None:
    st.subheader("3 · The top three on MNIST", divider="gray")
    st.caption("Do settings found on Fashion-MNIST carry over to handwritten digits? The three best trials train "
               "on MNIST as one batched job (the Playground's D-mnist-transfer preset holds three picked by hand).")
    top = top_trials(source)
    transfer_button(top)
    transfer_view(top)
