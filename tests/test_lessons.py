"""The lessons teach what their runs show (issue 9): the relation each lesson states, on real data
(slow) and on its Digits fallback (fast); sentences written from results; the reports' accuracy
mistake reproduced next to the correct metric."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from core.engine import data as datasets
from core.lessons import families
from core.lessons import sentences as lessons
from core.lessons import verdicts
from core.lessons.noise import Scored
from core.lab.gradcheck.result import GradCheck, LayerCheck
from core.engine.config import RunConfig
from core.lab.grid import GridConfig, cell_events, run_grid
from core.lessons.presets import A_FALLBACK, FALLBACK_DATASET, PRESETS, RELU_BELOW, get_preset
from core.engine.train import noisy_labels, train_split

A_PRESETS = [p for p in PRESETS.values() if p.lesson == "A"]


def _train_cells(cells: list[tuple[str, RunConfig]]) -> dict[str, object]:
    """Train (label, config) cells as one grid job; the terminal event of each, by label."""
    events: list = []
    grid = GridConfig.from_runs(cells)
    run_grid(grid, events.append)
    per_cell = cell_events(events)
    return {label: per_cell[i][-1] for i, (label, _) in enumerate(grid.cells())}


def _stuck(end) -> bool:
    """The lessons' one stuck verdict (core.lessons.verdicts.is_stuck) on a finished run's test metrics."""
    return verdicts.is_stuck(end.test_acc, end.test_loss, len(end.confusion), confusion=end.confusion)


def _learned(end, n_classes: int) -> bool:
    """Well above chance, and a loss clearly below that of uniform guessing."""
    return end.status == "finished" and end.test_acc > 3 / n_classes and end.test_loss < 0.75 * math.log(n_classes)


def _cells(preset, labels, **changes) -> list[tuple[str, RunConfig]]:
    runs = dict(preset.runs)
    return [(label, runs[label].replace(**changes)) for label in labels]


# --- presets: fallbacks and descriptions ----------------------------------------------------------------
def test_a_lesson_on_a_server_without_its_dataset_trains_on_digits_with_its_fallback_settings():
    fixes = get_preset("A-fixes")
    here, missing = fixes.for_server(available=lambda name: False)
    assert missing == "mnist"
    assert {cfg.dataset for _, cfg in here.runs} == {FALLBACK_DATASET}
    overrides = dict(fixes.fallback.overrides)
    for (label, cfg), (_, fell_back) in zip(fixes.runs, here.runs):
        assert fell_back == cfg.replace(dataset=FALLBACK_DATASET, **overrides), label
    assert fixes.fallback.why in here.description
    same, none_missing = fixes.for_server(available=lambda name: True)
    assert same is fixes and none_missing is None


def test_descriptions_state_what_is_tested_not_an_outcome():
    for preset in A_PRESETS:
        text = preset.description
        assert "2.3026" not in text and "~0.10" not in text and "0.10" not in text.replace("0.0099", ""), preset.name
        assert "experiment" in text.lower(), preset.name


def test_fixes_depth_is_the_same_in_the_preset_and_its_seed_family():
    assert get_preset("A-fixes").config.depth == get_preset("A-sigmoid-seeds").config.depth
    seeds = [cfg.seed for _, cfg in get_preset("A-sigmoid-seeds").runs]
    assert len(set(seeds)) == 3
    # the seed family is the fixes' baseline, seed apart
    assert get_preset("A-sigmoid-seeds").config.replace(seed=0) == get_preset("A-fixes").config


# --- sentences from results (synthetic) ------------------------------------------------------------------
def test_fixes_sentence_names_what_learned_and_what_stayed_stuck():
    result = {"sigmoid": True, "relu + he": False, "sigmoid + batchnorm": False, "sigmoid + xavier": True}
    text = lessons.fixes_sentence(result, "sigmoid", epochs=1)
    learned, stuck = text.split("learned.")[0], text.split("learned.")[1]
    assert "relu + he" in learned.lower() and "batchnorm" in learned
    assert "xavier" in stuck and "stays stuck" in stuck and "relu" not in stuck
    assert "is stuck" in text.split(".")[0]
    everyone = lessons.fixes_sentence({"sigmoid": True, "relu": False}, "sigmoid", epochs=5)
    assert "not every fix" not in everyone and "stuck" not in everyone.split("is stuck.")[1]
    escaped = lessons.fixes_sentence({"sigmoid": False, "sigmoid, lr 0.05": True}, "sigmoid", epochs=5)
    assert "(sigmoid) is not stuck" in escaped and "Sigmoid, lr 0.05 stays stuck" in escaped


def test_fixes_sentence_before_results_says_only_what_is_tested():
    text = lessons.fixes_sentence({"sigmoid": None, "relu": False}, "sigmoid", epochs=1)
    assert "experiment" in text.lower() and "learned" not in text and "stays stuck" not in text


def test_seeds_sentence_counts_the_stuck_seeds():
    assert lessons.seeds_sentence({0: False, 1: True, 2: False}, 5).startswith("1 of 3 seeds got stuck")
    assert "seed 1" in lessons.seeds_sentence({0: False, 1: True, 2: False}, 5)
    assert lessons.seeds_sentence({0: True, 1: True, 2: True}, 5).startswith("All 3 seeds")
    assert lessons.seeds_sentence({0: False, 1: False, 2: False}, 5).startswith("None of the 3")
    pending = lessons.seeds_sentence({0: True, 1: None, 2: False}, 5)
    assert "got stuck" not in pending and "experiment" in pending.lower()


def _gap(train_acc: float, val_acc: float, n_train: int = 2048, n_val: int = 6000) -> lessons.GapRun:
    return lessons.GapRun(Scored(train_acc, n_train), Scored(val_acc, n_val))


def test_regularization_sentence_says_which_narrowed_the_gap_and_by_how_much():
    gaps = {"none": _gap(1.0, 0.80), "L2 0.01": _gap(0.95, 0.84), "dropout 0.5": _gap(0.97, 0.83),
            "L1 0.0003": _gap(0.995, 0.80)}
    text = lessons.regularization_sentence(gaps, "none", spread=0.02)
    assert "0.200 ahead" in text
    narrowed, rest = text.split(" narrow it.")[0], text.split(" narrow it.")[1]
    assert "L2 0.01 to 0.110 (by 0.090)" in narrowed and "dropout 0.5 to 0.140 (by 0.060)" in narrowed
    assert "L1 0.0003" not in narrowed and "L1 0.0003 makes no difference" in rest
    assert "0.020" in rest
    flat = lessons.regularization_sentence({"none": _gap(0.905, 0.90), "L2": _gap(0.904, 0.90)}, "none", spread=0.01)
    assert "nothing for a regularizer to narrow" in flat and "narrows it" not in flat
    pending = lessons.regularization_sentence({"none": _gap(0.9, 0.7), "L2": None}, "none")
    assert "experiment" in pending.lower() and "ahead" not in pending.split("experiment")[0]


def test_stuck_verdicts_follow_the_test_metrics_and_wait_for_them():
    class End:  # what a finished run carries
        def __init__(self, acc, loss, confusion):
            self.test_acc, self.test_loss, self.confusion = acc, loss, confusion

    one_answer = [[0, 0, 30], [0, 0, 50], [0, 0, 20]]  # everything predicted as class 2 (20% of the data)
    learned = [[28, 1, 1], [2, 47, 1], [1, 1, 18]]
    verdicts_ = lessons.stuck_verdicts([("flat", End(0.20, math.log(3), one_answer)),
                                        ("good", End(0.93, 0.2, learned)), ("training", None)])
    assert verdicts_ == {"flat": True, "good": False, "training": None}


def test_seeds_grid_is_one_job_of_the_same_network_per_seed():
    base = get_preset("A-fixes").config
    grid = families.seeds_grid(base)
    cells = [cfg for _, cfg in grid.cells()]
    assert [c.seed for c in cells] == [cfg.seed for _, cfg in get_preset("A-sigmoid-seeds").runs]
    assert all(c.replace(seed=base.seed) == base for c in cells)


def test_stuck_share_text_is_computed_from_the_dataset_used():
    y_test = datasets.load_dataset("digits").y_test
    shares = torch.bincount(y_test, minlength=10).float() / len(y_test)
    text = lessons.stuck_share_text(torch.bincount(y_test, minlength=10).tolist(), "Digits")
    assert f"{shares.min():.3f}" in text and f"{shares.max():.3f}" in text and "ln 10 = 2.3026" in text


def test_stuck_share_on_a_dataset_reads_that_datasets_test_set():
    y_test = datasets.load_dataset("digits").y_test
    counts = torch.bincount(y_test, minlength=10).tolist()
    assert lessons.stuck_share_on("digits", "Digits") == lessons.stuck_share_text(counts, "Digits")


def test_stuck_by_seed_reads_each_cells_seed_from_the_grid_not_its_label():
    grid = families.seeds_grid(get_preset("A-fixes").config, seeds=(3, 7))
    (first, _), (second, _) = grid.cells()
    assert families.stuck_by_seed(grid, {first: True, second: False}) == {3: True, 7: False}
    pending = families.stuck_by_seed(grid, {first: True})  # the other cell still trains
    assert pending == {3: True, 7: None}
    assert "experiment" in lessons.seeds_sentence(pending, 5).lower()


def test_the_vanishing_grid_is_lessons_a_settings_across_activations_and_depths():
    a = get_preset("A-sigmoid-depth").config
    for grid, epochs in ((families.VANISHING_LESSON, a.epochs), (families.VANISHING_QUICK, 1)):
        base = grid.base
        assert (base.dataset, base.batch_size, base.optimizer, base.lr, base.val_fraction, base.epochs) == \
               (a.dataset, a.batch_size, a.optimizer, a.lr, a.val_fraction, epochs)
        assert grid.width == a.hidden[0] and set(grid.activations) == {"sigmoid", "tanh", "relu"}
        assert {cfg.depth for _, cfg in grid.cells()} == set(range(1, 9))
    assert families.vanishing_log_every("mnist") > families.vanishing_log_every("digits")


def test_quadratic_theory_states_the_textbook_rates():
    for kappa in (4.0, 100.0):
        text = lessons.quadratic_theory(kappa)
        root = math.sqrt(kappa)
        assert f"{(kappa - 1) / (kappa + 1):.3f}" in text and f"{(root - 1) / (root + 1):.3f}" in text
        assert f"{2 / (1 + kappa):.3g}" in text  # gradient descent's best step on eigenvalues in [1, kappa]


def test_checked_weights_text_names_the_weights_the_check_ran_on():
    assert "the network above" in lessons.checked_weights_text({"run": None, "where": "initialization"})
    final = lessons.checked_weights_text({"run": "run-abc", "at": "final", "step": 120})
    assert "run-abc" in final and "after 120 training steps" in final
    assert "initialization" in lessons.checked_weights_text({"run": "run-abc", "at": "init"})


# --- the reports' accuracy mistake (seeds 000/001), reconstructed -----------------------------------------
def test_accuracy_as_the_report_computed_it_prints_about_0_01_for_a_stuck_model():
    ds = datasets.load_dataset("digits")
    y = ds.y_test
    for top in (0, 3, 7):  # a stuck network: the same answer for every input
        logits = torch.zeros(len(y), 10)
        logits[:, top] = 1.0
        share = (y == top).float().mean().item()
        assert lessons.accuracy(logits, y) == pytest.approx(share)
        as_reported = lessons.accuracy_as_reported(logits, y)
        assert as_reported == pytest.approx(share / 10) and 0.005 < as_reported < 0.015
        assert lessons.printed_as_reported(lessons.accuracy(logits, y), 10) == pytest.approx(as_reported)
    # 3 classes (lesson B's folder): a model right 55% of the time is printed as ~0.18
    y3 = torch.arange(300) % 3
    logits3 = torch.nn.functional.one_hot(torch.where(torch.arange(300) < 165, y3, (y3 + 1) % 3), 3).float()
    assert lessons.accuracy(logits3, y3) == pytest.approx(0.55)
    assert lessons.accuracy_as_reported(logits3, y3) == pytest.approx(0.55 / 3)


# --- the seeds' 0.99999: the conclusion follows how many float32 initializations read ≈1 ----------------------
def _check(overall: float, layers: list[float], seed: int = 0) -> GradCheck:
    """A hand-built check: ``layers`` are the per-layer relative differences."""
    rows = [LayerCheck(f"fc{i + 1}", [], 10, 10, d, 0.0 if d == 1.0 else 1.0, 1.0) for i, d in enumerate(layers)]
    return GradCheck(rows, [], overall, {"dtype": "float32", "seed": seed})


@pytest.mark.parametrize("values", [[0.74, 0.968, 0.5, 0.9], [0.744, 1.0, 0.968, 0.9995], [1.0, 0.9999, 1.0]])
def test_seed_check_lines_conclude_from_the_float32_count(values):
    right = _check(1e-9, [1e-9] * 4)
    copy_ = _check(1.0, [1.0] * 4)
    float32 = [_check(v, [1.0, 1.0, 1.0, v], seed) for seed, v in enumerate(values)]
    count = sum(1 - v < 1e-3 for v in values)  # ≈1 as the seed's 0.99999 is read
    text = " ".join(lessons.seed_check_lines(right, float32, copy_))
    assert f"at {count} of {len(values)}" in text
    assert f"from {min(values):.3f} to {max(values):.3f}" in text
    if count == 0:
        assert "the likely cause of the seed's 0.99999 is a perturbation that never reached the model" in text
    else:
        assert "likely cause" not in text and "does not tell the two causes apart" in text
        shown = [str(seed) for seed, v in enumerate(values) if 1 - v < 1e-3]
        assert count == len(values) or f"seed{'s' if len(shown) > 1 else ''} {lessons.join_words(shown)})" in text


# --- lesson A on its Digits fallback (fast) ---------------------------------------------------------------
def test_a_fixes_on_digits_fallback_sigmoid_stuck_while_relu_he_and_batchnorm_learn():
    fixes, _ = get_preset("A-fixes").for_server(available=lambda name: False)
    ends = _train_cells(_cells(fixes, ["sigmoid", "relu + he", "sigmoid + batchnorm"]))
    assert _stuck(ends["sigmoid"])
    assert _learned(ends["relu + he"], 10) and _learned(ends["sigmoid + batchnorm"], 10)
    text = lessons.fixes_sentence({label: _stuck(end) for label, end in ends.items()}, "sigmoid",
                                  fixes.config.epochs)
    assert "(sigmoid) is stuck" in text and "Relu + he and sigmoid + batchnorm learned." in text


def test_a_sigmoid_depth_on_digits_fallback_shallow_learns_deep_is_stuck():
    depth, _ = get_preset("A-sigmoid-depth").for_server(available=lambda name: False)
    ends = _train_cells(_cells(depth, ["sigmoid x1", "sigmoid x4"]))
    assert _learned(ends["sigmoid x1"], 10)
    assert _stuck(ends["sigmoid x4"])


FIX_LABELS = ("sigmoid", "relu + he", "sigmoid + batchnorm")


def _preset_fixes(grid: GridConfig) -> list[tuple[str, RunConfig]]:
    """The Vanishing page's fixes after the LESSONS A preset (its depth, A_LESSON_FIXES_DEPTH): the plain sigmoid
    network and two of its fixes."""
    return [(label, cfg) for label, cfg in families.lesson_fixes(grid).cells() if label in FIX_LABELS]


def _assert_a_rescue(ends: dict) -> None:
    """Issue 26.1: the preset's plain network is stuck and at least one fix learns, and the sentence says so."""
    assert _stuck(ends["sigmoid"]), (ends["sigmoid"].test_acc, ends["sigmoid"].test_loss)
    learned = [label for label, end in ends.items() if label != "sigmoid" and _learned(end, 10)]
    assert learned, {label: (end.test_acc, end.test_loss) for label, end in ends.items()}
    text = lessons.fixes_sentence({label: _stuck(end) for label, end in ends.items()}, "sigmoid",
                                  round(ends["sigmoid"].epoch))
    assert "the plain network (sigmoid) is stuck." in text and " learned." in text


