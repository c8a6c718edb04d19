"""What a run learned, in words a lesson can trust: "stuck" and "vanishing", as pure functions.

- **Stuck** is decided from what was learned: a network that learned nothing gives (almost)
  every input the same answer, so its accuracy is the share of the class it predicts, and its
  cross-entropy sits at ln(classes) (a uniform softmax).
- **Vanishing** is decided from the gradient profile early in training: the first weight
  layer's gradient norm far below the output layer's over the first log points, before a run
  that escapes has had time to change the profile.
"""
from __future__ import annotations

import math
from typing import Sequence

STUCK_LOSS = 0.05  # |loss - ln(classes)| within this ...
STUCK_ACC = 0.02  # ... and |accuracy - predicted class's share| within this: it learned nothing
VANISHING_RATIO = 1e-2  # first layer's gradient norm below 1% of the output layer's ...
EARLY_LOG_POINTS = 5  # ... over the first log points (geometric mean)


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


def is_stuck(acc: float, loss: float, n_classes: int, class_share: float | None = None,
             acc_tol: float = STUCK_ACC, loss_tol: float = STUCK_LOSS) -> bool:
    """Whether accuracy ``acc`` and cross-entropy ``loss`` say the network learned nothing.

    ``class_share`` is the share of the data of the class the network predicts most (see
    :func:`predicted_class_share`); without it (no confusion matrix yet) 1/classes stands in."""
    share = 1.0 / n_classes if class_share is None else class_share
    if not all(map(math.isfinite, (acc, loss, share))):
        return False
    return abs(acc - share) <= acc_tol and abs(loss - math.log(n_classes)) <= loss_tol


def early_gradient_ratio(grad_norms: Sequence[Sequence[float]], first: int = EARLY_LOG_POINTS) -> float:
    """Geometric mean over the first ``first`` log points of (first layer's / output layer's gradient
    norm); ``grad_norms`` holds one row of per-layer norms (input layer first) per log point. NaN
    when there is no usable point (fewer than two layers, non-finite or zero norms)."""
    logs = []
    for row in list(grad_norms)[:first]:
        if len(row) < 2:
            continue
        head, tail = float(row[0]), float(row[-1])
        if math.isfinite(head) and math.isfinite(tail) and head > 0 and tail > 0:
            logs.append(math.log(head / tail))
    return math.exp(sum(logs) / len(logs)) if logs else float("nan")


def is_vanishing(grad_norms: Sequence[Sequence[float]], ratio: float = VANISHING_RATIO,
                 first: int = EARLY_LOG_POINTS) -> bool:
    """Whether the first layer's gradient was below ``ratio`` x the output layer's early in training."""
    measured = early_gradient_ratio(grad_norms, first)
    return math.isfinite(measured) and measured < ratio
