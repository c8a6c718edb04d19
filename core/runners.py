"""Which function trains which kind of task config (a run, a grid, ...).

The job manager and the worker processes both look runners up here, so a spawned worker knows
every kind of task whose module it has imported (unpickling a config imports its module, which
registers its runner).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, NamedTuple

from .config import RunConfig
from .events import Event
from .train import train

Runner = Callable[..., Event]


class RunnerSpec(NamedTuple):
    kind: str
    runner: Runner
    uses_store: bool
    reads_store: bool = False
    per_lane: bool = False


_RUNNERS: dict[type, RunnerSpec] = {}


def register_runner(config_type: type, kind: str, runner: Runner, uses_store: bool = False,
                    reads_store: bool = False, per_lane: bool = False) -> None:
    """Teach the manager to run another kind of task config.

    With ``uses_store`` the runner is called as ``runner(config, emit, cancel, file_run=...)``: it hands
    the runs it is made of (e.g. a grid's cells) to :meth:`core.jobs.JobManager.file_run`, so the
    manager stays the only writer to the store. With ``reads_store`` it also gets ``read_run=``
    (:meth:`core.jobs.JobManager.read_run`), to look runs up (e.g. a sweep's stored trials). With
    ``per_lane`` it gets ``lane_cancels=`` (one flag per lane, e.g. a co-batch's runs; see core.cobatch)."""
    _RUNNERS[config_type] = RunnerSpec(kind, runner, uses_store, reads_store, per_lane)


def store_links(spec: RunnerSpec, file_run: Callable, read_run: Callable, lane_cancels: Any = None) -> dict[str, Any]:
    """The keyword arguments a runner asked for: store links, per-lane cancel flags."""
    wanted = {"file_run": spec.uses_store, "read_run": spec.reads_store, "lane_cancels": spec.per_lane}
    given = {"file_run": file_run, "read_run": read_run, "lane_cancels": lane_cancels}
    return {name: given[name] for name, asked in wanted.items() if asked}


def runner_for(config: Any) -> RunnerSpec:
    spec = _RUNNERS.get(type(config))
    if spec is None:
        raise TypeError(f"no runner registered for {type(config).__name__}")
    return spec


def _train_run(cfg: RunConfig, emit: Callable[[Event], None], cancel: threading.Event) -> Event:
    return train(cfg, [emit], cancel)


register_runner(RunConfig, "run", _train_run)
