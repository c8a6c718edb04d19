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
from core.lab.gradcheck.mistakes import NEAR_ONE, SEED_VALUE, reads_one
from core.lab.gradcheck.result import GOOD, GradCheck, diagnose
from core.engine.train import VAL_SUBSET, scored_train_examples
from core.lessons.noise import Scored, beyond_noise, coarse, noise_margin
from core.lessons.verdicts import VANISHING_TEXT, Collapse, is_stuck, predicted_class_share, run_collapse


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


def collapse_verdicts(runs: Sequence[tuple[str, Sequence[Event]]]) -> dict[str, Collapse | None]:
    """label -> core.lessons.verdicts.run_collapse (what the grid's ↯ marks) for (label, the run's events) pairs;
    None while a run has no test yet, or when it has not collapsed."""
    return {label: run_collapse(events) for label, events in runs}


def collapse_cause_words(found: Collapse) -> str:
    """What the probes say caused a collapse, each named cause with the figure it was read from."""
    parts = []
    if found.dead is not None:
        layer, share = found.dead
        parts.append(f"dead units ({share:.0%} of hidden layer {layer}'s ReLU units output 0 for every probe input, so "
                     "no gradient reaches their weights to revive them)")
    if found.vanishing:
        parts.append(f"vanishing gradients (its first layer's gradient was below {VANISHING_TEXT} of the output "
                     "layer's from the start)")
    if found.saturated is not None:
        layer, share = found.saturated
        parts.append(f"saturation ({share:.0%} of hidden layer {layer}'s outputs sit where the activation is flat, "
                     "passing back less than a tenth of the gradient)")
    if not parts:
        return "none that the probes show (no dead or saturated layer, no vanishing gradient)"
    return join_words(parts)


def collapse_text(label: str, found: Collapse) -> str:
    """One collapsed network in words: how many answers are one class, and the cause."""
    return (f"{_cap(label)} collapsed: {found.answers:.0%} of its test answers are one class (that class is "
            f"{found.class_share:.0%} of the test set). Cause: {collapse_cause_words(found)}.")


def collapse_groups(collapsed: Mapping[Any, Collapse | None] | None, name: Any = str) -> list[tuple[list[str], Collapse]]:
    """The collapsed runs of ``collapsed`` (label -> collapse or None), grouped where the words would repeat: the
    same share of answers, the same class share and the same cause. Each group: (labels written by ``name``, the
    first one's collapse), in the order of first appearance."""
    groups: dict[tuple, tuple[list[str], Collapse]] = {}
    for label, found in (collapsed or {}).items():
        if found is not None:
            said = (f"{found.answers:.0%}", f"{found.class_share:.0%}", collapse_cause_words(found))
            groups.setdefault(said, ([], found))[0].append(name(label))
    return list(groups.values())


def collapse_group_text(labels: Sequence[str], found: Collapse) -> str:
    """:func:`collapse_text` for one label; for several, said once for all of them."""
    if len(labels) == 1:
        return collapse_text(labels[0], found)
    return (f"{_cap(join_words(list(labels)))} collapsed: {found.answers:.0%} of each one's test answers are one class "
            f"(the class each answers is {found.class_share:.0%} of the test set). Cause: {collapse_cause_words(found)}.")


def collapsed_sentence(collapsed: Mapping[Any, Collapse | None] | None, name: Any = str) -> str:
    """Every collapsed run in ``collapsed`` (label -> collapse or None) in words, each label written by ``name``,
    runs that would read the same said together (:func:`collapse_groups`); empty when none has collapsed."""
    return " ".join(collapse_group_text(labels, found) for labels, found in collapse_groups(collapsed, name))


def fixes_sentence(stuck: Mapping[str, bool | None], baseline: str, epochs: int,
                   collapsed: Mapping[str, Collapse | None] | None = None) -> str:
    """Which fixes of the deep sigmoid network learned and which stayed stuck, and which collapsed and why.

    ``stuck`` maps each run's label (``baseline`` = the unfixed network) to its stuck verdict,
    None while the run is not finished; ``collapsed`` each label to :func:`collapse_verdicts`'s answer."""
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
    return " ".join(parts + [collapsed_sentence(collapsed)]).strip()