def test_lesson_a_preset_on_digits_fallback_fixes_a_stuck_sigmoid_network():
    grid = families.vanishing_fallback(families.VANISHING_LESSON)
    assert grid.base.dataset == FALLBACK_DATASET and grid.base.epochs == dict(A_FALLBACK.overrides)["epochs"]
    _assert_a_rescue(_train_cells(_preset_fixes(grid)))


def _assert_relu_below_passes_more_gradient_down(grid: GridConfig) -> None:
    """Issue 24.4 on the Vanishing page's fixes: with ReLU in the lower half, the first layer's gradient passes half
    as many sigmoid derivatives (each at most 1/4) on its way down, so relative to the last hidden layer's it is
    larger than in the all-sigmoid network (the relation, in the medians over the run's log points)."""
    fixes = dict(families.lesson_fixes(grid).cells())
    mixed = fixes[RELU_BELOW]
    below = mixed.depth // 2
    assert mixed.layer_activations == ("relu",) * below + ("sigmoid",) * (mixed.depth - below) and below >= 2
    events: list = []
    run_grid(GridConfig.from_runs([("sigmoid", fixes["sigmoid"]), (RELU_BELOW, mixed)]), events.append)
    ratios = []
    for per_cell in cell_events(events).values():
        layers = [e for e in per_cell if e.kind == "layers"]
        assert per_cell[-1].status == "finished" and len(layers) > 3
        ratios.append(statistics.median(e.grad_norm[0] / e.grad_norm[-2] for e in layers))
    assert ratios[1] > 3 * ratios[0], ratios


