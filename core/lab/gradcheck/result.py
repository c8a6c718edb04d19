"""A gradient check's result: per-layer rows with their verdicts, sampled pairs, notes; as an event and as text."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from core.engine.events import GradCheckDone

GOOD = 1e-7  # the thresholds the seeds quote: below 1e-7 the gradient is right,
SUSPECT = 1e-5  # above 1e-5 something is wrong (in float64, away from kinks)


@dataclass
class LayerCheck:
    layer: str  # fc1, conv2, bn1, ln2 ...
    parameters: list[str]  # model parameter names in this layer
    checked: int
    total: int
    rel_diff: float
    numeric_norm: float
    analytic_norm: float

    @property
    def sampled(self) -> bool:
        return self.checked < self.total

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.rel_diff) or self.rel_diff > SUSPECT:
            return "wrong"
        return "right" if self.rel_diff < GOOD else "doubtful"


@dataclass
class GradCheck:
    """A check's per-layer rows, sampled (numeric, analytic) pairs and what was checked how."""

    layers: list[LayerCheck]
    pairs: list[dict]  # {"layer", "numeric", "analytic"}
    overall: float  # the same relative difference over every checked entry at once
    settings: dict
    notes: list[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return sum(r.checked for r in self.layers)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.layers)

    def table(self) -> list[dict]:
        return [{"layer": r.layer, "entries checked": r.checked, "total entries": r.total,
                 "rel diff": r.rel_diff, "verdict": r.verdict} for r in self.layers]

    def first_wrong_layer(self, threshold: float = SUSPECT) -> str | None:
        """The layer nearest the output whose difference exceeds ``threshold``: backprop runs from
        the output down, so a bug shows first (and taints everything below) at its own layer."""
        wrong = [r.layer for r in self.layers if not r.rel_diff <= threshold]
        return wrong[-1] if wrong else None

    def to_event(self) -> GradCheckDone:
        return GradCheckDone([dataclasses.asdict(r) for r in self.layers], list(self.pairs), self.overall,
                             dict(self.settings), list(self.notes))

    @classmethod
    def from_event(cls, event: GradCheckDone) -> "GradCheck":
        return cls([LayerCheck(**row) for row in event.layers], list(event.pairs), event.overall, dict(event.settings),
                   list(event.notes))


@dataclass(frozen=True)
class Diagnosis:
    """What one check says, read once: the page's headline and its explanation are both written from it.

    ``cause``: "copy" (the perturbation went to a copy: the check is void), "right", "noise" (dropout drew a
    new mask per evaluation), "rounded" (float32, or every loss change rounded to 0: rounding cannot be told from
    a bug), "backward" (a backward bug at ``layer``, the layer nearest the output above 1e-5) or "doubtful"
    (between 1e-7 and 1e-5 at ``layer``)."""

    cause: str
    layer: str  # the layer blamed (backward), else the worst layer
    value: float  # that layer's relative difference
    layers: tuple[str, ...] = ()  # the layers whose numeric gradient rounded to exactly 0 ("rounded")
    planted: tuple[str, ...] = ()  # layers carrying a planted bug (by-hand backward), in fcK form


def diagnose(result: GradCheck) -> Diagnosis:
    """The one reading of a check: a void check (a copy perturbed, dropout's noise, rounding to 0) is named
    before any layer is blamed, since a backward bug cannot be read off a numeric gradient that is not one."""
    s = result.settings
    worst = max(result.layers, key=lambda r: r.rel_diff if math.isfinite(r.rel_diff) else math.inf)
    planted = tuple(f"fc{int(k) + 1}" for k in sorted(s.get("bugs") or {}, key=int))
    zeroed = tuple(r.layer for r in result.layers if r.numeric_norm == 0 and r.analytic_norm > 0)
    if s.get("mistake") == "perturb_copy":
        return Diagnosis("copy", worst.layer, worst.rel_diff, zeroed, planted)
    if worst.rel_diff < GOOD:
        return Diagnosis("right", worst.layer, worst.rel_diff, planted=planted)
    if s.get("dropout_active") and s.get("has_dropout"):
        return Diagnosis("noise", worst.layer, worst.rel_diff, planted=planted)
    wrong = result.first_wrong_layer()
    if wrong is not None and (wrong in zeroed or s.get("dtype") == "float32"):
        return Diagnosis("rounded", worst.layer, worst.rel_diff, zeroed, planted)
    if wrong is None:
        return Diagnosis("doubtful", worst.layer, worst.rel_diff, planted=planted)
    return Diagnosis("backward", wrong, next(r.rel_diff for r in result.layers if r.layer == wrong), planted=planted)


def format_table(result: GradCheck) -> str:
    """The per-layer table as plain text (what the CLI prints)."""
    lines = [f"{'layer':<8} {'checked':>8} {'total':>8} {'rel diff':>12}  verdict"]
    for r in result.layers:
        lines.append(f"{r.layer:<8} {r.checked:>8} {r.total:>8} {r.rel_diff:>12.3e}  {r.verdict}")
    lines.append(f"{'all':<8} {result.checked:>8} {result.total:>8} {result.overall:>12.3e}")
    return "\n".join(lines)