PLATEAU_SHARE = 0.05  # a loss within this share of ln(classes) is still on the plateau of a uniform answer


def on_plateau(loss: float, n_classes: int) -> bool:
    """Whether a cross-entropy is still within PLATEAU_SHARE of ln(classes), the loss of a uniform answer."""
    return math.isfinite(loss) and abs(loss - math.log(n_classes)) <= PLATEAU_SHARE * math.log(n_classes)


def plateau_verdicts(cells: Sequence[tuple[str, Any]]) -> dict[str, bool | None]:
    """label -> whether the run's test loss is still on the plateau (:func:`on_plateau`) for (label, finished
    event or None) pairs; None while a cell has no test metrics yet."""
    out: dict[str, bool | None] = {}
    for label, end in cells:
        if end is None or getattr(end, "test_loss", None) is None or not getattr(end, "confusion", None):
            out[label] = None
        else:
            out[label] = on_plateau(end.test_loss, len(end.confusion))
    return out


def seeds_sentence(stuck: Mapping[int, bool | None], epochs: int,
                   plateau: Mapping[int, bool | None] | None = None,
                   collapsed: Mapping[int, Collapse | None] | None = None) -> str:
    """How many seeds of the same network got stuck, and which of the others only started to leave the plateau
    (``plateau``: seed -> loss still within PLATEAU_SHARE of ln(classes), see :func:`plateau_verdicts`), then
    which seeds collapsed and why (``collapsed``: seed -> :func:`collapse_verdicts`'s answer)."""
    if any(v is None for v in stuck.values()):
        return _seeds_outcome(stuck, epochs, plateau)
    return " ".join([_seeds_outcome(stuck, epochs, plateau),
                     collapsed_sentence(collapsed, lambda seed: f"Seed {seed}")]).strip()


def _seeds_outcome(stuck: Mapping[int, bool | None], epochs: int, plateau: Mapping[int, bool | None] | None) -> str:
    seeds = sorted(stuck)
    if any(v is None for v in stuck.values()):
        return (f"The experiment: the same network trained with seeds {join_words([str(s) for s in seeds])} "
                f"(different initial weights and batch order) for {_epochs(epochs)}. Does the seed decide "
                "whether it gets stuck?")
    hit = [s for s in seeds if stuck[s]]
    leaving = [s for s in seeds if not stuck[s] and plateau and plateau.get(s)]
    escaped = [s for s in seeds if not stuck[s] and s not in leaving]
    n = len(seeds)
    if len(hit) == n:
        return (f"All {n} seeds got stuck within {_epochs(epochs)}: with these settings the seed does not "
                "decide it.")
    leave_words = (f"seed{'s' if len(leaving) > 1 else ''} {join_words([str(s) for s in leaving])} only started to "
                   f"leave the plateau (no longer stuck, but the loss still within {PLATEAU_SHARE:.0%} of "
                   "ln(classes))")
    if not hit:
        if not leaving:
            return f"None of the {n} seeds got stuck within {_epochs(epochs)}."
        return (f"None of the {n} seeds got stuck within {_epochs(epochs)}, but {leave_words}"
                + (f"; {_seeds_words(escaped)} escaped." if escaped else "."))
    which = join_words([str(s) for s in hit])
    others = "; ".join(([f"{_seeds_words(escaped)} escaped"] if escaped else []) + ([leave_words] if leaving else []))
    return (f"{len(hit)} of {n} seeds got stuck within {_epochs(epochs)} (seed{'s' if len(hit) > 1 else ''} "
            f"{which}); {others}. Whether a deep sigmoid network escapes depends on its initial "
            "weights and batch order, so one run proves little either way.")


