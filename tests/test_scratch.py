"""The by-hand MLP (core/engine/scratch.py) against autograd and against the engine's own training."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from core.engine.config import ConfigError, RunConfig
from core.engine.models import build_model
from core.engine.optimizers import RuleOptimizer
from core.engine.scratch import BUGS, ScratchMLP
from core.engine.lanes import data_loss, penalty
from core.engine.train import train


def _setup(cfg: RunConfig, n_in: int = 6, n_classes: int = 3, n: int = 10, seed: int = 0):
    model = build_model(cfg, (n_in,), n_classes, torch.Generator().manual_seed(seed)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, n_in, dtype=torch.float64, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return model, x, y


def _autograd(cfg: RunConfig, model, x, y) -> tuple[torch.Tensor, list[torch.Tensor]]:
    pen = penalty(cfg, model)
    total = data_loss(cfg, model(x), y) + (pen if pen is not None else 0)
    return total, list(torch.autograd.grad(total, list(model.parameters())))


COMBOS = list(itertools.product(("sigmoid", "tanh", "relu"), ("cross_entropy", "mse"), ((0, 0), (0.01, 0), (0, 0.02), (0.01, 0.02))))


@pytest.mark.parametrize("activation,loss,penalties", COMBOS)
def test_float64_gradients_equal_autograd(activation, loss, penalties):
    l1, l2 = penalties
    cfg = RunConfig(dataset="blobs", hidden=(5, 4), activation=activation, loss=loss, l1=l1, l2=l2)
    model, x, y = _setup(cfg)
    total, expected = _autograd(cfg, model, x, y)
    net = ScratchMLP.from_model(model, cfg)
    mine_total, mine = net.gradients(x, y)
    assert mine_total.item() == pytest.approx(total.item(), rel=1e-12)
    assert len(mine) == len(expected)
    for g_hand, g_auto in zip(mine, expected):
        assert g_hand.shape == g_auto.shape
        assert (g_hand - g_auto).abs().max().item() <= 1e-10 * max(1.0, g_auto.abs().max().item())


def test_no_hidden_layer_is_softmax_regression():
    cfg = RunConfig(dataset="blobs", hidden=(), activation="tanh", l2=0.1)
    model, x, y = _setup(cfg)
    _, expected = _autograd(cfg, model, x, y)
    _, mine = ScratchMLP.from_model(model, cfg).gradients(x, y)
    for a, b in zip(mine, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bug,layer", [("missing_activation_derivative", 1), ("transposed_weight", 1),
                                       ("mean_sum_mismatch", 0), ("mean_sum_mismatch", 2)])
def test_planted_bug_changes_its_layer_and_leaves_the_layers_above_right(bug, layer):
    cfg = RunConfig(dataset="blobs", hidden=(5, 5), activation="tanh")
    model, x, y = _setup(cfg, n_in=5)
    _, expected = _autograd(cfg, model, x, y)
    _, buggy = ScratchMLP.from_model(model, cfg, bugs={layer: bug}).gradients(x, y)
    for i in range(3):
        w_diff = (buggy[2 * i] - expected[2 * i]).abs().max().item()
        if i > layer:  # backprop runs from the output down: layers above the bug are untouched
            assert w_diff < 1e-12
        elif i == layer:
            assert w_diff > 1e-3 * expected[2 * i].abs().max().item()


def test_bugs_that_do_not_fit_are_refused_with_a_reason():
    weights = [torch.zeros(4, 6), torch.zeros(3, 4)]
    biases = [torch.zeros(4), torch.zeros(3)]
    with pytest.raises(ValueError, match="square"):
        ScratchMLP(weights, biases, "relu", bugs={0: "transposed_weight"})
    with pytest.raises(ValueError, match="output layer"):
        ScratchMLP(weights, biases, "relu", bugs={1: "missing_activation_derivative"})
    with pytest.raises(ValueError, match="does not exist"):
        ScratchMLP(weights, biases, "relu", bugs={5: "mean_sum_mismatch"})
    with pytest.raises(ValueError, match="unknown planted bug"):
        ScratchMLP(weights, biases, "relu", bugs={0: "typo"})
    assert set(BUGS) == {"missing_activation_derivative", "transposed_weight", "mean_sum_mismatch"}


def test_sgd_steps_follow_torch_sgd_from_the_same_init():
    cfg = RunConfig(dataset="blobs", hidden=(7, 5), activation="sigmoid", loss="mse", l1=0.001, l2=0.002,
                    optimizer="sgd", lr=0.3, weight_decay=0.01)
    reference, x, y = _setup(cfg, n=16)
    mine = build_model(cfg, (6,), 3, torch.Generator().manual_seed(0)).double()
    net = ScratchMLP.from_model(mine, cfg)
    sgd = RuleOptimizer(net.parameters, "sgd", lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch_sgd = torch.optim.SGD(reference.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(5):
        torch_sgd.zero_grad()
        torch.autograd.backward(data_loss(cfg, reference(x), y) + penalty(cfg, reference))
        torch_sgd.step()
        _, grads = net.gradients(x, y)
        for p, g in zip(net.parameters, grads):
            p.grad = g
        sgd.step()
    for a, b in zip(net.parameters, reference.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(reference[1].weight.detach(), build_model(cfg, (6,), 3, torch.Generator().manual_seed(0))
                           .double()[1].weight.detach())  # the weights did move


def _step_losses(cfg: RunConfig) -> tuple[list[float], object]:
    losses: list[float] = []
    end = train(cfg, [lambda e: losses.extend(e.losses) if e.kind == "steps" else None])
    return losses, end


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("adam", 0.01)])
def test_by_hand_run_follows_the_engine_and_learns(optimizer, lr):
    """The by-hand network trains with the from-scratch update rules and follows autograd + torch.optim."""
    cfg = RunConfig(dataset="digits", hidden=(32,), activation="tanh", optimizer=optimizer, lr=lr, batch_size=32,
                    epochs=1, log_every=10, l2=0.0005)
    engine, engine_end = _step_losses(cfg)
    by_hand, end = _step_losses(cfg.replace(backprop="by_hand"))
    assert end.status == "finished", getattr(end, "message", "")
    assert len(by_hand) == len(engine) > 20
    for a, b in zip(by_hand[:20], engine[:20]):  # float32 on both sides: rounding differs, the path does not
        assert a == pytest.approx(b, rel=1e-4)
    assert end.val_acc > 0.8 and end.val_loss < math.log(10)  # 10 classes: chance is 0.1
    assert end.val_acc == pytest.approx(engine_end.val_acc, abs=0.03)


def test_by_hand_config_names_what_it_cannot_do():
    with pytest.raises(ConfigError) as info:
        RunConfig(backprop="by_hand", optimizer="adam", norm="batchnorm", activation="gelu")
    message = info.value.problems["backprop"]
    assert "batchnorm" in message and "gelu" in message and "adam" not in message  # any of the six rules
    RunConfig(backprop="by_hand", optimizer="sgd", activation="sigmoid", loss="mse", l1=0.1)
