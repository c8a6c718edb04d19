"""Issue 21 (1, 2, 3, 5, 9): what the pages write about runs is what the runs support.

Comparison sentences call a difference inside the noise of the accuracies compared no difference;
a run whose configured loss is not the true cross-entropy shows the true one beside it and its caption
says so; the CE-vs-MSE sentence splits the gradient ratio into the class average and the softmax's
slope (checked against autograd); captions name the train examples actually scored; a seed whose loss
is still at ln(classes) only started to leave the plateau."""
from __future__ import annotations

import math
import random

import pytest
from apptest_helpers import new_app, texts
import torch
import torch.nn.functional as F

from app.figures import compare as compare_figures
from app.figures import run as figures
from app.records import compare as compare_records
from app.records import run as runview
from core.engine import data as datasets
from core.engine.config import RunConfig
from core.engine.events import RunStarted
from core.engine.lanes import data_loss
from core.engine.models import build_model
from core.engine.train import VAL_SUBSET, train
from core.serve import jobs
from core.lab.grid import GridConfig, cell_events, run_grid
from core.lessons import sentences as lessons
from core.lessons.noise import Scored, noise_margin
from core.lessons.presets import get_preset


def binomial_margin(*scored: tuple[float, int]) -> float:
    """The oracle: two standard errors of a difference of independent binomial proportions, each at least 1/n."""
    return 2 * math.sqrt(sum(max(p * (1 - p) / n, 1 / n ** 2) for p, n in scored))


def _grid_events(cells: list[tuple[str, RunConfig]]) -> dict[str, list]:
    events: list = []
    grid = GridConfig.from_runs(cells)
    run_grid(grid, events.append)
    per_cell = cell_events(events)
    return {label: per_cell[i] for i, (label, _) in enumerate(grid.cells())}


# --- 1. noise: a difference inside the margin is no difference --------------------------------------------
def test_noise_margin_is_two_binomial_standard_errors_never_below_the_resolution():
    rng = random.Random(21)
    for _ in range(200):
        pairs = [(rng.random(), rng.randint(1, 10_000)) for _ in range(rng.randint(1, 4))]
        assert noise_margin(*(Scored(p, n) for p, n in pairs)) == pytest.approx(binomial_margin(*pairs))
    assert noise_margin(Scored(1.0, 72)) == pytest.approx(2 / 72)  # a perfect score is known to one image
    with pytest.raises(ValueError, match="at least one"):
        noise_margin(Scored(0.5, 0))


def _random_gap_run(rng: random.Random, n_train: int, n_val: int) -> lessons.GapRun:
    val = rng.randint(0, n_val) / n_val
    train_ = rng.randint(round(val * n_train), n_train) / n_train
    return lessons.GapRun(Scored(train_, n_train), Scored(val, n_val))


def test_regularizers_whose_gap_differs_by_less_than_the_margin_always_make_no_difference():
    """Property (seeded sample): a variant whose gap is within the binomial margin of the baseline's is said to
    make no difference; one beyond it (and beyond the seeds' spread) is said to narrow or widen the gap."""
    rng = random.Random(2021)
    inside = beyond = 0
    for _ in range(400):
        n_train, n_val = rng.choice([(500, 72), (648, 72), (2048, 6000), (1293, 144), (2048, 12000)])
        spread = rng.choice([None, None, 0.0, rng.random() * 0.05])
        base = _random_gap_run(rng, n_train, n_val)
        variant = _random_gap_run(rng, n_train, n_val)
        text = lessons.regularization_sentence({"none": base, "V": variant}, "none", spread)
        margin = max(binomial_margin((base.train.acc, n_train), (base.val.acc, n_val),
                                     (variant.train.acc, n_train), (variant.val.acc, n_val)), spread or 0.0)
        if abs(base.gap - variant.gap) < margin:
            inside += 1
            assert "V makes no difference" in text and "V to" not in text and "V (" not in text, text
        elif abs(base.gap - variant.gap) > margin:
            beyond += 1
            assert "V makes no difference" not in text, text
            assert "V to" in text or "V (" in text, text
        base_margin = max(binomial_margin((base.train.acc, n_train), (base.val.acc, n_val)), spread or 0.0)
        assert ("nothing for a regularizer to narrow" in text) == (base.gap <= base_margin), text
    assert inside > 50 and beyond > 50  # both sides of the margin were sampled


