"""What the training loop trains: the :class:`Lanes` protocol, a single run's :class:`ModuleLanes`,
and the losses and optimizers both kinds of lanes share.

A lane is one model advanced by the loop; all lanes of a call see the same batches. A single
run is one lane; a grid batches many small MLPs into a few tensors
(:class:`core.engine.batched.StackedLanes`). Per-lane results come as tensors or lists indexed by lane.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.engine import optimizers as rules
from core.engine.config import RunConfig
from core.engine.models import (build_model, count_parameters, make_activation, penalty_weights, set_dropout_generator,
                     weight_layers)
from core.engine.probes import MEASURED_ACTIVATIONS, grad_norms, unit_saturation, weight_changes, weight_distribution, weight_penalty

EVAL_CHUNK = 4096


def make_optimizer(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The config's optimizer (torch.optim, or ours from core.engine.optimizers), carrying its lr schedule."""
    optimizer = rules.from_config(cfg, params) if cfg.optimizer_impl == "ours" else _torch_optimizer(cfg, params)
    return rules.with_schedule(optimizer, cfg)


def _torch_optimizer(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
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


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_example
    return per_example.mean() if reduction == "mean" else per_example.sum()


def data_loss(cfg: RunConfig, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The configured loss of logits: cross-entropy (softmax applied once, inside), MSE of softmax vs
    one-hot, or softmax_cross_entropy (a softmax on the output, then cross_entropy's own: report 004's
    mistake, reproduced on purpose).

    Classes are dim 1 (logits [N, C] or [N, C, d] with y [N] or [N, d]); ``reduction`` is
    mean, sum, or none (one loss per example)."""
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(logits, y, reduction=reduction)
    if cfg.loss == "softmax_cross_entropy":
        return F.cross_entropy(logits.softmax(dim=1), y, reduction=reduction)
    target = F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return _reduce(F.mse_loss(logits.softmax(dim=1), target, reduction="none").mean(dim=1), reduction)


def penalty(cfg: RunConfig, model: nn.Module) -> torch.Tensor | None:
    """lambda1 * sum|w| + lambda2 * sum w^2 over the weight matrices (None when both are 0)."""
    total = weight_penalty([w.unsqueeze(0) for w in penalty_weights(model)], cfg.l1, cfg.l2)
    return None if total is None else total.squeeze(0)


class Scores(NamedTuple):
    """Per lane: mean configured loss, accuracy, mean true cross-entropy, and (when kept) predictions."""

    loss: list[float]
    acc: list[float]
    ce: list[float]
    preds: list[torch.Tensor] | None


@torch.no_grad()
def evaluate(cfg: RunConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             keep_predictions: bool = False) -> Scores:
    """One model's scores over a whole split of float features, in eval mode."""
    if len(y) == 0:
        return Scores([float("nan")], [float("nan")], [float("nan")], None)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    ce_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    preds = []
    for start in range(0, len(y), EVAL_CHUNK):
        xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
        logits = model(xb)
        loss = data_loss(cfg, logits, yb, reduction="sum")
        loss_sum += loss
        ce_sum += loss if cfg.loss == "cross_entropy" else F.cross_entropy(logits, yb, reduction="sum")
        pred = logits.argmax(dim=1)
        correct += (pred == yb).sum()
        if keep_predictions:
            preds.append(pred)
    model.train(was_training)
    n = len(y)
    return Scores([float(loss_sum) / n], [float(correct) / n], [float(ce_sum) / n],
                  [torch.cat(preds)] if keep_predictions else None)


class Lanes(Protocol):
    """What the loop trains: one or more models ("lanes") advanced together, one forward and
    one backward per step, all on the same batches."""

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

    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int], heatmaps: bool = True) -> list[dict | None]:
        """For the given lanes (the others get None): weight_change, weight_delta, saturation,
        heatmaps (empty lists unless ``heatmaps``), near_zero, weight_absmax, weight_hist, hist_bound."""

    def penalties(self) -> list[float]: ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, keep_predictions: bool = False) -> Scores:
        """Per lane scores in eval mode."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[lanes, N, classes] in eval mode."""

    def state_dict(self, lane: int) -> dict[str, torch.Tensor]:
        """Lane's weights as the state_dict of the model :func:`build_model` builds for its config."""

    def retire(self, lane: int) -> None:
        """Lane ``lane`` has ended while others train on: it may stop costing anything (its values then
        read as NaN)."""


