"""Run library: every run stored on this server (by anyone), newest first; open one in the Playground."""
from __future__ import annotations

import streamlit as st

from app.forms.url import settingless_page
from app.views.library import library_view

st.title("Run library")
st.caption("Runs trained on this server, by anyone, newest first. Select a row and open it in the Playground: "
           "a stored run shows at once, without training again. The Playground's address then holds its settings.")
settingless_page("library")
library_view()