def test_cross_entropy_and_mse_whose_accuracies_differ_by_less_than_the_margin_end_level():
    rng = random.Random(88)
    inside = beyond = 0
    for _ in range(400):
        n = rng.choice([72, 144, 6000, 12000])
        ce_acc, mse_acc = rng.randint(0, n) / n, rng.randint(0, n) / n
        if rng.random() < 0.5:  # close pairs, as in the audit (0.883 against 0.882 on 6000)
            mse_acc = min(1.0, max(0.0, ce_acc + rng.randint(-12, 12) / n))
        ce = lessons.LossRunSummary("cross-entropy", ce_acc, 0.3, 1.0, 10, 100, n, 10)
        mse = lessons.LossRunSummary("mse", mse_acc, 0.01, 0.05, 10, 100, n, 10)
        text = lessons.losses_sentence(ce, mse)
        margin = binomial_margin((ce_acc, n), (mse_acc, n))
        if abs(ce_acc - mse_acc) < margin:
            inside += 1
            assert "ended level" in text and "ended ahead:" not in text and "ahead here" not in text, text
        elif abs(ce_acc - mse_acc) > margin:
            beyond += 1
            assert ("Cross-entropy ended ahead" in text) == (ce_acc > mse_acc), text
            assert ("MSE ended ahead" in text) == (mse_acc > ce_acc), text
    assert inside > 50 and beyond > 50


def test_b_as_reported_on_digits_every_variant_within_the_noise_is_no_difference():
    """Lesson B as reported (its Digits fallback): what the sentence calls an effect is beyond the noise of
    the accuracies it compares, and everything else is called no difference."""
    family, _ = get_preset("B-regularization").for_server(available=lambda name: False)
    runs = {label: lessons.gap_run(events) for label, events in _grid_events(list(family.runs)).items()}
    base = runs["none"]
    assert base.train.n == min(VAL_SUBSET, base.train.n) and base.val.n > 0
    text = lessons.regularization_sentence(runs, "none")
    base_margin = binomial_margin((base.train.acc, base.train.n), (base.val.acc, base.val.n))
    assert ("nothing for a regularizer to narrow" in text) == (base.gap <= base_margin), text
    for label, run in runs.items():
        if label == "none":
            continue
        margin = binomial_margin((base.train.acc, base.train.n), (base.val.acc, base.val.n),
                                 (run.train.acc, run.train.n), (run.val.acc, run.val.n))
        named_effect = f"{label} to " in text or f"{label} ({run.gap:.3f})" in text
        assert named_effect == (abs(base.gap - run.gap) > margin), (label, text)


# --- 3. the CE-vs-MSE gradient ratio: the class average times the softmax's slope ---------------------------
def test_the_gradient_ratio_is_the_class_average_times_the_slope_by_autograd():
    """On a small network at initialization: autograd's CE / MSE (the app's, averaged over classes) gradient
    ratio splits into the number of classes and CE / summed squared error, which is what is left (the slope)."""
    ds = datasets.load_dataset("digits")
    x, y = ds.features()[:256], ds.y[:256]
    for seed in (0, 1, 2):
        cfg = RunConfig(dataset="digits", hidden=(32, 32), activation="relu", seed=seed)
        torch.manual_seed(seed)
        model = build_model(cfg, ds.input_shape, ds.n_classes)

        def layer_norms(loss_of) -> float:
            model.zero_grad()
            loss_of(model(x)).backward()
            weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
            return sum(float(w.grad.norm()) for w in weights) / len(weights)  # as the sentence reads the run

        ce = layer_norms(lambda logits: data_loss(cfg, logits, y))
        mse_mean = layer_norms(lambda logits: data_loss(cfg.replace(loss="mse"), logits, y))
        mse_sum = layer_norms(lambda logits: ((logits.softmax(1) - F.one_hot(y, 10).float()) ** 2).sum(1).mean())
        average, slope = lessons.mse_gradient_factors(ce / mse_mean, ds.n_classes)
        assert average * slope == pytest.approx(ce / mse_mean)
        assert average == ds.n_classes
        assert slope == pytest.approx(ce / mse_sum, rel=1e-4)  # the slope is the ratio to the summed error


