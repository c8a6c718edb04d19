"""The one task seam (core/engine/task.py): every kind's key is sha256 of its canonical payload (runs are
stored by key, so the payload each kind hashes is written out here by hand, not read from the code), the
JSON round trip, and the shared readers of URL values."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from core.engine.config import ConfigError, RunConfig
from core.engine.task import SCHEMA_VERSION, cut_off, query_int, query_json
from core.lab.compare import ComparisonConfig
from core.lab.grid import GridConfig
from core.lab.surface import SurfaceConfig
from core.lab.sweep.space import Dist, SweepConfig
from core.serve.cobatch import CoBatch

BASE = RunConfig(dataset="moons", hidden=(32, 16), lr=0.05, seed=3, epochs=2)


def sha_key(prefix: str, name: str, payload: object) -> str:
    """The key as documented: prefix + 24 hex digits of sha256 of the sorted, spaceless JSON."""
    text = json.dumps({"schema": SCHEMA_VERSION, name: payload}, sort_keys=True, separators=(",", ":"))
    return f"{prefix}-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def run_payload(cfg: RunConfig) -> dict:
    """Every field, hidden as a list; residual and the CNN's conv knobs (newer than stored runs) only when not at
    their defaults, so older keys stand."""
    payload = {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)}, "hidden": list(cfg.hidden),
               "conv_channels": list(cfg.conv_channels)}
    newer = {"residual": False, "conv_channels": [32, 32], "conv_kernel": 3, "conv_stride": 1, "conv_padding": 1,
             "conv_pool": "none"}
    for name, default in newer.items():
        if payload[name] == default:
            del payload[name]
    return payload


GRID = GridConfig(base=BASE, depths=(1, 3), norms=("none", "layernorm"),
                  variants=(("relu", {"activation": "relu"}), ("he", {"init": "he", "lr": 0.01})))
SURFACE = SurfaceConfig(run=BASE, directions="random", resolution=11, span=0.5, n_examples=64, direction_seed=2)
SWEEP = SweepConfig(BASE, (Dist("lr", "log", (), 1e-3, 1e-1), Dist("optimizer", "categorical", ("sgd", "adam"))),
                    "random", "median", 7, seed=1)
COMPARISON = ComparisonConfig(BASE, (("none", {}), ("L2", {"l2": 0.01}), ("wide", {"hidden": "64,64", "lr": 0.1})))


def sweep_payload(trials: int) -> dict:
    return {"base": run_payload(BASE), "sampler": "random", "pruner": "median", "trials": trials, "seed": 1,
            "parallel": 0, "space": [{"name": "lr", "kind": "log", "low": 1e-3, "high": 1e-1},
                                     {"name": "optimizer", "kind": "categorical", "choices": ["sgd", "adam"]}]}


KEYS = [
    (BASE, sha_key("run", "run", run_payload(BASE))),
    (GRID, sha_key("grid", "grid", {"base": run_payload(BASE), "activations": [], "depths": [1, 3], "width": 10,
                                    "inits": [], "norms": ["none", "layernorm"],
                                    "variants": [["relu", {"activation": "relu"}],
                                                 ["he", {"init": "he", "lr": 0.01}]]})),
    (SURFACE, sha_key("surface", "surface", {"run": run_payload(BASE), "directions": "random", "resolution": 11,
                                             "span": 0.5, "n_examples": 64, "direction_seed": 2})),
    (SWEEP, sha_key("sweep", "sweep", sweep_payload(7)) + "-7"),
    (COMPARISON, sha_key("cmp", "comparison", {"base": run_payload(BASE), "variants": [
        ["none", {}], ["L2", {"l2": 0.01}], ["wide", {"hidden": [64, 64], "lr": 0.1}]]})),
]


@pytest.mark.parametrize("cfg, expected", KEYS, ids=[type(c).__name__ for c, _ in KEYS])
def test_each_kinds_key_is_sha256_of_its_canonical_payload(cfg, expected):
    assert cfg.key() == expected


def test_a_sweeps_study_leaves_the_trial_budget_out():
    assert SWEEP.study_name() == sha_key("sweep", "sweep", sweep_payload(1))
    assert SWEEP.replace(trials=30).study_name() == SWEEP.study_name()
    assert SWEEP.replace(trials=30).key() != SWEEP.key()


def test_a_cobatch_is_named_by_its_runs_in_order():
    runs = (BASE, BASE.replace(seed=4))
    group = CoBatch(runs)
    assert group.key() == sha_key("cobatch", "cobatch", {"runs": [run_payload(r) for r in runs]})
    assert CoBatch(runs[::-1]).key() != group.key()


CONFIGS = [cfg for cfg, _ in KEYS] + [CoBatch((BASE, BASE.replace(lr=0.2)))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[type(c).__name__ for c in CONFIGS])
def test_json_round_trip_keeps_config_and_key(cfg):
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and back.key() == cfg.key()
    assert json.loads(cfg.to_json()) == cfg.to_dict()


@pytest.mark.parametrize("kind", [GridConfig, SurfaceConfig, SweepConfig, ComparisonConfig, CoBatch])
def test_from_json_rejects_garbage_with_a_message(kind):
    with pytest.raises(ConfigError, match="not valid JSON"):
        kind.from_json("{nope")
    with pytest.raises(ConfigError, match="must be an object"):
        kind.from_json("[1, 2]")
    with pytest.raises(ConfigError) as err:
        kind.from_json('{"colour": "red"}')
    assert "colour" in str(err.value)


def test_a_cobatch_needs_runs():
    with pytest.raises(ConfigError, match="one or more run configs"):
        CoBatch(())
    with pytest.raises(ConfigError, match="list of run settings"):
        CoBatch.from_dict({"runs": "run-abc"})


def test_query_readers_give_the_value_or_a_message_naming_the_parameter():
    assert query_json({"variants": '[["a", {}]]'}, "variants") == [["a", {}]]
    assert query_json({}, "variants", []) == []
    assert query_int({"width": " 32 "}, "width") == 32 and query_int({"width": ""}, "width") is None
    with pytest.raises(ConfigError) as err:
        query_json({"variants": "{]"}, "variants")
    assert set(err.value.problems) == {"variants"}
    with pytest.raises(ConfigError) as err:
        query_int({"width": "wide"}, "width")
    assert set(err.value.problems) == {"width"} and "'wide'" in err.value.problems["width"]


@pytest.mark.parametrize("query, field", [({"variants": "{]"}, "variants"), ({"width": "3.5"}, "width")])
def test_a_grid_link_with_a_bad_value_names_it(query, field):
    with pytest.raises(ConfigError) as err:
        GridConfig.from_query({"activations": "relu", **query})
    assert field in err.value.problems


def test_a_link_cut_short_says_so_plainly():
    """Issue 26.10: a link cut at 300 characters gave JSON's own error ("Unterminated string ... char 249")."""
    whole = ComparisonConfig(RunConfig(), (("dropout 0.5", {"dropout": 0.5}), ("L2 long label " * 20, {"l2": 0.01})))
    text = whole.to_query()["variants"]
    assert not cut_off(text) and all(cut_off(text[:n]) for n in range(1, len(text)))
    with pytest.raises(ConfigError) as err:
        ComparisonConfig.from_query({"variants": text[:len(text) // 2]})
    assert "cut off" in err.value.problems["variants"] and "char" not in err.value.problems["variants"]
    with pytest.raises(ConfigError) as err:
        query_json({"variants": "{]"}, "variants")
    assert "cut off" not in err.value.problems["variants"]


def test_a_lesson_link_leaves_the_lessons_own_variants_out_and_reopens_the_same_comparison():
    like = ComparisonConfig(RunConfig(hidden=(32,), epochs=4), (("none", {}), ("L2", {"l2": 0.01})))
    edited = ComparisonConfig(like.base.replace(epochs=10, seed=3), like.variants)  # epochs back to the default
    short = edited.to_query(like)
    assert "variants" not in short and short == {"epochs": "10", "seed": "3"}
    assert ComparisonConfig.from_query({**like.to_query(), **short}) == edited
    other = ComparisonConfig(like.base, (("L1", {"l1": 0.01}),))
    assert other.to_query(like) == other.to_query()  # other variants: written in full
    assert ComparisonConfig.from_query(other.to_query()) == other  # a full (old) link still opens