def test_relu_below_sigmoid_above_lets_more_gradient_reach_the_first_layers_on_digits():
    _assert_relu_below_passes_more_gradient_down(families.vanishing_fallback(families.VANISHING_LESSON))


@pytest.mark.slow
def test_relu_below_sigmoid_above_lets_more_gradient_reach_the_first_layers_on_mnist(shared_mnist):
    lesson = families.VANISHING_LESSON
    _assert_relu_below_passes_more_gradient_down(lesson.replace(base=lesson.base.replace(epochs=1)))


def test_d_optimizers_on_digits_all_learn():
    family, _ = get_preset("D-optimizers").for_server(available=lambda name: False)
    ends = _train_cells(list(family.runs))
    assert len(ends) == 6
    for label, end in ends.items():
        assert _learned(end, 10), (label, end.test_acc, end.test_loss)


# --- real data (slow) ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_d_six_optimizers_learn_fashion_mnist_in_one_epoch(shared_fashion):
    """Issue 9.1: RMSProp with its own alpha (0.99) and no momentum learns like the other five."""
    family = get_preset("D-optimizers")
    assert dict(family.runs)["rmsprop"].rms_alpha == 0.99 and dict(family.runs)["rmsprop"].rms_momentum == 0
    ends = _train_cells([(label, cfg.replace(epochs=1, log_every=10_000)) for label, cfg in family.runs])
    for label, end in ends.items():
        assert _learned(end, 10) and end.test_acc > 0.6, (label, end.test_acc, end.test_loss)


