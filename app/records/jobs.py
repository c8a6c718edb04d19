"""What a viewer knows about one job, and the one wording of its status: pure, no Streamlit.

:class:`JobState` is built by :mod:`app.views.jobs` from the job manager's snapshot; the
functions here turn it (and the run's reduced :class:`~app.records.run.RunView`) into the
status line and the progress text every page shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.engine.events import TERMINAL_STATUSES

from ..text import clock, epoch_text, plural, training_clock
from .run import Progress


@dataclass
class JobState:
    """One job as the manager reports it; ``events`` is shared (process-wide), never copied per session."""

    key: str
    status: str = "queued"
    events: list = field(default_factory=list)
    from_cache: bool = False
    saved_at: float | None = None
    error: str = ""
    queue_position: int | None = None
    replayed: bool = False  # already ended when this session first saw it: a stored result, not a live run
    watchers: int = 0  # browsers watching it (a shared lecture run has many)
    started_by: str | None = None  # the browser that started it
    watched_by: frozenset = frozenset()  # the browsers watching it
    pausable: bool = False  # it trains alone: its starter may pause, step and resume it
    paused: bool = False  # a pause (or a step) is asked for
    paused_at: int | None = None  # the step a paused run waits at (None while it trains)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def token(self) -> Any:
        """Identifies one run of a key (a forced re-train reuses the key)."""
        if not self.events:
            return None
        first = self.events[0]
        return getattr(first, "started_at", None) or getattr(first, "message", None)

    @property
    def version(self) -> tuple:
        """(key, run token, events seen): what cached views and figures are keyed by."""
        return (self.key, self.token, len(self.events))


def _sentence(text: str) -> str:
    text = " ".join(str(text or "").split()).rstrip(".")
    return text[:1].upper() + text[1:] if text else ""


def status_message(state: JobState, progress: Progress | None = None, reason: str = "",
                   started: bool = True) -> tuple[str, str] | None:
    """(level, Markdown text) of a job's state, or None when running normally.

    ``level`` is info / warning / error. Cancelled runs say where they stopped, once; a paused one says
    the step it waits at.
    """
    status = state.status
    if status == "queued":
        if state.queue_position is None:
            return "info", "Waiting for its turn in a batched job. It starts by itself."
        return "info", f"Queued: {plural(state.queue_position, 'run')} ahead of this one. It starts by itself."
    if status == "running" and not started:
        return "info", "Starting: loading the data and building the network…"
    if status == "running" and state.paused:
        if state.paused_at is None:
            return "info", "Pausing: it trains the batches asked for, then waits…"
        total = f" of {progress.total_steps:,}" if progress is not None else ""
        logged = (f" The charts show its last log point, step {progress.step:,}."
                  if progress is not None and progress.step != state.paused_at else "")
        return "info", (f"**Paused at step {state.paused_at:,}**{total}. **Step** trains the next batches and pauses "
                        f"again; **Resume** trains on.{logged}")
    where = (f" at step {progress.step:,} of {progress.total_steps:,} ({epoch_text(progress.epoch, progress.total_epochs).lower()})"
             if progress is not None else "")
    if status == "paused":
        return "warning", (f"**Paused and ended**{where}. {_sentence(reason or state.error)}. The charts show the "
                           "run up to that point; press Train to train it from the start.")
    if status == "cancelled":
        why = reason or state.error  # the server's reason (time cap, full queue); a plain Cancel's is not repeated
        told = f" {_sentence(why)}." if why and not why.startswith("cancelled") else ""
        return "warning", f"**Cancelled**{where}. The charts show the run up to that point.{told}"
    if status == "diverged":
        return "error", f"**Diverged.** {_sentence(reason)}."
    if status == "failed":
        return "error", f"**Failed.** {_sentence(reason or state.error)}."
    return None


def progress_text(progress: Progress, done: bool, device: str = "") -> str:
    """'Epoch 3.4 of 10 · step 1,200 of 3,500 · 0:42 elapsed · about 1:10 left · device: cpu'."""
    parts = [epoch_text(progress.epoch, progress.total_epochs),
             f"step {progress.step:,} of {progress.total_steps:,}", training_clock(progress.elapsed)]
    if not done:
        parts.append("estimating time left…" if progress.eta is None else f"about {clock(progress.eta)} left")
    if device:
        parts.append(f"device: {device}")
    return " · ".join(parts)
