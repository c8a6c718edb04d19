"""What the lesson pages say about their runs, written from the results on screen (no UI).

A sentence that states an outcome is built from the runs' verdicts and numbers; while results
are not in, it says only what the experiment tests. Also here: what a stuck network scores on
the dataset actually used, what theory says about the 2-D race, what a gradient check says and why
the seeds' check printed 0.99999, and the coursework's accuracy mistake, reconstructed so that it can
be shown next to the correct metric.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from core.engine.catalog import load_dataset
from core.engine.events import Event
from core.lab import race
from core.lab.gradcheck.mistakes import SEED_VALUE
from core.lab.gradcheck.result import GOOD, SUSPECT, GradCheck
from core.lessons.verdicts import is_stuck


def join_words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _epochs(epochs: int) -> str:
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"


# --- LESSONS A -------------------------------------------------------------------------------------
def stuck_verdicts(cells: Sequence[tuple[str, Any]]) -> dict[str, bool | None]:
    """label -> stuck (core.lessons.verdicts, on the test metrics) for (label, finished event or None) pairs;
    None while a cell has no test metrics yet."""
    out: dict[str, bool | None] = {}
    for label, end in cells:
        if end is None or getattr(end, "test_acc", None) is None or not getattr(end, "confusion", None):
            out[label] = None
            continue
        out[label] = is_stuck(end.test_acc, end.test_loss, len(end.confusion), confusion=end.confusion)
    return out


def fixes_sentence(stuck: Mapping[str, bool | None], baseline: str, epochs: int) -> str:
    """Which fixes of the deep sigmoid network learned and which stayed stuck.

    ``stuck`` maps each run's label (``baseline`` = the unfixed network) to its stuck verdict,
    None while the run is not finished."""
    fixes = [label for label in stuck if label != baseline]
    if any(v is None for v in stuck.values()):
        return (f"The experiment: does the deep sigmoid network ({baseline}) stay stuck, and which of "
                f"{join_words(fixes)} make it learn within {_epochs(epochs)}?")
    learned = [label for label in fixes if not stuck[label]]
    still = [label for label in fixes if stuck[label]]
    parts = [f"After {_epochs(epochs)} the plain network ({baseline}) "
             + ("is stuck." if stuck.get(baseline) else "is not stuck: it has started to learn, so compare how far "
                                                         "each version got rather than whether it learned.")]
    if learned:
        parts.append(f"{_cap(join_words(learned))} learned.")
    if still:
        verb = "stays" if len(still) == 1 else "stay"
        parts.append(f"{_cap(join_words(still))} {verb} stuck: "
                     + ("not every fix is enough here." if learned else "none of the fixes was enough here."))
    return " ".join(parts)


def seeds_sentence(stuck: Mapping[int, bool | None], epochs: int) -> str:
    """How many seeds of the same network got stuck."""
    seeds = sorted(stuck)
    if any(v is None for v in stuck.values()):
        return (f"The experiment: the same network trained with seeds {join_words([str(s) for s in seeds])} "
                f"(different initial weights and batch order) for {_epochs(epochs)}. Does the seed decide "
                "whether it gets stuck?")
    hit = [s for s in seeds if stuck[s]]
    n = len(seeds)
    if not hit:
        return f"None of the {n} seeds got stuck within {_epochs(epochs)}."
    if len(hit) == n:
        return (f"All {n} seeds got stuck within {_epochs(epochs)}: with these settings the seed does not "
                "decide it.")
    which = join_words([str(s) for s in hit])
    return (f"{len(hit)} of {n} seeds got stuck within {_epochs(epochs)} (seed{'s' if len(hit) > 1 else ''} "
            f"{which}); the others escaped. Whether a deep sigmoid network escapes depends on its initial "
            "weights and batch order, so one run proves little either way.")


def stuck_share_text(class_counts: Sequence[int], dataset_title: str, split: str = "test set") -> str:
    """What a stuck network scores on this dataset: the share of the one class it predicts."""
    total = sum(class_counts)
    shares = [c / total for c in class_counts]
    k = len(class_counts)
    return (f"A stuck network gives every input the same answer, so its accuracy is the share of the class it "
            f"predicts: between {min(shares):.3f} and {max(shares):.3f} on the {dataset_title} {split}, "
            f"depending on the class; its loss is ln {k} = {math.log(k):.4f}.")


def stuck_share_on(dataset: str, dataset_title: str) -> str:
    """:func:`stuck_share_text` for ``dataset``'s test set (loaded once per process through the catalog)."""
    used = load_dataset(dataset)
    return stuck_share_text(used.y_test.bincount(minlength=used.n_classes).tolist(), dataset_title)


# --- LESSONS B -------------------------------------------------------------------------------------
def seed_spread(gaps: Sequence[float]) -> float:
    """How far a measure moves across seeds of the same network (max - min)."""
    return max(gaps) - min(gaps) if gaps else 0.0