@pytest.mark.slow
def test_a_fixes_on_mnist_sigmoid_stuck_while_relu_he_and_batchnorm_learn(shared_mnist):
    """The Vanishing page's default: one epoch of MNIST at the fixes' depth."""
    fixes = get_preset("A-fixes")
    ends = _train_cells(_cells(fixes, ["sigmoid", "relu + he", "sigmoid + batchnorm"], epochs=1, log_every=10_000))
    assert _stuck(ends["sigmoid"])
    assert _learned(ends["relu + he"], 10) and _learned(ends["sigmoid + batchnorm"], 10)
    text = lessons.fixes_sentence({label: _stuck(end) for label, end in ends.items()}, "sigmoid", 1)
    assert "is stuck" in text and "stays stuck" not in text


@pytest.mark.slow
def test_lesson_a_preset_on_mnist_fixes_a_stuck_sigmoid_network(shared_mnist):
    """The LESSONS A preset as the coursework ran it: 5 epochs of MNIST (at depth 4 sigmoid escaped, 0.251)."""
    _assert_a_rescue(_train_cells(_preset_fixes(families.VANISHING_LESSON)))


# --- lesson B -------------------------------------------------------------------------------------------
def _gaps_and_spread(family, seeds_family) -> tuple[dict[str, lessons.GapRun], float]:
    """Train the family and the baseline's other seeds as one grid job: each variant's final train and validation
    accuracy, and how far the baseline's train - validation gap moves across seeds."""
    others = [(label, cfg) for label, cfg in seeds_family.runs if cfg.seed != family.config.seed]
    events: list = []
    grid = GridConfig.from_runs(list(family.runs) + others)
    run_grid(grid, events.append)
    per_cell = cell_events(events)
    runs = {label: lessons.gap_run(per_cell[i]) for i, (label, _) in enumerate(grid.cells())}
    spread = lessons.seed_spread([runs["none"].gap] + [runs[label].gap for label, _ in others])
    return {label: runs[label] for label, _ in family.runs}, spread


