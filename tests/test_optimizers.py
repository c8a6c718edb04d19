"""The from-scratch update rules against torch.optim, a real run with either implementation, and the lr schedules."""
from __future__ import annotations

import math

import pytest
import torch

from core.engine import optimizers as rules
from core.engine.config import ConfigError, RunConfig
from core.lab.grid import GridConfig, cell_events, run_grid
from core.engine.lanes import _torch_optimizer, make_optimizer
from helpers import train_events

# Every optimizer with every knob it reads, weight decay in both forms, RMSProp with momentum.
CASES = [
    ("sgd", {}), ("sgd", {"weight_decay": 0.05}),
    ("momentum", {"momentum": 0.9}), ("momentum", {"momentum": 0.5, "weight_decay": 0.05}),
    ("nesterov", {"momentum": 0.9}), ("nesterov", {"momentum": 0.7, "weight_decay": 0.05}),
    ("rmsprop", {}), ("rmsprop", {"rms_alpha": 0.9, "rms_momentum": 0.8, "weight_decay": 0.05}),
    ("adam", {}), ("adam", {"beta1": 0.8, "beta2": 0.99, "weight_decay": 0.05}),
    ("adam", {"beta1": 0.5, "beta2": 0.9, "weight_decay": 0.05, "weight_decay_mode": "decoupled"}),
    ("nadam", {}), ("nadam", {"beta1": 0.8, "beta2": 0.99, "weight_decay": 0.05}),
    ("nadam", {"beta1": 0.5, "beta2": 0.9, "weight_decay": 0.05, "weight_decay_mode": "decoupled"}),
]


def _params(gen: torch.Generator, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in ((7, 5), (5,), (3, 2, 2))]


def _reference(name: str, params: list[torch.Tensor], knobs: dict) -> torch.optim.Optimizer:
    """The plain (per-tensor, non-fused) torch.optim class for the same knobs."""
    wd, lr = knobs.get("weight_decay", 0.0), knobs["lr"]
    decoupled = knobs.get("weight_decay_mode") == "decoupled"
    betas = (knobs.get("beta1", 0.9), knobs.get("beta2", 0.999))
    plain = {"foreach": False}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, **plain)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=knobs["momentum"], nesterov=name == "nesterov",
                               weight_decay=wd, **plain)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=knobs.get("rms_alpha", 0.99),
                                   momentum=knobs.get("rms_momentum", 0.0), weight_decay=wd, **plain)
    if name == "adam":
        return (torch.optim.AdamW if decoupled else torch.optim.Adam)(params, lr=lr, betas=betas, weight_decay=wd,
                                                                      **plain)
    return torch.optim.NAdam(params, lr=lr, betas=betas, weight_decay=wd, decoupled_weight_decay=decoupled, **plain)


# float64: 1e-8, not ~1e-15, because torch keeps NAdam's running product of mu in a float32 tensor.
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 2e-5)])
@pytest.mark.parametrize("name,knobs", CASES)
def test_each_rule_matches_torch_optim_for_100_steps(name, knobs, dtype, tol):
    knobs = {"lr": 0.01, **knobs}
    cfg = RunConfig(optimizer=name, optimizer_impl="ours", **knobs)
    gen = torch.Generator().manual_seed(3)
    ours = _params(gen, dtype)
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opt_ours, opt_theirs = make_optimizer(cfg, ours), _reference(name, theirs, knobs)
    assert isinstance(opt_ours, rules.RuleOptimizer)
    moved = 0.0
    for _ in range(100):
        # the same gradients for both, drawn fresh each step, a function of the parameters plus noise
        noise = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in ours]
        for a, b, n in zip(ours, theirs, noise):
            a.grad = torch.sin(3 * a.detach()) + n
            b.grad = torch.sin(3 * b.detach()) + n
        opt_ours.step()
        opt_theirs.step()
    for a, b, start in zip(ours, theirs, _params(torch.Generator().manual_seed(3), dtype)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=tol, atol=tol)
        moved = max(moved, float((a.detach() - start.detach()).abs().max()))
    assert moved > 0.05  # the parameters really travelled


@pytest.mark.parametrize("name,knobs", CASES)
def test_engine_torch_optimizer_matches_the_plain_reference(name, knobs):
    """What the engine uses for "torch" (fused / foreach variants) is the same update as the plain class."""
    knobs = {"lr": 0.01, **knobs}
    cfg = RunConfig(optimizer=name, **knobs)
    gen = torch.Generator().manual_seed(5)
    engine = _params(gen, torch.float32)
    plain = [p.detach().clone().requires_grad_() for p in engine]
    opt_engine, opt_plain = _torch_optimizer(cfg, engine), _reference(name, plain, knobs)
    for _ in range(30):
        for a, b in zip(engine, plain):
            a.grad = b.grad = torch.randn(a.shape, generator=gen)
        opt_engine.step()
        opt_plain.step()
    for a, b in zip(engine, plain):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-5)


DIGITS = RunConfig(dataset="digits", hidden=(32,), epochs=2, batch_size=32, log_every=10)


