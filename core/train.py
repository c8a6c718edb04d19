"""THE training loop. It emits typed events to callbacks, never prints, never touches a UI.

Everything random (split, init, batch order, dropout) comes from generators seeded by
``cfg.seed``, so the same config on the CPU gives identical metrics, also while other runs
train in other threads.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import data as datasets
from .config import RunConfig
from .events import Evaluation, Event, LayerStats, RunFailed, RunFinished, RunStarted, StepLosses
from .models import build_model, count_parameters, penalty_weights, set_dropout_generator, weight_layers
from .probes import ActivationProbe, WeightTracker, weight_distribution

Callback = Callable[[Event], None]
EVAL_CHUNK = 4096
VAL_SUBSET = 2048  # validation examples scored at log points between epoch ends (full split at epoch ends)
PROBE_BATCH = 256
MAX_MISCLASSIFIED = 36
DECISION_GRID_SIZE = 60


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but no CUDA GPU is available here; use auto or cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def make_optimizer(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """torch.optim for the config; each optimizer reads only its own knobs (textbook defaults)."""
    params = list(params)
    wd = cfg.weight_decay
    decoupled = cfg.weight_decay_mode == "decoupled"
    # One fused kernel (SGD, Adam) or one multi-tensor op per update instead of a Python loop per tensor.
    fast = {"fused": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd, **fast)
    if cfg.optimizer in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov",
                               weight_decay=wd, **fast)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rms_alpha, momentum=cfg.rms_momentum,
                                   weight_decay=wd, foreach=True)
    if cfg.optimizer == "adam":
        adam = torch.optim.AdamW if decoupled else torch.optim.Adam
        return adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, **fast)
    if cfg.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd,
                                 decoupled_weight_decay=decoupled, foreach=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def data_loss(cfg: RunConfig, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on logits (softmax applied once, inside), or MSE of softmax vs one-hot.

    Classes are dim 1 (logits [N, C] or [N, C, d] with y [N] or [N, d]); ``reduction`` is
    mean, sum, or none (one loss per example)."""
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(logits, y, reduction=reduction)
    target = F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    per_example = F.mse_loss(logits.softmax(dim=1), target, reduction="none").mean(dim=1)
    if reduction == "none":
        return per_example
    return per_example.mean() if reduction == "mean" else per_example.sum()


def penalty(cfg: RunConfig, model: nn.Module) -> torch.Tensor | None:
    """lambda1 * sum|w| + lambda2 * sum w^2 over the weight matrices (None when both are 0)."""
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    weights = penalty_weights(model)
    total = torch.zeros((), device=weights[0].device)
    if cfg.l1:
        total = total + cfg.l1 * sum(w.abs().sum() for w in weights)
    if cfg.l2:
        total = total + cfg.l2 * sum(w.pow(2).sum() for w in weights)
    return total


@torch.no_grad()
def evaluate(cfg: RunConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             keep_predictions: bool = False) -> tuple[float, float, torch.Tensor | None]:
    """(mean data loss, accuracy, predictions) over a whole split of float features, in eval mode."""
    if len(y) == 0:
        return float("nan"), float("nan"), None
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    preds = []
    for start in range(0, len(y), EVAL_CHUNK):
        xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
        logits = model(xb)
        loss_sum += data_loss(cfg, logits, yb, reduction="sum")
        pred = logits.argmax(dim=1)
        correct += (pred == yb).sum()
        if keep_predictions:
            preds.append(pred)
    model.train(was_training)
    n = len(y)
    return float(loss_sum) / n, float(correct) / n, (torch.cat(preds) if keep_predictions else None)


def _versions() -> dict:
    import numpy
    return {"torch": torch.__version__, "numpy": numpy.__version__}


class Diverged(Exception):
    pass


# What lanes trained in lockstep must share: they see the same split, batches and log points.
LOCKSTEP_FIELDS = ("dataset", "data_noise", "val_fraction", "seed", "batch_size", "epochs", "log_every", "device")


def steps_per_epoch(cfg: RunConfig, n_train: int) -> int:
    batch = min(cfg.batch_size, n_train)
    # BatchNorm cannot train on a batch of one: drop such a last partial batch.
    return n_train // batch + (1 if n_train % batch > 1 or (n_train % batch == 1 and cfg.norm != "batchnorm") else 0)