def regularization_sentence(gaps: Mapping[str, float | None], baseline: str, spread: float | None = None) -> str:
    """Which regularizers narrowed the train - validation accuracy gap of ``baseline``, and by how much.

    ``gaps`` maps run labels to train accuracy - validation accuracy (None while unfinished);
    ``spread`` is how much the baseline's gap moves across seeds (None: one seed only)."""
    others = [label for label in gaps if label != baseline]
    if gaps.get(baseline) is None or any(gaps[label] is None for label in others):
        return (f"The experiment: how far train accuracy runs ahead of validation accuracy without "
                f"regularization ({baseline}), and whether {join_words(others)} narrow that gap.")
    base = gaps[baseline]
    margin = spread if spread is not None else 0.0
    parts = [f"Without regularization ({baseline}) train accuracy ends {base:.3f} ahead of validation."]
    if base <= margin or base <= 0:
        parts.append("Nothing overfits here, so there is no gap for a regularizer to close.")
    narrowed = [f"{label} to {gaps[label]:.3f} (by {base - gaps[label]:.3f})" for label in others
                if base - gaps[label] > margin]
    not_narrowed = [label for label in others if base - gaps[label] <= margin]
    if narrowed and base > margin:
        parts.append(f"{_cap(join_words(narrowed))} narrow{'s' if len(narrowed) == 1 else ''} it.")
    if not_narrowed and base > margin:
        parts.append(f"{_cap(join_words(not_narrowed))} {'does' if len(not_narrowed) == 1 else 'do'} not narrow "
                     "it by more than " + ("the seeds vary." if spread is not None else "zero."))
    if spread is not None:
        parts.append(f"Across seeds the baseline's gap moves by {spread:.3f}; smaller differences are noise.")
    else:
        parts.append("One seed only: train the baseline with more seeds to see how much of this is noise.")
    return " ".join(parts)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- LESSONS D -------------------------------------------------------------------------------------
def quadratic_theory(kappa: float) -> str:
    """What theory says about gradient descent and heavy-ball momentum on the quadratic of condition number kappa."""
    gd_step, gd_rate = race.optimal_gd(kappa)
    hb_step, hb_momentum, hb_rate = race.optimal_heavy_ball(kappa)
    return (f"Theory for κ = {kappa:g}: gradient descent with its best step {gd_step:.3g} shrinks the distance "
            f"to the minimum by (κ−1)/(κ+1) = {gd_rate:.3f} per step; heavy-ball momentum with step "
            f"{hb_step:.3g} and μ = {hb_momentum:.3f} by (√κ−1)/(√κ+1) = {hb_rate:.3f}.")


@dataclass
class LossRunSummary:
    """What the CE-vs-MSE sentence is written from: one run's final metrics and its early gradients."""

    label: str
    val_acc: float
    val_loss: float
    first_grad_norm: float  # mean over layers of the gradient norm at the first log point
    first_step: int  # that log point's step
    step: int  # the last evaluation's step


def loss_run_summary(label: str, events: Sequence[Event]) -> LossRunSummary | None:
    """The summary of a finished run (None while it has no evaluation or no layer statistics yet)."""
    evals = [e for e in events if e.kind == "eval"]
    layers = [e for e in events if e.kind == "layers"]
    if not evals or not layers:
        return None
    norms = [g for g in layers[0].grad_norm if g == g]
    return LossRunSummary(label, evals[-1].val_acc, evals[-1].val_loss,
                          sum(norms) / len(norms) if norms else float("nan"), layers[0].step, evals[-1].step)


def losses_sentence(ce: LossRunSummary, mse: LossRunSummary) -> str:
    """A sentence on cross-entropy vs MSE on softmax, written from the two runs' numbers."""
    ratio = ce.first_grad_norm / mse.first_grad_norm if mse.first_grad_norm > 0 else float("inf")
    if ratio > 1:
        grads = (f"At the first log point (step {ce.first_step}) the gradients reaching the "
                 f"layers were {ratio:.1f}x smaller with MSE than with cross-entropy: MSE on a softmax output "
                 "multiplies the error by the softmax's slope p(1 - p), which is small whenever a class "
                 "probability is near 0 or 1, even when that confident answer is wrong, while cross-entropy's "
                 "gradient on the logits is just p - y.")
    else:
        grads = (f"Here the early gradients were not smaller with MSE ({1 / ratio:.1f}x those of cross-entropy), "
                 "so the softmax's slope p(1 - p) did not damp this run much at the start.")
    if ce.val_acc > mse.val_acc:
        outcome = (f"Cross-entropy ended ahead: validation accuracy {ce.val_acc:.3f} against {mse.val_acc:.3f} "
                   "for MSE after the same steps.")
    elif ce.val_acc < mse.val_acc:
        outcome = (f"MSE ended ahead here: validation accuracy {mse.val_acc:.3f} against {ce.val_acc:.3f} "
                   "for cross-entropy after the same steps.")
    else:
        outcome = f"Both ended at validation accuracy {ce.val_acc:.3f}."
    return f"{grads} {outcome}"


