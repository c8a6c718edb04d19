"""Residual connections (issue 24.5): the schema knob, the x + f(x) blocks, and what they do to the early
layers' gradients of a deep sigmoid or tanh network on real data (Digits)."""
from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from core.engine.batched import why_not_batched
from core.engine.config import ConfigError, RunConfig
from core.engine.models import build_model
from tests.apptest_helpers import new_app, texts
from tests.helpers import of_kind, train_events

DEEP = RunConfig(dataset="digits", hidden=(32,) * 8, optimizer="sgd", lr=0.1, batch_size=32, epochs=2, log_every=10)


def test_off_keeps_old_keys_and_on_round_trips():
    # keys computed before the knob existed (schema oracle): a run without it keeps its key and link
    assert RunConfig().key() == "run-c80bf4216a40b15cb1c1ac34"
    assert "residual" not in RunConfig().to_dict() and RunConfig().to_query() == {}
    on = RunConfig(hidden=(16, 16, 16), residual=True)
    assert on.key() != on.replace(residual=False).key()
    assert on.to_query() == {"hidden": "16,16,16", "residual": "true"}
    assert RunConfig.from_query(on.to_query()) == on and RunConfig.from_json(on.to_json()) == on
    assert RunConfig.from_query({"hidden": "16,16,16", "residual": "1"}) == on


def test_each_hidden_layer_after_the_first_adds_its_input():
    cfg = RunConfig(hidden=(16, 16, 16), activation="tanh", residual=True)
    model = build_model(cfg, (64,), 10, torch.Generator().manual_seed(0))
    plain = build_model(cfg.replace(residual=False), (64,), 10, torch.Generator().manual_seed(0))
    assert [p.shape for p in model.parameters()] == [p.shape for p in plain.parameters()]
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p, q)  # the same weights: only the wiring differs
    w = [m for m in plain.modules() if isinstance(m, nn.Linear)]
    x = torch.randn(5, 64)
    h = torch.tanh(w[0](x))
    for lin in w[1:-1]:
        h = h + torch.tanh(lin(h))
    assert torch.allclose(model(x), w[-1](h), atol=1e-6)
    assert torch.allclose(plain(x), w[-1](torch.tanh(w[2](torch.tanh(w[1](torch.tanh(w[0](x))))))), atol=1e-6)


@pytest.mark.parametrize("changes,words", [
    ({"hidden": (32, 16, 16)}, ["need one width", "layer 1 (32) to layer 2 (16)"]),
    ({"hidden": (32,)}, ["at least 2 hidden layers"]),
    ({"hidden": ()}, ["at least 2 hidden layers", "hidden = none"]),
    ({"arch": "cnn"}, ["for the MLP"]),
])
def test_unequal_widths_are_refused_clearly(changes, words):
    with pytest.raises(ConfigError) as err:
        RunConfig(residual=True, **changes)
    assert set(err.value.problems) == {"residual"}
    for word in words:
        assert word in err.value.problems["residual"]
    with pytest.raises(ConfigError) as err:
        RunConfig.from_query({"residual": "maybe"})
    assert "on or off" in err.value.problems["residual"]


def test_residual_runs_train_alone_not_by_hand():
    assert why_not_batched(RunConfig(hidden=(8, 8), residual=True)) == "residual connections"
    with pytest.raises(ConfigError) as err:
        RunConfig(hidden=(8, 8), residual=True, backprop="by_hand", optimizer="sgd", lr=0.1)
    assert "residual connections" in err.value.problems["backprop"]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_residual_raises_the_early_layers_gradients(activation):
    """In a deep saturating network the gradient shrinks layer by layer on its way down; the identity path of a
    residual block carries it around each activation, so the first layer's gradient norm, relative to the last
    hidden layer's, is larger with residual connections than in the same network without them."""
    def gradient_norms(residual: bool) -> tuple[float, float]:
        end, events = train_events(DEEP.replace(activation=activation, residual=residual))
        assert end.kind == "finished"
        layers = of_kind(events, "layers")
        assert layers
        return (statistics.median(e.grad_norm[0] for e in layers), statistics.median(e.grad_norm[-2] for e in layers))

    (plain_first, plain_last), (res_first, res_last) = gradient_norms(False), gradient_norms(True)
    assert res_first > plain_first
    assert res_first / res_last > plain_first / plain_last


def test_playground_has_the_switch_and_says_what_it_does(isolated_cache, no_mnist):
    at = new_app({"hidden": "16,16,16", "activation": "sigmoid", "residual": "true"})
    assert not at.exception
    assert at.sidebar.checkbox(key="cfg_residual").value is True
    assert "Residual connections" in texts(at.info) and "x + f(x)" in texts(at.info)
    at.sidebar.text_input(key="cfg_hidden").set_value("16,8").run()  # unequal widths: refused, nothing lost
    assert not at.exception
    assert "layer 1 (16) to layer 2 (8)" in texts(at.sidebar.error).replace("\\", "")
    assert at.sidebar.checkbox(key="cfg_residual").value is True
    at.sidebar.checkbox(key="cfg_residual").uncheck().run()
    assert not at.sidebar.error and "residual" not in at.query_params
