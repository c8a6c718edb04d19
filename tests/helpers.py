"""Helpers shared by the test files (no test file imports another): module imports read from source,
training with every event collected, a run compared with the same config trained alone, plotly arrays."""
from __future__ import annotations

import ast
import base64
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from core.engine.config import RunConfig
from core.engine.events import RunFailed, RunFinished
from core.engine.lanes import Lanes
from core.engine.train import train, train_lanes


def imports(path: Path, repo: Path) -> list[str]:
    """Every module name ``path`` imports, anywhere in it (inside functions too), relative ones resolved;
    ``from a import b`` yields both ``a`` and ``a.b``."""
    package = ".".join(path.relative_to(repo).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(repo).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


class Killed(BaseException):
    """Ends a sweep where a kill would: no handler of the sweep's own (they catch Exception) stops it."""


KILLED_EXIT = 75  # the exit status of a process kill_at(..., exit=True) ended


def kill_at(boundary: str, number: int, exit: bool = False) -> Callable[[str, int], None]:
    """A sweep's ``at_boundary`` hook that kills the sweep when trial ``number`` reaches ``boundary``
    (one of core.lab.sweep.runner.BOUNDARIES): ``exit`` ends the process at once, as SIGKILL would (no cleanup,
    nothing flushed); otherwise :class:`Killed` is raised."""
    def hook(at: str, trial: int) -> None:
        if at == boundary and trial == number:
            if exit:
                os._exit(KILLED_EXIT)
            raise Killed(f"killed at {boundary} of trial {number}")
    return hook


def train_events(cfg: RunConfig, **options) -> tuple[RunFinished | RunFailed, list]:
    """:func:`train` of ``cfg`` (``options`` passed on), every event collected: (its end, all its events)."""
    events: list = []
    end = train(cfg, [events.append], **options)
    return end, events


def train_lanes_events(configs: Sequence[RunConfig], make_lanes: Callable[..., Lanes],
                       **options) -> tuple[list[RunFinished | RunFailed], list[list]]:
    """:func:`train_lanes` of ``configs``, each lane's events collected: (the ends, each lane's events)."""
    per_lane: list[list] = [[] for _ in configs]
    ends = train_lanes(configs, make_lanes, [lane.append for lane in per_lane], **options)
    return ends, per_lane


def of_kind(events: list, kind: str) -> list:
    return [e for e in events if e.kind == kind]


def assert_same_run(cell: list, alone: list, tol: float = 1e-4) -> None:
    """Every metric a page shows matches between a run's events (a grid cell, a co-batched lane) and
    those of the same config trained alone."""
    s_cell, s_alone = of_kind(cell, "started")[0], of_kind(alone, "started")[0]
    for name in ("key", "config", "n_params", "layers", "layer_shapes", "steps_per_epoch", "total_steps", "dataset"):
        assert getattr(s_cell, name) == getattr(s_alone, name), name
    e_cell, e_alone = of_kind(cell, "eval"), of_kind(alone, "eval")
    assert [e.step for e in e_cell] == [e.step for e in e_alone]
    for a, b in zip(e_cell, e_alone):
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "penalty", "train_loss_running",
                     "train_acc_running", "train_ce", "val_ce"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=tol), (a.step, name)
    losses = [v for e in of_kind(cell, "steps") for v in e.losses]
    assert losses == pytest.approx([v for e in of_kind(alone, "steps") for v in e.losses], rel=1e-4, abs=tol,
                                   nan_ok=True)
    penalties = [v for e in of_kind(cell, "steps") for v in e.penalties]
    assert penalties == pytest.approx([v for e in of_kind(alone, "steps") for v in e.penalties], rel=1e-3, abs=tol)
    for a, b in zip(of_kind(cell, "layers"), of_kind(alone, "layers")):
        assert a.layers == b.layers
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-3, abs=1e-9)
        assert a.weight_change == pytest.approx(b.weight_change, rel=1e-3, abs=1e-7)
        assert a.near_zero == pytest.approx(b.near_zero, abs=0.02)
        assert [s is None for s in a.saturation] == [s is None for s in b.saturation]
        assert [s for s in a.saturation if s is not None] == pytest.approx([s for s in b.saturation if s is not None],
                                                                          abs=0.02)
        assert [m.shape for m in a.heatmaps] == [m.shape for m in b.heatmaps]
        assert [h.sum() for h in a.weight_hist] == [h.sum() for h in b.weight_hist]
    end_cell, end_alone = cell[-1], alone[-1]
    assert end_cell.status == end_alone.status
    if end_alone.status == "finished":
        assert end_cell.test_acc == pytest.approx(end_alone.test_acc, abs=tol)
        assert end_cell.test_loss == pytest.approx(end_alone.test_loss, abs=tol)
        assert end_cell.confusion is not None
        assert sum(map(sum, end_cell.confusion)) == sum(map(sum, end_alone.confusion))


def plotly_values(array) -> np.ndarray:
    """A trace's array as a figure's JSON holds it: a plain list, or (plotly >= 6) a typed array
    ``{"dtype": "f8", "bdata": <base64>, "shape": "r, c"}``."""
    if not isinstance(array, dict):
        return np.asarray(array)
    values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    shape = array.get("shape")
    return values.reshape([int(n) for n in str(shape).split(",")]) if shape else values
