"""Gradient check (core/lab/gradcheck/): passes for every network the engine builds, and fails
exactly where the lesson says a check fails."""
from __future__ import annotations

import itertools
import threading

import pytest
import torch

from core.__main__ import main
from core.engine.config import ACTIVATIONS, NORMS, ConfigError, RunConfig
from core.lab.gradcheck.mistakes import FLOAT32, FLOAT32_SEEDS, SEED_VALUE, SEED_VARIANTS, seed_variants
from core.lab.gradcheck.numeric import _Objective, _prepare, check_gradients, layer_groups, numeric_gradient
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.result import GOOD, SUSPECT, diagnose, format_table
from core.lab.gradcheck.result import GradCheck
from core.lab.gradcheck.stored import RunGone, check_stored_run
from core.lab.gradcheck.task import MAX_SEEDS, GradCheckConfig, run_gradcheck
from core.engine.events import decode_events, encode_events
from core.serve.jobs import JobManager
from core.engine.models import build_model
from core.lessons.presets import get_preset
from core.serve.budget import estimate
from core.serve.store import RunStore
from core.lessons.sentences import check_diagnosis, join_words, seed_check_lines
from core.engine.lanes import ModuleLanes

TINY = dict(dataset="blobs", hidden=(4, 3), seed=3)
MLP_COMBOS = list(itertools.product(ACTIVATIONS, NORMS, ("cross_entropy", "mse"), ((0.0, 0.0), (0.01, 0.02))))


@pytest.mark.parametrize("activation,norm,loss,penalties", MLP_COMBOS)
def test_every_mlp_knob_combination_passes_in_float64(activation, norm, loss, penalties):
    cfg = RunConfig(**TINY, activation=activation, norm=norm, loss=loss, l1=penalties[0], l2=penalties[1])
    result = check_gradients(cfg, n_examples=8)
    assert [r.layer for r in result.layers][0] == "fc1"
    assert all(r.checked == r.total for r in result.layers)
    assert result.overall < GOOD, format_table(result)
    assert all(r.rel_diff < GOOD for r in result.layers), format_table(result)


@pytest.mark.parametrize("init", ["xavier", "he", "normal"])
@pytest.mark.parametrize("dropout_impl", ["torch", "inverted"])
def test_inits_and_dropout_configs_pass_with_dropout_off(init, dropout_impl):
    cfg = RunConfig(**TINY, init=init, dropout=0.3, dropout_impl=dropout_impl, activation="tanh")
    result = check_gradients(cfg, n_examples=8)
    assert result.overall < GOOD
    assert any("Dropout is switched off" in note for note in result.notes)
    assert result.settings["dropout_active"] is False


@pytest.mark.parametrize("norm", NORMS)
def test_the_cnn_passes_in_float64(norm):
    cfg = RunConfig(dataset="digits", arch="cnn", hidden=(4,), norm=norm, l2=0.01)
    result = check_gradients(cfg, n_examples=4, max_entries=40)
    assert [r.layer for r in result.layers if r.layer.startswith(("conv", "fc"))] == ["conv1", "conv2", "fc3", "fc4"]
    assert result.overall < GOOD, format_table(result)
    assert all(r.rel_diff < GOOD for r in result.layers), format_table(result)
    big = next(r for r in result.layers if r.layer == "fc3")
    assert big.checked < big.total and big.sampled
    assert any(f"Sampled {result.checked} of {result.total}" in note for note in result.notes)


