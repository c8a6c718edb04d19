"""The Run library's table: one row per stored run, with the columns that tell runs apart. Pure."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from core.config import RunConfig
from core.presets import PRESET_LIST

from ..text import utc_time

COLUMNS = ["trained (UTC)", "label", "dataset", "hidden", "activation", "optimizer", "lr", "epochs", "regularizer",
           "norm", "dropout", "status", "test accuracy", "val accuracy", "s/epoch", "trained"]


def preset_labels() -> dict[RunConfig, str]:
    """Every lesson preset's run as 'Lesson B · L1 0.0018', by config."""
    out: dict[RunConfig, str] = {}
    for preset in PRESET_LIST:
        for label, cfg in preset.runs:
            out.setdefault(cfg, f"Lesson {preset.lesson} · {label}")
    return out


def grid_cells(grid_started) -> dict[str, tuple[str, int]]:
    """{cell run key: (cell label, how many cells trained batched with it, itself included)} of a GridStarted."""
    group_of = {i: len(group) for group in grid_started.batched for i in group}
    return {cell["key"]: (cell["label"], group_of.get(i, 1)) for i, cell in enumerate(grid_started.cells)}


def regularizer(cfg: RunConfig) -> str:
    parts = [f"L1 {cfg.l1:g}" if cfg.l1 else "", f"L2 {cfg.l2:g}" if cfg.l2 else "",
             f"weight decay {cfg.weight_decay:g} ({cfg.weight_decay_mode})" if cfg.weight_decay else ""]
    return ", ".join(p for p in parts if p) or "none"


def library_table(runs: Iterable[tuple[RunConfig, dict]], cells: dict[str, tuple[str, int]] | None = None
                  ) -> pd.DataFrame:
    """The table of ``(config, stored meta)`` rows. ``cells`` (from :func:`grid_cells`) names grid cells
    and says which trained batched: their time per epoch is the group's, so it is not shown as theirs."""
    cells = cells or {}
    presets = preset_labels()
    rows = []
    for cfg, meta in runs:
        label, group = cells.get(meta.get("key", ""), ("", 1))
        seconds = meta.get("epoch_seconds") or []
        rows.append({
            "trained (UTC)": utc_time(meta.get("saved_at")),
            "label": presets.get(cfg) or label,
            "dataset": cfg.dataset,
            "hidden": ",".join(str(w) for w in cfg.hidden) or "none",
            "activation": cfg.activation,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "epochs": cfg.epochs,
            "regularizer": regularizer(cfg),
            "norm": cfg.norm,
            "dropout": f"{cfg.dropout:g} ({'inverted' if cfg.dropout_impl == 'inverted' else 'nn.Dropout'})"
                       if cfg.dropout else "none",
            "status": meta.get("status", ""),
            "test accuracy": meta.get("test_acc"),
            "val accuracy": meta.get("val_acc"),
            "s/epoch": sum(seconds) / len(seconds) if seconds and group <= 1 else None,
            "trained": "alone" if group <= 1 else f"batched with {group - 1} other{'s' if group > 2 else ''}",
        })
    return pd.DataFrame(rows, columns=COLUMNS)
