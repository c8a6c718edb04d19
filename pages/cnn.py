"""Inside a CNN: train a small CNN, then look at its learned filters, one image's feature maps, and one convolution
worked through by hand."""
from __future__ import annotations

import streamlit as st

from app.forms.cnn import cnn_form, picks_form, write_link
from app.forms.url import link_notices
from app.text import describe_run, plain
from app.views.cnn import inside_view, trained_cnn
from app.views.data import dataset_fallback_notice
from app.views.jobs import shown_job, train_button
from app.views.run import job_view

LAST_JOB = "cnn_job"  # session state holds the job key only

st.title("Inside a CNN")
st.caption("A convolution layer slides small kernels (3×3 weights) over its input; each kernel makes one feature map. "
           "Train a small CNN (two layers of 32 kernels, then 64 hidden units), then look inside it: its first "
           "layer's kernels before and after training, what every layer makes of one test image, and one output "
           "value computed by hand. The address bar holds the setup: copy it to share this exact view.")

form = cnn_form()
link_notices(form.notices)
if form.fallback:
    dataset_fallback_notice(form.fallback, "cnn_dataset")
left, right = st.columns([1, 5], vertical_alignment="center")
with left:
    train_button(form.config, LAST_JOB, key="cnn_train", help="Train the CNN with these settings.")
if form.config is None:
    right.error(plain("Fix these settings to train: " + " ".join(form.problems.values())))
else:
    subset = f" · a seeded subset of {form.config.train_limit:,} training images" if form.config.train_limit else ""
    right.caption(plain(describe_run(form.config) + subset))

picks = None
shown = shown_job(form.config, LAST_JOB)
if shown is not None:
    job_view(shown, results=False)
    net = trained_cnn(shown)
    if net is not None:
        picks = inside_view(net, picks_form)
write_link(form, picks)
