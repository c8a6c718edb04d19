"""Playground: set up any network (or load a lesson's preset), train it, watch it learn."""
from __future__ import annotations

import streamlit as st

from app import live, widgets
from app.datapreview import show_data_preview
from core.jobs import get_manager

LAST_JOB = "gl_job"  # key of the job this session last started
TRAIN_ERROR = "gl_train_error"

st.title("Playground")
st.caption("Pick a lesson preset or set the knobs in the sidebar, press **Train**, and watch the network learn. "
           "The address bar holds the settings: copy it to share this exact setup.")

form = widgets.config_sidebar()
for notice in form.notices:
    st.warning(widgets.plain(notice), icon=":material/link:")
if form.dataset_fallback:
    widgets.dataset_fallback_notice(form.dataset_fallback)
if form.preset is not None:
    run = f" — run “{form.preset_run}”" if len(form.preset.runs) > 1 else ""
    changed = " You have changed some settings since loading it." if form.preset_modified else ""
    st.info(f"**Lesson {form.preset.lesson}: {form.preset.title}**{run}. {form.preset.description}{changed}",
            icon=":material/school:")

cfg = form.config
manager = get_manager()


def start_training(config, force: bool) -> None:
    """Button callback (runs before the page): queue the run, then draw it with its first point."""
    try:
        key = manager.submit(config, force=force)
    except Exception as exc:  # e.g. the requested device vanished: say so, no traceback
        st.session_state[TRAIN_ERROR] = f"Could not start the run: {exc}"
        return
    live.forget(key)
    st.session_state[LAST_JOB] = key
    live.wait_for_first_point(key)


current = manager.snapshot(cfg.key()) if cfg is not None else None
retrain = current is not None and current.status in ("finished", "diverged")
busy = current is not None and current.status in ("queued", "running")

train_col, summary_col = st.columns([1, 5], vertical_alignment="center")
with train_col:
    label = "Training…" if busy else "Train again" if retrain else "Train"
    st.button(label, type="primary", icon=":material/play_arrow:", disabled=cfg is None or busy, key="train",
              on_click=start_training, args=(cfg, retrain),
              help="Trains these settings from scratch, even though a result is stored." if retrain
              else "Start training with the settings in the sidebar.")
with summary_col:
    if cfg is None:
        st.error(f"Fix the setting{'s' if len(form.problems) > 1 else ''} marked in the sidebar to train: "
                 + widgets.plain(" ".join(form.problems.values())))
    else:
        st.caption(widgets.plain(widgets.describe(cfg)))
if TRAIN_ERROR in st.session_state:
    st.error(widgets.plain(st.session_state.pop(TRAIN_ERROR)))

shown = cfg.key() if current is not None else st.session_state.get(LAST_JOB)
if shown is None:
    st.subheader("The data", divider="gray")
    if cfg is not None:
        show_data_preview(cfg.dataset, cfg.data_noise, cfg.val_fraction, cfg.seed, key="pg_data")
    else:
        st.caption("The data preview appears once the settings are valid.")
else:
    if cfg is None or shown != cfg.key():
        st.info("These are the results of your last run. The settings in the sidebar have changed since: "
                "press **Train** to run them.", icon=":material/info:")
    live.job_view(shown)