class Lanes(Protocol):
    """What the loop trains: one or more models ("lanes") advanced together, one forward and
    one backward per step, all on the same batches.

    A single run is one lane (:class:`ModuleLanes`); a grid batches many small MLPs into a few
    tensors (:class:`core.batched.StackedLanes`). Per-lane results come as tensors or lists
    indexed by lane.
    """

    configs: list[RunConfig]
    optimizers: list[torch.optim.Optimizer]

    def describe(self, lane: int) -> tuple[int, list[str], list[list[int]]]:
        """(number of parameters, weight-layer names, weight shapes)."""

    def train(self, mode: bool = True) -> None: ...

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per lane: total loss (data + penalty, with the graph), data loss, correct count; each of
        shape [lanes], or 0-d when there is one lane (a single run pays for no extra ops)."""

    def grad_norms(self) -> torch.Tensor:
        """Gradient norm of every weight layer, lane after lane (flat)."""

    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int]) -> list[dict | None]:
        """For the given lanes (the others get None): weight_change, weight_delta, saturation,
        heatmaps, near_zero, weight_absmax, weight_hist."""

    def penalties(self) -> list[float]: ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor,
                 keep_predictions: bool = False) -> tuple[list[float], list[float], list[torch.Tensor] | None]:
        """Per lane (mean data loss, accuracy, predictions) in eval mode."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[lanes, N, classes] in eval mode."""


