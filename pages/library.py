"""Run library: every run stored on this server (by anyone), newest first; open one in the Playground."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import streamlit as st

from app import widgets
from core.config import ConfigError, RunConfig
from core.jobs import get_manager

st.title("Run library")
st.caption("Runs trained on this server, by anyone, newest first. Select a row and open it in the Playground: "
           "a stored run shows at once, without training again.")

store = get_manager().store
runs = []
for meta in store.list_runs(kind="run"):
    try:
        cfg = RunConfig.from_dict(meta.get("config") or {})
    except (ConfigError, TypeError):
        continue  # a run from an older schema: not loadable into the widgets
    runs.append((cfg, meta))
for problem in store.problems:
    st.warning(widgets.plain(problem))

if not runs:
    st.info("No stored runs yet. Train something in the Playground.")
    st.stop()


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else ""


table = pd.DataFrame([{
    "trained (UTC)": _when(meta.get("saved_at")),
    "dataset": cfg.dataset,
    "hidden": ",".join(str(w) for w in cfg.hidden),
    "activation": cfg.activation,
    "optimizer": cfg.optimizer,
    "lr": cfg.lr,
    "epochs": cfg.epochs,
    "status": meta.get("status", ""),
    "test accuracy": meta.get("test_acc"),
    "val accuracy": meta.get("val_acc"),
    "s/epoch": (sum(meta["epoch_seconds"]) / len(meta["epoch_seconds"])) if meta.get("epoch_seconds") else None,
} for cfg, meta in runs])
picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key="library_table",
                      column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                     "val accuracy": st.column_config.NumberColumn(format="%.4f"),
                                     "s/epoch": st.column_config.NumberColumn(format="%.2f"),
                                     "lr": st.column_config.NumberColumn(format="%g")})
rows = picked.selection.rows if picked is not None else []
if rows:
    cfg = runs[rows[0]][0]
    st.caption(widgets.plain(widgets.describe(cfg)))
    if st.button("Open in Playground", type="primary", icon=":material/arrow_forward:"):
        widgets.request_config(cfg)
        st.switch_page(Path(__file__).with_name("playground.py"))
