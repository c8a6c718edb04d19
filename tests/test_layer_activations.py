"""An activation per hidden layer (issue 24.4): the schema (key, JSON, URL, CLI), the built model, bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.__main__ import main as cli_main
from core.engine.batched import why_not_batched
from core.engine.config import ConfigError, RunConfig, parse_value
from core.engine.lanes import ModuleLanes
from core.engine.models import build_model
from tests.apptest_helpers import new_app, texts
from tests.helpers import of_kind, train_events

MIXED = RunConfig(hidden=(8, 8, 8), activation="relu,tanh,sigmoid")

# Keys computed by the code before per-layer activations existed (schema oracle: old links and stored runs
# must keep finding their runs), with the query strings it wrote.
OLD_KEYS = [
    (RunConfig(), "run-c80bf4216a40b15cb1c1ac34", {}),
    (RunConfig(activation="sigmoid", hidden=(10, 10, 10), lr=0.2, batch_size=32, epochs=5, dataset="mnist"),
     "run-b8e00d254a3196308a066cc5",
     {"dataset": "mnist", "hidden": "10,10,10", "activation": "sigmoid", "lr": "0.2", "batch_size": "32",
      "epochs": "5"}),
]


def _activations_after_linears(model: nn.Sequential) -> list[type]:
    """The type of the module that follows each hidden Linear (norm and dropout skipped)."""
    mods = list(model)
    out = []
    for i, m in enumerate(mods[:-1]):
        if isinstance(m, nn.Linear):
            out.append(next(type(n) for n in mods[i + 1:]
                            if not isinstance(n, (nn.LayerNorm, nn.BatchNorm1d, nn.Dropout))))
    return out


@pytest.mark.parametrize("cfg,key,query", OLD_KEYS)
def test_one_activation_keeps_the_old_key_and_link(cfg, key, query):
    assert cfg.key() == key
    assert cfg.to_query() == query
    assert RunConfig.from_query(query).key() == key
    # a list naming the same activation for every layer is the same run
    same = cfg.replace(activation=",".join([cfg.activation] * cfg.depth))
    assert same.activation == cfg.activation and same.key() == key


def test_model_has_the_activation_of_each_layer():
    model = build_model(MIXED, (64,), 10)
    assert _activations_after_linears(model) == [nn.ReLU, nn.Tanh, nn.Sigmoid]
    # the forward pass is the composition of the named functions (oracle: torch's functional ops)
    x = torch.randn(5, 64)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    h = x
    for lin, f in zip(linears, (torch.relu, torch.tanh, torch.sigmoid)):
        h = f(lin(h))
    assert torch.allclose(model(x), linears[-1](h), atol=1e-6)
    with_norm = build_model(MIXED.replace(norm="layernorm", dropout=0.2), (64,), 10)
    assert _activations_after_linears(with_norm) == [nn.ReLU, nn.Tanh, nn.Sigmoid]


def test_xavier_gain_follows_each_layers_activation():
    """Layer k of a mixed net is initialised as in the net that uses layer k's activation everywhere."""
    mixed = MIXED.replace(init="xavier")
    built = build_model(mixed, (64,), 10, torch.Generator().manual_seed(0))
    for k, name in enumerate(("relu", "tanh", "sigmoid", "sigmoid")):  # the output layer takes the last one's
        alone = build_model(mixed.replace(activation=name), (64,), 10, torch.Generator().manual_seed(0))
        w_mixed = [m.weight for m in built if isinstance(m, nn.Linear)][k]
        w_alone = [m.weight for m in alone if isinstance(m, nn.Linear)][k]
        assert torch.equal(w_mixed, w_alone), k