class ModuleLanes:
    """One ``nn.Module`` built by :func:`build_model`: the single lane of an ordinary run."""

    def __init__(self, configs: list[RunConfig], input_shape: tuple[int, ...], n_classes: int, device: torch.device):
        (cfg,) = self.configs = list(configs)
        self.cfg = cfg
        self.model = build_model(cfg, input_shape, n_classes, torch.Generator().manual_seed(cfg.seed)).to(device)
        set_dropout_generator(self.model, torch.Generator(device=device).manual_seed(cfg.seed + 2))
        self.optimizers = [make_optimizer(cfg, self.model.parameters())]
        self.named_layers = weight_layers(self.model)
        self.tracker = WeightTracker([m for _, m in self.named_layers])
        self.probe = ActivationProbe(self.model, len(self.named_layers))

    def describe(self, lane: int) -> tuple[int, list[str], list[list[int]]]:
        return (count_parameters(self.model), [n for n, _ in self.named_layers],
                [list(m.weight.shape) for _, m in self.named_layers])

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        loss = data_loss(self.cfg, logits, y)
        pen = penalty(self.cfg, self.model)
        total = loss + pen if pen is not None else loss
        correct = (logits.argmax(dim=1) == y).sum()  # integer ops: no graph is recorded
        return total, loss, correct

    def grad_norms(self) -> torch.Tensor:
        return self.tracker.grad_norms()

    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int] = (0,)) -> list[dict | None]:
        change, delta, maps = self.tracker.changes()
        saturation = self.probe.measure(self.model, probe_x)
        near_zero, absmax, hists = weight_distribution([layer.weight for layer in self.tracker.layers])
        return [{"weight_change": change.tolist(), "weight_delta": delta.tolist(), "saturation": saturation,
                 "heatmaps": maps, "near_zero": near_zero, "weight_absmax": absmax, "weight_hist": hists}]

    def penalties(self) -> list[float]:
        with torch.no_grad():
            pen = penalty(self.cfg, self.model)
        return [float(pen) if pen is not None else 0.0]

    def evaluate(self, x: torch.Tensor, y: torch.Tensor,
                 keep_predictions: bool = False) -> tuple[list[float], list[float], list[torch.Tensor] | None]:
        loss, acc, pred = evaluate(self.cfg, self.model, x, y, keep_predictions)
        return [loss], [acc], ([pred] if keep_predictions else None)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(x).unsqueeze(0)
        finally:
            self.model.train(was_training)


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return ("The GPU ran out of memory. Try a smaller batch size or fewer/narrower layers, "
                f"or wait for other runs to finish. ({exc})")
    if isinstance(exc, datasets.DatasetUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def train(cfg: RunConfig, callbacks: Iterable[Callback] = (), cancel: threading.Event | None = None,
          key: str | None = None) -> RunFinished | RunFailed:
    """Train one run, emitting events to ``callbacks``; returns the terminal event.

    Never raises for a training problem: a non-finite loss ends the run as "diverged", a
    cancel as "cancelled" (history kept), and any exception (CUDA out-of-memory included)
    as a :class:`RunFailed` event.
    """
    callbacks = list(callbacks)
    emit = lambda event: [cb(event) for cb in callbacks]  # noqa: E731
    return train_lanes([cfg], ModuleLanes, [emit], cancel, [key or cfg.key()])[0]


def train_lanes(configs: Sequence[RunConfig], make_lanes: Callable[..., Lanes], emits: Sequence[Callback],
                cancel: threading.Event | None = None, keys: Sequence[str] | None = None,
                prune: Callable[[int], str | None] | None = None) -> list[RunFinished | RunFailed]:
    """Train several configs in lockstep (same split, batches and log points; see LOCKSTEP_FIELDS).

    ``make_lanes(configs, input_shape, n_classes, device)`` builds what is trained; lane i emits
    exactly the events a single run of ``configs[i]`` emits, to ``emits[i]``. A lane that
    diverges ends alone; the others go on. ``prune(i)``, asked after each epoch-end evaluation
    of lane i, may return a reason to end that lane early as "pruned" (e.g. a sweep's pruner).
    Returns each lane's terminal event.
    """
    configs, emits = list(configs), list(emits)
    t0 = time.perf_counter()
    state = {"step": 0, "ends": [None] * len(configs)}
    try:
        return _train(configs, make_lanes, emits, cancel or threading.Event(),
                      list(keys) if keys else [c.key() for c in configs], t0, state, prune)
    except Exception as exc:  # every failure becomes an event; the caller keeps serving
        ends = state["ends"]
        for i, emit in enumerate(emits):
            if ends[i] is None:
                ends[i] = RunFailed(state["step"], _failure_message(exc), type(exc).__name__, time.perf_counter() - t0)
                emit(ends[i])
        return ends
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(configs: list[RunConfig], make_lanes: Callable[..., Lanes], emits: list[Callback],
           cancel: threading.Event, keys: list[str], t0: float, state: dict,
           prune: Callable[[int], str | None] | None = None) -> list[RunFinished]:
    cfg = configs[0]
    for other in configs[1:]:
        differ = [f for f in LOCKSTEP_FIELDS if getattr(other, f) != getattr(cfg, f)]
        if differ:
            raise ValueError(f"configs trained in lockstep must share {', '.join(differ)}")
    device = resolve_device(cfg.device)
    ds = datasets.load_dataset(cfg.dataset, cfg.data_noise)
    if any(c.arch == "cnn" for c in configs) and not ds.is_image:
        raise ValueError(f"The CNN needs an image dataset; {ds.title} is not one")
    # Data lives on the training device when it fits there; otherwise batches are moved one by one.
    data_device = device if ds.fits_on(device) else torch.device("cpu")
    move_batches = data_device != device
    dev_ds = ds.on(data_device)
    features = dev_ds.features()  # float copy, made once per dataset and device
    train_idx, val_idx = datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)
    train_idx, val_idx = train_idx.to(data_device), val_idx.to(data_device)
    x_val, y_val = features[val_idx].to(device), dev_ds.y[val_idx].to(device)
    n_train = len(train_idx)

    order_gen = torch.Generator().manual_seed(cfg.seed + 1)
    lanes = make_lanes(configs, ds.input_shape, ds.n_classes, device)
    probe_x = x_val[:PROBE_BATCH] if len(val_idx) else features[train_idx[:PROBE_BATCH]].to(device)

    batch = min(cfg.batch_size, n_train)
    per_epoch = {steps_per_epoch(c, n_train) for c in configs}
    if len(per_epoch) > 1:
        raise ValueError("configs trained in lockstep must take the same steps per epoch (BatchNorm drops a last batch of one)")
    (n_steps,) = per_epoch
    total_steps = n_steps * cfg.epochs
    dataset = {"name": ds.name, "title": ds.title, "classes": ds.classes, "n_train": n_train, "n_val": len(val_idx),
               "n_test": len(ds.y_test), "notice": ds.notice, "input_shape": list(ds.input_shape)}
    for i, (c, emit) in enumerate(zip(configs, emits)):
        n_params, layers, shapes = lanes.describe(i)
        emit(RunStarted(key=keys[i], config=c.to_dict(), device=device.type, device_name=device_name(device),
                        n_params=n_params, steps_per_epoch=n_steps, total_steps=total_steps, layers=layers,
                        layer_shapes=shapes, dataset=dataset, started_at=time.time(), versions=_versions()))
    layer_names = [lanes.describe(i)[1] for i in range(len(configs))]

    # Per-step tensors (one value per lane) since the last log point, reduced there in one go (no per-step sync).
    step_losses: list[torch.Tensor] = []
    step_data_losses: list[torch.Tensor] = []
    step_correct: list[torch.Tensor] = []
    step_sizes: list[int] = []
    first_step = 1
    last_eval: list[Evaluation | None] = [None] * len(configs)
    alive = list(range(len(configs)))  # lanes still training
    epoch_seconds: list[float] = []
    step = 0
    lanes.train()

    def end(i: int, status: str, reason: str) -> RunFinished:
        finished = RunFinished(status=status, step=step, epoch=round(step / n_steps, 4),
                               elapsed=time.perf_counter() - t0, reason=reason, epoch_seconds=list(epoch_seconds))
        if last_eval[i] is not None:
            finished.train_loss, finished.train_acc = last_eval[i].train_loss, last_eval[i].train_acc
            finished.val_loss, finished.val_acc = last_eval[i].val_loss, last_eval[i].val_acc
        state["ends"][i] = finished
        return finished

    def log_point(epoch_float: float, grads: torch.Tensor | None, epoch_end: bool) -> None:
        nonlocal step_losses, step_data_losses, step_correct, step_sizes, first_step
        per_lane = lambda steps: torch.stack(steps).reshape(len(steps), -1)  # noqa: E731  [steps, lanes]
        losses = per_lane(step_losses).T.tolist() if step_losses else [[] for _ in configs]
        for i in list(alive):
            if losses[i]:
                emits[i](StepLosses(first_step, losses[i]))
            bad = next((k for k, v in enumerate(losses[i]) if not math.isfinite(v)), None)
            if bad is not None:
                alive.remove(i)
                emits[i](end(i, "diverged", f"the training loss became {losses[i][bad]} at step {first_step + bad}: "
                                            f"the learning rate ({configs[i].lr:g}) is probably too high for this network"))
        if not alive:
            raise Diverged
        flat = grads.tolist() if grads is not None else None
        stats = lanes.layer_stats(probe_x, alive)
        n_val = len(y_val) if epoch_end else VAL_SUBSET
        val_loss, val_acc, _ = lanes.evaluate(x_val[:n_val], y_val[:n_val])
        pens = lanes.penalties()
        n = max(sum(step_sizes), 1)
        if step_sizes:
            sizes = torch.tensor(step_sizes, dtype=torch.float32, device=device)
            train_loss = [v / n for v in (per_lane(step_data_losses) * sizes[:, None]).sum(dim=0).tolist()]
            train_acc = [v / n for v in per_lane(step_correct).sum(dim=0).tolist()]
        else:
            train_loss = train_acc = [float("nan")] * len(configs)
        offset = 0
        for i, names in enumerate(layer_names):
            grad_norm = flat[offset:offset + len(names)] if flat is not None else [float("nan")] * len(names)
            offset += len(names)
            if i not in alive:
                continue
            last_eval[i] = Evaluation(step, round(epoch_float, 4), train_loss[i], train_acc[i], val_loss[i],
                                      val_acc[i], pens[i], time.perf_counter() - t0)
            emits[i](LayerStats(step, round(epoch_float, 4), names, grad_norm, **stats[i]))
            emits[i](last_eval[i])
            reason = prune(i) if prune is not None and epoch_end else None
            if reason:
                alive.remove(i)
                emits[i](end(i, "pruned", reason))
        if not alive:
            raise Diverged  # every lane has ended (pruned)
        step_losses, step_data_losses, step_correct, step_sizes, first_step = [], [], [], [], step + 1

    status, reason = "finished", ""
    try:
        for epoch in range(cfg.epochs):
            epoch_start = time.perf_counter()
            perm = train_idx[torch.randperm(n_train, generator=order_gen).to(data_device)]
            for b in range(n_steps):
                if cancel.is_set():
                    raise KeyboardInterrupt
                idx = perm[b * batch:(b + 1) * batch]
                xb, yb = features[idx], dev_ds.y[idx]
                if move_batches:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                total, loss, correct = lanes.losses(xb, yb)
                for optimizer in lanes.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                (total if total.dim() == 0 else total.sum()).backward()
                step += 1
                state["step"] = step
                is_log = step % cfg.log_every == 0 or b == n_steps - 1
                grads = lanes.grad_norms() if is_log else None  # this step's gradients, before the update
                for optimizer in lanes.optimizers:
                    optimizer.step()
                step_losses.append(total.detach())
                step_data_losses.append(loss.detach())
                step_correct.append(correct)
                step_sizes.append(len(yb))
                if is_log:
                    log_point(epoch + (b + 1) / n_steps, grads, epoch_end=b == n_steps - 1)
            epoch_seconds.append(time.perf_counter() - epoch_start)
    except KeyboardInterrupt:
        status, reason = "cancelled", f"cancelled at step {step}"
        if step_losses:
            try:
                log_point(step / n_steps, None, epoch_end=True)
            except Diverged:
                pass
    except Diverged:  # every lane diverged
        pass

    ended = [end(i, status, reason) for i in alive]
    if status == "finished" and alive:
        _test_metrics(lanes, alive, dev_ds, ended, device)
        for finished in ended:
            finished.elapsed = time.perf_counter() - t0
    for i, finished in zip(alive, ended):
        emits[i](finished)
    return state["ends"]


