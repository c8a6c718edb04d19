"""A family of runs trained in lockstep: THE orchestration a grid, a sweep and a co-batch share.

:func:`plan_family` groups the runs that can be batched (:func:`core.engine.batched.why_not_batched`) by
the data stream they see (:func:`lockstep_stream`); every other run trains alone. :func:`train_family`
trains each group as one :class:`core.engine.batched.StackedLanes` through the one loop
(:func:`core.engine.train.train_lanes`) and each run alone on the lanes :func:`core.engine.train.solo_lanes`
picks, as :func:`core.engine.train.train` does: lane i emits exactly the events of ``configs[i]``
trained alone.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from core.engine import catalog
from core.engine.batched import MixedStackedLanes, StackedLanes, stack_key, why_not_batched
from core.engine.config import RunConfig, knob_of
from core.engine.events import RunFailed, RunFinished
from core.engine.lanes import Lanes
from core.engine.train import (LOCKSTEP_FIELDS, Callback, WeightsProblem, solo_lanes, steps_per_epoch, train_lanes,
                               train_split)


@dataclass
class FamilyPlan:
    """Which runs train batched together (lockstep groups, by index) and which alone, and why. ``mixed``:
    a group's runs may differ in width and optimizer settings too (:class:`MixedStackedLanes`)."""

    batched: list[list[int]]
    alone: list[int]
    notes: list[str]
    mixed: bool = False

    @property
    def lanes(self) -> type[StackedLanes]:
        return MixedStackedLanes if self.mixed else StackedLanes


def lockstep_stream(cfg: RunConfig, n_train: dict | None = None) -> tuple:
    """What runs trained in one batched pass must share: LOCKSTEP_FIELDS and the steps per epoch.
    ``n_train`` caches training-set sizes per split between calls."""
    n_train = {} if n_train is None else n_train
    split = (cfg.dataset, cfg.data_noise, cfg.val_fraction, cfg.seed, cfg.train_limit)
    if split not in n_train:
        try:
            ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
            n_train[split] = len(train_split(cfg, len(ds.y))[0])
        except Exception:  # reported by the training loop, per run
            n_train[split] = None
    n = n_train[split]
    return tuple(getattr(cfg, f) for f in LOCKSTEP_FIELDS) + (steps_per_epoch(cfg, n) if n else None,)


def plan_family(cells: Sequence[tuple[str, RunConfig]], min_stack: int = 1, mixed: bool = False) -> FamilyPlan:
    """Batch the batchable runs of ``cells`` (label, config) per data stream. With ``min_stack`` > 1 a
    run whose stack (:func:`core.engine.batched.stack_key`, ``mixed`` or not) would hold fewer runs trains
    alone."""
    groups: dict[tuple, list[int]] = {}
    alone, notes = [], []
    n_train: dict[tuple, int | None] = {}
    for i, (label, cfg) in enumerate(cells):
        reason = why_not_batched(cfg)
        if reason:
            alone.append(i)
            notes.append(f"{label} trains on its own: {reason}")
            continue
        groups.setdefault(lockstep_stream(cfg, n_train), []).append(i)
    batched = []
    for group in groups.values():
        stacks: dict[tuple, int] = {}
        for i in group:
            stacks[stack_key(cells[i][1], mixed)] = stacks.get(stack_key(cells[i][1], mixed), 0) + 1
        small = [i for i in group if stacks[stack_key(cells[i][1], mixed)] < min_stack]
        alone += small
        notes += [f"{cells[i][0]} trains on its own: no other run shares its stack" for i in small]
        if len(small) < len(group):
            batched.append([i for i in group if i not in small])
    if len(batched) > 1:
        shared = ", ".join(knob_of(name).label.lower() for name in LOCKSTEP_FIELDS)
        notes.append(f"These networks train in {len(batched)} separate batched passes: only networks that see the "
                     f"same data in the same order step together (the same {shared})")
    return FamilyPlan(batched, sorted(alone), notes, mixed)


def train_family(configs: Sequence[RunConfig], emits: Sequence[Callback], plan: FamilyPlan | None = None,
                 cancel: threading.Event | None = None, keys: Sequence[str] | None = None,
                 prune: Callable[[int], str | None] | None = None, lane_cancels: Sequence[Any] | None = None,
                 final_weights: bool = False, weights_problem: WeightsProblem | None = None,
                 live_boundary: bool = False) -> list[RunFinished | RunFailed]:
    """Train ``configs`` as ``plan`` says (default :func:`plan_family`): batched groups first, then the runs
    alone. Run i's events go to ``emits[i]``; ``prune(i)``, ``lane_cancels[i]``, ``final_weights``,
    ``weights_problem`` and ``live_boundary`` mean what they mean for :func:`core.engine.train.train_lanes`, per run.
    Returns each run's terminal event."""
    configs = list(configs)
    keys = list(keys) if keys else [c.key() for c in configs]
    plan = plan or plan_family([(key, cfg) for key, cfg in zip(keys, configs)])
    planned = sorted([i for group in plan.batched for i in group] + list(plan.alone))
    if planned != list(range(len(configs))):
        raise ValueError(f"a family plan must place each of the {len(configs)} runs once, got {plan}")
    ends: list[RunFinished | RunFailed | None] = [None] * len(configs)

    def train_together(members: list[int], make_lanes: Callable[..., Lanes]) -> None:
        results = train_lanes([configs[i] for i in members], make_lanes, [emits[i] for i in members], cancel,
                              [keys[i] for i in members],
                              prune=None if prune is None else lambda lane: prune(members[lane]),
                              lane_cancels=None if lane_cancels is None else [lane_cancels[i] for i in members],
                              final_weights=final_weights, weights_problem=weights_problem,
                              live_boundary=live_boundary)
        for i, end in zip(members, results):
            ends[i] = end

    for group in plan.batched:
        order = plan.lanes.stacked_order([configs[i] for i in group])  # no per-step reordering
        train_together([group[k] for k in order], plan.lanes)
    for i in plan.alone:
        train_together([i], solo_lanes(configs[i]))
    return ends
