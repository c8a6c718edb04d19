"""Grids of runs: batched cells equal single runs, LESSONS A on real MNIST, caching per grid and per cell."""
from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn

from core.engine import data as datasets
from core.engine.batched import StackedLanes, _Stack, _StackFunction
from core.engine.config import ConfigError, RunConfig
from core.engine.events import CellEvent, GridStarted, decode_events, encode_events
from core.lab.grid import GridConfig, cell_events, run_grid
from core.lessons.families import fixes_grid
from core.serve.jobs import JobManager
from core.engine.models import build_model
from core.lessons.presets import A_BASE
from core.lessons import verdicts
from core.serve.store import RunStore
from core.engine.lanes import data_loss
from helpers import assert_same_run, train_events

DIGITS = RunConfig(dataset="digits", epochs=2, batch_size=32, optimizer="sgd", lr=0.2, log_every=10)


def _run_grid(grid: GridConfig, cancel: threading.Event | None = None):
    events = []
    end = run_grid(grid, events.append, cancel)
    return end, events


def _of(events, kind):
    return [e for e in events if e.kind == kind]


# --- the config ------------------------------------------------------------------------------------
def test_cells_labels_order_and_stable_key():
    grid = GridConfig(base=DIGITS, activations=("sigmoid", "relu"), depths=(1, 3), width=12)
    cells = grid.cells()
    assert [label for label, _ in cells] == ["sigmoid x1", "sigmoid x3", "relu x1", "relu x3"]
    assert cells[1][1] == DIGITS.replace(activation="sigmoid", hidden=(12, 12, 12))
    assert grid.key().startswith("grid-") and grid.key() == GridConfig.from_dict(grid.to_dict()).key()
    assert GridConfig.from_dict(grid.to_dict()) == grid
    assert grid.key() != grid.replace(width=10).key() != grid.replace(depths=(3, 1)).key()
    assert grid.device == DIGITS.device
    variants = GridConfig(base=DIGITS.replace(hidden=(10,) * 4),
                          variants=(("plain", {}), ("ReLU + He", {"activation": "relu", "init": "he"})), norms=("none", "batchnorm"))
    assert [label for label, _ in variants.cells()] == ["plain none", "plain batchnorm", "ReLU + He none", "ReLU + He batchnorm"]
    assert variants.cells()[3][1].init == "he" and variants.cells()[3][1].norm == "batchnorm"


@pytest.mark.parametrize("changes, field, words", [
    ({"depths": (4, 21)}, "depths", "0-20"),
    ({"activations": ("sigmoid", "swish")}, "activations", "swish"),
    ({"depths": (2, 2)}, "depths", "twice"),
    ({"width": 0}, "width", "1-256"),
    ({"activations": ("sigmoid", "tanh", "relu", "gelu", "elu", "linear", "leaky_relu"), "depths": tuple(range(9))},
     "cells", "at most 60"),
    ({"activations": ("tanh",), "variants": (("ReLU", {"activation": "relu"}),)}, "variants", "axis"),
    ({"variants": (("a", {}), ("b", {"lr": DIGITS.lr}))}, "cells", "same run"),
    ({"variants": (("a", {"lr": -1}),)}, "cells", "Learning rate"),
])
def test_validation_names_the_problem(changes, field, words):
    with pytest.raises(ConfigError) as info:
        GridConfig(base=DIGITS, **changes)
    assert field in info.value.problems and words in info.value.problems[field]


def test_fixes_grid_is_the_preset_fixes_on_this_base():
    grid = fixes_grid(DIGITS.replace(hidden=(10,) * 5, lr=0.4))
    configs = dict(grid.cells())
    assert configs["sigmoid"].hidden == (10,) * 5 and configs["sigmoid"].activation == "sigmoid"
    assert configs["relu + he"].activation == "relu" and configs["relu + he"].init == "he"
    assert configs["sigmoid + batchnorm"].norm == "batchnorm"
    assert [cfg.lr for label, cfg in grid.cells() if "lr" in label] == [pytest.approx(0.1)]  # 0.05 of 0.2, scaled to 0.4
    assert len({cfg.seed for cfg in configs.values()}) == 1


