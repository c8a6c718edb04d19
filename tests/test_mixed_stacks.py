"""Mixed stacks: trials that differ in width, depth, optimizer and its knobs, activation, init and weight
decay train as ONE stack (core.engine.batched.MixedStackedLanes, core.engine.optimizers.LaneRules), and
each lane equals its config trained alone; a sweep asks its trials in the sampler's own order."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from core.engine import data as datasets
from core.engine import optimizers as rules
from core.engine.batched import MixedStackedLanes, _Stack, _StackFunction, stack_key
from core.engine.config import RunConfig
from core.engine.family import plan_family, train_family
from core.engine.lanes import data_loss, make_optimizer
from core.engine.models import build_model, weight_layers
from core.lab.sweep.lease import Lease
from core.lab.sweep.runner import _ask, plan_trials, run_sweep
from core.lab.sweep.space import Dist, SweepConfig, trial_config
from core.lab.sweep.study import make_sampler, open_study
from core.lessons.families import SWEEP_PRESETS
from core.engine.train import train
from helpers import assert_same_run, train_events

DIGITS = RunConfig(dataset="digits", epochs=2, batch_size=32, log_every=10, val_fraction=0.2)
# every rule, coupled and decoupled weight decay, momentum knobs, a schedule, mixed widths/depths/inits
MIXED = [DIGITS.replace(hidden=(16,) * 3, activation="sigmoid", optimizer="sgd", lr=0.1),
         DIGITS.replace(hidden=(32,) * 2, activation="tanh", optimizer="momentum", lr=0.05, weight_decay=5e-4),
         DIGITS.replace(hidden=(8,), activation="relu", optimizer="nesterov", lr=0.05, init="xavier"),
         DIGITS.replace(hidden=(24,) * 2, activation="sigmoid", optimizer="rmsprop", lr=1e-3, rms_momentum=0.5),
         DIGITS.replace(hidden=(16,) * 2, activation="relu", optimizer="adam", lr=1e-2, weight_decay=0.01,
                        weight_decay_mode="decoupled"),
         DIGITS.replace(hidden=(32,), activation="tanh", optimizer="nadam", lr=1e-2, weight_decay=1e-3,
                        lr_schedule="cosine"),
         DIGITS.replace(hidden=(16,) * 3, activation="relu", optimizer="adam", lr=1e-3, weight_decay=5e-4,
                        init="xavier")]


def test_lane_rules_follow_each_lanes_own_torch_optimizer():
    """Oracle: torch.optim, one optimizer per lane, on the same gradients (with a cosine schedule)."""
    configs = [cfg.replace(lr_schedule="cosine") for cfg in MIXED] + [
        MIXED[3].replace(rms_momentum=0.0, weight_decay=1e-2), MIXED[5].replace(weight_decay_mode="decoupled"),
        MIXED[4].replace(weight_decay_mode="coupled")]
    gen = torch.Generator().manual_seed(0)
    stacked = torch.nn.Parameter(torch.randn(len(configs), 5, 3, generator=gen))
    alone = [torch.nn.Parameter(stacked[i].detach().clone()) for i in range(len(configs))]
    lane_rules = rules.LaneRules([stacked], configs)
    theirs = [make_optimizer(cfg, [p]) for cfg, p in zip(configs, alone)]
    total = 30
    for step in range(total):
        grad = torch.randn(stacked.shape, generator=gen)
        stacked.grad = grad.clone()
        rules.apply_schedule(lane_rules, step, total)
        lane_rules.step()
        for i, (p, opt) in enumerate(zip(alone, theirs)):
            p.grad = grad[i].clone()
            rules.apply_schedule(opt, step, total)
            opt.step()
    for i, p in enumerate(alone):  # float tolerance: a few operations in another order (see LaneRules)
        assert torch.allclose(stacked[i].detach(), p.detach(), rtol=1e-5, atol=1e-6), configs[i].optimizer
        assert not torch.equal(p.detach(), stacked.detach()[(i + 1) % len(configs)])


def test_padded_units_change_nothing_forward_or_backward():
    """Oracle: autograd through each cell's own nn.Module; the padding gets exactly zero gradient."""
    ds = datasets.load_dataset("digits")
    cfgs = sorted(MIXED, key=lambda c: (["sigmoid", "tanh", "relu"].index(c.activation), -c.depth))
    stack = _Stack(cfgs, ds.input_shape, ds.n_classes, torch.device("cpu"))
    x, y = datasets.batch_features(ds.x[:32]), ds.y[:32]
    logits = _StackFunction.apply(stack, x, *stack.params)
    per_cell = data_loss(cfgs[0], logits.transpose(1, 2), y.expand(len(cfgs), 32), reduction="none").mean(dim=1)
    grads = dict(zip(map(id, stack.params), torch.autograd.grad(per_cell.sum(), stack.params)))
    for c, cfg in enumerate(cfgs):
        model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
        out = model(x)
        assert float((out.detach() - logits[c].detach()).abs().max()) < 1e-5
        data_loss(cfg, out, y).backward()
        linears = [m for _, m in weight_layers(model)]
        stacked = [stack.w[j] for j in range(cfg.depth)] + [stack.wo]
        biases = [stack.b[j] for j in range(cfg.depth)] + [stack.bo]
        for m, w, b in zip(linears, stacked, biases):
            out_units, fan_in = m.weight.shape
            g, gb = grads[id(w)][c], grads[id(b)][c]
            assert torch.allclose(g[:out_units, :fan_in], m.weight.grad, rtol=1e-4, atol=1e-6)
            assert torch.allclose(gb[:out_units], m.bias.grad, rtol=1e-4, atol=1e-6)
            padding = g.clone()
            padding[:out_units, :fan_in] = 0
            assert float(padding.abs().max()) == 0.0 and not bool(gb[out_units:].any())
        assert stack.cell_state(c).keys() == model.state_dict().keys()


