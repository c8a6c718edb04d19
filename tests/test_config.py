"""RunConfig: validation messages, key stability, JSON / URL round trips."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from core.engine.config import FIELDS, MAX_HIDDEN_LAYERS, ConfigError, RunConfig, knob_of

NUMERIC = [name for name, f in FIELDS.items() if f.metadata["knob"].hi is not None and name != "hidden"]
CHOICES = [name for name, f in FIELDS.items() if f.metadata["knob"].choices]


@pytest.mark.parametrize("name", NUMERIC)
def test_out_of_range_value_names_field_value_and_range(name):
    k = knob_of(name)
    too_high = k.hi * 2 + 1
    if FIELDS[name].type == "int":
        too_high = int(too_high)
    with pytest.raises(ConfigError) as err:
        RunConfig(**{name: too_high})
    message = err.value.problems[name]
    assert name in message and str(too_high).rstrip("0").rstrip(".") in message
    assert "allowed" in message and str(int(k.hi) if float(k.hi).is_integer() else k.hi) in message


@pytest.mark.parametrize("name", NUMERIC)
def test_below_range_is_rejected(name):
    k = knob_of(name)
    with pytest.raises(ConfigError) as err:
        RunConfig(**{name: k.lo if k.lo_open else k.lo - 1})
    assert name in err.value.problems


@pytest.mark.parametrize("name", CHOICES)
def test_unknown_choice_lists_the_allowed_ones(name):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{name: "bogus"})
    message = err.value.problems[name]
    assert "'bogus'" in message and all(choice in message for choice in knob_of(name).choices)


def test_hidden_layers_limits():
    RunConfig(hidden=())  # 0 hidden layers is a linear classifier
    RunConfig(hidden=(10,) * MAX_HIDDEN_LAYERS)
    with pytest.raises(ConfigError, match="21 layers"):
        RunConfig(hidden=(10,) * (MAX_HIDDEN_LAYERS + 1))
    with pytest.raises(ConfigError, match="each width"):
        RunConfig(hidden=(128, 0))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig(lr=-1.0, batch_size=0, activation="swish")
    assert set(err.value.problems) == {"lr", "batch_size", "activation"}


def test_nan_and_cnn_on_toy_data_are_rejected():
    with pytest.raises(ConfigError, match="finite"):
        RunConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="image dataset"):
        RunConfig(arch="cnn", dataset="moons")


def test_dataset_names():
    RunConfig(dataset="upload:0123456789abcdef01234567")
    with pytest.raises(ConfigError, match="unknown"):
        RunConfig(dataset="../etc/passwd")


def test_key_is_stable_and_sensitive():
    a = RunConfig(hidden=(128, 64), lr=0.01)
    assert a.key() == RunConfig(hidden=[128, 64], lr=0.01).key()
    assert a.key() != a.replace(seed=1).key()
    assert a.key() != a.replace(hidden=(64, 128)).key()


def test_key_is_the_same_in_another_process():
    cfg = RunConfig(dataset="mnist", hidden=(10,) * 4, activation="sigmoid", lr=0.2)
    code = ("from core.engine.config import RunConfig;"
            "print(RunConfig(dataset='mnist', hidden=(10,)*4, activation='sigmoid', lr=0.2).key())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PYTHONPATH": "."})
    assert out.stdout.strip() == cfg.key()


def test_default_key_is_pinned():
    # A changed canonical form would orphan every cached run: bump SCHEMA_VERSION on purpose instead.
    assert RunConfig().key() == RunConfig.from_json(RunConfig().to_json()).key()
    assert RunConfig().key().startswith("run-") and len(RunConfig().key()) == 28


def test_json_round_trip_every_field():
    cfg = RunConfig(dataset="fashion-mnist", arch="cnn", hidden=(512, 128, 64), activation="gelu", init="normal",
                    init_std=0.05, norm="layernorm", dropout=0.3, dropout_impl="inverted", l1=1e-4, l2=2e-4,
                    loss="mse", optimizer="nadam", lr=3e-4, batch_size=17, epochs=3, seed=99, device="cpu")
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg and back.key() == cfg.key()
    assert [f.name for f in dataclasses.fields(back)] == list(FIELDS)


def test_query_round_trip_is_readable_and_minimal():
    cfg = RunConfig(hidden=(128, 64), lr=0.01, seed=7)
    query = cfg.to_query()
    assert query == {"hidden": "128,64", "lr": "0.01", "seed": "7"}
    assert RunConfig.from_query({**query, "page": "playground"}) == cfg


def test_depth_in_a_query_means_that_many_hidden_layers_of_the_configs_width():
    assert RunConfig.from_query({"depth": "3"}).hidden == (RunConfig().hidden[0],) * 3
    assert RunConfig.from_query({"depth": "2", "hidden": "32,16"}).hidden == (32, 32)
    assert RunConfig.from_query({"depth": "0"}).hidden == ()
    for bad in ("deep", "2.5", str(MAX_HIDDEN_LAYERS + 1), "9" * 5000):
        with pytest.raises(ConfigError) as err:
            RunConfig.from_query({"depth": bad})
        assert set(err.value.problems) == {"depth"} and "hidden=" in err.value.problems["depth"]
        assert len(err.value.problems["depth"]) < 300


def test_bad_query_values_give_messages():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_query({"lr": "fast", "batch_size": "1.5", "hidden": "12,abc"})
    assert set(err.value.problems) == {"lr", "batch_size", "hidden"}
    assert "number" in err.value.problems["lr"]


def test_from_json_rejects_garbage_and_unknown_keys():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="Unknown setting"):
        RunConfig.from_json('{"learning_rate": 0.1}')


def test_each_optimizer_reads_its_own_knobs():
    """RMSProp gets its own alpha/momentum (textbook 0.99 / 0), not Adam's beta2 or SGD's momentum."""
    import torch

    from core.engine.config import knob_applies
    from core.engine.lanes import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    rms = make_optimizer(RunConfig(optimizer="rmsprop"), params).defaults
    assert (rms["alpha"], rms["momentum"]) == (0.99, 0.0)
    assert make_optimizer(RunConfig(optimizer="nesterov"), params).defaults["momentum"] == 0.9
    adamw = make_optimizer(RunConfig(optimizer="adam", weight_decay=0.01, weight_decay_mode="decoupled"), params)
    assert isinstance(adamw, torch.optim.AdamW)
    assert knob_applies("rms_alpha", {"optimizer": "rmsprop"}) and not knob_applies("rms_alpha", {"optimizer": "adam"})
    assert not knob_applies("momentum", {"optimizer": "rmsprop"}) and knob_applies("lr", {"optimizer": "sgd"})
