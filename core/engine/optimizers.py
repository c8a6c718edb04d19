"""The six update rules written out as plain tensor code, and the learning-rate schedules.

Each rule is one function ``rule(p, g, state, **knobs)`` that updates the parameter ``p`` in
place from its gradient ``g``, keeping its running buffers in ``state``; it reads like the
formula beside it on the Optimizers page. :class:`RuleOptimizer` wraps a rule as a
``torch.optim.Optimizer``, so the engine (and the stacked lanes of :mod:`core.engine.batched`) train
with it unchanged. The formulas are torch.optim's exactly (SGD's Nesterov form, RMSprop's eps
outside the square root, NAdam's momentum-decay schedule), so a run with
``optimizer_impl="ours"`` follows the same curve as one with ``"torch"``
(tests/test_optimizers.py checks 100 steps against torch.optim for every knob).

:func:`lr_at` is the learning rate of a config at a step (constant, step decay, cosine,
linear warm-up); the training loop sets it on every parameter group before each update.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from core.engine.config import RunConfig

EPS = 1e-8  # torch.optim's eps for RMSprop, Adam and NAdam
NADAM_MOMENTUM_DECAY = 0.004  # torch.optim.NAdam's psi


# --- the update rules -------------------------------------------------------------------------
def buffer(state: dict, name: str, like: torch.Tensor) -> torch.Tensor:
    """The running buffer ``name`` of a parameter, zero before its first step."""
    return state[name] if name in state else torch.zeros_like(like)


def sgd(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, weight_decay: float = 0.0) -> None:
    if weight_decay:
        g = g + weight_decay * p      # L2 term of the loss, folded into the gradient
    p -= lr * g                       # step downhill


def momentum(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, momentum: float,
             weight_decay: float = 0.0) -> None:
    if weight_decay:
        g = g + weight_decay * p
    v = buffer(state, "v", p)
    v = state["v"] = momentum * v + g  # velocity: running sum of past gradients
    p -= lr * v


def nesterov(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, momentum: float,
             weight_decay: float = 0.0) -> None:
    if weight_decay:
        g = g + weight_decay * p
    v = buffer(state, "v", p)
    v = state["v"] = momentum * v + g
    p -= lr * (g + momentum * v)      # step with the gradient plus the look-ahead velocity


def rmsprop(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, alpha: float, momentum: float = 0.0,
            weight_decay: float = 0.0, eps: float = EPS) -> None:
    if weight_decay:
        g = g + weight_decay * p
    s = buffer(state, "s", p)
    s = state["s"] = alpha * s + (1 - alpha) * g * g   # running mean of squared gradients
    b = buffer(state, "b", p)
    b = state["b"] = momentum * b + g / (s.sqrt() + eps)  # scaled step (with optional momentum)
    p -= lr * b


def adam(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, beta1: float, beta2: float,
         weight_decay: float = 0.0, decoupled: bool = False, eps: float = EPS) -> None:
    t = state["t"] = state.get("t", 0) + 1
    if decoupled:
        p *= 1 - lr * weight_decay    # AdamW: shrink the weights apart from the gradient
    elif weight_decay:
        g = g + weight_decay * p
    m = state["m"] = beta1 * buffer(state, "m", p) + (1 - beta1) * g       # first moment
    v = state["v"] = beta2 * buffer(state, "v", p) + (1 - beta2) * g * g   # second moment
    m_hat = m / (1 - beta1 ** t)      # bias corrections: both moments start at zero
    v_hat = v / (1 - beta2 ** t)
    p -= lr * m_hat / (v_hat.sqrt() + eps)


def nadam(p: torch.Tensor, g: torch.Tensor, state: dict, *, lr: float, beta1: float, beta2: float,
          weight_decay: float = 0.0, decoupled: bool = False, eps: float = EPS,
          momentum_decay: float = NADAM_MOMENTUM_DECAY) -> None:
    t = state["t"] = state.get("t", 0) + 1
    if decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        g = g + weight_decay * p
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))            # momentum schedule mu_t
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_prod = state["mu_prod"] = state.get("mu_prod", 1.0) * mu      # prod of mu_1..mu_t
    m = state["m"] = beta1 * buffer(state, "m", p) + (1 - beta1) * g
    v = state["v"] = beta2 * buffer(state, "v", p) + (1 - beta2) * g * g
    denom = (v / (1 - beta2 ** t)).sqrt() + eps
    # Nesterov look-ahead: this gradient's share plus the next step's momentum share
    p -= lr * (1 - mu) / (1 - mu_prod) * g / denom
    p -= lr * mu_next / (1 - mu_prod * mu_next) * m / denom


Rule = Callable[..., None]
RULES: dict[str, Rule] = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "rmsprop": rmsprop,
                          "adam": adam, "nadam": nadam}


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies one of :data:`RULES` to every parameter."""

    def __init__(self, params: Iterable[torch.Tensor], rule: str, **knobs: Any):
        if rule not in RULES:
            raise ValueError(f"unknown update rule {rule!r}; known: {', '.join(RULES)}")
        self.rule_name = rule
        self.rule = RULES[rule]
        super().__init__(params, dict(knobs))
        self.knob_names = tuple(knobs)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.update()
        return loss

    def update(self) -> None:
        """Apply the rule to every parameter that has a gradient (what :meth:`step` does, without
        torch's per-call hooks; the 2-D race calls it inside one ``torch.no_grad()``)."""
        for group in self.param_groups:
            knobs = {name: group[name] for name in self.knob_names}
            for p in group["params"]:
                if p.grad is not None:
                    self.rule(p, p.grad, self.state[p], **knobs)