def _seeds_words(seeds: Sequence[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {join_words([str(s) for s in seeds])}"


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


# --- one run (the Playground): what happened, as the lesson pages say it ------------------------------
def _epochs_done(epoch: float) -> str:
    done = round(epoch) if abs(epoch - round(epoch)) < 0.05 else round(epoch, 1)
    return f"{done:g} epoch{'s' if done != 1 else ''}"


def run_outcome(events: Sequence[Event]) -> str | None:
    """What one finished run learned, written from its test results with the lessons' verdicts: stuck
    (:func:`is_stuck`, with the class it answers against the most common class), collapsed, still on the plateau of
    a uniform answer (:func:`on_plateau`), or how far above always answering the most common class it got, within
    or beyond the noise (core.lessons.noise). Losses are the true cross-entropy. None until it has finished with a
    test (a diverged run has no outcome to read)."""
    started = next((e for e in events if e.kind == "started"), None)
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if started is None or end is None or end.kind != "finished" or end.status not in ("finished", "cancelled"):
        return None
    if end.test_acc is None or not end.confusion:
        return None
    trained_on_ce = started.config.get("loss", "cross_entropy") == "cross_entropy"
    loss = end.test_loss if trained_on_ce else end.test_ce
    if loss is None or not math.isfinite(loss) or not math.isfinite(end.test_acc):
        return None
    loss_words = "test loss" if trained_on_ce else "true test cross-entropy"
    k = len(end.confusion)
    rows = [sum(row) for row in end.confusion]
    chance = max(rows) / sum(rows)
    acc = end.test_acc
    when = (f"After {_epochs_done(end.epoch)}" if end.status == "finished"
            else f"Stopped after {_epochs_done(end.epoch)}")
    uniform = f"ln {k} = {math.log(k):.4f}, the loss of a uniform guess"
    found = run_collapse(events)
    if is_stuck(acc, loss, k, confusion=end.confusion):
        answers, share = predicted_class_share(end.confusion)
        versus = (f", below the chance line ({chance:.3f}) because the class it answers is not the most common one"
                  if share < chance else f", the chance line itself ({chance:.3f})")
        cause = f" Cause: {collapse_cause_words(found)}." if found is not None else ""
        return (f"{when} this network is stuck: it learned nothing. {answers:.0%} of its test answers are one class, "
                f"so its test accuracy {acc:.3f} is that class's share of the test set ({share:.3f}){versus}; its "
                f"{loss_words} {loss:.4f} sits at {uniform}.{cause}")
    if found is not None:
        text = collapse_text("this network", found)
        return f"{when} {text[:1].lower()}{text[1:]}"
    if on_plateau(loss, k):
        return (f"{when} this network has only started to leave the plateau: test accuracy {acc:.3f} (always "
                f"answering the most common class scores {chance:.3f}), but its {loss_words} {loss:.4f} is still "
                f"within {PLATEAU_SHARE:.0%} of {uniform}.")
    n_test = int(started.dataset.get("n_test") or sum(rows))
    margin = noise_margin(Scored(acc, n_test))
    noise = f"±{margin:.3f} for an accuracy scored on {n_test:,} test examples"
    if beyond_noise(acc - chance, margin) and acc > chance:
        return (f"{when} this network has learned: test accuracy {acc:.3f} against {chance:.3f} for always "
                f"answering the most common class, more than the noise ({noise}); its {loss_words} {loss:.4f} "
                f"against {uniform}.")
    return (f"{when} this network is no better than always answering the most common class: test accuracy "
            f"{acc:.3f} against {chance:.3f}, within the noise ({noise}); its {loss_words} is {loss:.4f} against "
            f"{uniform}.")


def coarse_accuracy_words(split: str, scored: Scored) -> str | None:
    """How coarse an accuracy scored on few examples is (core.lessons.noise.coarse): its step and noise margin;
    None when it is scored on enough examples."""
    if not coarse(scored) or not math.isfinite(scored.acc):
        return None
    n = scored.n
    return (f"{_cap(split)} accuracy {scored.acc:.3f} is scored on only {n} example{'s' if n != 1 else ''}: it moves "
            f"in steps of 1/{n} = {1 / n:.0%}, and is known only to ±{noise_margin(scored):.3f} (two standard errors, "
            "never less than two steps).")


# --- LESSONS B -------------------------------------------------------------------------------------
def seed_spread(gaps: Sequence[float]) -> float:
    """How far a measure moves across seeds of the same network (max - min)."""
    return max(gaps) - min(gaps) if gaps else 0.0


@dataclass(frozen=True)
class GapRun:
    """A finished run's final train and validation accuracy, each with the examples it was scored on."""

    train: Scored
    val: Scored

    @property
    def gap(self) -> float:
        return self.train.acc - self.val.acc


def gap_run(events: Sequence[Event]) -> GapRun | None:
    """The run's final accuracies and their example counts (None until it has finished with both). Train
    accuracy is scored on :func:`core.engine.train.scored_train_examples`, the last validation on the whole split."""
    started = next((e for e in events if e.kind == "started"), None)
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if started is None or end is None or end.kind != "finished" or end.status != "finished":
        return None
    if end.train_acc is None or end.val_acc is None or not started.dataset.get("n_val"):
        return None
    return GapRun(Scored(end.train_acc, scored_train_examples(int(started.dataset["n_train"]))),
                  Scored(end.val_acc, int(started.dataset["n_val"])))


def regularization_sentence(runs: Mapping[str, GapRun | None], baseline: str, spread: float | None = None) -> str:
    """Which regularizers narrowed the train - validation accuracy gap of ``baseline``, and by how much.

    ``runs`` maps run labels to their final accuracies (None while unfinished); ``spread`` is how much the
    baseline's gap moves across seeds (None: one seed only). A difference within the noise margin of the
    accuracies it compares (core.lessons.noise), or within the seeds' spread, is said to be none."""
    others = [label for label in runs if label != baseline]
    base = runs.get(baseline)
    if base is None or any(runs[label] is None for label in others):
        return (f"The experiment: how far train accuracy runs ahead of validation accuracy without "
                f"regularization ({baseline}), and whether {join_words(others)} narrow that gap.")
    seeds = spread if spread is not None else 0.0
    base_margin = max(noise_margin(base.train, base.val), seeds)
    counts = _examples_words({"training": base.train.n, "validation": base.val.n})
    parts = [f"Without regularization ({baseline}) train accuracy ends {base.gap:.3f} ahead of validation."]
    if base.gap <= base_margin:
        parts.append(f"That is within the noise (±{base_margin:.3f} for accuracies scored on {counts}"
                     + (", or the seeds' spread" if spread is not None else "")
                     + "): no measurable gap, so there is nothing for a regularizer to narrow.")
        changed = [label for label in others
                   if beyond_noise(runs[label].gap - base.gap, _pair_margin(base, runs[label], seeds))]
        same = [label for label in others if label not in changed]
        if same:
            parts.append(f"{_cap(join_words(same))} make{'s' if len(same) == 1 else ''} no difference to it either.")
        if changed:
            parts.append(f"{_cap(join_words([f'{label} ({runs[label].gap:.3f})' for label in changed]))} "
                         f"change{'s' if len(changed) == 1 else ''} it by more than the noise.")
    else:
        narrowed, same, widened = [], [], []
        for label in others:
            run = runs[label]
            difference = base.gap - run.gap
            if not beyond_noise(difference, _pair_margin(base, run, seeds)):
                same.append(label)
            elif difference > 0:
                narrowed.append(f"{label} to {run.gap:.3f} (by {difference:.3f})")
            else:
                widened.append(f"{label} ({run.gap:.3f})")
        if narrowed:
            parts.append(f"{_cap(join_words(narrowed))} narrow{'s' if len(narrowed) == 1 else ''} it.")
        if widened:
            parts.append(f"{_cap(join_words(widened))} widen{'s' if len(widened) == 1 else ''} it.")
        if same:
            parts.append(f"{_cap(join_words(same))} make{'s' if len(same) == 1 else ''} no difference: "
                         f"{'its' if len(same) == 1 else 'their'} gap is within the noise of the baseline's "
                         f"(accuracies scored on {counts}"
                         + (", or the seeds' spread)." if spread is not None else ")."))
    if spread is not None:
        parts.append(f"Across seeds the baseline's gap moves by {spread:.3f}; smaller differences are noise.")
    else:
        parts.append("One seed only: train the baseline with more seeds to see how much the gap moves from seed "
                     "to seed.")
    return " ".join(parts)


def _pair_margin(base: GapRun, other: GapRun, seeds: float) -> float:
    """The noise margin of the difference of two gaps: four accuracies, or the seeds' spread if that is larger."""
    return max(noise_margin(base.train, base.val, other.train, other.val), seeds)


def _examples_words(counts: Mapping[str, int]) -> str:
    """'500 training and 72 validation examples' from {'training': 500, 'validation': 72}."""
    return join_words([f"{n:,} {split}" for split, n in counts.items()]) + " examples"


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


def race_sentence(finals: Mapping[str, Scored | None], ended: Mapping[str, str] | None = None) -> str:
    """Which optimizer of the real race won, and by how much against the noise (core.lessons.noise).

    ``finals`` maps each optimizer to its final validation accuracy with the examples it was scored on (None
    while unfinished); ``ended`` maps those that ended without one to how they ended (diverged, failed...)."""
    ended = dict(ended or {})
    scored = {label: acc for label, acc in finals.items() if acc is not None}
    if any(acc is None and label not in ended for label, acc in finals.items()) or not scored:
        return (f"The race: which of {join_words(list(finals))} reaches the highest validation accuracy after the "
                "same steps, from the same initial weights and batches.")
    ranked = sorted(scored, key=lambda label: scored[label].acc, reverse=True)
    best = scored[ranked[0]]
    examples = _examples_words({"validation": min(s.n for s in scored.values())})
    level = [label for label in ranked[1:] if not beyond_noise(best.acc - scored[label].acc,
                                                                 noise_margin(best, scored[label]))]
    behind = [label for label in ranked[1:] if label not in level]
    parts = []
    if len(ranked) == 1:
        parts.append(f"Only {ranked[0]} finished: validation accuracy {best.acc:.3f}.")
    elif not level:
        second = scored[ranked[1]]
        margin = noise_margin(best, second)
        parts.append(f"{_cap(ranked[0])} won: validation accuracy {best.acc:.3f}, {best.acc - second.acc:.3f} ahead "
                     f"of the runner-up {ranked[1]} ({second.acc:.3f}), more than the noise (±{margin:.3f} for "
                     f"accuracies scored on {examples}).")
    else:
        margin = max(noise_margin(best, scored[label]) for label in level)
        tied = join_words([f"{label} ({scored[label].acc:.3f})" for label in [ranked[0], *level]])
        if not behind:
            parts.append(f"No optimizer won: {tied} ended level, each within the noise of the best "
                         f"(±{margin:.3f} for accuracies scored on {examples}).")
        else:
            parts.append(f"No single winner: {tied} ended level at the top, each within the noise of the best "
                         f"(±{margin:.3f} for accuracies scored on {examples}).")
    if behind and len(ranked) > 1:
        words = [f"{label} ({scored[label].acc:.3f})" for label in behind]
        parts.append(f"{_cap(join_words(words))} ended behind by more than the noise.")
    if ended:
        parts.append(f"{_cap(join_words([f'{label} {how}' for label, how in ended.items()]))}, so "
                     f"{'it has' if len(ended) == 1 else 'they have'} no final accuracy.")
    return " ".join(parts)


@dataclass
class LossRunSummary:
    """What the CE-vs-MSE sentence is written from: one run's final metrics and its early gradients."""

    label: str
    val_acc: float
    val_loss: float
    first_grad_norm: float  # mean over layers of the gradient norm at the first log point
    first_step: int  # that log point's step
    step: int  # the last evaluation's step
    n_val: int  # validation examples the last evaluation scored
    n_classes: int

    @property
    def val(self) -> Scored:
        return Scored(self.val_acc, self.n_val)


def loss_run_summary(label: str, events: Sequence[Event]) -> LossRunSummary | None:
    """The summary of a finished run (None while it has no start, evaluation or layer statistics yet)."""
    started = next((e for e in events if e.kind == "started"), None)
    evals = [e for e in events if e.kind == "eval"]
    layers = [e for e in events if e.kind == "layers"]
    if started is None or not evals or not layers or not started.dataset.get("n_val"):
        return None
    norms = [g for g in layers[0].grad_norm if g == g]
    n_val = int(started.dataset["n_val"])
    last = evals[-1]
    scored = n_val if float(last.epoch).is_integer() else min(VAL_SUBSET, n_val)  # the whole split at epoch ends
    return LossRunSummary(label, last.val_acc, last.val_loss, sum(norms) / len(norms) if norms else float("nan"),
                          layers[0].step, last.step, scored, len(started.dataset["classes"]))


def mse_gradient_factors(ratio: float, n_classes: int) -> tuple[float, float]:
    """A cross-entropy / MSE gradient ratio split into its two causes, (class average, softmax slope): the MSE
    here is the mean over the classes of (p - y)^2, so its gradients are exactly those of the summed squared
    error divided by the number of classes; what is left of the ratio is the softmax's slope."""
    return float(n_classes), ratio / n_classes


def losses_sentence(ce: LossRunSummary, mse: LossRunSummary) -> str:
    """A sentence on cross-entropy vs MSE on softmax, written from the two runs' numbers."""
    ratio = ce.first_grad_norm / mse.first_grad_norm if mse.first_grad_norm > 0 else float("inf")
    average, slope = mse_gradient_factors(ratio, ce.n_classes)
    k = ce.n_classes
    defined = (f"The MSE here is the mean over the {k} classes of (p − y)², so its gradients are those of the "
               f"summed squared error divided by {k}.")
    if ratio > 1:
        grads = (f"At the first log point (step {ce.first_step}) the gradients reaching the layers were {ratio:.1f}x "
                 f"smaller with MSE than with cross-entropy. {defined} So {average:.0f}x of that is the class average")
        if slope > 1:
            grads += (f", and the remaining {slope:.1f}x is the softmax's slope: the squared error's gradient on "
                      "the logits passes the error through p(1 − p), which is small whenever a class probability is "
                      "near 0 or 1, even when that confident answer is wrong, while cross-entropy's gradient on the "
                      "logits is just p − y.")
        else:
            grads += (f"; without it MSE's gradients would have been {1 / slope:.1f}x larger than cross-entropy's, so "
                      "the softmax's slope p(1 − p) did not damp this run at the start.")
    else:
        grads = (f"Here the early gradients were not smaller with MSE ({1 / ratio:.1f}x those of cross-entropy), "
                 f"although {defined[0].lower()}{defined[1:]}")
    margin = noise_margin(ce.val, mse.val)
    scored = _examples_words({"validation": min(ce.n_val, mse.n_val)})
    if not beyond_noise(ce.val_acc - mse.val_acc, margin):
        outcome = (f"Cross-entropy and MSE ended level: validation accuracy {ce.val_acc:.3f} for cross-entropy "
                   f"against {mse.val_acc:.3f} for MSE after the same steps is no difference, within the noise "
                   f"(±{margin:.3f} for accuracies scored on {scored}).")
    elif ce.val_acc > mse.val_acc:
        outcome = (f"Cross-entropy ended ahead: validation accuracy {ce.val_acc:.3f} against {mse.val_acc:.3f} "
                   f"for MSE after the same steps, more than the noise (±{margin:.3f} on {scored}).")
    else:
        outcome = (f"MSE ended ahead here: validation accuracy {mse.val_acc:.3f} against {ce.val_acc:.3f} "
                   f"for cross-entropy after the same steps, more than the noise (±{margin:.3f} on {scored}).")
    return f"{grads} {outcome}"


# --- the gradient check (seeds 000/001) ------------------------------------------------------------
def check_verdict(result: GradCheck) -> str:
    """The check's headline, from its one diagnosis (:func:`core.lab.gradcheck.result.diagnose`)."""
    return check_diagnosis(result)[0]


def check_diagnosis(result: GradCheck) -> tuple[str, str | None]:
    """(headline, explanation or None): what a check says about backprop and why, both written from the same
    :func:`core.lab.gradcheck.result.diagnose`, so the two never blame different things."""
    d = diagnose(result)
    planted = join_words(list(d.planted))
    unseen = (f" The bug planted in {planted} cannot show through this check." if d.planted else "")
    if d.cause == "copy":
        return ("Every layer reads 1 because of the seeds' mistake: each perturbation went to a copy of the weights, "
                "so this check says nothing about backprop." + unseen,
                "The loss was computed with the model's own weights while the copy was perturbed, so J(θ+ε) = J(θ−ε) "
                "and the numeric gradient is 0 everywhere: a relative difference of 1 in every layer (the seeds "
                "printed 0.9999999999998282). Switch the mistake off to check backprop.")
    if d.cause == "right":
        return (f"Every layer reads below 1e-7 (worst: {d.layer}, {d.value:.1e}): backprop is right here.", None)
    if d.cause == "noise":
        return (f"Dropout is on while checking, so {d.layer} reads {d.value:.1e}: the check measures dropout's "
                "noise, not backprop." + unseen,
                "Every loss evaluation draws a new dropout mask, so J(θ+ε) − J(θ−ε) mostly measures two different "
                "networks. Switch dropout off while checking to check backprop.")
    if d.cause == "rounded":
        where = (f"In {join_words(list(d.layers))} every loss change J(θ+ε) − J(θ−ε) rounded to exactly 0 in "
                 f"{result.settings.get('dtype')} with ε = {result.settings.get('eps', 0):g}: the numeric gradient "
                 "is 0 there, and the difference 1. " if d.layers else "")
        digits = "float32 keeps about 7 digits" if result.settings.get("dtype") == "float32" else "ε is too small"
        return (f"{d.layer} reads {d.value:.1e}, but in {result.settings.get('dtype')} with "
                f"ε = {result.settings.get('eps', 0):g} rounding cannot be told from a backward bug." + unseen,
                where + f"{digits}, so a loss change far below the loss's rounding step rounds to 0 or to a whole "
                "step. Check in float64 with ε = 1e-6 to read backprop.")
    if d.cause == "doubtful":
        text = f"No layer is above 1e-5, but {d.layer} reads {d.value:.1e}, above 1e-7: doubtful."
        if result.settings.get("dtype") == "float64":
            text += (" In float64 this is often rounding, not a bug: a layer whose gradients are tiny (a sigmoid "
                     "network's first layers) loses digits in J(θ+ε) − J(θ−ε), an error that shrinks like 1/ε. Move ε "
                     "up tenfold (to 1e-5, then 1e-4): if the difference falls about tenfold each time, it was "
                     "rounding and backprop is right; a bug keeps it high at every ε.")
        return text, None
    return (f"{d.layer} is the layer nearest the output above 1e-5 ({d.value:.1e}). "
            "Backprop runs from the output down, so a backward bug first shows at its own layer (and taints "
            "every layer below it).", None)


def checked_weights_text(settings: Mapping[str, Any]) -> str:
    """Which weights a check ran on, in words."""
    run = settings.get("run")
    if run is None:
        return f"Weights checked: the network above, at its {settings['where']}."
    if settings.get("at") == "final":
        return (f"Weights checked: stored run {run} at its final weights, after {settings['step']} training steps "
                "(loaded from the run store).")
    return f"Weights checked: stored run {run} at its initialization (the run's seed and init, not what it learned)."


RULE_OF_THREE_SEEDS = 10  # with fewer initializations, 0 hits bounds nothing worth saying (3/n above 30%)


def seed_check_lines(right: GradCheck, float32: Sequence[GradCheck], copy_: GradCheck) -> list[str]:
    """Why the seeds printed 0.99999, from the same network checked right, in float32 with ε = 1e-7 at several
    initializations, and perturbing a copy of the weights (:func:`core.lab.gradcheck.mistakes.seed_variants`).
    The conclusion is drawn from how many float32 initializations read ≈1 (:func:`reads_one`)."""
    copy_ones = all(r.rel_diff == 1.0 for r in copy_.layers)
    lines = [f"The seed printed {SEED_VALUE!r} = 1 − {1 - SEED_VALUE:.1e}. A relative difference of 1 − δ with a "
             "tiny δ means one gradient is about δ times the other: effectively zero."]
    lines.append(f"Done right, this network reads {right.overall:.1e} "
                 f"({'below' if right.overall < GOOD else 'above'} 1e-7).")
    if copy_ones:
        lines.append("Perturbing a copy of the weights makes every numeric entry exactly 0 (the model never sees "
                     "the perturbation), so every layer and the whole network read exactly 1, at any initialization. "
                     "The seed's value agrees to 12 digits; its last digits say its numeric gradient was about 1e-13 "
                     "of backprop's rather than exactly 0.")
    if not float32:
        return lines
    n = len(float32)
    seeds = [r.settings.get("seed") for r in float32]
    ones = [seed for seed, r in zip(seeds, float32) if reads_one(r.overall)]
    values = [r.overall for r in float32]
    which = f" (seed{'s' if len(ones) > 1 else ''} {join_words([str(s) for s in ones])})" if 0 < len(ones) < n else ""
    lines.append(f"float32 with ε = 1e-7, checked at {n} initialization{'s' if n > 1 else ''}"
                 + (f" (seeds {seeds[0]}–{seeds[-1]}, each its own initial weights and check batch)" if n > 1 else "")
                 + f": the whole network reads ≈1 (1 − value < {NEAR_ONE:g}, the way the seed's 0.99999 is read) at "
                 f"{len(ones)} of {n}{which}; its values run from {min(values):.3f} to {max(values):.3f}. float32 keeps "
                 "about 7 digits, so a loss change J(θ+ε) − J(θ−ε) far below the loss's rounding step rounds to 0 "
                 "(numeric gradient 0) or to a whole step (a numeric gradient far from backprop's), depending on "
                 "where the loss falls: when every change rounds to 0 the network reads exactly 1.")
    if not copy_ones:
        return lines
    if not ones:
        bound = (f"a rate below about {3 / n:.0%}, by the rule of three" if n >= RULE_OF_THREE_SEEDS
                 else "too few to bound how often it would")
        lines.append(f"So float32 with ε = 1e-7 alone gave ≈1 at none of {n} initializations ({bound}), while a copy "
                     "gives 1 at every one: the likely cause of the seed's 0.99999 is a perturbation that never "
                     "reached the model (a copy).")
    else:
        share = f"every one of these {n}" if len(ones) == n else f"{len(ones)} of these {n}"
        lines.append(f"So float32 with ε = 1e-7 alone gives ≈1 at {share} initializations, and a copy at "
                     "every one: ≈1 does not tell the two causes apart, and these checks do not make the copy the "
                     "likelier one. The seed's own check run again in float64 with ε = 1e-6 would tell: float32 "
                     "rounding goes away there, a copy still reads 1 (the seeds hold only its printed value).")
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


def cnn_against_mlp_sentence(cnn: Scored | None, mlp: Scored | None, cnn_params: int, mlp_params: int) -> str:
    """Which of the CNN and the MLP with at least as many parameters reached the higher validation accuracy, and by
    how much against the noise (core.lessons.noise); while either is unfinished, what the race tests."""
    counts = f"the CNN's {cnn_params:,} parameters against the MLP's {mlp_params:,}"
    if cnn is None or mlp is None:
        return (f"The race: which reaches the higher validation accuracy after the same steps on the same batches, "
                f"the CNN with {cnn_params:,} parameters or the MLP with {mlp_params:,}?")
    margin = noise_margin(cnn, mlp)
    scored_on = _examples_words({"validation": min(cnn.n, mlp.n)})
    difference = cnn.acc - mlp.acc
    if not beyond_noise(difference, margin):
        return (f"Neither won: validation accuracy {cnn.acc:.3f} for the CNN against {mlp.acc:.3f} for the MLP is "
                f"within the noise (±{margin:.3f} for accuracies scored on {scored_on}), with {counts}.")
    winner, loser = ("CNN", "MLP") if difference > 0 else ("MLP", "CNN")
    return (f"The {winner} won: validation accuracy {max(cnn.acc, mlp.acc):.3f} against {min(cnn.acc, mlp.acc):.3f} "
            f"for the {loser}, {abs(difference):.3f} ahead, more than the noise (±{margin:.3f} for accuracies scored "
            f"on {scored_on}), with {counts}.")
