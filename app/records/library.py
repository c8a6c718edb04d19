"""The Run library's tables, pure: one row per stored run, the filters, the config diff of selected runs,
and the validation-accuracy ranking."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from core.engine.config import FIELDS, RunConfig, format_value, knob_applies, knob_of
from core.lessons.presets import PRESET_LIST

from ..text import utc_time

COLUMNS = ["trained (UTC)", "label", "dataset", "hidden", "activation", "optimizer", "lr", "epochs", "regularizer",
           "norm", "dropout", "status", "test accuracy", "val accuracy", "s/epoch", "trained"]
MAX_COMPARE = 8  # runs compared side by side at once (curves overlaid, config diff)
NO_LESSON = "no lesson"  # the lesson filter's choice for runs that are not a lesson preset's
TOP_RUNS = 25  # runs shown in the validation-accuracy ranking
ON_DIGITS = " (on Digits)"  # a lesson run's label on its Digits fallback


@dataclass(frozen=True)
class LibraryRow:
    """One stored run as the library lists it."""

    key: str
    config: RunConfig
    meta: dict
    label: str = ""  # 'Lesson B · L1 0.0018' (a preset's run) or a grid cell's label
    lesson: str = ""  # 'Lesson B', or '' when the run is no lesson preset's
    group: int = 1  # networks trained batched together with it (itself included)


@dataclass(frozen=True)
class LibraryFilter:
    """Which runs to list: an empty tuple lets every value through."""

    datasets: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()  # 'Lesson B', ... or NO_LESSON
    optimizers: tuple[str, ...] = ()

    def admits(self, row: LibraryRow) -> bool:
        return ((not self.datasets or row.config.dataset in self.datasets)
                and (not self.lessons or (row.lesson or NO_LESSON) in self.lessons)
                and (not self.optimizers or row.config.optimizer in self.optimizers))


def preset_labels() -> dict[RunConfig, tuple[str, str]]:
    """Every lesson preset's run, and its Digits fallback, by config: ('Lesson B · L1 0.0018', 'Lesson B')."""
    out: dict[RunConfig, tuple[str, str]] = {}
    for preset in PRESET_LIST:
        lesson = f"Lesson {preset.lesson}"
        for label, cfg in preset.runs:
            out.setdefault(cfg, (f"{lesson} · {label}", lesson))
    for preset in PRESET_LIST:  # after every preset's own runs: a fallback never renames one of them
        lesson = f"Lesson {preset.lesson}"
        for label, cfg in preset.on_fallback().runs:
            out.setdefault(cfg, (f"{lesson} · {label}{ON_DIGITS}", lesson))
    return out


def grid_cells(grid_started) -> dict[str, tuple[str, int]]:
    """{cell run key: (cell label, how many cells trained batched with it, itself included)} of a GridStarted."""
    group_of = {i: len(group) for group in grid_started.batched for i in group}
    return {cell["key"]: (cell["label"], group_of.get(i, 1)) for i, cell in enumerate(grid_started.cells)}


def library_rows(runs: Iterable[tuple[RunConfig, dict]], cells: dict[str, tuple[str, int]] | None = None
                 ) -> list[LibraryRow]:
    """Rows of ``(config, stored meta)`` pairs, in their order. ``cells`` (from :func:`grid_cells`) names grid
    cells and says which trained batched."""
    cells = cells or {}
    presets = preset_labels()
    rows = []
    for cfg, meta in runs:
        key = meta.get("key", "")
        cell_label, group = cells.get(key, ("", 1))
        label, lesson = presets.get(cfg, (cell_label, ""))
        rows.append(LibraryRow(key, cfg, meta, label, lesson, group))
    return rows


def filter_rows(rows: Iterable[LibraryRow], chosen: LibraryFilter) -> list[LibraryRow]:
    return [row for row in rows if chosen.admits(row)]