def _assert_regularizers_narrow_the_gap(runs: dict[str, lessons.GapRun], spread: float,
                                        regularizers: list[str]) -> None:
    gaps = {label: run.gap for label, run in runs.items()}
    assert gaps["none"] > 2 * spread and gaps["none"] > 0.05, (gaps, spread)  # the baseline overfits
    for label in regularizers:
        assert gaps["none"] - gaps[label] > spread, (label, gaps, spread)
    text = lessons.regularization_sentence(runs, "none", spread)
    for label in regularizers:
        assert f"{label} to {gaps[label]:.3f}" in text.split(" narrow")[0], text


@pytest.mark.slow  # trains every regularizer over several seeds (about two minutes)
def test_b_overfit_on_digits_fallback_each_regularizer_narrows_the_gap_more_than_seeds_move_it():
    """Issue 9.12: offline, lesson B still shows an overfitting baseline that each regularizer improves."""
    family, missing = get_preset("B-overfit").for_server(available=lambda name: False)
    seeds, _ = get_preset("B-overfit-seeds").for_server(available=lambda name: False)
    assert missing == "fashion-mnist" and family.config.dataset == FALLBACK_DATASET
    gaps, spread = _gaps_and_spread(family, seeds)
    _assert_regularizers_narrow_the_gap(gaps, spread, ["L1 0.0003", "L2 0.01", "dropout 0.5"])


