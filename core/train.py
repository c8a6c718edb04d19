"""THE training loop. It emits typed events to callbacks, never prints, never touches a UI.

Everything random (split, init, batch order, dropout) comes from generators seeded by
``cfg.seed``, so the same config on the CPU gives identical metrics, also while other runs
train in other threads.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterable

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
    params = list(params)
    wd = cfg.weight_decay
    # One fused kernel (SGD, Adam) or one multi-tensor op per update instead of a Python loop per tensor.
    fast = {"fused": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd, **fast)
    if cfg.optimizer in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov",
                               weight_decay=wd, **fast)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.beta2, momentum=cfg.momentum, weight_decay=wd,
                                   foreach=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, **fast)
    if cfg.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, foreach=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def data_loss(cfg: RunConfig, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on logits (softmax applied once, inside), or MSE of softmax vs one-hot."""
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(logits, y, reduction=reduction)
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    per_example = F.mse_loss(logits.softmax(dim=1), target, reduction="none").mean(dim=1)
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


def train(cfg: RunConfig, callbacks: Iterable[Callback] = (), cancel: threading.Event | None = None,
          key: str | None = None) -> RunFinished | RunFailed:
    """Train one run, emitting events to ``callbacks``; returns the terminal event.

    Never raises for a training problem: a non-finite loss ends the run as "diverged", a
    cancel as "cancelled" (history kept), and any exception (CUDA out-of-memory included)
    as a :class:`RunFailed` event.
    """
    callbacks = list(callbacks)
    emit = lambda event: [cb(event) for cb in callbacks]  # noqa: E731
    t0 = time.perf_counter()
    state = {"step": 0}
    try:
        return _train(cfg, emit, cancel or threading.Event(), key or cfg.key(), t0, state)
    except Exception as exc:  # every failure becomes an event; the caller keeps serving
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            message = ("The GPU ran out of memory. Try a smaller batch size or fewer/narrower layers, "
                       f"or wait for other runs to finish. ({exc})")
        elif isinstance(exc, datasets.DatasetUnavailable):
            message = str(exc)
        event = RunFailed(state["step"], message, type(exc).__name__, time.perf_counter() - t0)
        emit(event)
        return event
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(cfg: RunConfig, emit: Callback, cancel: threading.Event, key: str, t0: float, state: dict):
    device = resolve_device(cfg.device)
    ds = datasets.load_dataset(cfg.dataset, cfg.data_noise)
    if cfg.arch == "cnn" and not ds.is_image:
        raise ValueError(f"The CNN needs an image dataset; {ds.title} is not one")
    # Data lives on the training device when it fits there; otherwise batches are moved one by one.
    data_device = device if ds.fits_on(device) else torch.device("cpu")
    dev_ds = ds.on(data_device)
    features = dev_ds.features()  # float copy, made once per dataset and device
    train_idx, val_idx = datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)
    train_idx, val_idx = train_idx.to(data_device), val_idx.to(data_device)
    x_val, y_val = features[val_idx].to(device), dev_ds.y[val_idx].to(device)
    n_train = len(train_idx)

    init_gen = torch.Generator().manual_seed(cfg.seed)
    order_gen = torch.Generator().manual_seed(cfg.seed + 1)
    dropout_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    model = build_model(cfg, ds.input_shape, ds.n_classes, init_gen).to(device)
    set_dropout_generator(model, dropout_gen)
    optimizer = make_optimizer(cfg, model.parameters())
    named_layers = weight_layers(model)
    tracker = WeightTracker([m for _, m in named_layers])
    probe = ActivationProbe(model, len(named_layers))
    probe_x = x_val[:PROBE_BATCH] if len(val_idx) else features[train_idx[:PROBE_BATCH]]

    batch = min(cfg.batch_size, n_train)
    # BatchNorm cannot train on a batch of one: drop such a last partial batch.
    steps_per_epoch = n_train // batch + (1 if n_train % batch > 1 or (n_train % batch == 1 and cfg.norm != "batchnorm") else 0)
    total_steps = steps_per_epoch * cfg.epochs
    emit(RunStarted(
        key=key, config=cfg.to_dict(), device=device.type, device_name=device_name(device),
        n_params=count_parameters(model), steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        layers=[n for n, _ in named_layers], layer_shapes=[list(m.weight.shape) for _, m in named_layers],
        dataset={"name": ds.name, "title": ds.title, "classes": ds.classes, "n_train": n_train,
                 "n_val": len(val_idx), "n_test": len(ds.y_test), "notice": ds.notice,
                 "input_shape": list(ds.input_shape)},
        started_at=time.time(), versions=_versions()))

    # Per-step tensors since the last log point, reduced there in one go (no per-step sync).
    step_losses: list[torch.Tensor] = []
    step_data_losses: list[torch.Tensor] = []
    step_correct: list[torch.Tensor] = []
    step_sizes: list[int] = []
    first_step = 1
    last_eval: Evaluation | None = None
    epoch_seconds: list[float] = []
    step = 0
    model.train()

    def log_point(epoch_float: float, grads: torch.Tensor | None, epoch_end: bool) -> None:
        nonlocal step_losses, step_data_losses, step_correct, step_sizes, first_step, last_eval
        losses = torch.stack(step_losses).tolist() if step_losses else []
        if losses:
            emit(StepLosses(first_step, losses))
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is not None:
            raise Diverged(f"the training loss became {losses[bad]} at step {first_step + bad}: the learning rate "
                           f"({cfg.lr:g}) is probably too high for this network")
        grad_norm = grads.tolist() if grads is not None else [float("nan")] * len(named_layers)
        change, delta, maps = tracker.changes()
        saturation = probe.measure(model, probe_x)
        n_val = len(y_val) if epoch_end else VAL_SUBSET
        val_loss, val_acc, _ = evaluate(cfg, model, x_val[:n_val], y_val[:n_val])
        with torch.no_grad():
            pen = penalty(cfg, model)
        n = max(sum(step_sizes), 1)
        sizes = torch.tensor(step_sizes, dtype=torch.float32, device=device)
        train_loss = float((torch.stack(step_data_losses) * sizes).sum()) / n if step_sizes else float("nan")
        train_acc = float(torch.stack(step_correct).sum()) / n if step_sizes else float("nan")
        last_eval = Evaluation(step, round(epoch_float, 4), train_loss, train_acc, val_loss, val_acc,
                               float(pen) if pen is not None else 0.0, time.perf_counter() - t0)
        near_zero, absmax, hists = weight_distribution(tracker.layers)
        emit(LayerStats(step, round(epoch_float, 4), [nm for nm, _ in named_layers], grad_norm,
                        change.tolist(), delta.tolist(), saturation, maps, near_zero, absmax, hists))
        emit(last_eval)
        step_losses, step_data_losses, step_correct, step_sizes, first_step = [], [], [], [], step + 1

    status, reason = "finished", ""
    try:
        for epoch in range(cfg.epochs):
            epoch_start = time.perf_counter()
            perm = train_idx[torch.randperm(n_train, generator=order_gen).to(data_device)]
            for b in range(steps_per_epoch):
                if cancel.is_set():
                    raise KeyboardInterrupt
                idx = perm[b * batch:(b + 1) * batch]
                xb, yb = features[idx].to(device, non_blocking=True), dev_ds.y[idx].to(device, non_blocking=True)
                logits = model(xb)
                loss = data_loss(cfg, logits, yb)
                pen = penalty(cfg, model)
                total = loss + pen if pen is not None else loss
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                step += 1
                state["step"] = step
                is_log = step % cfg.log_every == 0 or b == steps_per_epoch - 1
                grads = tracker.grad_norms() if is_log else None  # this step's gradients, before the update
                optimizer.step()
                with torch.no_grad():
                    step_losses.append(total.detach())
                    step_data_losses.append(loss.detach() if pen is not None else step_losses[-1])
                    step_correct.append((logits.argmax(dim=1) == yb).sum())
                    step_sizes.append(len(yb))
                if is_log:
                    log_point(epoch + (b + 1) / steps_per_epoch, grads, epoch_end=b == steps_per_epoch - 1)
            epoch_seconds.append(time.perf_counter() - epoch_start)
    except KeyboardInterrupt:
        status, reason = "cancelled", f"cancelled at step {step}"
        if step_losses:
            log_point(step / steps_per_epoch, None, epoch_end=True)
    except Diverged as exc:
        status, reason = "diverged", str(exc)

    finished = RunFinished(status=status, step=step, epoch=round(step / steps_per_epoch, 4),
                           elapsed=time.perf_counter() - t0, reason=reason, epoch_seconds=epoch_seconds)
    if last_eval is not None:
        finished.train_loss, finished.train_acc = last_eval.train_loss, last_eval.train_acc
        finished.val_loss, finished.val_acc = last_eval.val_loss, last_eval.val_acc
    if status == "finished":
        _test_metrics(cfg, model, dev_ds, finished, device)
        finished.elapsed = time.perf_counter() - t0
    emit(finished)
    return finished


