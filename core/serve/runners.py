"""Which function trains which kind of task config: one explicit table.

The job manager and the worker processes both look runners up here. A new kind of task is one row
of :data:`RUNNERS` (its config type, its kind's name, its runner and the links it needs); nothing is
registered as a side effect of an import.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, NamedTuple

from core.engine.config import RunConfig
from core.engine.events import Event
from core.engine.train import train
from core.lab.gradcheck.task import GradCheckConfig, run_gradcheck
from core.lab.grid import GridConfig, run_grid
from core.lab.surface import SurfaceConfig, run_surface
from core.lab.sweep.runner import run_sweep
from core.lab.sweep.space import SweepConfig
from core.serve import budget
from core.serve.cobatch import CoBatch, run_cobatch
from core.serve.pause import Hold

Runner = Callable[..., Event]


class RunnerSpec(NamedTuple):
    """``uses_store``: the runner hands the runs it is made of (a grid's cells) to ``file_run=``
    (:meth:`core.serve.jobs.JobManager.file_run`), so the manager stays the store's only writer;
    ``reads_store``: it looks runs up with ``read_run=``; ``per_lane``: it gets one cancel flag per
    lane as ``lane_cancels=`` (a co-batch's runs); ``pausable``: it trains one run alone and waits on ``hold=``
    (:class:`core.serve.pause.Hold`) between steps, so the manager can pause, step and resume it."""
    kind: str
    runner: Runner
    uses_store: bool = False
    reads_store: bool = False
    per_lane: bool = False
    pausable: bool = False


def train_run(cfg: RunConfig, emit: Callable[[Event], None], cancel: threading.Event, hold: Hold | None = None) -> Event:
    """One run; its final weights are kept within GRADIENT_LAB_MAX_WEIGHTS_MB; it waits on ``hold`` while paused."""
    wait = (lambda step: hold.wait(step, cancel)) if hold is not None else None
    return train(cfg, [emit], cancel, weights_problem=budget.weights_problem, hold=wait)


RUNNERS: dict[type, RunnerSpec] = {
    RunConfig: RunnerSpec("run", train_run, pausable=True),
    GridConfig: RunnerSpec("grid", run_grid, uses_store=True),
    SurfaceConfig: RunnerSpec("surface", run_surface, uses_store=True),
    SweepConfig: RunnerSpec("sweep", run_sweep, uses_store=True, reads_store=True),
    CoBatch: RunnerSpec("cobatch", run_cobatch, per_lane=True),
    GradCheckConfig: RunnerSpec("gradcheck", run_gradcheck, reads_store=True),
}


def runner_for(config: Any) -> RunnerSpec:
    spec = RUNNERS.get(type(config))
    if spec is None:
        raise TypeError(f"no runner for {type(config).__name__}")
    return spec


def store_links(spec: RunnerSpec, file_run: Callable, read_run: Callable, lane_cancels: Any = None,
                hold: Hold | None = None) -> dict[str, Any]:
    """The keyword arguments a runner asked for: store links, per-lane cancel flags, the pause hold."""
    wanted = {"file_run": spec.uses_store, "read_run": spec.reads_store, "lane_cancels": spec.per_lane,
              "hold": spec.pausable}
    given = {"file_run": file_run, "read_run": read_run, "lane_cancels": lane_cancels, "hold": hold}
    return {name: given[name] for name, asked in wanted.items() if asked}
