"""THE training loop. It emits typed events to callbacks, never prints, never touches a UI.

Everything random (split, init, batch order, dropout) comes from generators seeded by
``cfg.seed``, so the same config on the CPU gives identical metrics, also while other runs
train in other threads.

One call trains one or more lanes in lockstep (see :mod:`core.engine.lanes`) and reads, top to bottom,
as :class:`_Run`: ``setup`` (data, lanes, RunStarted, the clock starts), per epoch ``train_step``
and at log points ``log_point``, then ``finish``. Times (elapsed, time per epoch) come from ONE
clock started when the first training step starts: dataset loading and model building are not
training time, so a page's ETA is ``elapsed / step * (total_steps - step)``.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterable, Sequence

import numpy
import torch

from core.engine import data as datasets
from core.engine import optimizers as rules
from core.engine import catalog, probes
from core.engine.config import RunConfig
from core.engine.events import (ConvFilters, DecisionBoundary, Evaluation, Event, FinalWeights, LayerStats, RunFailed,
                                RunFinished, RunStarted, StepLosses)
from core.engine.lanes import Lanes, ModuleLanes
from core.engine.neurons import NEURON_GRID_SIZE, NeuronMaps
from core.engine.scratch import ScratchLanes

Callback = Callable[[Event], None]
Clock = Callable[[], float]
WaitWhilePaused = Callable[[int], float]  # waits before step n + 1 while the run is paused; returns the seconds it waited
WeightsProblem = Callable[[int], str]  # nbytes -> why weights that large are not kept ("" when they are)
VAL_SUBSET = 2048  # validation examples scored at log points between epoch ends (full split at epoch ends);
# train metrics are scored the same way (eval mode) on a fixed train subset of up to this size at every log point
PROBE_BATCH = 256
MAX_MISCLASSIFIED = 36
DECISION_GRID_SIZE = 40  # points per side of a 2-D set's decision grid (live and final)
MAX_LOG_POINTS = 400  # log points per run: a longer run logs less often (and says so)
MAX_HEATMAP_POINTS = 100  # of those, the ones that carry |W_t - W_0| heatmaps, evenly spread (the last always)
MAX_STEP_VALUES = 50_000  # per-step losses per run; beyond, each value is the mean of `stride` steps
CHECK_EVERY = 32  # steps between reads of the on-device "loss went bad" flag (no sync on the other steps)
EXPLODED = 100.0  # a loss above this multiple of max(its first value, ln classes) has exploded


class Cancelled(Exception):
    """The run's cancel flag was set (or its hold ended it, with another ``status``); the loop ends it with that
    status, history kept."""

    def __init__(self, status: str = "cancelled", reason: str = "", waited: float = 0.0):
        super().__init__(reason)
        self.status, self.reason, self.waited = status, reason, waited  # waited: paused seconds, not training time


class _AllEnded(Exception):
    """Every lane has ended (diverged): nothing is left to train."""


# What lanes trained in lockstep must share: they see the same split, batches and log points.
LOCKSTEP_FIELDS = ("dataset", "data_noise", "val_fraction", "seed", "train_limit", "label_noise", "batch_size",
                   "epochs", "log_every", "device")


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but no CUDA GPU is available here; use auto or cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def train_split(cfg: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of a dataset of ``n`` examples: the seeded split, with the training
    part cut to ``cfg.train_limit`` examples (a seeded subset; a smaller limit keeps a subset of a larger one)."""
    train_idx, val_idx = datasets.split_indices(n, cfg.val_fraction, cfg.seed)
    if 0 < cfg.train_limit < len(train_idx):
        keep = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed + 3))
        train_idx = train_idx[keep[:cfg.train_limit].sort().values]
    return train_idx, val_idx


