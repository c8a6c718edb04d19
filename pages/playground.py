"""Playground: set up any network (or load a lesson's preset), train it, watch it learn."""
from __future__ import annotations

import streamlit as st

from app.forms.reported import as_reported_switch
from app.forms.run import config_sidebar
from app.forms.url import link_notices
from app.text import describe_run, plain, with_math
from app.views.data import dataset_fallback_notice, show_data_preview
from app.views.jobs import found_job, found_job_notice, job_done, shown_job, train_button
from app.views.network import network_view
from app.views.run import job_view

LAST_JOB = "gl_job"  # key of the job this session last started

st.title("Playground")
st.caption("Pick a lesson preset or set the knobs in the sidebar, press **Train**, and watch the network learn. "
           "The address bar holds the settings: copy it to share this exact setup.")

form = config_sidebar()
as_reported = as_reported_switch()
cfg = form.config
link_notices(form.notices)
if form.dataset_fallback:
    lesson_fallback = form.preset.fallback if form.preset is not None else None
    dataset_fallback_notice(form.dataset_fallback, "cfg_dataset", changed=lesson_fallback.why if lesson_fallback else None)
if form.preset is not None:
    run = f" — run “{plain(form.preset_run)}”" if len(form.preset.runs) > 1 else ""
    changed = " You have changed some settings since loading it." if form.preset_modified else ""
    st.info(f"**Lesson {form.preset.lesson}: {plain(form.preset.title)}**{run}. {with_math(form.preset.description)}"
            f"{changed}", icon="🎓")

train_col, summary_col = st.columns([1, 5], vertical_alignment="center")
with train_col:
    train_button(cfg, LAST_JOB, key="train", help="Start training with the settings in the sidebar.")
with summary_col:
    if cfg is None:
        n = len(form.problems)
        st.error(f"Fix the {'setting' if n == 1 else f'{n} settings'} marked in the sidebar to train: "
                 + plain(" ".join(form.problems.values())))
    else:
        st.caption(plain(describe_run(cfg)))
if cfg is not None and cfg.residual:
    st.info("**Residual connections:** every hidden layer after the first adds its input to its output, x + f(x). "
            "The gradient then has a path around each activation, so in a deep sigmoid or tanh network the first "
            "layers get far larger gradients than without them: compare the gradient norms per layer with the "
            "switch off.", icon="↪️")

shown = shown_job(cfg, LAST_JOB)
found = found_job(cfg, LAST_JOB)  # e.g. a new visitor on someone's stored run: the setup first, then that result
if found is not None:
    found_job_notice(found)
if shown is None or found is not None and job_done(found):  # someone's live run: straight to it
    st.subheader("The data", divider="gray")
    if cfg is not None:
        show_data_preview(cfg.dataset, cfg.data_noise, cfg.val_fraction, cfg.seed, key="pg_data")
    else:
        st.caption("The data preview appears once the settings are valid.")
if shown is not None:
    if cfg is None or shown != cfg.key():
        st.info("These are the results of your last run. The settings in the sidebar have changed since: "
                "press **Train** to run them.", icon="ℹ️")
    job_view(shown, lesson=form.preset.lesson if form.preset is not None else None, as_reported=as_reported)
    network_view(shown)