def _test_metrics(cfg: RunConfig, model: nn.Module, ds: datasets.Dataset, finished: RunFinished,
                  device: torch.device) -> None:
    x_test, y_test = ds.x_test.to(device), ds.y_test.to(device)
    loss, acc, pred = evaluate(cfg, model, datasets.batch_features(x_test), y_test, keep_predictions=True)
    finished.test_loss, finished.test_acc = loss, acc
    k = ds.n_classes
    confusion = torch.bincount(y_test * k + pred, minlength=k * k).reshape(k, k)
    finished.confusion = confusion.tolist()
    wrong = (pred != y_test).nonzero().flatten()[:MAX_MISCLASSIFIED]
    finished.misclassified = [{"index": int(i), "true": int(y_test[i]), "pred": int(pred[i])} for i in wrong.tolist()]
    if ds.is_image and len(wrong):
        finished.misclassified_images = x_test[wrong].cpu().numpy()
    if ds.input_shape == (2,):
        finished.decision_grid = decision_grid(model, torch.cat([ds.x, ds.x_test]).to(device))


@torch.no_grad()
def decision_grid(model: nn.Module, points: torch.Tensor, size: int = DECISION_GRID_SIZE) -> dict:
    """Predicted class and confidence on a size x size grid covering 2-D ``points`` (with a margin)."""
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    margin = (hi - lo) * 0.1
    xs = torch.linspace(float(lo[0] - margin[0]), float(hi[0] + margin[0]), size, device=points.device)
    ys = torch.linspace(float(lo[1] - margin[1]), float(hi[1] + margin[1]), size, device=points.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    was_training = model.training
    model.eval()
    probs = model(torch.stack([gx.flatten(), gy.flatten()], dim=1)).softmax(dim=1)
    model.train(was_training)
    confidence, pred = probs.max(dim=1)
    return {"xs": xs.tolist(), "ys": ys.tolist(), "pred": pred.reshape(size, size).tolist(),
            "confidence": confidence.reshape(size, size).tolist()}
