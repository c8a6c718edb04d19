"""The Run library's filters (dataset, lesson, optimizer): multiselects over what is stored, kept in the URL."""
from __future__ import annotations

import streamlit as st

from ..records.library import (LibraryFilter, LibraryRow, QUERY_KEYS, filter_from_query, filter_options,
                               filter_to_query)
from ..text import dataset_title, picker_labels
from . import url

PAGE = "library"
SAVED = "library_form"
KEYS = {name: f"library_{q}" for name, q in QUERY_KEYS.items()}  # library_dataset, library_lesson, ...
LABELS = {"datasets": "Dataset", "lessons": "Lesson", "optimizers": "Optimizer"}


def library_filters(rows: list[LibraryRow]) -> LibraryFilter:
    """Three multiselects (none chosen: every run) over the values the stored ``rows`` have."""
    query = url.incoming_query(PAGE)
    if query is not None:
        chosen, notices = url.parse_link(query, set(QUERY_KEYS.values()), filter_from_query, LibraryFilter)
        url.link_notices(notices)
        for name, key in KEYS.items():
            st.session_state[key] = list(getattr(chosen, name))
    else:
        url.restore(SAVED, {name: [] for name in KEYS}, KEYS.get)
    options = filter_options(rows)
    for column, (name, key) in zip(st.columns(3), KEYS.items()):
        choices = list(dict.fromkeys([*options[name], *st.session_state[key]]))  # a link may name one not stored
        column.multiselect(LABELS[name], choices, key=key, placeholder="all",
                           format_func=picker_labels(choices, dataset_title) if name == "datasets" else str)
    values = {name: list(st.session_state[key]) for name, key in KEYS.items()}
    url.remember(SAVED, values)
    chosen = LibraryFilter(**{name: tuple(v) for name, v in values.items()})
    url.write_query(PAGE, filter_to_query(chosen))
    return chosen