def test_noisy_labels_change_only_the_training_labels_by_the_share_asked():
    cfg = RunConfig(dataset="digits", label_noise=0.2, train_limit=500, seed=4)
    ds = datasets.load_dataset("digits")
    train_idx, _ = train_split(cfg, len(ds.y))
    noisy = noisy_labels(cfg, ds.y, train_idx, ds.n_classes)
    changed = (noisy != ds.y).nonzero()[:, 0]
    assert len(changed) == round(0.2 * len(train_idx))
    assert set(changed.tolist()) <= set(train_idx.tolist())  # validation (and everything else) keeps its labels
    assert torch.equal(noisy_labels(cfg, ds.y, train_idx, ds.n_classes), noisy)  # seeded
    assert torch.equal(noisy_labels(cfg.replace(label_noise=0.0), ds.y, train_idx, ds.n_classes), ds.y)


@pytest.mark.slow
def test_b_overfit_each_regularizer_narrows_the_gap_more_than_seeds_move_it(shared_fashion):
    """Issue 9.8: the unregularized network's train - validation gap exceeds L2's and dropout's by more
    than it moves across seeds."""
    family = get_preset("B-overfit")
    gaps, spread = _gaps_and_spread(family, get_preset("B-overfit-seeds"))
    _assert_regularizers_narrow_the_gap(gaps, spread, ["L2 0.01", "dropout 0.5"])


# --- lesson E: the report's softmax before cross-entropy, side by side --------------------------------------
def test_e2_softmax_twice_on_digits_floors_the_loss_at_about_the_same_accuracy():
    family, _ = get_preset("E2-softmax-twice").for_server(available=lambda name: False)
    ends = _train_cells([(label, cfg.replace(epochs=10, log_every=10_000)) for label, cfg in family.runs])
    reported, correct = ends["#2 as reported (softmax twice)"], ends["#2 correct"]
    floor = math.log(1 + 9 / math.e)  # softmax of probabilities: the best case is one 1 among nine 0s
    assert _learned(correct, 10) and reported.test_acc > 0.8
    assert reported.test_loss >= floor - 1e-6 and reported.test_loss > 3 * correct.test_loss