# --- the batched model -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_one_step_gradients_equal_each_cells_own_autograd(norm):
    """Oracle: the hand-written stacked backward equals autograd through each cell's own nn.Module."""
    ds = datasets.load_dataset("digits")
    acts = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "linear"]
    cfgs = [DIGITS.replace(activation=a, hidden=(7,) * d, norm=norm, init=("he" if a == "relu" else "default"))
            for a in acts for d in (1, 3)] + [DIGITS.replace(activation="tanh", hidden=(7,) * 2, norm=norm)]
    cfgs.sort(key=lambda c: (acts.index(c.activation), -c.depth))
    stack = _Stack(cfgs, ds.input_shape, ds.n_classes, torch.device("cpu"))
    x, y = datasets.batch_features(ds.x[:32]), ds.y[:32]
    with torch.no_grad():  # move norm parameters off their initial 1/0 so their gradients matter
        for t in stack.gamma + stack.beta:
            t.uniform_(0.5, 1.5)
    logits = _StackFunction.apply(stack, x, *stack.params)
    per_cell = data_loss(cfgs[0], logits.transpose(1, 2), y.expand(len(cfgs), 32), reduction="none").mean(dim=1)
    grads = torch.autograd.grad(per_cell.sum(), stack.params)
    by_param = dict(zip(map(id, stack.params), grads))
    for c, cfg in enumerate(cfgs):
        model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for j, m in enumerate(norms):
                m.weight.copy_(stack.gamma[j][c]), m.bias.copy_(stack.beta[j][c])
        out = model(x)
        assert float((out.detach() - logits[c].detach()).abs().max()) < 1e-5
        data_loss(cfg, out, y).backward()
        pairs = [(m.weight, stack.w[j]) for j, m in enumerate(linears[:-1])] + [(linears[-1].weight, stack.wo)]
        pairs += [(m.bias, stack.b[j]) for j, m in enumerate(linears[:-1])] + [(linears[-1].bias, stack.bo)]
        pairs += [(m.weight, stack.gamma[j]) for j, m in enumerate(norms)] + [(m.bias, stack.beta[j]) for j, m in enumerate(norms)]
        floor = 1e-5 * max(float(m.grad.abs().max()) for m, _ in pairs)  # e.g. biases before BatchNorm: truly 0
        for mine, stacked in pairs:
            error = float((by_param[id(stacked)][c] - mine.grad).abs().max())
            assert error <= 1e-4 * float(mine.grad.abs().max()) + floor, (cfg.activation, cfg.depth)
    # layers a shallow cell does not have get exactly zero gradient, so they never move
    shallow = [c for c, cfg in enumerate(cfgs) if cfg.depth == 1]
    assert all(float(by_param[id(stack.w[j])][c].abs().max()) == 0.0 for j in (1, 2) for c in shallow)


def test_grid_cells_equal_single_runs_on_digits():
    grid = GridConfig(base=DIGITS, activations=("sigmoid", "tanh", "relu", "gelu"), depths=(0, 1, 3), width=10)
    end, events = _run_grid(grid)
    assert end.status == "finished"
    per_cell = cell_events(events)
    started = _of(events, "grid_started")[0]
    assert started.alone == [] and sorted(i for g in started.batched for i in g) == list(range(12))
    for i, (label, cfg) in enumerate(grid.cells()):
        assert_same_run(per_cell[i], train_events(cfg)[1])


def test_other_settings_batch_exactly_too():
    """Norms, optimizers, MSE, penalties, inits, mixed widths of stacks, all in one batched pass."""
    base = DIGITS.replace(hidden=(16, 16), lr=0.05, epochs=2)
    grid = GridConfig(base=base, variants=(
        ("bn sigmoid", {"norm": "batchnorm", "activation": "sigmoid", "lr": 0.2}),
        ("ln tanh", {"norm": "layernorm", "activation": "tanh"}),
        ("adam l2", {"optimizer": "adam", "lr": 0.01, "l2": 1e-3, "activation": "relu"}),
        ("nadam mse l1", {"optimizer": "nadam", "lr": 0.01, "loss": "mse", "l1": 1e-4, "activation": "tanh"}),
        ("rmsprop wd", {"optimizer": "rmsprop", "lr": 1e-3, "weight_decay": 1e-3, "activation": "sigmoid"}),
        ("nesterov xavier", {"optimizer": "nesterov", "init": "xavier", "activation": "gelu"}),
        ("momentum normal elu", {"optimizer": "momentum", "init": "normal", "init_std": 0.1, "activation": "elu",
                                 "hidden": (8,)}),
        ("leaky wide", {"activation": "leaky_relu", "hidden": (32, 32, 32)}),
    ))
    end, events = _run_grid(grid)
    assert end.status == "finished" and _of(events, "grid_started")[0].alone == []
    per_cell = cell_events(events)
    for i, (label, cfg) in enumerate(grid.cells()):
        assert_same_run(per_cell[i], train_events(cfg)[1])