def _curve(cfg: RunConfig) -> tuple[list, object]:
    end, events = train_events(cfg)
    return [(e.step, e.train_loss, e.val_loss, e.val_acc) for e in events if e.kind == "eval"], end


@pytest.mark.parametrize("name,lr", [("nesterov", 0.05), ("rmsprop", 1e-3), ("nadam", 3e-3)])
def test_a_run_with_our_optimizer_follows_torchs_curve(name, lr):
    cfg = DIGITS.replace(optimizer=name, lr=lr, weight_decay=1e-3)
    theirs, end_theirs = _curve(cfg)
    ours, end_ours = _curve(cfg.replace(optimizer_impl="ours"))
    assert [s for s, *_ in ours] == [s for s, *_ in theirs]
    for a, b in zip(ours, theirs):
        assert a[1:] == pytest.approx(b[1:], abs=2e-3)
    assert end_ours.status == "finished" and end_ours.val_acc > 0.8  # digits: 10 classes, chance is 0.1
    assert end_ours.val_loss < math.log(10)


def test_stacked_grid_cells_train_with_our_optimizers_like_single_runs():
    base = DIGITS.replace(optimizer_impl="ours")
    grid = GridConfig(base=base, variants=(("sgd", (("optimizer", "sgd"), ("lr", 0.1))),
                                           ("adam", (("optimizer", "adam"), ("lr", 0.01)))))
    events = []
    run_grid(grid, events.append)
    per_cell = cell_events(events)
    for i, (_, cfg) in enumerate(grid.cells()):
        cell_end = per_cell[i][-1]
        _, alone = _curve(cfg)
        assert cell_end.kind == "finished" and alone.val_acc > 0.4  # chance is 0.1
        assert cell_end.val_loss == pytest.approx(alone.val_loss, abs=1e-4)


# --- schedules -----------------------------------------------------------------------------------
def test_lr_at_follows_each_schedules_formula():
    total, epochs = 100, 10  # 10 steps per epoch
    base = RunConfig(lr=0.1, epochs=epochs)
    assert [rules.lr_at(base, s, total) for s in (0, 50, 99)] == [0.1, 0.1, 0.1]
    step = base.replace(lr_schedule="step", lr_step_every_epochs=3, lr_gamma=0.5)
    assert rules.lr_at(step, 29, total) == pytest.approx(0.1)      # epochs 0-2
    assert rules.lr_at(step, 30, total) == pytest.approx(0.05)     # epoch 3
    assert rules.lr_at(step, 65, total) == pytest.approx(0.025)    # epoch 6
    cosine = base.replace(lr_schedule="cosine")
    assert rules.lr_at(cosine, 0, total) == pytest.approx(0.1)
    assert rules.lr_at(cosine, 50, total) == pytest.approx(0.05)
    assert rules.lr_at(cosine, 25, total) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    lrs = [rules.lr_at(cosine, s, total) for s in range(total)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    warm = base.replace(lr_schedule="warmup", warmup_epochs=2.0)  # 20 warm-up steps
    assert rules.lr_at(warm, 0, total) == pytest.approx(0.1 / 20)
    assert rules.lr_at(warm, 9, total) == pytest.approx(0.05)
    assert [rules.lr_at(warm, s, total) for s in (19, 20, 99)] == pytest.approx([0.1] * 3)


def test_cosine_schedule_matches_torch_cosine_annealing():
    cfg = RunConfig(lr=0.2, epochs=4, lr_schedule="cosine")
    total = 40
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    for s in range(total):
        assert rules.lr_at(cfg, s, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_the_loop_applies_the_schedule_to_every_update():
    """A step schedule with gamma ~0 freezes the network after epoch 1; cosine changes the result."""
    cfg = DIGITS.replace(optimizer="sgd", lr=0.1, epochs=2)
    _, events = train_events(cfg.replace(lr_schedule="step", lr_step_every_epochs=1, lr_gamma=1e-9))
    per_epoch = next(e for e in events if e.kind == "started").steps_per_epoch
    val = {e.step: e.val_loss for e in events if e.kind == "eval"}
    assert val[2 * per_epoch] == pytest.approx(val[per_epoch], abs=1e-6)  # epoch 2 ran at lr 1e-10
    constant, _ = _curve(cfg)
    assert constant[-1][2] < val[per_epoch] - 0.01  # while a constant lr goes on learning in epoch 2
    cosine, _ = _curve(cfg.replace(lr_schedule="cosine"))
    assert cosine[-1][2] != pytest.approx(constant[-1][2], abs=1e-6)


def test_schedule_knobs_are_validated_and_apply_only_to_their_schedule():
    from core.engine.config import knob_applies
    with pytest.raises(ConfigError, match="lr_gamma"):
        RunConfig(lr_gamma=0.0)
    with pytest.raises(ConfigError, match="optimizer_impl"):
        RunConfig(optimizer_impl="mine")
    assert knob_applies("lr_gamma", {"lr_schedule": "step"}) and not knob_applies("lr_gamma", {"lr_schedule": "cosine"})
    assert knob_applies("warmup_epochs", {"lr_schedule": "warmup"})