def rule_knobs(name: str, *, lr: float, momentum: float = 0.9, rms_alpha: float = 0.99, rms_momentum: float = 0.0,
               beta1: float = 0.9, beta2: float = 0.999, weight_decay: float = 0.0,
               decoupled: bool = False) -> dict[str, Any]:
    """The knobs rule ``name`` reads, from the RunConfig-named settings (others are ignored)."""
    if name == "sgd":
        return {"lr": lr, "weight_decay": weight_decay}
    if name in ("momentum", "nesterov"):
        return {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if name == "rmsprop":
        return {"lr": lr, "alpha": rms_alpha, "momentum": rms_momentum, "weight_decay": weight_decay}
    if name in ("adam", "nadam"):
        return {"lr": lr, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay, "decoupled": decoupled}
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(RULES)}")


def from_config(cfg: RunConfig, params: Iterable[torch.Tensor]) -> RuleOptimizer:
    """The from-scratch optimizer a config asks for (the same knobs torch.optim gets in core.engine.train)."""
    knobs = rule_knobs(cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, rms_alpha=cfg.rms_alpha,
                       rms_momentum=cfg.rms_momentum, beta1=cfg.beta1, beta2=cfg.beta2,
                       weight_decay=cfg.weight_decay, decoupled=cfg.weight_decay_mode == "decoupled")
    return RuleOptimizer(params, cfg.optimizer, **knobs)