def test_by_hand_backward_passes_and_matches_autograd_entry_by_entry():
    cfg = RunConfig(**TINY, activation="sigmoid", loss="mse", l1=0.01)
    by_hand = check_gradients(cfg, backprop="by_hand", n_examples=8)
    auto = check_gradients(cfg, n_examples=8)
    assert by_hand.overall < GOOD
    for a, b in zip(by_hand.pairs, auto.pairs):
        assert a["numeric"] == b["numeric"]
        assert a["analytic"] == pytest.approx(b["analytic"], rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("bug,layer", [("missing_activation_derivative", 0), ("missing_activation_derivative", 2),
                                       ("transposed_weight", 1), ("transposed_weight", 2),
                                       ("mean_sum_mismatch", 0), ("mean_sum_mismatch", 3)])
def test_each_planted_bug_is_localized_to_its_layer(bug, layer):
    cfg = RunConfig(dataset="blobs", hidden=(5, 5, 5), activation="tanh", seed=1)
    result = check_gradients(cfg, backprop="by_hand", bugs={layer: bug}, n_examples=8)
    assert result.first_wrong_layer() == f"fc{layer + 1}", format_table(result)
    for i, row in enumerate(result.layers):
        if i > layer:
            assert row.rel_diff < GOOD  # above the bug backprop is still right
    assert result.layers[layer].rel_diff > SUSPECT


def test_planted_bugs_need_the_by_hand_backward_and_a_fitting_layer():
    cfg = RunConfig(dataset="blobs", hidden=(5, 3))
    with pytest.raises(ValueError, match="by_hand"):
        check_gradients(cfg, bugs={0: "mean_sum_mismatch"}, n_examples=4)
    with pytest.raises(ValueError, match="square"):
        check_gradients(cfg, backprop="by_hand", bugs={1: "transposed_weight"}, n_examples=4)
    with pytest.raises(ValueError, match="plain MLP"):
        check_gradients(cfg.replace(norm="batchnorm"), backprop="by_hand", n_examples=4)


def _b_network() -> RunConfig:
    """The B network (784-13-13-13-3 on fashion3) as the first config of the preset, on offline digits."""
    return get_preset("B-regularization").config.replace(dataset="digits")


def test_float32_with_eps_1e7_gives_a_difference_near_one():
    cfg = _b_network()
    right = check_gradients(cfg, max_entries=300)
    wrong = check_gradients(cfg, dtype=torch.float32, eps=1e-7, max_entries=300)
    assert right.overall < GOOD
    assert wrong.layers[0].rel_diff > 0.99  # fc1: the loss difference rounds to nothing in float32
    assert wrong.overall > 0.5
    assert wrong.settings["dtype"] == "float32"


def test_perturbing_a_copy_of_the_weights_gives_one_in_every_layer():
    result = check_gradients(_b_network(), mistake="perturb_copy", max_entries=300)
    assert all(r.numeric_norm == 0.0 and r.rel_diff == 1.0 for r in result.layers)


def test_dropout_active_gives_a_difference_far_above_1e5():
    cfg = RunConfig(dataset="blobs", hidden=(8, 8), dropout=0.5, dropout_impl="inverted", activation="tanh")
    off = check_gradients(cfg, n_examples=16)
    on = check_gradients(cfg, dropout_active=True, n_examples=16)
    assert off.overall < GOOD
    assert on.overall > 100 * SUSPECT
    assert any("Dropout is ON" in note for note in on.notes)
    torch_dropout = check_gradients(cfg.replace(dropout_impl="torch"), dropout_active=True, n_examples=16)
    assert torch_dropout.overall > 100 * SUSPECT


def test_eps_too_large_or_too_small_fails_in_float64():
    cfg = RunConfig(**TINY, activation="tanh")
    assert check_gradients(cfg, eps=1e-6, n_examples=8).overall < GOOD
    assert check_gradients(cfg, eps=0.5, n_examples=8).overall > SUSPECT  # truncation error ~ eps^2
    assert check_gradients(cfg, eps=1e-13, n_examples=8).overall > SUSPECT  # rounding error ~ 1e-16 / eps


def test_relu_kinks_break_the_check():
    cfg = RunConfig(dataset="blobs", hidden=(6, 6), activation="relu", seed=2)
    away = check_gradients(cfg, n_examples=8)
    kinks = check_gradients(cfg, at_kinks=True, n_examples=8)
    assert away.overall < GOOD
    assert max(r.rel_diff for r in kinks.layers[:2]) > SUSPECT
    assert any("kink" in note for note in kinks.notes)
    with pytest.raises(ValueError, match="ReLU"):
        check_gradients(cfg.replace(activation="tanh"), at_kinks=True, n_examples=8)


def test_batched_differences_equal_the_naive_loop():
    cfg = RunConfig(**TINY, activation="elu", norm="batchnorm", l1=0.01)
    model = _prepare(build_model(cfg, (2,), 4, torch.Generator().manual_seed(0)), torch.float64, False, 0)
    objective = _Objective(cfg, model)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 2, dtype=torch.float64, generator=g), torch.randint(0, 4, (6,), generator=g)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}
    for _, names in layer_groups(model):
        for name in names:
            entries = torch.arange(params[f"model.{name}"].numel())
            fast = numeric_gradient(objective, params, f"model.{name}", entries, x, y, 1e-6)
            slow = numeric_gradient(objective, {k[6:]: v for k, v in params.items()}, name, entries, x, y, 1e-6,
                                    batched=False)
            torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-9)