class ModuleLanes:
    """One ``nn.Module`` built by :func:`build_model`: the single lane of an ordinary run."""

    def __init__(self, configs: list[RunConfig], input_shape: tuple[int, ...], n_classes: int, device: torch.device):
        (cfg,) = self.configs = list(configs)
        self.cfg = cfg
        self.model = build_model(cfg, input_shape, n_classes, torch.Generator().manual_seed(cfg.seed)).to(device)
        self.n_params = count_parameters(cfg, input_shape, n_classes)
        set_dropout_generator(self.model, torch.Generator(device=device).manual_seed(cfg.seed + 2))
        self.optimizers = [make_optimizer(cfg, self.model.parameters())]
        self.named_layers = weight_layers(self.model)
        self.weights = [m.weight for _, m in self.named_layers]
        self.initial = [w.detach().unsqueeze(0).clone() for w in self.weights]
        self.previous = [w.clone() for w in self.initial]
        # the k-th activation module follows the k-th weight layer (the output layer has none)
        names = [cfg.activation] * (len(self.named_layers) - 1 - cfg.depth) + list(cfg.layer_activations)
        kinds = tuple({type(make_activation(n)) for n in names})
        modules = [m for m in self.model.modules() if kinds and isinstance(m, kinds)]
        self.activations = [(k, n, m) for k, (n, m) in enumerate(zip(names, modules)) if n in MEASURED_ACTIVATIONS]

    def describe(self, lane: int) -> tuple[int, list[str], list[list[int]]]:
        return (self.n_params, [n for n, _ in self.named_layers], [list(w.shape) for w in self.weights])

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
        return grad_norms([(w.grad if w.grad is not None else torch.zeros_like(w)).unsqueeze(0)
                           for w in self.weights]).flatten()

    @torch.no_grad()
    def saturation(self, x: torch.Tensor) -> list[float | None]:
        """Saturated / dead share per weight layer for a probe batch (None where none is measured)."""
        outputs: dict[int, torch.Tensor] = {}
        handles = [m.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out.detach()))
                   for k, _, m in self.activations]
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(x)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        measured: list[float | None] = [None] * len(self.weights)
        for k, name, _ in self.activations:
            measured[k] = float(unit_saturation(name, outputs[k].unsqueeze(0))[0])
        return measured

    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int] = (0,), heatmaps: bool = True) -> list[dict | None]:
        change, delta, maps = weight_changes([w.unsqueeze(0) for w in self.weights], self.initial, self.previous,
                                             heatmaps)
        near_zero, absmax, bounds, hists = weight_distribution(self.weights)
        return [{"weight_change": change[:, 0].tolist(), "weight_delta": delta[:, 0].tolist(),
                 "saturation": self.saturation(probe_x), "heatmaps": [m[0] for m in maps], "near_zero": near_zero,
                 "weight_absmax": absmax, "weight_hist": hists,
                 "hist_bound": bounds}]

    def penalties(self) -> list[float]:
        with torch.no_grad():
            pen = penalty(self.cfg, self.model)
        return [float(pen) if pen is not None else 0.0]

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, keep_predictions: bool = False) -> Scores:
        return evaluate(self.cfg, self.model, x, y, keep_predictions)

    def state_dict(self, lane: int = 0) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def retire(self, lane: int = 0) -> None:
        """A single run's lane ends with its run: nothing to free."""

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(x).unsqueeze(0)
        finally:
            self.model.train(was_training)
