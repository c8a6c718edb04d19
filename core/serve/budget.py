"""What a job may cost on this server: estimates from the config, caps from the environment.

One place for every server cap a job meets (the job manager checks them on submit):

- ``GRADIENT_LAB_MAX_JOB_COST``: parameters x training examples x epochs (a grid sums its cells; a gradient
  check counts parameters x check examples per forward, see :func:`estimate_check`).
- ``GRADIENT_LAB_MAX_JOB_MEMORY_MB``: estimated training memory (parameters with gradients and
  optimizer state, activations of one batch, the float copy of the data), or a gradient check's.
- ``GRADIENT_LAB_MAX_QUEUED`` / ``GRADIENT_LAB_MAX_QUEUED_PER_SESSION``: jobs waiting or running,
  in all and per browser session.
- ``GRADIENT_LAB_MAX_DONE_JOBS_MB``: finished jobs' histories kept in memory.
- ``GRADIENT_LAB_MAX_JOB_MINUTES``: one job's training time, estimated from its cost before it is queued
  (:data:`TRAINING_RATE`) and enforced while it runs (the job manager stops it, saying so).
- ``GRADIENT_LAB_MAX_WEIGHTS_MB``: a finished run's weights stored beside its metrics (a larger model's
  are not stored; see :func:`weights_problem`).
- ``GRADIENT_LAB_MAX_SWEEP_COST``: a sweep's estimated GFLOP (trials x 6 x parameters x training examples x
  epochs, see :meth:`core.lab.sweep.SweepConfig.cost`).
- ``GRADIENT_LAB_MAX_COBATCH``: queued single runs trained together as one job (read by :mod:`core.serve.cobatch`).
- ``GRADIENT_LAB_MAX_PAUSE_MINUTES``: how long a run may stay paused before it is ended (:mod:`core.serve.pause`).

Every refusal is a :class:`Refused` naming the cap, its variable and the estimate; :func:`cap` is the one
reader of these settings, and a setting that is not a number >= 0 is refused naming its variable.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from core.engine import catalog
from core.engine import data as datasets
from core.engine.config import RunConfig, conv_stages
from core.engine.models import count_parameters, parameter_shapes
from core.lab.gradcheck.numeric import CHECK_CHUNK, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_MACS, MEMORY_BUDGET
from core.lab.gradcheck.options import PRECISIONS
from core.lab.gradcheck.task import GradCheckConfig
from core.lab.sweep.space import DataShape, SweepConfig, data_shape, format_gflop

DEFAULTS = {
    "GRADIENT_LAB_MAX_JOB_COST": 2e13,  # ~6x the costliest preset run (3.5e12); 20x4096 on MNIST is 1.7e14
    "GRADIENT_LAB_MAX_JOB_MEMORY_MB": 4096,
    "GRADIENT_LAB_MAX_QUEUED": 64,
    "GRADIENT_LAB_MAX_QUEUED_PER_SESSION": 4,
    "GRADIENT_LAB_MAX_DONE_JOBS_MB": 512,
    "GRADIENT_LAB_MAX_WEIGHTS_MB": 16,  # float32 weights of ~4M parameters; the MNIST presets take < 2 MB
    "GRADIENT_LAB_MAX_JOB_MINUTES": 60,  # E #8 (a CNN) is estimated at 15; its convolutions take longer
    "GRADIENT_LAB_MAX_SWEEP_COST": 500_000.0,  # GFLOP per sweep
    "GRADIENT_LAB_MAX_COBATCH": 32,
    "GRADIENT_LAB_MAX_PAUSE_MINUTES": 10,  # a paused run is ended (stored as paused) after this long
}
# Cost (parameters x training examples) trained per second: a 1000-1000 MLP on MNIST on one CPU trainer
# (issue 20) and a deliberately high GPU rate, so an estimate errs short and the running cap decides.
TRAINING_RATE = {"cpu": 4e9, "cuda": 2e11}
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 2, "adam": 2, "nadam": 2}
ACTIVATION_COPIES = 4  # per hidden unit and example: pre-activation, activation, their gradients


class Refused(ValueError):
    """A job over a server cap; the message names the cap, its variable and the estimate."""


class Unreachable(Refused):
    """The job manager behind this server (a cluster's scheduler) cannot be reached now; the message says so in
    plain words. Pages show it instead of themselves, and a later call reconnects."""


def cap(name: str) -> float:
    """The cap from the environment, else its default; raises :class:`Refused` naming ``name`` when the
    setting is not a number >= 0."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(DEFAULTS[name])
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise Refused(f"The server setting {name}={raw[:40]!r} is not a number >= 0; ask the administrator.")
    return value


def weights_problem(nbytes: int) -> str:
    """Why weights of ``nbytes`` are not stored ("" when they fit GRADIENT_LAB_MAX_WEIGHTS_MB)."""
    try:
        limit = cap("GRADIENT_LAB_MAX_WEIGHTS_MB")
    except Refused as exc:
        return str(exc)
    if nbytes <= limit * 2**20:
        return ""
    return (f"its weights take {nbytes / 2**20:.1f} MB, over the cap of {limit:g} MB on stored weights "
            f"(GRADIENT_LAB_MAX_WEIGHTS_MB)")


@dataclass(frozen=True)
class Estimate:
    parameters: int
    cost: float  # parameters x training examples x epochs
    model_bytes: int  # parameters, gradients, optimizer state, one batch's activations
    data_bytes: int  # the float copy of the dataset

    @property
    def memory_bytes(self) -> int:
        return self.model_bytes + self.data_bytes

    def __add__(self, other: "Estimate") -> "Estimate":  # a grid trains its cells together on shared data
        return Estimate(self.parameters + other.parameters, self.cost + other.cost,
                        self.model_bytes + other.model_bytes, max(self.data_bytes, other.data_bytes))


def activations_per_example(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Units one example's forward holds: each conv block's output (and its pooled maps), the MLP's input (the
    flattened image or conv output), each hidden layer, the logits."""
    if cfg.arch == "cnn" and len(input_shape) == 3:
        stages = conv_stages(cfg, input_shape)
        maps = sum(s.channels * (math.prod(s.conv_hw) + (math.prod(s.out_hw) if s.out_hw != s.conv_hw else 0))
                   for s in stages)
        return maps + math.prod(stages[-1].out_shape) + sum(cfg.hidden) + n_classes
    return math.prod(input_shape) + sum(cfg.hidden) + n_classes


def estimate_run(cfg: RunConfig) -> Estimate | None:
    """Cost and memory of one run; None when its dataset cannot be loaded here (the job reports that)."""
    try:
        ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    except datasets.DatasetUnavailable:
        return None
    params = count_parameters(cfg, ds.input_shape, ds.n_classes)
    units = activations_per_example(cfg, ds.input_shape, ds.n_classes)
    n_train = max(1, len(ds.y) - max(1, round(len(ds.y) * cfg.val_fraction)))
    batch = min(cfg.batch_size, n_train)
    copies = 3 + OPTIMIZER_STATES.get(cfg.optimizer, 2)  # weights, gradients, initial copy (|W - W0|), state
    model_bytes = params * 4 * copies + batch * units * 4 * ACTIVATION_COPIES
    return Estimate(params, float(params) * n_train * cfg.epochs, model_bytes, _data_bytes(ds))


def _data_bytes(ds: Any) -> int:
    """The float copy of a loaded dataset (training and test examples)."""
    return (len(ds.y) + len(ds.y_test)) * math.prod(ds.input_shape) * 4


def estimate_check(check: GradCheckConfig) -> Estimate | None:
    """Cost and memory of a gradient check in Train's units: a forward of the check batch costs parameters x
    examples; backprop about three forwards; two forwards per checked entry, within the check's own cap on
    multiply-adds but at least one entry per parameter tensor. Memory: the built float32 network, its copy
    and its gradients in the check's precision, one vmap chunk of perturbed weights and activations, the data
    (a check of several initializations costs that once per seed, one after the other). None when the dataset cannot be loaded here (the job reports that)."""
    cfg = check.run
    try:
        ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    except datasets.DatasetUnavailable:
        return None
    sizes = [math.prod(shape) for shape in parameter_shapes(cfg, ds.input_shape, ds.n_classes)]
    params = sum(sizes)
    examples = min(check.options.examples, len(ds.y))
    forward = float(params) * examples
    entries = min(params, DEFAULT_MAX_ENTRIES * len(sizes))
    perturbed = max(min(DEFAULT_MAX_MACS, 2 * entries * forward), 2 * len(sizes) * forward)
    width = PRECISIONS[check.options.precision].itemsize
    activations = examples * activations_per_example(cfg, ds.input_shape, ds.n_classes)
    per_evaluation = max(sizes) + activations  # one perturbed copy of the largest tensor, its forward's activations
    chunk = 2 * min(CHECK_CHUNK * per_evaluation, max(MEMORY_BUDGET, per_evaluation))  # 2k evaluations at once
    model_bytes = params * 4 + (2 * params + 2 * chunk) * width
    return Estimate(params, (3 * forward + perturbed) * check.seeds, model_bytes, _data_bytes(ds))


def check_sweep(sweep: SweepConfig, shape: DataShape | None = None) -> float:
    """The sweep's estimated GFLOP (its dataset's ``shape`` loaded when not given); raises :class:`Refused`
    when it passes GRADIENT_LAB_MAX_SWEEP_COST."""
    cost = sweep.cost(shape or data_shape(sweep.base))
    limit = cap("GRADIENT_LAB_MAX_SWEEP_COST")
    if cost > limit:
        raise Refused(f"{sweep.n_trials} trials x ~{format_gflop(cost / sweep.n_trials)} each = ~{format_gflop(cost)}, "
                      f"above this server's cap of {format_gflop(limit)} (GRADIENT_LAB_MAX_SWEEP_COST): fewer "
                      "trials, fewer epochs or smaller networks.")
    return cost


def estimate(config: Any) -> Estimate | None:
    """A run's or a gradient check's estimate, or the sum over a grid's cells (anything with ``cells()``)."""
    if isinstance(config, RunConfig):
        return estimate_run(config)
    if isinstance(config, GradCheckConfig):
        return estimate_check(config)
    cells = getattr(config, "cells", None)
    if cells is None:
        return None
    total: Estimate | None = None
    for _, cell in cells():
        one = estimate_run(cell)
        if one is not None:
            total = one if total is None else total + one
    return total


