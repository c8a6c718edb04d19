"""Inside a CNN: train a small CNN, then look at its learned filters, one image's feature maps, and one convolution
worked through by hand."""
from __future__ import annotations

import streamlit as st

from app.forms.cnn import cnn_form, picks_form, submit_each, write_link
from app.forms.url import link_notices
from app.text import describe_run, plain
from app.views.cnn import inside_view, trained_cnn, versus_view
from app.views.compare import family_status, shown_family
from app.views.data import dataset_fallback_notice
from app.views.jobs import train_button

FAMILY = "cnn_family"  # session state holds the job ids only: [{"label", "key"}], the CNN first

st.title("Inside a CNN")
st.caption("A convolution layer slides small kernels (3×3 weights) over its input; each kernel makes one feature map. "
           "Train a small CNN beside an MLP with at least as many parameters, on the same images in the same order; "
           "then look inside the CNN: its first layer's kernels before and after training, what every layer makes "
           "of one test image, and one output value computed by hand. The address bar holds the setup: copy it to "
           "share this exact view.")
st.markdown("Each **conv block** is a convolution (its channels, kernel, stride and padding), the normalization, the "
            "activation and the pooling; the maps are then flattened into the **hidden layers** of an MLP head. "
            "Stride 2 or 2×2 pooling halves the maps, and with them the time each later block takes. Seed 004's "
            "Network #8 (two blocks of 32 3×3 kernels, no pooling, then 128 and 64 units, on all of Fashion-MNIST) is "
            "one click away, but is the slow one: one epoch took 238 s on a two-thread CPU, so train it on a GPU or "
            "with patience. Your own image-folder zip trains here too, at its own image size.")

form = cnn_form()
link_notices(form.notices)
if form.fallback:
    dataset_fallback_notice(form.fallback, "cnn_dataset")
left, right = st.columns([1, 5], vertical_alignment="center")
with left:
    train_button(form.versus, FAMILY, key="cnn_train", label="Train both", submit=submit_each,
                 status=lambda versus: family_status(st.session_state.get(FAMILY), versus),
                 help="Trains the CNN and an MLP with at least as many parameters, with the same seed (the same "
                      "training images in the same order). Runs trained before, by anyone, load from the run store.")
if form.config is None:
    right.error(plain("Fix these settings to train: " + " ".join(form.problems.values())))
else:
    subset = f" · a seeded subset of {form.config.train_limit:,} training images" if form.config.train_limit else ""
    mlp = form.versus.family()[1][1]
    right.caption(plain(describe_run(form.config) + subset + " · against an MLP of "
                        + "-".join(str(w) for w in mlp.hidden) + " units"))

picks = None
runs = shown_family(form.versus.family() if form.versus is not None else [], FAMILY)
if runs:
    if form.versus is not None and [r["key"] for r in runs] != [c.key() for _, c in form.versus.family()]:
        st.info("These are the networks you trained last. The settings above have changed since: press **Train "
                "both** to run them.", icon="ℹ️")
    st.subheader("The CNN against an MLP of at least as many parameters", divider="gray")
    versus_view(runs)
    net = trained_cnn(runs[0]["key"])
    if net is not None:
        picks = inside_view(net, picks_form)
write_link(form, picks)
