"""What a run learned, in words a lesson can trust: "stuck" and "vanishing", one rule each.

Every mark and sentence of the lessons calls these: the grid's ⊘ and the sentences under it
(:func:`is_stuck`), the band chart's ✕ per layer (:func:`vanishing_marks`) and a run's verdict
(:func:`is_vanishing`, read off the same marks).

- **Stuck** is decided from what was learned: a network that learned nothing gives (almost)
  every input the same answer, so its accuracy is the share of the class it predicts, and its
  cross-entropy sits at ln(classes) (a uniform softmax).
- **Vanishing** is decided from the gradient profile: a layer's gradient norm far below the
  output layer's, the run's verdict from its first layer over the first log points, before a run
  that escapes has had time to change the profile.
"""
from __future__ import annotations

import math
from typing import Sequence

STUCK_LOSS = 0.05  # |loss - ln(classes)| within this ...
STUCK_ACC = 0.02  # ... and |accuracy - predicted class's share| within this: it learned nothing

SIGMOID_MAX_SLOPE = 0.25  # sigmoid'(z) = s(1 - s) <= 1/4, at z = 0
SIGMOID_LAYERS = 3  # ... so three sigmoid layers leave at most (1/4)^3 of a gradient
VANISHING_RATIO = SIGMOID_MAX_SLOPE ** SIGMOID_LAYERS  # 1/64: below this share of the output layer's, "vanished"
VANISHING_TEXT = f"1/{round(1 / VANISHING_RATIO)}"
EARLY_LOG_POINTS = 5  # the run's verdict reads its first log points


def predicted_class_share(confusion: Sequence[Sequence[float]]) -> tuple[float, float]:
    """From a confusion matrix (rows true, columns predicted): (share of predictions that go to the
    most predicted class, that class's share of the data)."""
    total = sum(sum(row) for row in confusion)
    if not total:
        return float("nan"), float("nan")
    k = len(confusion)
    predicted = [sum(confusion[t][p] for t in range(k)) for p in range(k)]
    top = max(range(k), key=predicted.__getitem__)
    return predicted[top] / total, sum(confusion[top]) / total


def is_stuck(acc: float, loss: float, n_classes: int, *, confusion: Sequence[Sequence[float]] | None = None,
             acc_tol: float = STUCK_ACC, loss_tol: float = STUCK_LOSS) -> bool:
    """Whether accuracy ``acc`` and cross-entropy ``loss`` say the network learned nothing.

    ``confusion`` (rows true, columns predicted) gives the share of the data of the class the
    network predicts most, which is what a network that learned nothing scores; without it (no
    test yet) 1/classes stands in."""
    share = 1.0 / n_classes if not confusion else predicted_class_share(confusion)[1]
    if not all(map(math.isfinite, (acc, loss, share))):
        return False
    return abs(acc - share) <= acc_tol and abs(loss - math.log(n_classes)) <= loss_tol


def vanishing_marks(grad_norms: Sequence[Sequence[float]]) -> list[list[bool]]:
    """Per log point (rows of per-layer gradient norms, input layer first, output layer last): whether each
    layer's norm is below :data:`VANISHING_RATIO` x the output layer's.

    Why 1/64: sigmoid's slope is at most 1/4, so on its way back to the input the gradient loses at
    least a factor 4 at every sigmoid layer (with weights that keep its size). A layer below 4^-3 of
    the output layer's gets less than three sigmoid layers at their steepest would leave it. ReLU's
    slope is 1 where it is active, so depth alone does not shrink its gradient. Measured in lesson A's
    grid: the first layer of sigmoid x1 and x2 and of the ReLU networks that learn stays above 1/64, the
    stuck sigmoid x4's falls below (about 1e-3 on digits, 3e-3 on MNIST). No mark where a norm is not a
    finite number or the output layer has no gradient."""
    marks = []
    for row in grad_norms:
        norms = [float(v) if v is not None else math.nan for v in row]
        out = norms[-1] if norms else math.nan
        usable = math.isfinite(out) and out > 0
        marks.append([usable and math.isfinite(v) and v < VANISHING_RATIO * out for v in norms])
    return marks


def is_vanishing(grad_norms: Sequence[Sequence[float]], first: int = EARLY_LOG_POINTS) -> bool:
    """Whether the first layer is marked vanished (:func:`vanishing_marks`) at more than half of the first
    ``first`` log points; ``grad_norms`` holds one row of per-layer norms per log point."""
    early = [row[0] for row in vanishing_marks(list(grad_norms)[:first]) if len(row) > 1]
    return bool(early) and 2 * sum(early) > len(early)