def filter_options(rows: Iterable[LibraryRow]) -> dict[str, list[str]]:
    """The values each filter can choose from: those the stored runs have (lessons in order, NO_LESSON last)."""
    rows = list(rows)
    lessons = sorted({row.lesson for row in rows if row.lesson})
    return {"datasets": sorted({row.config.dataset for row in rows}),
            "lessons": lessons + ([NO_LESSON] if any(not row.lesson for row in rows) else []),
            "optimizers": sorted({row.config.optimizer for row in rows})}


def short_name(cfg: RunConfig) -> str:
    """'64-64 relu · adam lr 0.001 · seed 0': a run without a lesson label, in a few words (not its dataset)."""
    layers = "-".join(str(w) for w in cfg.hidden) or "no hidden layer"
    return f"{layers} {cfg.activation} · {cfg.optimizer} lr {cfg.lr:g} · seed {cfg.seed}"


def regularizer(cfg: RunConfig) -> str:
    parts = [f"L1 {cfg.l1:g}" if cfg.l1 else "", f"L2 {cfg.l2:g}" if cfg.l2 else "",
             f"weight decay {cfg.weight_decay:g} ({cfg.weight_decay_mode})" if cfg.weight_decay else ""]
    return ", ".join(p for p in parts if p) or "none"