def test_every_lane_of_a_mixed_stack_equals_its_config_trained_alone():
    """Events, metrics and final weights of each lane vs train() of its config (float tolerance: the
    stack's batched matmuls and LaneRules order some float operations differently)."""
    cells = [(str(i), cfg) for i, cfg in enumerate(MIXED)]
    plan = plan_family(cells, mixed=True)
    assert plan.batched == [list(range(len(MIXED)))] and plan.lanes is MixedStackedLanes
    assert len(MixedStackedLanes.stack_groups(MIXED)) == 1  # one stack, one update
    events = [[] for _ in MIXED]
    train_family(MIXED, [e.append for e in events], plan, final_weights=True)
    for cfg, lane in zip(MIXED, events):
        end, alone = train_events(cfg)  # sends its final weights too
        assert_same_run(lane, alone)
        mine = next(e for e in lane if e.kind == "weights").weights
        theirs = next(e for e in alone if e.kind == "weights").weights
        assert mine.keys() == theirs.keys()
        for name in theirs:
            assert mine[name].shape == theirs[name].shape
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_what_may_differ_within_a_stack():
    base = DIGITS.replace(hidden=(16, 16))
    same = {stack_key(base.replace(**change), mixed=True) for change in (
        {}, {"hidden": (64,)}, {"optimizer": "nadam", "lr": 1e-4, "weight_decay": 0.5}, {"activation": "sigmoid"},
        {"init": "xavier"}, {"batch_size": 64})}
    assert len(same) == 1
    assert stack_key(base.replace(norm="layernorm"), mixed=True) != stack_key(base.replace(norm="layernorm", hidden=(8,)), mixed=True)
    assert stack_key(base.replace(hidden=()), mixed=True) != stack_key(base, mixed=True)  # logits from x
    assert stack_key(base.replace(loss="mse"), mixed=True) != stack_key(base, mixed=True)
    # a grid (not mixed) keeps its exact stacks: width and optimizer settings apart
    assert stack_key(base, mixed=False) != stack_key(base.replace(optimizer="sgd"), mixed=False)


def test_trials_asked_together_are_the_samplers_own_sequence():
    """The runner's asks, eight at a time, give the parameters a study asked one by one (each told before
    the next) gets with the same sampler seed: batching changes nothing the sampler picks."""
    preset = SWEEP_PRESETS["D-sweep"].sweep
    for sampler in ("random", "tpe"):
        sweep = preset.replace(sampler=sampler, trials=40, seed=3)
        startup = 40 if sampler == "random" else make_sampler(sweep)._n_startup_trials

        def study():
            storage = optuna.storages.InMemoryStorage()
            made = optuna.create_study(storage=storage, direction="maximize", sampler=make_sampler(sweep))
            return made, Lease(made, storage)

        (one_by_one, alone), (grouped, lease) = study(), study()
        for k in range(startup):
            trial = _ask(one_by_one, sweep, lambda *_: None, alone)
            one_by_one.tell(trial, float(k % 7))
        for start in range(0, startup, 8):
            asked = [_ask(grouped, sweep, lambda *_: None, lease) for _ in range(min(8, startup - start))]
            for k, trial in enumerate(asked, start):
                grouped.tell(trial, float(k % 7))
        assert [t.params for t in one_by_one.trials] == [t.params for t in grouped.trials]
        assert len({tuple(sorted(t.params.items())) for t in grouped.trials}) > startup // 2


