"""Every knob builds and trains; penalties against finite differences; known parameter counts."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.engine.config import ACTIVATIONS, INITS, LOSSES, NORMS, OPTIMIZERS, RunConfig
from core.engine.models import InvertedDropout, build_model, count_parameters, parameter_shapes, weight_layers
from core.engine.lanes import data_loss, penalty
from helpers import train_events

TOY = RunConfig(dataset="blobs", hidden=(16, 16), epochs=1, batch_size=64, log_every=5)


def _trains(cfg: RunConfig):
    end, events = train_events(cfg)
    assert end.kind == "finished" and end.status == "finished", getattr(end, "message", end)
    assert end.step > 0 and all(math.isfinite(v) for e in events if e.kind == "steps" for v in e.losses)
    assert any(e.kind == "layers" for e in events)
    return end


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_trains(activation):
    _trains(TOY.replace(activation=activation))


@pytest.mark.parametrize("init", INITS)
def test_each_init_trains(init):
    _trains(TOY.replace(init=init))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dropout_impl", ["torch", "inverted"])
def test_each_norm_and_dropout_trains(norm, dropout_impl):
    _trains(TOY.replace(norm=norm, dropout=0.3, dropout_impl=dropout_impl))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_loss_and_optimizer_trains(loss, optimizer):
    _trains(TOY.replace(loss=loss, optimizer=optimizer, lr=0.01))


def test_cnn_and_zero_hidden_layers_train():
    _trains(RunConfig(dataset="digits", arch="cnn", hidden=(32,), epochs=1, norm="batchnorm"))
    _trains(RunConfig(dataset="digits", hidden=(), epochs=1))


def test_parameter_counts_match_the_formulas():
    assert count_parameters(RunConfig(hidden=(128, 64)), (1, 28, 28), 10) == \
        784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    conv = (1 * 9 * 32 + 32) + (32 * 9 * 32 + 32)
    assert count_parameters(RunConfig(arch="cnn", hidden=(128, 64)), (1, 28, 28), 10) == \
        conv + 32 * 28 * 28 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("arch, input_shape", [("mlp", (1, 8, 8)), ("mlp", (2,)), ("cnn", (1, 8, 8)), ("cnn", (3, 5, 4))])
@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
@pytest.mark.parametrize("hidden", [(), (7,), (32, 16), (5, 9, 3, 11)])
def test_the_parameter_counter_matches_the_built_model(arch, input_shape, norm, hidden):
    cfg = RunConfig(arch=arch, norm=norm, hidden=hidden)
    model = build_model(cfg, input_shape, 6)
    assert parameter_shapes(cfg, input_shape, 6) == [tuple(p.shape) for p in model.parameters()]
    assert count_parameters(cfg, input_shape, 6) == sum(p.numel() for p in model.parameters())


def test_default_init_follows_pytorch_bounds_and_is_seeded():
    cfg = RunConfig(hidden=(50,))
    a = build_model(cfg, (1, 28, 28), 10, torch.Generator().manual_seed(3))
    b = build_model(cfg, (1, 28, 28), 10, torch.Generator().manual_seed(3))
    for (_, la), (_, lb) in zip(weight_layers(a), weight_layers(b)):
        assert torch.equal(la.weight, lb.weight)
        bound = 1 / math.sqrt(la.weight.shape[1])
        assert la.weight.abs().max() <= bound + 1e-7 and la.bias.abs().max() <= bound + 1e-7


def test_he_and_xavier_scale():
    he = build_model(RunConfig(hidden=(1000,), init="he"), (2000,), 10, torch.Generator().manual_seed(0))
    w = weight_layers(he)[0][1].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 2000), rel=0.02)
    xavier = build_model(RunConfig(hidden=(1000,), init="xavier", activation="linear"), (2000,), 10,
                         torch.Generator().manual_seed(0))
    w = weight_layers(xavier)[0][1].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 3000), rel=0.02)


def _float64_model(cfg: RunConfig) -> nn.Module:
    return build_model(cfg, (6,), 3, torch.Generator().manual_seed(0)).double()


@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.02), (0.003, 0.005)])
def test_penalty_gradient_matches_finite_differences(l1, l2):
    cfg = RunConfig(dataset="blobs", hidden=(5, 4), l1=l1, l2=l2)
    model = _float64_model(cfg)
    weights = [layer.weight for _, layer in weight_layers(model)]
    analytic = torch.autograd.grad(penalty(cfg, model), weights)
    eps = 1e-6
    for w, g in zip(weights, analytic):
        for idx in [(0, 0), (1, 2), (w.shape[0] - 1, w.shape[1] - 1)]:
            with torch.no_grad():
                original = w[idx].item()
                w[idx] = original + eps
                plus = penalty(cfg, model).item()
                w[idx] = original - eps
                minus = penalty(cfg, model).item()
                w[idx] = original
            assert g[idx].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)


def test_penalty_is_lambda_times_norms():
    cfg = RunConfig(dataset="blobs", hidden=(5,), l1=0.1, l2=0.2)
    model = _float64_model(cfg)
    ws = [layer.weight for _, layer in weight_layers(model)]
    expected = 0.1 * sum(w.abs().sum() for w in ws) + 0.2 * sum((w ** 2).sum() for w in ws)
    assert penalty(cfg, model).item() == pytest.approx(expected.item(), rel=1e-12)
    assert penalty(cfg.replace(l1=0.0, l2=0.0), model) is None


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_full_loss_gradient_matches_finite_differences(loss):
    """Autograd of data loss + penalties vs float64 central differences, every parameter entry
    (the seeds' "gradient check", done right: relative difference far below 1e-7)."""
    cfg = RunConfig(dataset="blobs", hidden=(5, 4), activation="tanh", loss=loss, l1=0.01, l2=0.01)
    model = _float64_model(cfg)
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    objective = lambda: data_loss(cfg, model(x), y) + penalty(cfg, model)  # noqa: E731
    params = list(model.parameters())
    analytic = torch.cat([g.flatten() for g in torch.autograd.grad(objective(), params)])
    numeric = []
    eps = 1e-6
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                original = flat[i].item()
                flat[i] = original + eps
                plus = objective().item()
                flat[i] = original - eps
                minus = objective().item()
                flat[i] = original
                numeric.append((plus - minus) / (2 * eps))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    relative = (analytic - numeric).norm() / (analytic.norm() + numeric.norm())
    assert relative < 1e-7


def test_cross_entropy_applies_softmax_once():
    logits = torch.tensor([[4.0, 0.0, 0.0]])
    y = torch.tensor([0])
    ce = data_loss(RunConfig(), logits, y).item()
    assert ce == pytest.approx(-math.log(math.exp(4) / (math.exp(4) + 2)), rel=1e-5)  # ~0.036, not ~0.58


def test_inverted_dropout_keeps_the_mean_and_is_off_in_eval():
    drop = InvertedDropout(0.25)
    drop.generator = torch.Generator().manual_seed(0)
    x = torch.ones(200_000)
    out = drop(x)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert out.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    torch_out = nn.Dropout(0.25)(x)
    assert torch_out.mean().item() == pytest.approx(out.mean().item(), abs=0.02)
    drop.eval()
    assert torch.equal(drop(x), x)