def _big(x: float) -> str:
    return f"{x:.3g}"


def check(config: Any) -> Estimate | None:
    """Raise :class:`Refused` when the config's estimate passes a cap; return the estimate (a sweep's is its
    GFLOP, checked by :func:`check_sweep`: None here)."""
    if isinstance(config, SweepConfig):
        try:
            check_sweep(config)
        except datasets.DatasetUnavailable:  # the job reports that
            pass
        return None
    est = estimate(config)
    if est is None:
        return None
    checking = isinstance(config, GradCheckConfig)
    job, measure = ("gradient check", "parameters x check examples x forwards") if checking else \
        ("job", "parameters x training examples x epochs")
    cost_cap = cap("GRADIENT_LAB_MAX_JOB_COST")
    if est.cost > cost_cap:
        raise Refused(f"This {job} is too big for this server: its cost ({measure}) "
                      f"is about {_big(est.cost)} ({_big(est.parameters)} parameters), over the cap of "
                      f"{_big(cost_cap)} (GRADIENT_LAB_MAX_JOB_COST). Use fewer or narrower layers, "
                      + ("fewer examples in the check batch." if checking else "fewer epochs or a smaller dataset."))
    memory_cap = cap("GRADIENT_LAB_MAX_JOB_MEMORY_MB")
    if est.memory_bytes / 2**20 > memory_cap:
        raise Refused(f"This {job} would need about {est.memory_bytes / 2**20:,.0f} MB of memory "
                      f"({_big(est.parameters)} parameters), over the cap of {memory_cap:,.0f} MB "
                      f"(GRADIENT_LAB_MAX_JOB_MEMORY_MB). Use fewer or narrower layers or a smaller "
                      + ("check batch." if checking else "batch."))
    return est


def check_minutes(est: Estimate | None, device: str) -> float | None:
    """Raise :class:`Refused` when the estimated training time on ``device`` passes GRADIENT_LAB_MAX_JOB_MINUTES;
    return that estimate in seconds (None without an estimate)."""
    minutes_cap = cap("GRADIENT_LAB_MAX_JOB_MINUTES")
    if est is None:
        return None
    seconds = est.cost / TRAINING_RATE.get(device, TRAINING_RATE["cpu"])
    if seconds > minutes_cap * 60:
        raise Refused(f"This job would train for about {seconds / 60:,.0f} minutes on this server's {device} (its cost "
                      f"{_big(est.cost)} at about {_big(TRAINING_RATE.get(device, TRAINING_RATE['cpu']))} per "
                      f"second), over the cap of {minutes_cap:g} minutes on one job (GRADIENT_LAB_MAX_JOB_MINUTES). "
                      f"Use fewer epochs, fewer or narrower layers or a smaller dataset.")
    return seconds
