"""Your own data: the upload widget, its preview, and the session's list of uploaded datasets.

:func:`handle_upload` turns a file's name and bytes into an :class:`UploadOutcome` (plain data,
safe to keep in session state) by calling :func:`core.engine.uploads.prepare_zip` or
:func:`core.engine.uploads.prepare_csv`; an :class:`~core.engine.uploads.UploadError` becomes a message and
the app carries on. :func:`upload_widget` draws the uploader and the preview. Every dataset
uploaded is remembered for the browser that uploaded it (:mod:`core.serve.owners`: name
``upload:<hash>`` and a title), so its dataset pickers offer it, after a reload too
(:func:`session_uploads`; titles via :func:`app.text.dataset_label`); no other browser sees it.

Class names and file names are user text: they are shown only in dataframes, Plotly labels
(escaped) and Markdown elements after :func:`app.text.plain`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Callable

import pandas as pd
import streamlit as st

from core.engine import catalog
from core.engine import data as datasets
from core.engine import uploads
from core.serve import owners

from ..text import plain
from ..views.data import show_data_preview
from ..views.jobs import browser_id, my_uploads

log = logging.getLogger(__name__)

IMAGE_SIZES = (8, 16, 28, 32, 48, 64)
COLORS = {"L": "grayscale", "RGB": "colour (RGB)"}


@dataclass
class UploadOutcome:
    """What became of one uploaded file: a dataset name and report, or an error message."""

    filename: str
    name: str | None = None
    title: str = ""
    error: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.name is not None


def upload_kind(filename: str, payload: bytes) -> str:
    """'zip' or 'csv', from the extension (or, without a known one, the first bytes)."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in (".zip", ".csv"):
        return suffix[1:]
    return "zip" if bytes(payload[:2]) == b"PK" else "csv"


def handle_upload(filename: str, payload: bytes, *, image_size: int = 28, color: str = "L",
                  label_column: str | int | None = None,
                  test_fraction: float = uploads.limits.CSV_TEST_FRACTION) -> UploadOutcome:
    """Prepare an uploaded zip or CSV; never raises for a bad upload (the error is in the outcome)."""
    shown = uploads.clean_class_name(PurePath(filename or "upload").name)
    try:
        if upload_kind(filename, payload) == "zip":
            result = uploads.prepare_zip(payload, image_size=image_size, color=color)
        else:
            result = uploads.prepare_csv(payload, label_column=label_column, test_fraction=test_fraction)
    except uploads.UploadError as exc:
        return UploadOutcome(shown, error=str(exc))
    except Exception as exc:  # a bug or an unexpected file must not take the page down
        log.exception("upload %s failed", shown)
        return UploadOutcome(shown, error=f"This file could not be read ({type(exc).__name__}). Check that it is a "
                                          "zip of class folders or a CSV with a label column.")
    ds = result.dataset
    title = f"Your upload “{shown}”: {ds.n_classes} classes, {len(ds.y) + len(ds.y_test):,} examples"
    return UploadOutcome(shown, result.name, title, None, dict(result.skipped), list(result.notes), result.from_cache)


# --- the browser's uploads ----------------------------------------------------------------------
def session_uploads() -> list[dict]:
    """Datasets this browser uploaded, oldest first: [{"name", "title"}]."""
    return [{"name": name, "title": title} for name, title in my_uploads().items()]


def remember_upload(name: str, title: str) -> None:
    """Offer an uploaded dataset in this browser's dataset pickers (and only there) from now on."""
    if my_uploads().get(name) != title:
        owners.grant(name, browser_id(), title)


# --- the widget ------------------------------------------------------------------------------------
def _options(kind: str, key: str) -> dict:
    if kind == "zip":
        left, right = st.columns(2)
        size = left.selectbox("Image size (pixels per side)", IMAGE_SIZES, index=IMAGE_SIZES.index(28),
                              key=f"{key}_size", help="Every image is resized to a square of this size.")
        color = right.radio("Colour", list(COLORS), format_func=COLORS.get, key=f"{key}_color", horizontal=True,
                            help="Grayscale needs a third of the inputs; choose colour when colour matters.")
        return {"image_size": int(size), "color": color}
    column = st.text_input("Label column (empty: the column called label, class or target)", key=f"{key}_label",
                           help="The column's name, or its position counted from 0.")
    column = column.strip()
    test = st.number_input("Test fraction (0: no test set; the run's validation fraction splits the rest)",
                           min_value=0.0, max_value=uploads.limits.MAX_TEST_FRACTION, value=0.0, step=0.05,
                           key=f"{key}_test", help="Rows held out as a fixed test set, from "
                           f"{uploads.limits.MIN_TEST_FRACTION} to {uploads.limits.MAX_TEST_FRACTION}. A Kaggle CSV "
                           "has its own test file, so by default all rows train and validate, as in the course.")
    return {"label_column": int(column) if column.isdigit() else (column or None),
            "test_fraction": 0.0 if test < uploads.limits.MIN_TEST_FRACTION else round(float(test), 4)}