def test_a_diverging_cell_ends_alone_and_the_others_go_on(monkeypatch):
    import core.engine.train

    monkeypatch.setattr(core.engine.train, "EXPLODED", math.inf)  # only a non-finite loss ends a cell here
    base = DIGITS.replace(activation="linear", hidden=(16,), epochs=3)
    grid = GridConfig(base=base, variants=(("calm", {"lr": 0.05}), ("wild", {"lr": 100.0})))
    end, events = _run_grid(grid)
    assert end.status == "finished" and "1 diverged" in end.reason
    calm, wild = cell_events(events)[0], cell_events(events)[1]
    assert wild[-1].status == "diverged" and "learning rate" in wild[-1].reason and wild[-1].test_acc is None
    assert not math.isfinite([v for e in _of(wild, "steps") for v in e.losses][-1])
    assert calm[-1].status == "finished" and calm[-1].test_acc > 0.5  # kept learning (chance is 0.1)
    assert_same_run(calm, train_events(grid.cells()[0][1])[1])
    assert_same_run(wild, train_events(grid.cells()[1][1])[1])


def test_unbatchable_cells_train_alone_in_the_same_job():
    grid = GridConfig(base=DIGITS.replace(hidden=(16,)), variants=(
        ("plain", {}), ("dropout", {"dropout": 0.2, "dropout_impl": "inverted"}), ("cnn", {"arch": "cnn", "epochs": 1})))
    end, events = _run_grid(grid)
    started = _of(events, "grid_started")[0]
    assert started.batched == [[0]] and started.alone == [1, 2]
    assert any("dropout" in note for note in started.notes) and any("CNN" in note for note in started.notes)
    assert end.status == "finished"
    per_cell = cell_events(events)
    assert_same_run(per_cell[1], train_events(grid.cells()[1][1])[1], tol=0.0)


def test_cancel_stops_every_cell_with_its_history():
    cancel = threading.Event()
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, CellEvent) and event.event.kind == "eval" and event.event.step >= 4:
            cancel.set()

    grid = GridConfig(base=DIGITS.replace(epochs=50, log_every=2), activations=("sigmoid", "relu"), depths=(1, 2))
    end = run_grid(grid, on_event, cancel)
    assert end.status == "cancelled"
    for cell in cell_events(events).values():
        assert cell[-1].status == "cancelled" and 4 <= cell[-1].step <= 6 and _of(cell, "eval")


def test_grid_events_round_trip_with_nested_arrays():
    _, events = _run_grid(GridConfig(base=DIGITS.replace(epochs=1), activations=("relu",), depths=(1, 2)))
    text, blob = encode_events(events)
    back, _ = decode_events(text, blob)
    assert [type(e) for e in back] == [type(e) for e in events]
    assert isinstance(back[0], GridStarted) and back[0].cells[1]["label"] == "relu x2"
    layers = [e for e in back if isinstance(e, CellEvent) and e.event.kind == "layers"]
    original = [e for e in events if isinstance(e, CellEvent) and e.event.kind == "layers"]
    assert layers and (layers[-1].event.heatmaps[0] == original[-1].event.heatmaps[0]).all()
    assert layers[-1].cell == original[-1].cell and layers[-1].label == original[-1].label


# --- the job manager ----------------------------------------------------------------------------------
def test_grid_job_trains_once_is_cached_and_files_each_cell(isolated_cache):
    manager = JobManager(RunStore(isolated_cache / "runs"))
    grid = GridConfig(base=DIGITS, activations=("sigmoid", "relu"), depths=(1, 2))
    key = manager.submit(grid)
    assert manager.submit(grid) == key  # joins the live job
    done = manager.wait(key, timeout=300)
    assert done.status == "finished" and done.kind == "grid" and not done.from_cache
    started_per_cell = [sum(1 for e in ev if e.kind == "started") for ev in cell_events(done.events).values()]
    assert started_per_cell == [1, 1, 1, 1]  # trained once

    fresh = JobManager(manager.store)  # another server process
    again = fresh.snapshot(fresh.submit(grid))
    assert again.from_cache and again.status == "finished" and again.n_events == done.n_events
    assert fresh.counts() == {"queued": 0, "running": 0}
    for i, (label, cfg) in enumerate(grid.cells()):  # each cell replays instantly in the single-run pages
        snap = fresh.snapshot(fresh.submit(cfg))
        assert snap.from_cache and snap.status == "finished", label
        assert snap.events[-1].test_acc == cell_events(done.events)[i][-1].test_acc


