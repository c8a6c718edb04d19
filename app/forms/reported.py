"""The one switch "Show accuracy as the coursework reports computed it": a sidebar toggle whose state is this
session's, the same on every page that shows accuracies (kept apart from the widget, whose state a page switch
drops or resets)."""
from __future__ import annotations

import streamlit as st

from ..records.reported import SWITCH_HELP, SWITCH_KEY, SWITCH_LABEL

KEPT = "as_reported_kept"


def _keep() -> None:
    st.session_state[KEPT] = bool(st.session_state.get(SWITCH_KEY))


def as_reported_switch() -> bool:
    """Draw the switch in the sidebar; whether it is on."""
    st.session_state[SWITCH_KEY] = bool(st.session_state.get(KEPT, False))
    return st.sidebar.toggle(SWITCH_LABEL, key=SWITCH_KEY, help=SWITCH_HELP, on_change=_keep)