def test_a_trained_model_handed_in_is_checked():
    cfg = RunConfig(dataset="blobs", hidden=(8,), activation="tanh", optimizer="sgd", lr=0.5)
    lanes = ModuleLanes([cfg], (2,), 4, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 2, generator=g), torch.randint(0, 4, (32,), generator=g)
    before = [p.detach().clone() for p in lanes.model.parameters()]
    for _ in range(20):
        total, _, _ = lanes.losses(x, y)
        lanes.optimizers[0].zero_grad()
        total.backward()
        lanes.optimizers[0].step()
    assert not torch.equal(before[0], lanes.model[1].weight.detach())
    result = check_gradients(cfg, model=lanes.model, batch=(x, y))
    assert result.settings["where"] == "the model handed in"
    assert result.overall < GOOD


def test_a_stored_run_that_no_longer_exists_is_named(tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(RunGone, match="no longer exists"):
        check_stored_run("run-000000000000000000000000", store.get)
    cfg = RunConfig(**TINY)
    store.put(cfg.key(), cfg.to_dict(), [])
    result = check_stored_run(cfg.key(), store.get, n_examples=8)
    assert result.overall < GOOD
    assert "at its initialization" in result.notes[0] and result.settings["at"] == "init"
    assert "final weights are stored too" not in result.notes[0]  # an empty run has none


def test_bad_options_are_refused_with_a_reason():
    cfg = RunConfig(**TINY)
    with pytest.raises(ValueError, match="positive"):
        check_gradients(cfg, eps=0.0)
    with pytest.raises(ValueError, match="mistake"):
        check_gradients(cfg, mistake="nonsense")


def test_the_cli_prints_the_per_layer_table(capsys):
    assert main(["gradcheck", "--preset", "B-regularization", "--set", "dataset=digits", "--max-entries", "200"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["layer", "checked", "total", "rel"])
    rows = [line.split() for line in lines[header + 1:header + 5]]
    assert [r[0] for r in rows] == ["fc1", "fc2", "fc3", "fc4"]
    assert all(float(r[3]) < GOOD and r[4] == "right" for r in rows)
    assert int(rows[0][1]) < int(rows[0][2])  # 64*13+13 entries, 200 sampled
    assert main(["gradcheck", "--preset", "B-regularization", "--set", "dataset=digits", "--mistake", "perturb_copy",
                 "--max-entries", "50"]) == 0
    out = capsys.readouterr().out
    assert "1.000e+00  wrong" in out and "seeds' mistake" in out and "nearest the output" not in out
    assert main(["gradcheck", "--preset", "B-regularization", "--set", "lr=-1"]) == 2
    assert "Learning rate" in capsys.readouterr().err


def test_seed_value_is_reproduced_by_perturbing_a_copy_and_float32_is_checked_at_every_seed():
    cfg = _b_network()
    (right,), float32, (copy_,) = seed_variants(cfg, max_entries=300).values()
    assert right.overall < GOOD
    assert abs(copy_.overall - SEED_VALUE) < 1e-12  # 1 to every printed digit but the last four
    assert all(r.numeric_norm == 0.0 for r in copy_.layers)
    assert [r.settings["seed"] for r in float32] == list(range(cfg.seed, cfg.seed + FLOAT32_SEEDS))
    for result in float32[:3]:  # each seed's check is the check of that seed's network alone
        alone = check_gradients(cfg.replace(seed=result.settings["seed"]), dtype=torch.float32, eps=1e-7,
                                max_entries=300)
        assert result.overall == alone.overall and result.table() == alone.table()


def test_the_float32_job_at_several_seeds_counts_the_seeds_that_read_one():
    """One real multi-seed check on digits: the sentence's count is the number of seeds whose own check reads ≈1."""
    cfg, seeds = _b_network(), 8
    events = []
    end = run_gradcheck(GradCheckConfig(cfg, SEED_VARIANTS[FLOAT32], seeds=seeds), events.append)
    assert end.kind == "finished" and end.status == "finished"
    float32 = [GradCheck.from_event(e) for e in events if e.kind == "gradcheck"]
    assert [r.settings["seed"] for r in float32] == list(range(cfg.seed, cfg.seed + seeds))
    alone = [check_gradients(cfg.replace(seed=seed), **SEED_VARIANTS[FLOAT32].kwargs())
             for seed in range(cfg.seed, cfg.seed + seeds)]
    assert [r.overall for r in float32] == [r.overall for r in alone]
    count = sum(1 - r.overall < 1e-3 for r in alone)
    right = check_gradients(cfg, max_entries=50)
    copy_ = check_gradients(cfg, mistake="perturb_copy", max_entries=50)
    text = " ".join(seed_check_lines(right, float32, copy_))
    assert f"≈1 (1 − value < 0.001, the way the seed's 0.99999 is read) at {count} of {seeds}" in text
    assert ("likely cause" in text) == (count == 0)


def test_a_check_of_several_seeds_is_bounded_costs_once_per_seed_and_keeps_one_seed_keys():
    cfg = _b_network()
    one = GradCheckConfig(cfg, SEED_VARIANTS[FLOAT32])
    many = one.replace(seeds=FLOAT32_SEEDS)
    assert "seeds" not in one.to_dict() and GradCheckConfig.from_json(many.to_json()) == many
    assert many.key() != one.key()
    assert estimate(many).cost == pytest.approx(FLOAT32_SEEDS * estimate(one).cost)
    for bad in (0, MAX_SEEDS + 1, 2.5, True):
        with pytest.raises(ConfigError, match="seeds must be a whole number"):
            one.replace(seeds=bad)
    with pytest.raises(ConfigError, match="one initialization"):
        GradCheckConfig(cfg, CheckOptions(), "run-0123", seeds=2)
    with pytest.raises(ConfigError, match="largest seed"):
        GradCheckConfig(cfg.replace(seed=2**31 - 2), CheckOptions(), seeds=3)


@pytest.mark.slow
def test_the_b_preset_on_fashion3_reads_below_1e7_and_the_seed_mistake_reads_one(shared_fashion):
    cfg = get_preset("B-regularization").config
    assert cfg.dataset == "fashion3" and cfg.hidden == (13, 13, 13)
    (right,), _, (copy_,) = seed_variants(cfg, seeds={label: 1 for label in SEED_VARIANTS}, max_entries=None).values()
    assert [r.total for r in right.layers] == [784 * 13 + 13, 13 * 13 + 13, 13 * 13 + 13, 13 * 3 + 3]
    assert all(r.checked == r.total for r in right.layers)
    assert right.overall < GOOD and all(r.rel_diff < GOOD for r in right.layers)
    assert abs(copy_.overall - SEED_VALUE) < 1e-12


def test_check_options_round_trip_through_a_link_and_name_bad_values():
    options = CheckOptions(precision="float32", eps=1e-7, backprop="by_hand", bug="mean_sum_mismatch", bug_layer=2,
                           dropout_on=True, kinks=True, mistake="perturb_copy", examples=8, at="final")
    assert CheckOptions.from_query(options.to_query()) == options
    assert "at" not in options.kwargs()  # check_stored_run's own argument
    assert CheckOptions().to_query() == {}
    assert options.kwargs()["bugs"] == {1: "mean_sum_mismatch"} and options.kwargs()["dtype"] == torch.float32
    with pytest.raises(ConfigError) as info:
        CheckOptions.from_query({"eps": "lots", "examples": "2.5"})
    assert set(info.value.problems) == {"eps", "examples"}
    with pytest.raises(ConfigError, match="at must be one of init, final"):
        CheckOptions(at="halfway")
    with pytest.raises(ConfigError, match="by_hand"):
        CheckOptions(bug="transposed_weight")


def test_the_diagnosis_explains_a_numeric_gradient_of_zero():
    cfg = _b_network()
    float32 = check_gradients(cfg, dtype=torch.float32, eps=1e-7, max_entries=200)
    zeroed = [r.layer for r in float32.layers if r.numeric_norm == 0]
    assert zeroed and diagnose(float32).cause == "rounded" and diagnose(float32).layers == tuple(zeroed)
    assert f"In {join_words(zeroed)} every loss change" in check_diagnosis(float32)[1]
    copy_ = check_gradients(cfg, mistake="perturb_copy", max_entries=50)
    assert diagnose(copy_).cause == "copy" and "the copy was perturbed" in check_diagnosis(copy_)[1]
    right = check_gradients(cfg, max_entries=50)
    assert diagnose(right).cause == "right" and check_diagnosis(right)[1] is None


def test_a_copy_perturbed_hides_a_planted_bug_and_the_headline_says_so():
    """All layers read 1 with the copy on, so the layer nearest the output (fc4) is above 1e-5: the headline must
    name the copy and the planted fc1 bug it hides, as the explanation does, never a backward bug at fc4."""
    cfg = RunConfig(dataset="blobs", hidden=(5, 5, 5), activation="tanh", seed=1)
    bug = {0: "missing_activation_derivative"}
    bugged = check_gradients(cfg, n_examples=8, backprop="by_hand", bugs=bug, mistake="perturb_copy")
    assert all(r.rel_diff == 1.0 for r in bugged.layers) and bugged.first_wrong_layer() == bugged.layers[-1].layer
    headline, explanation = check_diagnosis(bugged)
    assert "seeds' mistake" in headline and "fc1" in headline and "copy" in explanation
    assert "nearest the output" not in headline and bugged.layers[-1].layer not in headline
    alone = check_gradients(cfg, n_examples=8, backprop="by_hand", bugs=bug)
    assert diagnose(alone).cause == "backward" and diagnose(alone).layer == "fc1"


def _same_check(a: GradCheck, b: GradCheck) -> None:
    assert a.table() == b.table() and a.pairs == b.pairs and a.overall == b.overall
    assert a.notes == b.notes and a.settings == b.settings


@pytest.mark.parametrize("options", [CheckOptions(examples=8), CheckOptions(precision="float32", eps=1e-7, examples=8),
                                     CheckOptions(backprop="by_hand", bug="mean_sum_mismatch", bug_layer=2, examples=8),
                                     CheckOptions(mistake="perturb_copy", kinks=True, examples=8)])
def test_a_check_job_gives_what_the_check_gives_called_directly(isolated_cache, options):
    cfg = RunConfig(**TINY, activation="relu")
    check = GradCheckConfig(cfg, options)
    manager = JobManager(RunStore(isolated_cache / "runs"), processes=False)
    snap = manager.wait(manager.submit(check), timeout=300)
    assert snap.kind == "gradcheck" and snap.status == "finished", snap.error
    (done,) = [e for e in snap.events if e.kind == "gradcheck"]
    direct = check_gradients(cfg, **options.kwargs())
    _same_check(GradCheck.from_event(done), direct)
    replayed = JobManager(RunStore(isolated_cache / "runs"), processes=False)  # another server: from the store
    replayed.submit(check)
    again = replayed.snapshot(check.key())
    assert again.from_cache and again.status == "finished"
    _same_check(GradCheck.from_event(next(e for e in again.events if e.kind == "gradcheck")), direct)


def test_a_check_config_round_trips_and_refuses_final_weights_without_a_run():
    check = GradCheckConfig(RunConfig(**TINY), CheckOptions(eps=1e-5, at="final"), "run-0123", "v1")
    assert GradCheckConfig.from_json(check.to_json()) == check and check.key().startswith("gradcheck-")
    assert check.key() != check.replace(run_version="v2").key() and check.device == "cpu"
    with pytest.raises(ConfigError, match="stored run"):
        GradCheckConfig(RunConfig(**TINY), CheckOptions(at="final"))
    with pytest.raises(ConfigError, match="Unknown gradient-check setting"):
        GradCheckConfig.from_dict({"run": {}, "options": {"speed": 2}})


def test_a_failing_check_ends_the_job_with_its_reason():
    events = []
    end = run_gradcheck(GradCheckConfig(RunConfig(**TINY, norm="batchnorm"), CheckOptions(backprop="by_hand")),
                        events.append)
    assert end.kind == "failed" and "plain MLP" in end.message and events == [end]
    gone = run_gradcheck(GradCheckConfig(RunConfig(**TINY), CheckOptions(), "run-000000000000000000000000"),
                         events.append, read_run=lambda key: None)
    assert gone.kind == "failed" and "no longer exists" in gone.message


def test_the_check_event_round_trips_through_the_store_encoding():
    result = check_gradients(RunConfig(**TINY), n_examples=4, mistake="perturb_copy")
    (back,), _ = decode_events(*encode_events([result.to_event()]))
    _same_check(GradCheck.from_event(back), result)


def test_a_check_of_several_seeds_cancelled_midway_ends_with_the_seeds_done():
    cancel, events = threading.Event(), []

    def emit(event):
        events.append(event)
        if event.kind == "gradcheck":
            cancel.set()  # the reader cancels while the first initialization's result arrives

    end = run_gradcheck(GradCheckConfig(RunConfig(**TINY), CheckOptions(examples=4), seeds=3), emit, cancel)
    assert end.status == "cancelled" and "1 of 3" in end.reason
    (done,) = [e for e in events if e.kind == "gradcheck"]
    _same_check(GradCheck.from_event(done), check_gradients(RunConfig(**TINY), n_examples=4))