# --- one update for lanes that differ in rule and knobs ---------------------------------------------
class LaneRules(torch.optim.Optimizer):
    """Every rule of :data:`RULES` at once over stacked parameters ``[lanes, ...]``, lane i with the
    rule, knobs and lr schedule of ``configs[i]``: one vectorized update per tensor instead of one
    optimizer per lane.

    All six rules are one formula with per-lane coefficients (rows of :meth:`coefficients`)::

        g <- g + wd_l2 * p;  p <- p * shrink                      (L2 in the gradient / decoupled decay)
        s <- s2 * s + c2 * g^2;  d <- sqrt(s * k2) + eps           (second moment; sgd-like: s = 0, eps = 1)
        m <- a1 * m + c1 * g / d_in                                (first moment / velocity; d_in = d for RMSprop)
        p <- p - lr * (kg * g + km * m) / d_out                    (d_out = d for Adam and NAdam)

    sgd: m = g; momentum: step m; nesterov: g + momentum m; RMSprop: m is the (momentum) scaled step;
    Adam: m / (1 - beta1^t); NAdam: its two look-ahead shares. The per-lane values are what
    :func:`adam`, :func:`nadam` etc. compute; only the order of a few float operations differs from
    torch.optim's kernels (e.g. sqrt(s / c) instead of sqrt(s) / sqrt(c)), so a lane follows its
    optimizer alone to float tolerance (tests/test_sweep.py checks heterogeneous stacks)."""

    ROWS = ("lr", "wd_l2", "shrink", "s2", "c2", "k2", "eps", "a1", "c1", "kg", "km")

    def __init__(self, params: Iterable[torch.Tensor], configs: list[RunConfig]):
        super().__init__(params, {})
        self.configs = list(configs)
        for cfg in self.configs:
            if cfg.optimizer not in RULES:
                raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(RULES)}")
        self.t = 0
        self.mu_prod = [1.0] * len(self.configs)
        self.lrs = [cfg.lr for cfg in self.configs]
        self.rms = torch.tensor([cfg.optimizer == "rmsprop" for cfg in self.configs])
        self.adaptive = torch.tensor([cfg.optimizer in ("adam", "nadam") for cfg in self.configs])
        self.uses_rms, self.uses_adaptive = bool(self.rms.any()), bool(self.adaptive.any())
        self.second_moment = self.uses_rms or self.uses_adaptive
        self.decays = any(cfg.weight_decay for cfg in self.configs)

    def schedule(self, step: int, total_steps: int) -> None:
        """Each lane's learning rate for update ``step`` (see :func:`lr_at`)."""
        self.lrs = [lr_at(cfg, step, total_steps) for cfg in self.configs]

    def coefficients(self) -> list[list[float]]:
        """Per row of ROWS, each lane's value for update number ``self.t`` (1 = the first)."""
        t, rows = self.t, {name: [] for name in self.ROWS}
        for i, (cfg, lr) in enumerate(zip(self.configs, self.lrs)):
            decoupled = cfg.weight_decay_mode == "decoupled" and cfg.optimizer in ("adam", "nadam")
            wd = cfg.weight_decay
            row = dict(lr=lr, wd_l2=0.0 if decoupled else wd, shrink=1 - lr * wd if decoupled else 1.0,
                       s2=1.0, c2=0.0, k2=0.0, eps=1.0, a1=0.0, c1=1.0, kg=0.0, km=1.0)
            if cfg.optimizer in ("momentum", "nesterov"):
                row.update(a1=cfg.momentum)
                if cfg.optimizer == "nesterov":
                    row.update(kg=1.0, km=cfg.momentum)
            elif cfg.optimizer == "rmsprop":
                row.update(s2=cfg.rms_alpha, c2=1 - cfg.rms_alpha, k2=1.0, eps=EPS, a1=cfg.rms_momentum)
            elif cfg.optimizer in ("adam", "nadam"):
                b1, b2 = cfg.beta1, cfg.beta2
                row.update(s2=b2, c2=1 - b2, k2=1 / (1 - b2 ** t), eps=EPS, a1=b1, c1=1 - b1)
                if cfg.optimizer == "adam":
                    row.update(km=1 / (1 - b1 ** t))
                else:
                    mu = b1 * (1 - 0.5 * 0.96 ** (t * NADAM_MOMENTUM_DECAY))
                    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * NADAM_MOMENTUM_DECAY))
                    self.mu_prod[i] *= mu
                    row.update(kg=(1 - mu) / (1 - self.mu_prod[i]), km=mu_next / (1 - self.mu_prod[i] * mu_next))
            for name in self.ROWS:
                rows[name].append(row[name])
        return [rows[name] for name in self.ROWS]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.t += 1
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        device = params[0].device
        table = torch.tensor(self.coefficients(), device=device)
        rms, adaptive = self.rms.to(device), self.adaptive.to(device)
        for p in params:
            lane = (-1,) + (1,) * (p.dim() - 1)
            lr, wd_l2, shrink, s2, c2, k2, eps, a1, c1, kg, km = (row.view(lane) for row in table)
            g, state = p.grad, self.state[p]
            if self.decays:
                g = torch.addcmul(g, wd_l2, p)
                p.mul_(shrink)
            d_in = d_out = None
            if self.second_moment:
                s = state["s"] = torch.addcmul(s2 * buffer(state, "s", p), c2, g * g)
                d = (s * k2).sqrt_().add_(eps)
                d_in = torch.where(rms.view(lane), d, 1.0) if self.uses_rms else None
                d_out = torch.where(adaptive.view(lane), d, 1.0) if self.uses_adaptive else None
            m = state["m"] = torch.addcmul(a1 * buffer(state, "m", p), c1, g if d_in is None else g / d_in)
            update = torch.addcmul(km * m, kg, g)
            if d_out is not None:
                update = update / d_out
            p.sub_(lr * update)
        return loss


# --- learning-rate schedules ------------------------------------------------------------------
def lr_at(cfg: RunConfig, step: int, total_steps: int) -> float:
    """Learning rate for update number ``step`` (0 = the first) of a run of ``total_steps`` updates.

    constant: lr. step: lr * gamma^floor(epoch / every), epoch = step // steps_per_epoch.
    cosine: lr * (1 + cos(pi * step / total_steps)) / 2 (CosineAnnealingLR to 0).
    warmup: lr * min(1, (step + 1) / (warmup_epochs * steps_per_epoch)), a linear ramp then constant.
    """
    per_epoch = max(total_steps // cfg.epochs, 1)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** ((step // per_epoch) // cfg.lr_step_every_epochs)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    if cfg.lr_schedule == "warmup":
        return cfg.lr * min(1.0, (step + 1) / (cfg.warmup_epochs * per_epoch))
    raise ValueError(f"unknown learning-rate schedule {cfg.lr_schedule!r}")


def with_schedule(optimizer: torch.optim.Optimizer, cfg: RunConfig) -> torch.optim.Optimizer:
    """Remember the config's schedule on each parameter group (read by :func:`apply_schedule`)."""
    for group in optimizer.param_groups:
        group["schedule_config"] = cfg
    return optimizer


def apply_schedule(optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
    """Set each parameter group's lr for update ``step`` (nothing to do for a constant schedule)."""
    if isinstance(optimizer, LaneRules):
        optimizer.schedule(step, total_steps)
        return
    for group in optimizer.param_groups:
        cfg = group.get("schedule_config")
        if cfg is not None and cfg.lr_schedule != "constant":
            group["lr"] = lr_at(cfg, step, total_steps)