def session_dataset_names() -> list[str]:
    return [entry["name"] for entry in session_uploads()]


def _select_dataset(target_key: str, name: str) -> None:
    st.session_state[target_key] = name


def picker_uploader(target_key: str) -> None:
    """An "Upload your own data" popover for a dataset picker whose widget key is ``target_key``."""
    with st.popover("Upload your own data", icon="📤", width="stretch"):
        upload_widget(f"{target_key}_upload", on_use=lambda name: _select_dataset(target_key, name), preview=False)


def upload_widget(key: str = "upload", *, val_fraction: float = 0.1, seed: int = 0,
                  on_use: Callable[[str], None] | None = None, use_label: str = "Use this dataset",
                  preview: bool = True) -> UploadOutcome | None:
    """File chooser (zip or CSV) + preview; returns the outcome of the current file (None before one).

    ``preview=False`` (for a narrow sidebar) shows the class counts as a table instead of the pictures.
    """
    st.caption("A **zip** with one folder per class (for example `cats/001.png`, `dogs/001.png`), or a **CSV** "
               "with a label column and one column per pixel (0–255), like Kaggle's MNIST. Up to "
               f"{uploads.MAX_UPLOAD_BYTES // uploads.MB} MB. The data stays on this server and is used only "
               "for your runs.")
    file = st.file_uploader("Zip of class folders, or a CSV", type=["zip", "csv"], key=f"{key}_file")
    if file is None:
        return None
    payload = file.getvalue()
    options = _options(upload_kind(file.name, payload), key)
    signature = f"{file.file_id}|{sorted(options.items())}"
    done = st.session_state.get(f"{key}_outcome")
    if done is not None and done[0] == signature:
        outcome = done[1]
    else:
        with st.spinner("Reading and checking your data…"):
            outcome = handle_upload(file.name, payload, **options)
        st.session_state[f"{key}_outcome"] = (signature, outcome)
    if not outcome.ok:
        st.error(plain(outcome.error), icon="🚫")
        return outcome
    remember_upload(outcome.name, outcome.title)
    show_upload_report(outcome, val_fraction=val_fraction, seed=seed, key=key, preview=preview)
    if on_use is not None:
        st.button(use_label, type="primary", icon="⬆️", key=f"{key}_use", on_click=on_use,
                  args=(outcome.name,))
    return outcome


def show_upload_report(outcome: UploadOutcome, *, val_fraction: float = 0.1, seed: int = 0,
                       key: str = "upload", preview: bool = True) -> None:
    """What the upload became: one example per class with its name, counts, splits, skipped files, notes."""
    st.success(plain(outcome.title + (" (prepared before, reused)" if outcome.from_cache else "")),
               icon="✅")
    # the skipped files get their own table, so the engine's one-line summary of them is left out
    notes = [n for n in outcome.notes if not (outcome.skipped and n.startswith("Skipped ") and "file(s):" in n)]
    if notes:
        st.caption("  \n".join(plain(note) for note in notes))
    if outcome.skipped:
        st.caption(f"Skipped {sum(outcome.skipped.values()):,} file(s) that could not be used:")
        st.dataframe(pd.DataFrame({"reason": list(outcome.skipped), "files": list(outcome.skipped.values())}),
                     hide_index=True, key=f"{key}_skipped")
    if preview:
        show_data_preview(outcome.name, val_fraction=val_fraction, seed=seed, key=f"{key}_preview")
        return
    try:
        ds = catalog.load_dataset(outcome.name)
    except datasets.DatasetUnavailable as exc:
        st.error(plain(str(exc)))
        return
    test_counts = [int((ds.y_test == c).sum()) for c in range(ds.n_classes)]
    st.dataframe(pd.DataFrame({"class": [str(c) for c in ds.classes], "train + validation": ds.class_counts(),
                               "test": test_counts}), hide_index=True, key=f"{key}_classes")