def test_a_mixed_sweep_trains_per_stream_and_files_each_trial_under_its_own_key(tmp_path):
    space = (Dist("width", "categorical", (8, 16)), Dist("depth", "int", (), 1, 2),
             Dist("optimizer", "categorical", ("sgd", "adam")), Dist("activation", "categorical", ("tanh", "relu")),
             Dist("batch_size", "categorical", (32, 64)))
    sweep = SweepConfig(DIGITS.replace(epochs=1, log_every=50, lr=0.01), space, "random", "none", 6, seed=1)
    filed = {}
    events = []
    end = run_sweep(sweep, events.append, storage=f"sqlite:///{tmp_path}/s.db",
                    file_run=lambda key, cfg, history: filed.setdefault(key, cfg))
    assert end.status == "finished"
    trials = open_study(sweep, f"sqlite:///{tmp_path}/s.db").trials
    configs = [trial_config(sweep.base, t.params) for t in trials]
    plan = plan_trials([(str(i), c) for i, c in enumerate(configs)])
    streams = {c.batch_size for c in configs}
    assert plan.batched and len(plan.batched) + len(plan.alone) >= len(streams)  # 6 trials, 2 streams
    assert all(len({configs[i].batch_size for i in group}) == 1 for group in plan.batched)
    for trial, cfg in zip(trials, configs):
        assert trial.user_attrs["key"] == cfg.key() and filed[cfg.key()] == cfg
        alone = train(cfg)
        assert trial.value == pytest.approx(alone.val_acc, abs=1.5e-3)  # one example of 360 may flip


def _steps(lanes, batches, first, total):
    """What the training loop does per step: forward, backward of the summed losses, scheduled update."""
    for k, (x, y) in enumerate(batches):
        loss, _, _ = lanes.losses(x, y)
        for optimizer in lanes.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        for optimizer in lanes.optimizers:
            rules.apply_schedule(optimizer, first + k, total)
            optimizer.step()


def test_a_retired_lane_leaves_its_stack_and_the_others_go_on_unchanged():
    """Oracle: the same lanes trained on without retiring anyone (weights to float tolerance: the cut-down
    stack multiplies smaller matrices). The deepest cells leave, so the stack loses a layer, and the
    optimizers' buffers (Adam's moments, momenta, NAdam's mu products) must follow the cells left."""
    ds = datasets.load_dataset("digits")
    configs = [MIXED[i] for i in MixedStackedLanes.stacked_order(MIXED)]
    x, y = datasets.batch_features(ds.x[:256]), ds.y[:256]
    batches = [(x[k:k + 32], y[k:k + 32]) for k in range(0, 256, 32)]
    kept, full = (MixedStackedLanes(configs, ds.input_shape, ds.n_classes, torch.device("cpu")) for _ in range(2))
    _steps(kept, batches, 0, 16)
    _steps(full, batches, 0, 16)
    deepest = [i for i, cfg in enumerate(configs) if cfg.depth == 3]
    for lane in deepest:
        kept.retire(lane)
    assert sum(s.n for s in kept.stacks) == len(configs) - len(deepest)
    assert max(s.D for s in kept.stacks) == 2 < max(s.D for s in full.stacks)
    _steps(kept, batches, 8, 16)
    _steps(full, batches, 8, 16)
    widest = deepest[0]
    for lane in range(len(configs)):
        if lane in deepest:
            continue
        mine, theirs = kept.state_dict(lane), full.state_dict(lane)
        for name in theirs:
            assert torch.allclose(mine[name], theirs[name], rtol=1e-4, atol=1e-5), (configs[lane].optimizer, name)
    scores = kept.evaluate(x, y)
    assert np.isnan(scores.loss[widest]) and sum(np.isnan(scores.loss)) == len(deepest)
    assert torch.isnan(kept.grad_norms()).sum() == sum(len(kept.describe(lane)[1]) for lane in deepest)