def test_d_losses_on_digits_the_sentence_splits_the_runs_own_ratio():
    family, _ = get_preset("D-losses").for_server(available=lambda name: False)
    events = _grid_events(list(family.runs))
    ce, mse = (lessons.loss_run_summary(label, events[label]) for label in ("cross-entropy", "mse"))

    def first_norms(run_events) -> float:
        stats = next(e for e in run_events if e.kind == "layers")
        return sum(stats.grad_norm) / len(stats.grad_norm)

    ratio = first_norms(events["cross-entropy"]) / first_norms(events["mse"])
    text = lessons.losses_sentence(ce, mse)
    assert f"{ratio:.1f}x smaller with MSE" in text and "mean over the 10 classes of (p − y)²" in text
    assert "10x of that is the class average" in text
    if ratio / 10 > 1:
        assert f"remaining {ratio / 10:.1f}x is the softmax's slope" in text
    else:
        assert f"{10 / ratio:.1f}x larger than cross-entropy's" in text and "did not damp" in text
    margin = binomial_margin((ce.val_acc, ce.n_val), (mse.val_acc, mse.n_val))
    assert ("ended level" in text) == (abs(ce.val_acc - mse.val_acc) <= margin), text
    assert ce.n_val == events["mse"][0].dataset["n_val"]  # the last evaluation is at an epoch end: the whole split


# --- 2. softmax twice: the true cross-entropy beside the loss it trained on ---------------------------------
@pytest.fixture(scope="module")
def loss_runs() -> dict[str, list]:
    """The same digits network trained as report 004 did (softmax twice) and correctly."""
    out = {}
    for loss in ("softmax_cross_entropy", "cross_entropy"):
        events: list = []
        train(RunConfig(dataset="digits", loss=loss, epochs=8, log_every=10), [events.append])
        out[loss] = events
    return out


def test_a_softmax_twice_run_shows_the_true_cross_entropy_in_metrics_curves_and_caption(loss_runs):
    view = runview.reduce_events(loss_runs["softmax_cross_entropy"])
    fin = view.finished
    floor = math.log(1 + 9 / math.e)  # softmax of probabilities: the best case is one 1 among nine 0s
    assert view.shows_true_ce and fin.test_loss >= floor - 1e-6 and fin.test_ce != fin.test_loss
    final = view.final_metrics().set_index("split")
    assert final.loc["test", "true cross-entropy"] == fin.test_ce
    assert final.loc["test", "loss (softmax twice)"] == fin.test_loss
    assert final.loc["validation", "true cross-entropy"] == fin.val_ce
    last = [e for e in loss_runs["softmax_cross_entropy"] if e.kind == "eval"][-1]
    assert final.loc["train", "true cross-entropy"] == last.train_ce != last.train_loss
    curves = {t.name: t for t in figures.loss_figure(view).data}
    evals = [e for e in loss_runs["softmax_cross_entropy"] if e.kind == "eval"]
    assert list(curves["validation (true cross-entropy)"].y) == pytest.approx([e.val_ce for e in evals])
    assert list(curves["validation"].y) == pytest.approx([e.val_loss for e in evals])
    caption = runview.loss_caption(view)
    assert "reproduces report 004's mistake" in caption
    assert f"{floor:.4f}" in caption and f"{fin.test_ce:.4f}" in caption
    assert "test_ce" in runview.metrics_csv(view).splitlines()[0]

    correct = runview.reduce_events(loss_runs["cross_entropy"])
    assert not correct.shows_true_ce and list(correct.final_metrics().columns) == ["split", "loss", "accuracy"]
    assert [t.name for t in figures.loss_figure(correct).data] == ["train", "validation"]
    assert "mistake" not in runview.loss_caption(correct) and runview.loss_caption(correct) != caption


def test_the_results_table_shows_the_true_cross_entropy_when_a_variant_trained_on_another_loss(loss_runs):
    reported = runview.reduce_events(loss_runs["softmax_cross_entropy"])
    correct = runview.reduce_events(loss_runs["cross_entropy"])
    table = compare_records.results_table([("as reported", reported), ("correct", correct)]).set_index("variant")
    assert list(table["trained on"]) == ["softmax twice", "cross-entropy"]
    assert table.loc["as reported", "test cross-entropy"] == reported.finished.test_ce
    assert table.loc["as reported", "test loss"] == reported.finished.test_loss != reported.finished.test_ce
    assert table.loc["correct", "test cross-entropy"] == table.loc["correct", "test loss"]  # one loss: the true one
    alone = compare_records.results_table([("correct", correct)])
    assert list(alone.columns) == compare_records.RESULT_COLUMNS
    overlay = {t.name: t for t in compare_figures.overlay_figure([("as reported", reported), ("correct", correct)],
                                                                  "loss").data}
    assert list(overlay["as reported · true cross-entropy"].y) == pytest.approx(list(reported.evals["val_ce"]))
    assert "correct · true cross-entropy" not in overlay  # its loss is the true one


