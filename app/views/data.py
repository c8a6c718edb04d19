"""Data views: the preview (one example per class with its name, class counts, split sizes, 2-D
scatter) and the one dataset-fallback notice.

Used by the Data page, the Playground and the upload form. Class names may come from user uploads, so they are
shown only in Plotly labels (escaped) and dataframes (plain text), never as Markdown.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import streamlit as st

from core.engine import catalog
from core.engine import data as datasets
from core.engine import paths
from core.engine.config import UPLOAD_PREFIX
from core.serve import owners

from ..figures import run as figures
from ..text import FALLBACK_DATASET, dataset_title, plain, upload_is_mine
from .charts import plotly_chart


@functools.lru_cache(maxsize=32)
def _preview(name: str, noise: float):
    """(dataset, figures...) for a dataset, built once per process."""
    ds = catalog.load_dataset(name, noise)
    counts = ds.class_counts()
    test_counts = np.bincount(ds.y_test.numpy(), minlength=ds.n_classes).tolist()
    table = pd.DataFrame({"class": [str(c) for c in ds.classes], "train + validation": counts, "test": test_counts})
    if ds.is_image:
        first = [int(np.flatnonzero(ds.y.numpy() == c)[0]) if counts[c] else None for c in range(ds.n_classes)]
        have = [i for i in first if i is not None]
        names = [ds.classes[c] for c, i in enumerate(first) if i is not None]
        cols = 10 if ds.n_classes <= 10 else 12
        picture = figures.examples_figure(ds.x[have].numpy(), names, cols=cols)
    else:
        picture = figures.toy_scatter_figure(ds.x.numpy(), ds.y.numpy(), ds.classes,
                                             "Training pool (train + validation)")
    return ds, table, picture, figures.class_counts_figure(counts, ds.classes, "Examples per class (train + validation)")


def split_sizes(n_pool: int, n_test: int, val_fraction: float, seed: int) -> dict[str, int]:
    train_idx, val_idx = datasets.split_indices(n_pool, val_fraction, seed)
    return {"train": len(train_idx), "validation": len(val_idx), "test": n_test}


def show_data_preview(name: str, noise: float = 0.1, val_fraction: float = 0.1, seed: int = 0,
                      key: str = "data") -> bool:
    """Draw the preview; returns False (with a message) when the dataset cannot be loaded."""
    try:
        ds, table, picture, counts_fig = _preview(name, round(float(noise), 6))
    except datasets.DatasetUnavailable as exc:
        st.error(plain(str(exc)))
        return False
    sizes = split_sizes(len(ds.y), len(ds.y_test), val_fraction, seed)
    shape = "×".join(str(s) for s in ds.input_shape)
    st.caption(plain(f"{ds.title}: {ds.n_classes} classes, inputs of shape {shape}. "
                     f"Split: {sizes['train']:,} train, {sizes['validation']:,} validation "
                     f"(validation fraction {val_fraction:g}, seed {seed}), {sizes['test']:,} test."))
    if ds.notice:
        st.info(plain(ds.notice))
    if ds.is_image:
        plotly_chart(picture, f"{key}_examples", width="content")
    left, right = st.columns(2)
    with left:
        if ds.is_image:
            plotly_chart(counts_fig, f"{key}_counts")
        else:
            plotly_chart(picture, f"{key}_scatter")
    with right:
        st.dataframe(table, hide_index=True, width="stretch")
        st.dataframe(pd.DataFrame([sizes]), hide_index=True, width="stretch")
    return True


def _download_dataset(name: str, target_key: str | None) -> None:
    """Callback: load (and so download) a dataset, then select it in ``target_key``'s widget."""
    try:
        catalog.load_dataset(name)
    except Exception as exc:
        st.session_state["gl_download_error"] = f"{name}: {exc}"
        return
    if target_key:
        st.session_state[target_key] = name


def dataset_fallback_notice(original: str, target_key: str | None = None, changed: str | None = None) -> None:
    """The one notice for a chosen dataset that is not on this server, replaced by the offline fallback
    (with a download offer where downloads are allowed; a success selects it in ``target_key``).
    ``changed``: what a lesson's fallback settings change besides the dataset (core.lessons.presets.Fallback.why).
    Another browser's upload gets the "not yours" notice instead."""
    if not upload_is_mine(original):
        st.warning(plain(f"{owners.not_yours(original)} This page uses {dataset_title(FALLBACK_DATASET)} instead."),
                   icon="🔒")
        return
    title = dataset_title(original)
    rest = (f"For the lesson to show there it trains {changed}" if changed else "Everything else is unchanged.")
    st.warning(plain(f"{title} is not available on this server (its files are not in the data folder"
                     f"{'' if paths.downloads_allowed() else ' and downloads are off'}), so this page uses "
                     f"{dataset_title(FALLBACK_DATASET)} instead, which needs no download. The link keeps "
                     f"{title}. {rest}"), icon="⚠️")
    if paths.downloads_allowed() and not original.startswith(UPLOAD_PREFIX):
        st.button(f"Download {title} and use it", on_click=_download_dataset, args=(original, target_key),
                  key=f"download_{target_key or 'data'}_{original}",
                  help="Downloads the official files once (tens of MB) into the app's cache.")
    error = st.session_state.pop("gl_download_error", None)
    if error:
        st.error(plain(f"Download failed: {error}"))