def library_table(rows: Iterable[LibraryRow]) -> pd.DataFrame:
    """The table of the rows. A grid cell trained batched has no time per epoch of its own (it is the group's)."""
    out = []
    for row in rows:
        cfg, meta, group = row.config, row.meta, row.group
        seconds = meta.get("epoch_seconds") or []
        out.append({
            "trained (UTC)": utc_time(meta.get("saved_at")),
            "label": row.label,
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
    return pd.DataFrame(out, columns=COLUMNS)


# --- comparing selected runs ---------------------------------------------------------------------
def compare_problem(n_selected: int) -> str | None:
    """Why the selected runs are not compared (None when they are)."""
    if n_selected > MAX_COMPARE:
        return (f"{n_selected} runs are selected: at most {MAX_COMPARE} are compared at once. "
                f"Unselect {n_selected - MAX_COMPARE} to see their curves and settings side by side.")
    return None


def differing_knobs(configs: list[RunConfig]) -> list[str]:
    """The config fields (schema order) whose value is not the same in every config."""
    return [name for name in FIELDS if len({format_value(getattr(cfg, name)) for cfg in configs}) > 1]


def shared_words(labels: list[str]) -> tuple[list[str], str]:
    """(labels without the lesson and ' (on Digits)' they all share, what was taken off), e.g.
    ['L1 0.0018', 'none'], 'Lesson B, on Digits'."""
    if len(labels) < 2:
        return labels, ""
    taken = []
    lesson = labels[0].split(" · ")[0] + " · "
    if lesson.startswith("Lesson ") and all(label.startswith(lesson) for label in labels):
        labels, taken = [label[len(lesson):] for label in labels], [lesson[:-3]]
    if all(label.endswith(ON_DIGITS) for label in labels):
        labels, taken = [label[:-len(ON_DIGITS)] for label in labels], [*taken, ON_DIGITS[2:-1]]
    return labels, ", ".join(taken)


def _knob_words(name: str, value) -> str:
    """'sgd' for a choice, 'lr 0.05' for a number: short enough for a legend."""
    shown = format_value(value)
    return shown if knob_of(name).choices else f"{name.replace('_', ' ')} {shown}"


def compare_labels(rows: list[LibraryRow]) -> list[str]:
    """A short, distinct name per run: its lesson label when every run has a distinct one, else what sets it
    apart ('sgd · lr 0.05 · seed 2': at most three settings, the seed last), numbered where that is not enough."""
    names = [row.label for row in rows]
    if all(names) and len(set(names)) == len(names):
        return names
    knobs = differing_knobs([row.config for row in rows])
    knobs = [n for n in knobs if n != "seed"][:3 if "seed" not in knobs else 2] + (["seed"] if "seed" in knobs else [])
    names = [" · ".join(_knob_words(n, getattr(row.config, n)) for n in knobs)
             or row.label or short_name(row.config) for row in rows]
    if len(set(names)) < len(names):
        names = [f"#{i + 1} {name}" for i, name in enumerate(names)]
    return names


def config_diff(rows: list[LibraryRow], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per knob that differs between the runs ('setting' + one column per run, in their order); a value
    the run does not use (e.g. momentum with Adam) says so."""
    labels = labels or compare_labels(rows)
    knobs = differing_knobs([row.config for row in rows]) if rows else []
    table = {"setting": [knob_of(name).label for name in knobs]}
    for label, row in zip(labels, rows):
        values = row.config.to_dict()
        table[label] = [format_value(getattr(row.config, name)) + ("" if knob_applies(name, values) else " (unused)")
                        for name in knobs]
    return pd.DataFrame(table, columns=["setting", *labels])


# --- the ranking over every listed run -----------------------------------------------------------
def val_ranking(rows: Iterable[LibraryRow]) -> pd.DataFrame:
    """Runs with a validation accuracy, best first: the best epoch-end one where the store kept it (else the
    final one, ``best_known`` False)."""
    out = []
    for row in rows:
        best, final = row.meta.get("best_val_acc"), row.meta.get("val_acc")
        value = best if best is not None else final
        if value is None or value != value:
            continue
        out.append({"key": row.key, "name": row.label or short_name(row.config), "dataset": row.config.dataset,
                    "val_acc": float(value), "best_known": best is not None,
                    "epoch": row.meta.get("best_val_epoch") if best is not None else None,
                    "final_val_acc": final, "saved_at": row.meta.get("saved_at") or 0.0, "config": row.config})
    table = pd.DataFrame(out, columns=["key", "name", "dataset", "val_acc", "best_known", "epoch", "final_val_acc",
                                       "saved_at", "config"])
    return table.sort_values(["val_acc", "saved_at"], ascending=[False, False], kind="stable").reset_index(drop=True)


# --- the table's selection, kept as run keys -----------------------------------------------------
def picked_keys(rows: list[int], rows_before: list[int] | None, shown_before: list[str],
                picked_before: list[str]) -> list[str]:
    """The runs selected now. A selection the user changed names rows of the table as it was shown
    (``shown_before``); an unchanged one keeps the runs picked before, wherever the table moved them."""
    if rows_before is not None and list(rows) == list(rows_before):
        return list(picked_before)
    return list(dict.fromkeys(shown_before[i] for i in rows if 0 <= i < len(shown_before)))


def selection_update(picked: list[str], listed: list[str], stored: set[str]) -> tuple[list[str], list[int], int]:
    """(the picked runs still listed, their rows in the table ``listed``, how many picked runs left the store)."""
    kept = [key for key in picked if key in listed]
    return kept, [listed.index(key) for key in kept], sum(key not in stored for key in picked)


# --- the filters in the address bar --------------------------------------------------------------
QUERY_KEYS = {"datasets": "dataset", "lessons": "lesson", "optimizers": "optimizer"}
MAX_FILTER_VALUES = 32


def filter_to_query(chosen: LibraryFilter) -> dict[str, str]:
    """'?dataset=digits,moons&lesson=Lesson B' (empty filters left out)."""
    return {q: ",".join(getattr(chosen, name)) for name, q in QUERY_KEYS.items() if getattr(chosen, name)}


def filter_from_query(query: dict[str, str]) -> LibraryFilter:
    values = {name: tuple(dict.fromkeys(v.strip()[:80] for v in str(query.get(q, "")).split(",")
                                        if v.strip()))[:MAX_FILTER_VALUES] for name, q in QUERY_KEYS.items()}
    return LibraryFilter(**values)
