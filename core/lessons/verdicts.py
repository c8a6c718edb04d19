"""What a run learned, in words a lesson can trust: "stuck", "vanishing" and "collapsed", one rule each.

Every mark and sentence of the lessons calls these: the grid's ⊘ and the sentences under it
(:func:`is_stuck`), the band chart's ✕ per layer (:func:`vanishing_marks`) and a run's verdict
(:func:`is_vanishing`, read off the same marks), the grid's ↯ and the sentences naming a collapsed
network and its cause (:func:`run_collapse`).

- **Stuck** is decided from what was learned: a network that learned nothing gives (almost)
  every input the same answer, so its accuracy is the share of the class it predicts, and its
  cross-entropy sits at ln(classes) (a uniform softmax).
- **Vanishing** is decided from the gradient profile: a layer's gradient norm far below the
  output layer's, the run's verdict from its first layer over the first log points, before a run
  that escapes has had time to change the profile.
- **Collapsed** is decided from the answers: nearly every test input gets the same class, whatever
  the loss says; its cause is read from the layer probes the run logged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from core.engine.events import Event

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


COLLAPSED_ANSWERS = 0.9  # at least this share of the test answers one class: "nearly all"
DEAD_SHARE = 0.5  # at least this share of a ReLU layer's units never fire: "dead units"
SATURATED_SHARE = 0.5  # at least this share of a sigmoid/tanh layer's outputs where its slope is flat: "saturation"
DEAD_UNITS, VANISHING, SATURATION = "dead units", "vanishing gradients", "saturation"
SATURATING_ACTIVATIONS = ("sigmoid", "tanh")  # the probes' saturation figure; for "relu" it is the dead share


@dataclass(frozen=True)
class Collapse:
    """A collapsed network: the share of its test answers that go to its most predicted class, and what the
    probes say caused it. ``dead`` / ``saturated``: (hidden layer, 1 = first, its share) of the worst such layer at
    the last log point, None below the threshold; ``vanishing``: :func:`is_vanishing`."""

    answers: float
    class_share: float
    dead: tuple[int, float] | None = None
    vanishing: bool = False
    saturated: tuple[int, float] | None = None

    @property
    def causes(self) -> tuple[str, ...]:
        """The named causes, dead units first (exact zeros), then vanishing gradients, then saturation; empty
        when no probe explains the collapse."""
        return tuple(name for name, found in ((DEAD_UNITS, self.dead), (VANISHING, self.vanishing),
                                              (SATURATION, self.saturated)) if found)


def is_collapsed(confusion: Sequence[Sequence[float]] | None) -> bool:
    """Whether at least :data:`COLLAPSED_ANSWERS` of the answers in ``confusion`` (rows true, columns
    predicted) go to one class.

    Why 9 in 10: the answers that do not go to that class are all that can be right beyond its own share,
    so such a network's accuracy is at most that class's share + 0.1. It tells apart at most one input in
    ten, while a network that learned anything spreads its answers roughly as the classes are spread (about
    a tenth each on MNIST, Fashion-MNIST and Digits). Unlike "stuck" this reads only the answers: a network
    whose loss left ln(classes), or whose few other answers are right, has still collapsed."""
    if not confusion:
        return False
    answers, _ = predicted_class_share(confusion)
    return math.isfinite(answers) and answers >= COLLAPSED_ANSWERS


def worst_layer(shares: Sequence[float | None], threshold: float) -> tuple[int, float] | None:
    """(hidden layer, 1 = first, its share) of the largest finite share at or above ``threshold``, else None."""
    found = [(float(v), i + 1) for i, v in enumerate(shares) if v is not None and math.isfinite(v) and v >= threshold]
    if not found:
        return None
    share, layer = max(found)
    return layer, share


def collapse(confusion: Sequence[Sequence[float]] | None, activation: str, saturation: Sequence[float | None],
             grad_norms: Sequence[Sequence[float]]) -> Collapse | None:
    """The collapse of a finished run (None when it has not collapsed, :func:`is_collapsed`), its causes read
    from its probes: ``saturation`` per weight layer at the last log point (the dead share for ReLU, the
    saturated share for sigmoid/tanh, None for the output layer and other activations) and ``grad_norms``, one
    row per log point.

    Dead units: at least half of some ReLU layer's units are zero for every probe input. Such a unit passes
    no gradient back to its own weights, so it never fires again; a ReLU network that learns has (almost)
    none, since a unit is zero for every input only when its weights point away from all of them.
    Saturation: at least half of a sigmoid/tanh layer's outputs sit where its slope is below a tenth of its
    maximum, so most of the layer passes back less than a tenth of the gradient."""
    if not is_collapsed(confusion):
        return None
    answers, class_share = predicted_class_share(confusion)
    dead = worst_layer(saturation, DEAD_SHARE) if activation == "relu" else None
    saturated = worst_layer(saturation, SATURATED_SHARE) if activation in SATURATING_ACTIVATIONS else None
    return Collapse(answers, class_share, dead, is_vanishing(grad_norms), saturated)


def run_collapse(events: Sequence[Event]) -> Collapse | None:
    """:func:`collapse` read off one run's events: its activation (start), every log point's gradient norms and
    the last one's unit shares (layer statistics), its test confusion matrix (end). None until it has finished
    with a test, or when it has not collapsed."""
    started = next((e for e in events if e.kind == "started"), None)
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if started is None or end is None or end.kind != "finished" or not end.confusion:
        return None
    layers = [e for e in events if e.kind == "layers"]
    saturation = layers[-1].saturation if layers else []
    return collapse(end.confusion, str(started.config.get("activation", "")), saturation,
                    [e.grad_norm for e in layers])
