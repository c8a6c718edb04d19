"""Pause, step and resume a run that trains alone: a flag the training loop waits on between steps, like cancel.

A :class:`Hold` keeps its state in shared memory (a multiprocessing array), so the job manager sets it in the
web server's process and the loop reads it in a worker thread or a worker process alike (a worker process
gets its slot's array when it is spawned, as it gets its cancel flag). The manager pauses, steps and resumes;
the loop calls :meth:`Hold.wait` before each step: it returns at once while the run is not paused, spends one
granted step while paused, and otherwise waits. A wait longer than the bound the manager set
(``GRADIENT_LAB_MAX_PAUSE_MINUTES``) ends the run as "paused", its history so far kept; a cancel ends the wait.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

from core.engine.train import Cancelled

MAX_STEP_BATCHES = 1000  # batches one Step may train (the Playground's number input reads its bounds here)
DEFAULT_STEP_BATCHES = 10
POLL_SECONDS = 0.02  # how often a held loop looks at its flags
_PAUSED, _LEFT, _LIMIT, _AT, _WAITING = range(5)  # the shared array's slots


class Hold:
    """One run's pause state: paused, batches left to step, the pause bound in seconds, where the loop waits."""

    def __init__(self, values: Any = None):
        self.values = values if values is not None else mp.get_context("spawn").Array("d", 5)
        self._raw = self.values.get_obj()  # the same memory without the lock: the loop's read of "paused?"

    def reset(self) -> None:
        """Not paused (a new job starts)."""
        with self.values.get_lock():
            for i in range(len(self.values)):
                self.values[i] = 0.0

    def pause(self, limit_seconds: float) -> None:
        with self.values.get_lock():
            self.values[_PAUSED], self.values[_LEFT], self.values[_LIMIT] = 1.0, 0.0, limit_seconds

    def step(self, batches: int, limit_seconds: float) -> None:
        """Train ``batches`` more batches, then wait again (pauses a running loop after them)."""
        with self.values.get_lock():
            self.values[_LEFT] = (self.values[_LEFT] if self.values[_PAUSED] else 0.0) + batches
            self.values[_PAUSED], self.values[_LIMIT] = 1.0, limit_seconds

    def resume(self) -> None:
        with self.values.get_lock():
            self.values[_PAUSED], self.values[_LEFT] = 0.0, 0.0

    @property
    def paused(self) -> bool:
        return bool(self.values[_PAUSED])

    @property
    def paused_at(self) -> int | None:
        """The step the loop waits at (steps done so far), None while it trains."""
        with self.values.get_lock():
            held = self.values[_PAUSED] and self.values[_WAITING]
            return int(self.values[_AT]) if held else None

    def wait(self, step: int, cancel: threading.Event | Any) -> float:
        """Called by the loop before step ``step + 1``: returns the seconds it waited; raises :class:`Cancelled`
        with status "paused" when one wait passes the bound."""
        if not self._raw[_PAUSED]:  # the common case, read without the lock
            return 0.0
        values = self.values
        since = None
        while True:
            with values.get_lock():
                if not values[_PAUSED] or values[_LEFT] >= 1:
                    values[_LEFT] = values[_LEFT] - 1 if values[_PAUSED] else 0.0
                    values[_WAITING] = 0.0
                    break
                values[_WAITING], values[_AT], limit = 1.0, step, values[_LIMIT]
            if cancel.is_set():
                break
            now = time.monotonic()
            since = now if since is None else since
            if now - since > limit:
                raise Cancelled("paused", f"paused at step {step:,} for longer than {limit / 60:g} minutes, the "
                                          "bound on a pause (GRADIENT_LAB_MAX_PAUSE_MINUTES), so the server ended it "
                                          "to free its worker; its history up to there is kept", now - since)
            time.sleep(POLL_SECONDS)
        return 0.0 if since is None else time.monotonic() - since