def noisy_labels(cfg: RunConfig, y: torch.Tensor, train_idx: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``y`` with ``cfg.label_noise`` of the training examples relabelled as another class, drawn at random
    (seeded; the other examples, validation among them, keep their labels)."""
    n_noisy = round(cfg.label_noise * len(train_idx))
    if n_noisy == 0:
        return y
    gen = torch.Generator().manual_seed(cfg.seed + 5)
    where = train_idx[torch.randperm(len(train_idx), generator=gen)[:n_noisy]].to(y.device)
    shift = torch.randint(1, n_classes, (n_noisy,), generator=gen).to(y.device)
    y = y.clone()
    y[where] = (y[where] + shift) % n_classes
    return y


def training_examples(cfg: RunConfig, ds: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) a run of ``cfg`` trains on: its split's training part, with its label noise."""
    train_idx, _ = train_split(cfg, len(ds.y))
    return ds.x[train_idx], noisy_labels(cfg, ds.y, train_idx, ds.n_classes)[train_idx]


def scored_train_examples(n_train: int) -> int:
    """How many training examples the train metrics are scored on: a fixed subset of VAL_SUBSET, or all of a
    smaller training split."""
    return min(VAL_SUBSET, n_train)


def steps_per_epoch(cfg: RunConfig, n_train: int) -> int:
    batch = min(cfg.batch_size, n_train)
    # BatchNorm cannot train on a batch of one: drop such a last partial batch.
    return n_train // batch + (1 if n_train % batch > 1 or (n_train % batch == 1 and cfg.norm != "batchnorm") else 0)


def log_plan(log_every: int, steps_per_epoch: int, epochs: int) -> tuple[int, int, int, list[str]]:
    """(log interval, heatmaps on every k-th log point, per-step loss stride, notes) keeping a run's
    history within MAX_LOG_POINTS, MAX_HEATMAP_POINTS and MAX_STEP_VALUES whatever the config."""
    total = steps_per_epoch * epochs
    notes = []
    every = max(log_every, math.ceil(total / MAX_LOG_POINTS))
    if every > log_every:
        notes.append(f"logs every {every} steps instead of {log_every}: a run keeps at most {MAX_LOG_POINTS} "
                     f"log points (plus epoch ends)")
    # log points: every `every`-th step of the run, plus each epoch end that is not one of those
    n_logs = total // every + sum(1 for e in range(1, epochs + 1) if (e * steps_per_epoch) % every)
    heat_every = max(1, math.ceil(n_logs / MAX_HEATMAP_POINTS))
    if heat_every > 1:
        notes.append(f"weight-change heatmaps at every {heat_every}th log point and the last one "
                     f"(at most {MAX_HEATMAP_POINTS} kept)")
    stride = max(1, math.ceil(total / MAX_STEP_VALUES))
    if stride > 1:
        notes.append(f"the per-step loss is kept as means of {stride} steps (at most {MAX_STEP_VALUES} values)")
    return every, heat_every, stride, notes


def _versions() -> dict:
    return {"torch": torch.__version__, "numpy": numpy.__version__}


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return ("The GPU ran out of memory. Try a smaller batch size or fewer/narrower layers, "
                f"or wait for other runs to finish. ({exc})")
    if isinstance(exc, datasets.DatasetUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def train(cfg: RunConfig, callbacks: Iterable[Callback] = (), cancel: threading.Event | None = None,
          key: str | None = None, clock: Clock = time.perf_counter,
          final_weights: bool = True, weights_problem: WeightsProblem | None = None,
          live_boundary: bool = True, hold: WaitWhilePaused | None = None, live_filters: bool = True) -> RunFinished | RunFailed:
    """Train one run, emitting events to ``callbacks``; returns the terminal event. A finished run sends
    its trained weights (:class:`FinalWeights`, see :func:`weights_event`) just before its RunFinished,
    unless ``final_weights`` is False (a grid's cells); ``weights_problem(nbytes)`` says why weights that
    large are not kept ("" when they are; the server's cap, see core.serve.budget). ``live_boundary``: a 2-D
    set's class regions are sent at every log point (:class:`DecisionBoundary`). ``hold(steps done)``, called
    before each step, waits while the run is paused (core.serve.pause); paused time is not training time.
    ``live_filters``: a CNN's first-layer filters are sent at every log point too (:class:`ConvFilters`).

    Never raises for a training problem: a non-finite or exploding loss ends the run as
    "diverged", a cancel as "cancelled" (history kept), and any exception (CUDA out-of-memory
    included) as a :class:`RunFailed` event.
    """
    callbacks = list(callbacks)
    emit = lambda event: [cb(event) for cb in callbacks]  # noqa: E731
    return train_lanes([cfg], solo_lanes(cfg), [emit], cancel, [key or cfg.key()], clock, final_weights=final_weights,
                       weights_problem=weights_problem, live_boundary=live_boundary, hold=hold,
                       live_filters=live_filters)[0]


def solo_lanes(cfg: RunConfig) -> Callable[..., Lanes]:
    """What a config trains on when it trains alone (here, or alone within a grid, sweep or co-batch):
    the written-out network for ``backprop="by_hand"``, else its one nn.Module."""
    return ScratchLanes if cfg.backprop == "by_hand" else ModuleLanes


def train_lanes(configs: Sequence[RunConfig], make_lanes: Callable[..., Lanes], emits: Sequence[Callback],
                cancel: threading.Event | None = None, keys: Sequence[str] | None = None,
                clock: Clock = time.perf_counter, prune: Callable[[int], str | None] | None = None,
                lane_cancels: Sequence[threading.Event] | None = None,
                final_weights: bool = False, weights_problem: WeightsProblem | None = None,
                live_boundary: bool = False, hold: WaitWhilePaused | None = None,
                live_filters: bool = True) -> list[RunFinished | RunFailed]:
    """Train several configs in lockstep (same split, batches and log points; see LOCKSTEP_FIELDS).

    ``make_lanes(configs, input_shape, n_classes, device)`` builds what is trained; lane i emits
    exactly the events a single run of ``configs[i]`` emits, to ``emits[i]``. A lane that
    diverges ends alone; the others go on. ``clock`` (seconds) times training. ``prune(i)``,
    asked after each epoch-end evaluation of lane i, may return a reason to end that lane early
    as "pruned" (a sweep's pruner); ``lane_cancels[i]``, checked every step, cancels lane i alone
    (``cancel`` stops them all). ``final_weights``: each finished lane sends its weights
    (:func:`weights_event`) before its RunFinished. ``live_boundary``: on a 2-D set every live lane sends its
    class regions at each log point (:class:`DecisionBoundary`, one evaluation of the grid for all lanes).
    ``hold``: as in :func:`train` (a worker passes one only for a run trained alone).
    ``live_filters``: a CNN's first conv layer is sent at each log point (:class:`ConvFilters`); a CNN always
    trains alone on :class:`ModuleLanes` (core.engine.batched.why_not_batched), so no stack of lanes has one.
    Returns each lane's terminal event.
    """
    run = _Run(list(configs), make_lanes, list(emits), cancel or threading.Event(),
               list(keys) if keys else [c.key() for c in configs], clock, prune, lane_cancels, final_weights,
               weights_problem, live_boundary, hold, live_filters)
    try:
        return run.train()
    except Exception as exc:  # every failure becomes an event; the caller keeps serving
        return run.fail(exc)
    finally:
        run.release()
        free_device_cache()


def free_device_cache() -> None:
    """Hand the GPU memory cached by torch back (after a run, above all one that ran out of memory)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Window:
    """Per-step tensors (one value per lane) since the last log point, reduced there in one go."""

    def __init__(self, first_step: int):
        self.first_step = first_step
        self.totals: list[torch.Tensor] = []  # data + penalty: what was back-propagated
        self.datas: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def __len__(self) -> int:
        return len(self.totals)

    @staticmethod
    def table(steps: list[torch.Tensor]) -> torch.Tensor:
        """[steps, lanes]."""
        return torch.stack(steps).reshape(len(steps), -1)


class _Run:
    """One call of :func:`train_lanes`, from setup to the terminal events."""

    def __init__(self, configs: list[RunConfig], make_lanes: Callable[..., Lanes], emits: list[Callback],
                 cancel: threading.Event, keys: list[str], clock: Clock,
                 prune: Callable[[int], str | None] | None = None, lane_cancels: Sequence[threading.Event] | None = None,
                 final_weights: bool = False, weights_problem: WeightsProblem | None = None,
                 live_boundary: bool = False, hold: WaitWhilePaused | None = None, live_filters: bool = True):
        self.configs, self.make_lanes, self.emits, self.cancel, self.keys = configs, make_lanes, emits, cancel, keys
        self.clock, self.prune, self.lane_cancels = clock, prune, lane_cancels
        self.final_weights, self.weights_problem = final_weights, weights_problem
        self.live_boundary, self.hold, self.live_filters = live_boundary, hold, live_filters
        self.conv: tuple[str, torch.nn.Conv2d, float] | None = None  # live filters: layer name, layer, initial mean I
        self.grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # live: xs, ys, grid_inputs
        self.grid_axes: tuple[numpy.ndarray, numpy.ndarray] | None = None  # xs, ys as every boundary event holds them
        self.neurons: NeuronMaps | None = None  # live: the network diagram of the lanes small enough to draw
        self.cfg = configs[0]
        self.ends: list[RunFinished | RunFailed | None] = [None] * len(configs)
        self.alive = list(range(len(configs)))  # lanes still training
        self.last_eval: list[Evaluation | None] = [None] * len(configs)
        self.epoch_seconds: list[float] = []
        self.step = 0
        self.n_logs = 0
        self.t0: float | None = None
        self.lanes: Lanes | None = None
        self.window = _Window(1)
        self.first_loss: torch.Tensor | None = None  # per lane, for "exploded"
        self.limit: torch.Tensor | None = None
        self.bad: torch.Tensor | None = None  # per lane: a step's loss was not finite or above the limit

    # --- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, configs = self.cfg, self.configs
        for other in configs[1:]:
            differ = [f for f in LOCKSTEP_FIELDS if getattr(other, f) != getattr(cfg, f)]
            if differ:
                raise ValueError(f"configs trained in lockstep must share {', '.join(differ)}")
        self.device = device = resolve_device(cfg.device)
        ds = self.ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
        if any(c.arch == "cnn" for c in configs) and not ds.is_image:
            raise ValueError(f"The CNN needs an image dataset; {ds.title} is not one")
        # Data lives on the training device when it fits there; otherwise batches are moved one by one.
        self.data_device = device if ds.fits_on(device) else torch.device("cpu")
        dev_ds = self.dev_ds = ds.on(self.data_device)
        self.features = dev_ds.features()  # float copy, made once per dataset and device
        train_idx, val_idx = train_split(cfg, len(ds.y))
        self.labels = noisy_labels(cfg, dev_ds.y, train_idx, ds.n_classes)
        self.train_idx = train_idx.to(self.data_device)
        self.n_train = len(train_idx)
        self.x_val, self.y_val = self._examples(val_idx)
        fit_order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(cfg.seed + 4))
        self.x_fit, self.y_fit = self._examples(train_idx[fit_order[:scored_train_examples(self.n_train)].sort().values])
        self.order_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.lanes = self.make_lanes(configs, ds.input_shape, ds.n_classes, device)
        self.probe_x = self.x_val[:PROBE_BATCH] if len(val_idx) else self.x_fit[:PROBE_BATCH]
        self.conv = self.first_filters() if self.live_filters else None
        if self.live_boundary and ds.input_shape == (2,):
            points = torch.cat([ds.x, ds.x_test]).to(device)
            xs, ys = grid_axes(points)
            self.grid = xs, ys, grid_inputs(xs, ys)
            self.grid_axes = xs.cpu().numpy(), ys.cpu().numpy()
            map_xs, map_ys = grid_axes(points, NEURON_GRID_SIZE)  # the same plane, coarser
            neurons = NeuronMaps(configs, map_xs, map_ys, grid_inputs(map_xs, map_ys), ds.n_classes, device)
            self.neurons = neurons if neurons.any else None

        self.batch = min(cfg.batch_size, self.n_train)
        per_epoch = {steps_per_epoch(c, self.n_train) for c in configs}
        if len(per_epoch) > 1:
            raise ValueError("configs trained in lockstep must take the same steps per epoch "
                             "(BatchNorm drops a last batch of one)")
        (self.n_steps,) = per_epoch
        self.total_steps = self.n_steps * cfg.epochs
        self.log_every, self.heat_every, self.stride, notes = log_plan(cfg.log_every, self.n_steps, cfg.epochs)
        dataset = {"name": ds.name, "title": ds.title, "classes": ds.classes, "n_train": self.n_train,
                   "n_val": len(val_idx), "n_test": len(ds.y_test), "notice": ds.notice,
                   "test_counts": ds.y_test.bincount(minlength=ds.n_classes).tolist(),
                   "input_shape": list(ds.input_shape)}
        described = [self.lanes.describe(i) for i in range(len(configs))]
        self.layer_names = [names for _, names, _ in described]
        started_at = time.time()
        for i, (c, emit) in enumerate(zip(configs, self.emits)):
            n_params, layers, shapes = described[i]
            emit(RunStarted(key=self.keys[i], config=c.to_dict(), device=device.type, device_name=device_name(device),
                            n_params=n_params, steps_per_epoch=self.n_steps, total_steps=self.total_steps,
                            layers=layers, layer_shapes=shapes, dataset=dataset, started_at=started_at,
                            versions=_versions(), log_every=self.log_every, notes=list(notes), lanes=len(configs)))
        self.alive_mask = torch.ones(len(configs), dtype=torch.bool, device=device)
        self.lanes.train()
        self.t0 = self.clock()  # training time starts here

    def first_filters(self) -> tuple[str, torch.nn.Conv2d, float] | None:
        """A single CNN's first convolution (by type), its name and its filters' mean smoothness at initialization."""
        conv = probes.first_conv(self.lanes.model) if isinstance(self.lanes, ModuleLanes) else None
        if conv is None or not probes.smoothable(conv):
            return None
        name = next(name for name, layer in self.lanes.named_layers if layer is conv)
        return name, conv, float(probes.filter_smoothness(conv.weight).mean())

    def _examples(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.data_device)
        return self.features[idx].to(self.device), self.labels[idx].to(self.device)

    def elapsed(self) -> float:
        return self.clock() - self.t0 if self.t0 is not None else 0.0

    # --- the loop ---------------------------------------------------------------------------
    def train(self) -> list[RunFinished | RunFailed | None]:
        self.setup()
        status, reason = "finished", ""
        try:
            for epoch in range(self.cfg.epochs):
                self.run_epoch(epoch)
        except Cancelled as stop:
            status, reason = stop.status, stop.reason or f"cancelled at step {self.step}"
            self.t0 += stop.waited
            if len(self.window):
                try:
                    self.log_point(self.step / self.n_steps, None, final=True)
                except _AllEnded:
                    pass
        except _AllEnded:
            pass
        self.finish(status, reason)
        return self.ends

    def run_epoch(self, epoch: int) -> None:
        start = self.clock()
        perm = self.train_idx[torch.randperm(self.n_train, generator=self.order_gen).to(self.data_device)]
        move = self.data_device != self.device
        for b in range(self.n_steps):
            if self.hold is not None:
                waited = self.hold(self.step)
                self.t0 += waited
                start += waited
            if self.cancel.is_set():
                raise Cancelled
            if self.lane_cancels is not None:
                self.cancel_lanes()
            idx = perm[b * self.batch:(b + 1) * self.batch]
            xb, yb = self.features[idx], self.labels[idx]
            if move:
                xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            epoch_end = b == self.n_steps - 1
            on_interval = (self.step + 1) % self.log_every == 0
            grads = self.train_step(xb, yb, on_interval or epoch_end)
            if on_interval or epoch_end:
                final = epoch_end and epoch == self.cfg.epochs - 1
                self.log_point(epoch + (b + 1) / self.n_steps, grads, final=final, epoch_end=epoch_end,
                               draw=on_interval or final)
            elif self.step % CHECK_EVERY == 0:
                self.check_losses()
        self.epoch_seconds.append(self.clock() - start)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, is_log: bool) -> torch.Tensor | None:
        """One forward, backward and update of every lane; returns this step's gradient norms at log points."""
        lanes = self.lanes
        total, loss, correct = lanes.losses(xb, yb)
        for optimizer in lanes.optimizers:
            optimizer.zero_grad(set_to_none=True)
        (total if total.dim() == 0 else total.sum()).backward()
        self.step += 1
        grads = lanes.grad_norms() if is_log else None  # this step's gradients, before the update
        for optimizer in lanes.optimizers:
            rules.apply_schedule(optimizer, self.step - 1, self.total_steps)
            optimizer.step()
        total = total.detach()
        self.watch(total)
        w = self.window
        w.totals.append(total)
        w.datas.append(loss.detach())
        w.correct.append(correct)
        w.sizes.append(len(yb))
        return grads

    def watch(self, total: torch.Tensor) -> None:
        """Flag, on the device and without a sync, a loss that is not finite or has exploded."""
        if self.limit is None:
            self.first_loss = total.clone()
            self.limit = EXPLODED * total.clamp_min(math.log(self.ds.n_classes))
            self.bad = ~torch.isfinite(total)
        else:
            self.bad |= ~torch.isfinite(total) | (total > self.limit)

    def check_losses(self) -> None:
        """Read the flag (one sync); end every lane whose loss went bad at the step it did."""
        if self.bad is None or not bool((self.bad & self.alive_mask).any()):
            return
        totals = _Window.table(self.window.totals)
        bad = (~torch.isfinite(totals) | (totals > self.limit.reshape(1, -1))).T.tolist()
        for i in list(self.alive):
            k = next((k for k, flag in enumerate(bad[i]) if flag), None)
            if k is not None:
                self.diverge(i, k, totals[k].reshape(-1)[i].item())
        if not self.alive:
            raise _AllEnded

    def cancel_lanes(self) -> None:
        """End every lane whose own cancel is set, with its history so far; the others go on."""
        for i in [i for i in self.alive if self.lane_cancels[i].is_set()]:
            if len(self.window):
                datas, pens = self._step_series(slice(None))
                self.emits[i](StepLosses(self.window.first_step, datas[i], pens[i], self.stride))
            self.leave(i, "cancelled", f"cancelled at step {self.step}")
        if not self.alive:
            raise _AllEnded

    def leave(self, i: int, status: str, reason: str, step: int | None = None) -> None:
        """Lane i stops training (the others go on) and sends its terminal event."""
        self.alive.remove(i)
        self.alive_mask[i] = False
        self.lanes.retire(i)
        self.emits[i](self.end(i, status, reason, step=step))

    def diverge(self, i: int, k: int, value: float) -> None:
        """End lane i as diverged at the window's k-th step (its per-step losses up to there are sent)."""
        w = self.window
        datas, pens = self._step_series(slice(0, k + 1))
        self.emits[i](StepLosses(w.first_step, datas[i], pens[i], self.stride))
        step, lr = w.first_step + k, self.configs[i].lr
        if math.isfinite(value):
            start = self.first_loss.reshape(-1)[i].item()
            why = (f"the training loss exploded to {value:.3g} at step {step}, more than {EXPLODED:g}x its start "
                   f"({start:.3g})")
        else:
            why = f"the training loss became {value} at step {step}"
        self.leave(i, "diverged", f"{why}: the learning rate ({lr:g}) is probably too high for this network", step)

    def _step_series(self, steps: slice) -> tuple[list[list[float]], list[list[float]]]:
        """Per lane, the window's data losses and penalties (empty without one) over ``steps``, as kept
        (means of ``stride`` steps)."""
        w = self.window
        datas = _Window.table(w.datas[steps])
        pens = _Window.table(w.totals[steps]) - datas
        per_lane_data, per_lane_pen = datas.T.tolist(), pens.T.tolist()
        out_data, out_pen = [], []
        for i, c in enumerate(self.configs):
            out_data.append(self._strided(per_lane_data[i]))
            out_pen.append(self._strided(per_lane_pen[i]) if c.l1 or c.l2 else [])
        return out_data, out_pen

    def _strided(self, values: list[float]) -> list[float]:
        s = self.stride
        return values if s == 1 else [sum(values[j:j + s]) / len(values[j:j + s]) for j in range(0, len(values), s)]

    def log_point(self, epoch_float: float, grads: torch.Tensor | None, final: bool = False,
                  epoch_end: bool = True, draw: bool = True) -> None:
        """Send the window's losses, then layer stats and scores (train subset, validation) of every live lane.
        ``draw``: the class regions and diagram too (at the log interval and the last step, not at the epoch ends
        between, which are there for the per-epoch validation scores: on a toy set they are 5 times as many)."""
        self.check_losses()
        w = self.window
        if len(w):
            datas, pens = self._step_series(slice(None))
            for i in self.alive:
                self.emits[i](StepLosses(w.first_step, datas[i], pens[i], self.stride))
            sizes = torch.tensor(w.sizes, dtype=torch.float32, device=self.device)
            n = sum(w.sizes)
            running_loss = [v / n for v in (_Window.table(w.datas) * sizes[:, None]).sum(dim=0).tolist()]
            running_acc = [v / n for v in _Window.table(w.correct).sum(dim=0).tolist()]
        else:
            running_loss = running_acc = [float("nan")] * len(self.configs)
        heatmaps = final or self.n_logs % self.heat_every == 0
        stats = self.lanes.layer_stats(self.probe_x, self.alive, heatmaps=heatmaps)
        n_val = len(self.y_val) if epoch_end else VAL_SUBSET
        val = self.lanes.evaluate(self.x_val[:n_val], self.y_val[:n_val])
        fit = self.lanes.evaluate(self.x_fit, self.y_fit)
        pens = self.lanes.penalties()
        boundaries = self.boundaries(epoch_float) if draw else None
        filters = self.filters(epoch_float)
        flat = grads.tolist() if grads is not None else None
        elapsed = self.elapsed()
        offset = 0
        for i, names in enumerate(self.layer_names):
            grad_norm = flat[offset:offset + len(names)] if flat is not None else [float("nan")] * len(names)
            offset += len(names)
            if i not in self.alive:
                continue
            epoch = round(epoch_float, 4)
            self.last_eval[i] = Evaluation(self.step, epoch, fit.loss[i], fit.acc[i], val.loss[i], val.acc[i], pens[i],
                                           elapsed, running_loss[i], running_acc[i], fit.ce[i], val.ce[i])
            self.emits[i](LayerStats(self.step, epoch, names, grad_norm, **stats[i]))
            if boundaries is not None:
                self.emits[i](boundaries[i])
            if filters is not None:  # a single run's lane (see first_filters)
                self.emits[i](filters)
            self.emits[i](self.last_eval[i])
            reason = self.prune(i) if self.prune is not None and epoch_end else None
            if reason:
                self.leave(i, "pruned", reason)
        if not self.alive:
            raise _AllEnded  # every lane has ended (pruned)
        self.n_logs += 1
        self.window = _Window(self.step + 1)

    def boundaries(self, epoch_float: float) -> list[DecisionBoundary] | None:
        """Every lane's class regions on the decision grid now (None without a live 2-D grid): one pass for all; a live
        lane small enough to draw carries its network diagram too (:class:`core.engine.neurons.NeuronMaps`)."""
        if self.grid is None:
            return None
        xs, ys, inputs = self.grid
        pred, confidence = class_regions(self.lanes, xs, ys, inputs)
        pred = pred.to(torch.uint8).cpu().numpy()
        confidence = confidence.mul(255).round_().to(torch.uint8).cpu().numpy()
        x_axis, y_axis = self.grid_axes
        epoch = round(epoch_float, 4)
        drawn = {i: self.neurons.diagram(i, self.lanes.state_dict(i)) for i in self.alive} if self.neurons else {}
        return [DecisionBoundary(self.step, epoch, x_axis, y_axis, pred[i], confidence[i], **(drawn.get(i) or {}))
                for i in range(len(pred))]

    def filters(self, epoch_float: float) -> ConvFilters | None:
        """The first conv layer now (None for a network without one): smoothness of all, the first filters."""
        if self.conv is None:
            return None
        name, conv, initial = self.conv
        weight = conv.weight.detach()
        smoothness = probes.filter_smoothness(weight)
        shown = weight[:probes.MAX_FILTERS].to(device="cpu", dtype=torch.float32, copy=True).numpy()
        return ConvFilters(self.step, round(epoch_float, 4), name, len(weight), float(smoothness.mean()), initial,
                           smoothness[:probes.MAX_FILTERS].tolist(), shown)

    # --- the end ------------------------------------------------------------------------------
    def end(self, i: int, status: str, reason: str, step: int | None = None) -> RunFinished:
        step = self.step if step is None else step
        finished = RunFinished(status=status, step=step, epoch=round(step / self.n_steps, 4), elapsed=self.elapsed(),
                               reason=reason, epoch_seconds=list(self.epoch_seconds))
        last = self.last_eval[i]
        if last is not None:
            finished.train_loss, finished.train_acc = last.train_loss, last.train_acc
            finished.val_loss, finished.val_acc, finished.val_ce = last.val_loss, last.val_acc, last.val_ce
        self.ends[i] = finished
        return finished

    def finish(self, status: str, reason: str) -> None:
        ended = [self.end(i, status, reason) for i in self.alive]
        if status == "finished" and self.alive and len(self.dev_ds.y_test):  # an upload may have no test set
            self.test_metrics(ended)
            for finished in ended:
                finished.elapsed = self.elapsed()
        for i, finished in zip(self.alive, ended):
            if status == "finished" and self.final_weights:
                self.emits[i](weights_event(self.lanes.state_dict(i), self.step, self.weights_problem))
            self.emits[i](finished)

    def test_metrics(self, ended: list[RunFinished]) -> None:
        ds, device = self.dev_ds, self.device
        x_test, y_test = ds.x_test.to(device), ds.y_test.to(device)
        scores = self.lanes.evaluate(datasets.batch_features(x_test), y_test, keep_predictions=True)
        grids = decision_grids(self.lanes, torch.cat([ds.x, ds.x_test]).to(device)) if ds.input_shape == (2,) else None
        k = ds.n_classes
        for i, finished in zip(self.alive, ended):
            pred = scores.preds[i]
            finished.test_loss, finished.test_acc, finished.test_ce = scores.loss[i], scores.acc[i], scores.ce[i]
            finished.confusion = torch.bincount(y_test * k + pred, minlength=k * k).reshape(k, k).tolist()
            wrong = (pred != y_test).nonzero().flatten()[:MAX_MISCLASSIFIED]
            finished.misclassified = [{"index": int(j), "true": int(y_test[j]), "pred": int(pred[j])}
                                      for j in wrong.tolist()]
            if ds.is_image and len(wrong):
                finished.misclassified_images = x_test[wrong].cpu().numpy()
            if grids is not None:
                finished.decision_grid = grids[i]

    def fail(self, exc: Exception) -> list[RunFinished | RunFailed]:
        """Every lane without an end fails with ``exc``'s message (out of GPU memory: the datasets'
        cached device copies are dropped too)."""
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            datasets.release_device_copies()
        for i, emit in enumerate(self.emits):
            if self.ends[i] is None:
                self.ends[i] = RunFailed(self.step, _failure_message(exc), type(exc).__name__, self.elapsed())
                emit(self.ends[i])
        return self.ends

    def release(self) -> None:
        """Drop the lanes, data copies and per-step tensors (device memory goes back with them)."""
        for name in ("lanes", "features", "labels", "x_val", "y_val", "x_fit", "y_fit", "probe_x", "train_idx", "bad",
                     "limit", "first_loss", "alive_mask", "dev_ds", "ds", "grid", "grid_axes", "neurons", "conv"):
            setattr(self, name, None)
        self.window = _Window(self.step + 1)


def weights_event(state: dict[str, torch.Tensor], step: int,
                  weights_problem: WeightsProblem | None = None) -> FinalWeights:
    """The trained weights as float32 numpy copies, or (when ``weights_problem`` says why) none."""
    nbytes = sum(t.numel() * 4 for t in state.values())
    problem = weights_problem(nbytes) if weights_problem is not None else ""
    if problem:
        return FinalWeights(step, {}, nbytes, problem)
    return FinalWeights(step, {name: t.detach().to(device="cpu", dtype=torch.float32, copy=True).numpy()
                               for name, t in state.items()}, nbytes)


def grid_axes(points: torch.Tensor, size: int = DECISION_GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(xs, ys): ``size`` coordinates per axis covering 2-D ``points`` with a 10% margin."""
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    margin = (hi - lo) * 0.1
    xs = torch.linspace(float(lo[0] - margin[0]), float(hi[0] + margin[0]), size, device=points.device)
    ys = torch.linspace(float(lo[1] - margin[1]), float(hi[1] + margin[1]), size, device=points.device)
    return xs, ys


def grid_inputs(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """The grid's points, row by row ([len(ys) * len(xs), 2]: y is the row, x the column)."""
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


@torch.no_grad()
def class_regions(lanes: Lanes, xs: torch.Tensor, ys: torch.Tensor,
                  inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per lane, in one pass: (predicted class, its probability), each [lanes, len(ys), len(xs)]. ``inputs``:
    :func:`grid_inputs` of the axes, when already made."""
    logits = lanes.logits(grid_inputs(xs, ys) if inputs is None else inputs)
    top, pred = logits.max(dim=2)
    confidence = (logits - top.unsqueeze(2)).exp_().sum(dim=2).reciprocal_()  # the softmax's largest value
    shape = (len(pred), len(ys), len(xs))
    return pred.reshape(shape), confidence.reshape(shape)


def decision_grids(lanes: Lanes, points: torch.Tensor, size: int = DECISION_GRID_SIZE) -> list[dict]:
    """Per lane: predicted class and confidence on a size x size grid covering 2-D ``points`` (with a margin)."""
    xs, ys = grid_axes(points, size)
    pred, confidence = class_regions(lanes, xs, ys)
    return [{"xs": xs.tolist(), "ys": ys.tolist(), "pred": pred[i].tolist(), "confidence": confidence[i].tolist()}
            for i in range(len(pred))]