def _test_metrics(lanes: Lanes, alive: list[int], ds: datasets.Dataset, ended: list[RunFinished],
                  device: torch.device) -> None:
    x_test, y_test = ds.x_test.to(device), ds.y_test.to(device)
    losses, accs, preds = lanes.evaluate(datasets.batch_features(x_test), y_test, keep_predictions=True)
    grids = decision_grids(lanes, torch.cat([ds.x, ds.x_test]).to(device)) if ds.input_shape == (2,) else None
    k = ds.n_classes
    for i, finished in zip(alive, ended):
        pred = preds[i]
        finished.test_loss, finished.test_acc = losses[i], accs[i]
        finished.confusion = torch.bincount(y_test * k + pred, minlength=k * k).reshape(k, k).tolist()
        wrong = (pred != y_test).nonzero().flatten()[:MAX_MISCLASSIFIED]
        finished.misclassified = [{"index": int(j), "true": int(y_test[j]), "pred": int(pred[j])} for j in wrong.tolist()]
        if ds.is_image and len(wrong):
            finished.misclassified_images = x_test[wrong].cpu().numpy()
        if grids is not None:
            finished.decision_grid = grids[i]


@torch.no_grad()
def decision_grids(lanes: Lanes, points: torch.Tensor, size: int = DECISION_GRID_SIZE) -> list[dict]:
    """Per lane: predicted class and confidence on a size x size grid covering 2-D ``points`` (with a margin)."""
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    margin = (hi - lo) * 0.1
    xs = torch.linspace(float(lo[0] - margin[0]), float(hi[0] + margin[0]), size, device=points.device)
    ys = torch.linspace(float(lo[1] - margin[1]), float(hi[1] + margin[1]), size, device=points.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    probs = lanes.logits(torch.stack([gx.flatten(), gy.flatten()], dim=1)).softmax(dim=2)
    confidence, pred = probs.max(dim=2)
    return [{"xs": xs.tolist(), "ys": ys.tolist(), "pred": pred[i].reshape(size, size).tolist(),
             "confidence": confidence[i].reshape(size, size).tolist()} for i in range(len(probs))]