# --- the gradient check (seeds 000/001) ------------------------------------------------------------
def check_verdict(result: GradCheck) -> str:
    """What a gradient check says about backprop, from its worst layer and the seeds' thresholds."""
    worst = max(result.layers, key=lambda r: r.rel_diff)
    if worst.rel_diff < GOOD:
        return f"Every layer reads below 1e-7 (worst: {worst.layer}, {worst.rel_diff:.1e}): backprop is right here."
    wrong = result.first_wrong_layer()
    if wrong is None:
        text = f"No layer is above 1e-5, but {worst.layer} reads {worst.rel_diff:.1e}, above 1e-7: doubtful."
        if result.settings.get("dtype") == "float64":
            text += (" In float64 this is often rounding, not a bug: a layer whose gradients are tiny (a sigmoid "
                     "network's first layers) loses digits in J(θ+ε) − J(θ−ε), an error that shrinks like 1/ε. Move ε "
                     "up tenfold (to 1e-5, then 1e-4): if the difference falls about tenfold each time, it was "
                     "rounding and backprop is right; a bug keeps it high at every ε.")
        return text
    wrong_diff = next(r for r in result.layers if r.layer == wrong).rel_diff
    return (f"{wrong} is the layer nearest the output above 1e-5 ({wrong_diff:.1e}). "
            "Backprop runs from the output down, so a backward bug first shows at its own layer (and taints "
            "every layer below it).")


def checked_weights_text(settings: Mapping[str, Any]) -> str:
    """Which weights a check ran on, in words."""
    run = settings.get("run")
    if run is None:
        return f"Weights checked: the network above, at its {settings['where']}."
    if settings.get("at") == "final":
        return (f"Weights checked: stored run {run} at its final weights, after {settings['step']} training steps "
                "(loaded from the run store).")
    return f"Weights checked: stored run {run} at its initialization (the run's seed and init, not what it learned)."


def seed_check_lines(right: GradCheck, float32: GradCheck, copy_: GradCheck) -> list[str]:
    """Why the seeds printed 0.99999, from the same network checked right, in float32 with ε = 1e-7, and
    perturbing a copy of the weights (:func:`core.lab.gradcheck.mistakes.seed_variants`)."""
    copy_ones = all(r.rel_diff == 1.0 for r in copy_.layers)
    float32_zero = [r.layer for r in float32.layers if r.numeric_norm == 0]
    lines = [f"The seed printed {SEED_VALUE!r} = 1 − {1 - SEED_VALUE:.1e}. A relative difference of 1 − δ with a "
             "tiny δ means one gradient is about δ times the other: effectively zero."]
    lines.append(f"Done right, this network reads {right.overall:.1e} "
                 f"({'below' if right.overall < GOOD else 'above'} 1e-7).")
    if copy_ones:
        lines.append("Perturbing a copy of the weights makes every numeric entry exactly 0 (the model never sees "
                     "the perturbation), so every layer and the whole network read exactly 1. The seed's value agrees "
                     "to 12 digits; its last digits say its numeric gradient was about 1e-13 of backprop's rather "
                     "than exactly 0.")
    lines.append(f"float32 with ε = 1e-7: in {', '.join(float32_zero) or 'no layer'} the loss change rounds to "
                 f"nothing (numeric gradient 0, difference 1), but the whole network reads {float32.overall:.3f}, "
                 "because the output layer's loss changes survive float32's rounding.")
    if copy_ones and float32.overall < 1 - SUSPECT:
        lines.append("So the likely cause of the seed's 0.99999 is a perturbation that never reached the model "
                     "(a copy); float32 with ε = 1e-7 alone does not give ≈1 for the whole network.")
    return lines


# --- the coursework's accuracy mistake (seeds 000/001) ------------------------------------------------
def accuracy_as_reported(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy as the reports printed it (a reconstruction, labelled as such on screen).

    Both questions of seeds 000/001 printed the true accuracy divided by the number of classes:
    0.0099 for a stuck 10-class MNIST model (true: the predicted class's share, ~0.10), and test
    accuracies of 0.18-0.21 at losses near ln 3 on the 3-class image folder. Counting correct
    answers and dividing by the number of entries of the [batch, classes] output, instead of by
    the batch size, gives exactly that. The reports' code is not in the seeds; this is the one
    plausible cause their numbers point to."""
    correct = (logits.argmax(dim=1) == y).sum()
    return float(correct) / logits.numel()


def printed_as_reported(accuracy_: float, n_classes: int) -> float:
    """What :func:`accuracy_as_reported` prints for a run whose correct accuracy is ``accuracy_``."""
    return accuracy_ / n_classes


REPORTED_BUG = ("the true accuracy divided by the number of classes: what counting correct answers and dividing "
                "by the entries of the [batch, classes] output instead of the batch size gives (our reconstruction "
                "from the reports' numbers; their code is not in the seeds)")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The correct metric: correct answers / examples."""
    return float((logits.argmax(dim=1) == y).sum()) / len(y)
