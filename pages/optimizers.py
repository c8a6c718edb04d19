"""Optimizers (LESSONS D): the six update rules written out, a 2-D race, the real race, and the loss surface."""
from __future__ import annotations

import streamlit as st

from app.forms.optimizers import families_form, race_form, surface_form
from app.views.jobs import shown_job, train_button
from app.views.optimizers import families_view, lesson_data_notice, race_view, rules_view, surface_view

SURFACE_JOB = "opt_surface_job"  # session state holds the job key only

st.title("Optimizers")
st.caption("Six ways to turn a gradient into a step. Each rule is written out below as the formula and as the "
           "tensor code that trains the networks on this page (it matches torch.optim to float precision). Race "
           "them on a 2-D function, then on a real network, then look at the real network's loss surface and "
           "the path its optimizer took.")

st.subheader("1 · The update rules", divider="gray")
rules_view()

st.subheader("2 · A race on a 2-D function", divider="gray")
st.caption("Every optimizer starts from the same point and runs the code above on a 2-parameter 'network' whose "
           "loss is the function drawn. Adaptive rules (RMSProp, Adam, Nadam) take steps of about their learning "
           "rate in each coordinate, so they get their own learning rate.")
settings, upto = race_form()
race_view(settings, upto)

st.subheader("3 · The real race", divider="gray")
trained_on = lesson_data_notice()
st.caption(f"The LESSONS D network (3 hidden layers of 128 ReLU units, Xavier init) trained on {trained_on} six "
           "times, once per optimizer, in one batched job: the same seed, the same batches and the same initial "
           "weights. Families trained before on this server show at once.")
grids = families_form()
families_view(grids)

st.subheader("4 · The loss surface of a real network, with its path", divider="gray")
st.caption("The trained network's training loss (on a fixed subset of training examples) over a plane through its "
           "final weights. Random directions are filter-normalized (Li et al. 2018): each filter of a direction "
           "has the norm of that filter of the weights. PCA directions are the two along which the weights moved "
           "most during training; the path is projected onto the plane either way.")
surface = surface_form()
train_button(surface, SURFACE_JOB, key="opt_surface_go", label="Compute the loss surface",
             help="Trains the network (recording its weights), then evaluates the loss at every grid point.")
surface_view(surface, shown_job(surface, SURFACE_JOB))