def test_per_layer_round_trips_through_json_url_and_cli(tmp_path, capsys):
    assert MIXED.layer_activations == ("relu", "tanh", "sigmoid")
    assert RunConfig.from_json(MIXED.to_json()) == MIXED
    assert MIXED.to_query()["activation"] == "relu,tanh,sigmoid"
    assert RunConfig.from_query(MIXED.to_query()) == MIXED
    assert RunConfig.from_dict({**MIXED.to_dict(), "activation": ["relu", "tanh", "sigmoid"]}).key() == MIXED.key()
    assert RunConfig.from_query({"hidden": "8,8,8", "activation": " relu, tanh ,sigmoid"}).key() == MIXED.key()
    assert MIXED.key() != MIXED.replace(activation="relu").key()
    assert RunConfig(hidden=(8, 8, 8)).replace(activation=parse_value("activation", "relu,tanh,sigmoid")) == MIXED
    # the CLI's --set takes the same text (an invalid one is refused with the schema's message, nothing trained)
    path = tmp_path / "cfg.json"
    path.write_text(RunConfig(hidden=(8, 8, 8)).to_json())
    assert cli_main(["run", "--config", str(path), "--set", "activation=relu,swish,sigmoid", "--quiet"]) != 0
    assert "layer 2 ('swish')" in capsys.readouterr().err


@pytest.mark.parametrize("changes,words", [
    ({"hidden": (8, 8), "activation": "relu,tanh,sigmoid"}, ["3 activations for 2 hidden layers"]),
    ({"hidden": (8, 8, 8), "activation": "relu,swish,tanh"}, ["hidden layer 2 ('swish')", "allowed sigmoid"]),
    ({"hidden": (8, 8, 8), "activation": "relu,,tanh"}, ["hidden layer 2 ('')"]),
    ({"activation": "swish"}, ["'swish' is not allowed", "one per hidden layer"]),
    ({"arch": "cnn", "activation": "relu,tanh"}, ["needs the MLP"]),
    ({"hidden": (), "activation": "relu,tanh"}, ["2 activations for 0 hidden layers"]),
])
def test_bad_activation_lists_say_which_layer(changes, words):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert set(err.value.problems) == {"activation"}
    for word in words:
        assert word in err.value.problems["activation"]


def test_per_layer_trains_alone_and_learns():
    assert why_not_batched(MIXED) == "an activation per layer"
    with pytest.raises(ConfigError) as err:
        RunConfig(hidden=(8, 8), activation="relu,tanh", backprop="by_hand", optimizer="sgd", lr=0.1)
    assert "an activation per layer" in err.value.problems["backprop"]
    cfg = RunConfig(dataset="digits", hidden=(32, 32), activation="relu,sigmoid", epochs=3, lr=0.01, log_every=20)
    end, events = train_events(cfg)
    assert end.kind == "finished"
    assert end.val_acc > 0.5 and end.val_loss < math.log(10)  # chance is 0.1
    # saturation is measured per layer, each by its own activation's rule (ReLU: dead; sigmoid: saturated)
    layers = of_kind(events, "layers")[-1]
    assert len(layers.saturation) == 3 and layers.saturation[2] is None
    assert all(s is not None and 0.0 <= s <= 1.0 for s in layers.saturation[:2])
    lanes = ModuleLanes([cfg], (64,), 10, torch.device("cpu"))
    assert [name for _, name, _ in lanes.activations] == ["relu", "sigmoid"]


def test_playground_takes_a_list_and_keeps_a_bad_one(isolated_cache, no_mnist):
    at = new_app({"hidden": "16,16,16", "activation": "relu,relu,sigmoid"})
    assert not at.exception
    assert at.sidebar.text_input(key="cfg_activation").value == "relu,relu,sigmoid"
    assert at.query_params["activation"] == "relu,relu,sigmoid"
    # one layer fewer: the list no longer fits; the page says so and keeps both entries as typed
    at.sidebar.text_input(key="cfg_hidden").set_value("16,16").run()
    assert not at.exception
    assert "3 activations for 2 hidden layers" in texts(at.sidebar.error)
    assert at.sidebar.text_input(key="cfg_activation").value == "relu,relu,sigmoid"
    assert at.sidebar.text_input(key="cfg_hidden").value == "16,16"
    # a link with a typo in one layer: the notice names the layer, the rest of the link is kept
    typo = new_app({"hidden": "16,16,16", "activation": "relu,swsh,sigmoid", "lr": "0.01"})
    assert not typo.exception
    shown = texts(typo.warning) + texts(typo.info) + texts(typo.error)
    assert "layer 2" in shown and "swsh" in shown
    assert typo.sidebar.text_input(key="cfg_hidden").value == "16,16,16"
    assert typo.sidebar.number_input(key="cfg_lr").value == pytest.approx(0.01)
