"""Run library: every run stored on this server (by anyone), newest first; filter, compare, open one in the Playground."""
from __future__ import annotations

import streamlit as st

from app.forms.library import library_filters
from app.views.library import library_view, stored_rows

st.title("Run library")
st.caption("Runs trained on this server, by anyone, newest first. Select one row and open it in the Playground: "
           "a stored run shows at once, without training again, and the Playground's address then holds its "
           "settings. Select several to overlay their curves and see which settings differ.")
runs = stored_rows()
library_view(runs, library_filters(runs))
