"""How far apart measured accuracies must be before a lesson's sentence calls them different.

An accuracy scored on n examples is a count of right answers over n: it moves in steps of 1/n and,
as a binomial proportion, by about sqrt(p(1 - p)/n) from one sample of examples to another. A
comparison sentence calls a difference an effect only when it exceeds :func:`noise_margin` of the
accuracies it compares (and, where seeds were trained, how far the seeds move it); a difference
inside the margin is said to be no difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NOISE_Z = 2.0  # standard errors in the margin: about a 95% band
SMALL_SPLIT = 100  # an accuracy scored on fewer examples moves in steps above 1%: say how coarse it is


@dataclass(frozen=True)
class Scored:
    """An accuracy and the number of examples it was scored on."""

    acc: float
    n: int


def standard_error(scored: Scored) -> float:
    """The binomial standard error sqrt(p(1 - p)/n), never below the split's resolution 1/n (an accuracy of
    exactly 0 or 1 on n examples is not known better than one example)."""
    if scored.n <= 0:
        raise ValueError(f"an accuracy needs at least one scored example, not {scored.n}")
    p = min(max(scored.acc, 0.0), 1.0)
    return max(math.sqrt(p * (1 - p) / scored.n), 1 / scored.n)


def noise_margin(*scored: Scored) -> float:
    """The noise margin of a difference (or sum) of these accuracies, each scored on its own examples:
    NOISE_Z times the root of their summed squared standard errors."""
    return NOISE_Z * math.sqrt(sum(standard_error(s) ** 2 for s in scored))


def beyond_noise(difference: float, margin: float) -> bool:
    """Whether a difference is an effect: larger in size than the margin (the margin itself is not)."""
    return abs(difference) > margin



def coarse(scored: Scored) -> bool:
    """Whether an accuracy is scored on so few examples (fewer than SMALL_SPLIT) that a single one moves it by more
    than 1%: a lesson shows its noise margin beside it."""
    return 0 < scored.n < SMALL_SPLIT
