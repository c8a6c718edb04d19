"""Gradient check: compare backprop with finite differences layer by layer, and see why checks fail."""
from __future__ import annotations

import streamlit as st

from app.forms.gradcheck import CHECK_JOB, check_button, check_form, seed_button, seed_checks
from app.forms.url import link_notices
from app.text import plain
from app.views.data import dataset_fallback_notice
from app.views.gradcheck import check_job_view, seed_view

st.title("Gradient check")
st.caption("Backprop gives every weight's gradient in one backward pass. A gradient check recomputes each one "
           "the slow way, (J(θ+ε) − J(θ−ε)) / 2ε, and compares: ‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖) below 1e-7 "
           "means backprop is right, above 1e-5 means something is wrong. Pick a network, then flip the switches "
           "to see how a check itself goes wrong.")

form = check_form()
link_notices(form.notices)
if form.fallback:
    dataset_fallback_notice(form.fallback, "gc_cfg_dataset")
if form.problems:
    st.error(plain(" ".join(form.problems.values())))
check_button(form.check)
check_job_view(form.check, st.session_state.get(CHECK_JOB))

st.subheader("The seed's 0.99999", divider="gray")
st.caption("Seed 001 ended its gradient check with “Difference: 0.9999999999998282 … our gradient is not proper”. "
           "Here is its network (lesson B, 784-13-13-13-3) checked right and with two suspected causes; float32 at "
           "many initializations, since one initialization proves nothing there.")
seeds = seed_checks()
seed_button(seeds)
seed_view(seeds)
