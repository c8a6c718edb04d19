"""Accuracy as the coursework's reports of lessons A and B computed it, beside the truth: the switch's words and
the as-reported numbers (core.lessons.sentences.printed_as_reported). Pure (no Streamlit).

"For families A and B": the switch is offered on every run (any dataset, any lesson), since the mistake is a
formula, not a setting; its labels name the reports it reconstructs, those of lessons A and B (seeds 000/001)."""
from __future__ import annotations

import math

import pandas as pd

from core.lessons.sentences import REPORTED_BUG, printed_as_reported

SWITCH_LABEL = "Show accuracy as the coursework reports computed it"
SWITCH_HELP = (f"Beside each accuracy, what the reports of lessons A and B printed for it: {REPORTED_BUG}. "
               "A stuck 10-class network that is right 10% of the time printed 0.0099.")
SWITCH_KEY = "as_reported"  # the one switch of this session, the same on every page
SUFFIX = "as reported (A/B)"


def reported_label(what: str) -> str:
    """The label of an as-reported number: 'test acc' -> 'test acc as reported (A/B)'."""
    return f"{what} {SUFFIX}"


def as_reported(accuracy: float | None, n_classes: int) -> float:
    """The reports' number for a true ``accuracy`` over ``n_classes`` classes (NaN where there is none yet)."""
    if accuracy is None or not math.isfinite(accuracy) or n_classes < 1:
        return float("nan")
    return printed_as_reported(float(accuracy), n_classes)


def with_as_reported(table: pd.DataFrame, column: str, classes: list[int]) -> pd.DataFrame:
    """``table`` with :func:`reported_label` of ``column`` right after it: each row's ``column`` as the reports
    computed it, ``classes[i]`` being row i's number of classes."""
    out = table.copy()
    values = [as_reported(None if pd.isna(a) else float(a), k) for a, k in zip(out[column], classes)]
    out.insert(out.columns.get_loc(column) + 1, reported_label(column), values)
    return out