def test_the_run_page_of_a_softmax_twice_run_labels_its_loss_and_shows_the_true_one(isolated_cache):
    cfg = RunConfig(dataset="digits", loss="softmax_cross_entropy", epochs=3, log_every=10)
    manager = jobs.get_manager()
    done = manager.wait(manager.submit(cfg), timeout=240)
    assert done.status == "finished"
    end = next(e for e in done.events if e.kind == "finished")
    at = new_app(cfg.to_query())
    labels = {m.label: m.value for m in at.metric}
    assert "Test loss (softmax twice)" in labels and "Test loss" not in labels
    assert float(labels["Test cross-entropy (true)"]) == pytest.approx(end.test_ce, abs=1e-4)
    assert float(labels["Test loss (softmax twice)"]) == pytest.approx(end.test_loss, abs=1e-4)
    assert "reproduces report 004's mistake" in texts(at.caption)


# --- 5. the train subset the caption names ---------------------------------------------------------------
def test_train_metrics_are_said_to_be_scored_on_the_examples_actually_scored():
    events: list = []
    train(RunConfig(dataset="digits", train_limit=500, epochs=2, log_every=10), [events.append])
    view = runview.reduce_events(events)
    assert view.started.dataset["n_train"] == 500 and view.train_scored == 500
    for e in (e for e in events if e.kind == "eval"):  # accuracy = right answers / examples scored
        assert e.train_acc * 500 == pytest.approx(round(e.train_acc * 500), abs=1e-6)
    assert runview.train_scoring_words(view) == "all 500 training examples"
    assert compare_records.train_scoring_words([view, view, None]) == "all 500 training examples"
    big = runview.RunView(started=RunStarted("k", {}, "cpu", "cpu", 1, 1, 1, [], [], {"n_train": 54_000}, 0.0, {}))
    assert runview.train_scoring_words(big) == f"a fixed subset of {VAL_SUBSET:,} of the 54,000 training examples"
    assert "depending on the variant" in compare_records.train_scoring_words([view, big])


# --- 9. escaped, or only started to leave the plateau ----------------------------------------------------
class _End:
    def __init__(self, acc: float, loss: float, confusion: list[list[int]]):
        self.test_acc, self.test_loss, self.confusion = acc, loss, confusion


def _confusion(right: int, k: int = 10, per_class: int = 100) -> list[list[int]]:
    """Each class: ``right`` answers right, the rest spread evenly over the other classes."""
    rest = per_class - right
    return [[right if t == p else rest // (k - 1) + (1 if (p - t) % k <= rest % (k - 1) and p != t else 0)
             for p in range(k)] for t in range(k)]


def test_a_seed_still_at_ln_classes_only_started_to_leave_the_plateau():
    one_answer = [[100 if p == 3 else 0 for p in range(10)] for _ in range(10)]
    ends = [("seed 0", _End(0.90, 0.30, _confusion(90))), ("seed 1", _End(0.251, 2.3005, _confusion(25))),
            ("seed 2", _End(0.10, math.log(10), one_answer))]
    stuck = {int(label[-1]): v for label, v in lessons.stuck_verdicts(ends).items()}
    plateau = {int(label[-1]): v for label, v in lessons.plateau_verdicts(ends).items()}
    for label, end in ends:  # the oracle: within 5% of ln 10
        assert plateau[int(label[-1])] == (abs(end.test_loss - math.log(10)) <= 0.05 * math.log(10))
    assert stuck == {0: False, 1: False, 2: True}
    text = lessons.seeds_sentence(stuck, 5, plateau)
    assert text.startswith("1 of 3 seeds got stuck") and "seed 0 escaped" in text
    assert "seed 1 only started to leave the plateau" in text and "seeds 0 and 1 escaped" not in text
    none_stuck = lessons.seeds_sentence({0: False, 1: False}, 5, {0: False, 1: True})
    assert none_stuck.startswith("None of the 2 seeds got stuck") and "seed 1 only started to leave" in none_stuck
    assert "seed 0 escaped" in none_stuck
    assert lessons.plateau_verdicts([("training", None)]) == {"training": None}
