"""What the lesson pages say about their runs, written from the results on screen (pure, no UI).

A sentence that states an outcome is built from the runs' verdicts and numbers; while results
are not in, it says only what the experiment tests. Also here: what a stuck network scores on
the dataset actually used, and the coursework's accuracy mistake, reconstructed so that it can
be shown next to the correct metric.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

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