# --- LESSONS A on real MNIST ------------------------------------------------------------------------
@pytest.mark.slow
def test_lessons_a_grid_on_mnist(shared_mnist):
    """Width 10, SGD lr 0.2, batch 32, one epoch: sigmoid x4 is stuck, sigmoid x1 and ReLU + He x4 learn."""
    grid = GridConfig(base=A_BASE.replace(epochs=1), variants=(
        ("sigmoid x1", {"hidden": (10,)}), ("sigmoid x4", {"hidden": (10,) * 4}),
        ("relu + he x4", {"hidden": (10,) * 4, "activation": "relu", "init": "he"})))
    end, events = _run_grid(grid)
    assert end.status == "finished"
    shallow, deep, relu = (cell_events(events)[i] for i in range(3))
    stuck = deep[-1]
    # the lessons' verdicts: stuck (accuracy at its one class's share, loss ln 10), its first layer's gradient vanished
    assert verdicts.is_stuck(stuck.test_acc, stuck.test_loss, 10, confusion=stuck.confusion)
    assert verdicts.is_vanishing([e.grad_norm for e in _of(deep, "layers")])
    assert not verdicts.is_vanishing([e.grad_norm for e in _of(relu, "layers")])
    assert shallow[-1].test_acc > 0.8 and shallow[-1].test_loss < 1.0
    assert relu[-1].test_acc > 0.7 and relu[-1].test_loss < 1.0


def test_out_of_memory_inside_a_batched_grid_fails_its_cells_and_releases_them(monkeypatch):
    """An OOM in the middle of a batched step fails that group's cells (as failed events, the grid says
    how many), frees the stacked model and the device cache; the cell that trains alone still trains."""
    import gc
    import weakref

    import core.engine.family
    import core.engine.train

    made, emptied = [], [0]

    class OOMStacked(StackedLanes):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(weakref.ref(self))
            self.calls = 0

        def losses(self, x, y):
            self.calls += 1
            if self.calls == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            return super().losses(x, y)

    monkeypatch.setattr(core.engine.family, "StackedLanes", OOMStacked)
    monkeypatch.setattr(core.engine.train, "free_device_cache", lambda: emptied.__setitem__(0, emptied[0] + 1))
    grid = GridConfig(base=DIGITS.replace(hidden=(16,), epochs=1),
                      variants=(("a", {"lr": 0.1}), ("b", {"lr": 0.2}), ("dropout", {"dropout": 0.2})))
    end, events = _run_grid(grid)
    cells = cell_events(events)
    for i in (0, 1):
        assert cells[i][-1].kind == "failed" and cells[i][-1].error_type == "OutOfMemoryError"
        assert "ran out of memory" in cells[i][-1].message and cells[i][-1].step == 1
    assert cells[2][-1].kind == "finished" and cells[2][-1].status == "finished"
    assert end.kind == "failed" and "2 of 3 cells failed" in end.message and "ran out of memory" in end.message
    assert emptied[0] == 2  # after the batched group and after the lone cell
    gc.collect()
    assert made and made[0]() is None


def test_a_grid_hands_its_ended_cells_to_file_run_and_writes_nothing_itself():
    handed = []
    grid = GridConfig(base=DIGITS.replace(hidden=(8,), epochs=1), variants=(("a", {"lr": 0.1}), ("b", {"lr": 0.2})))
    run_grid(grid, [].append, None, lambda key, cfg, evs: handed.append((key, cfg, evs)))
    cells = dict(enumerate(grid.cells()))
    assert sorted(key for key, _, _ in handed) == sorted(cfg.key() for _, cfg in cells.values())
    for key, cfg, evs in handed:
        assert cfg.key() == key and evs[0].kind == "started" and evs[-1].kind == "finished"


def test_a_failed_save_of_a_cell_is_reported_not_raised():
    def full_disk(key, cfg, events):
        raise OSError(28, "No space left on device")

    grid = GridConfig(base=DIGITS.replace(hidden=(8,), epochs=1), variants=(("a", {"lr": 0.1}),))
    end = run_grid(grid, [].append, None, full_disk)
    assert end.status == "finished" and "not filed separately" in end.reason and "No space" in end.reason


def test_doubled_softmax_cells_batch_and_equal_the_runs_alone():
    grid = GridConfig(base=DIGITS.replace(loss="softmax_cross_entropy", hidden=(16,), epochs=1),
                      activations=("relu", "tanh"))
    end, events = _run_grid(grid)
    assert end.status == "finished" and _of(events, "grid_started")[0].batched == [[0, 1]]
    per_cell = cell_events(events)
    for i, (_, cfg) in enumerate(grid.cells()):
        assert_same_run(per_cell[i], train_events(cfg)[1])
        assert per_cell[i][-1].test_ce != per_cell[i][-1].test_loss
