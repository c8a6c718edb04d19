"""The switches of one check as a page or a link holds them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch

from core.engine.config import ConfigError
from core.engine.scratch import BUGS
from core.lab.gradcheck.numeric import DEFAULT_EPS, DEFAULT_EXAMPLES, MISTAKES

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
MAX_EXAMPLES = 256
AT_CHOICES = {"init": "at initialization", "final": "at the run's final weights"}  # which weights of a stored run


@dataclass(frozen=True)
class CheckOptions:
    """The switches of one check, as a page or a link holds them (see :func:`check_gradients`)."""

    precision: str = "float64"
    eps: float = DEFAULT_EPS
    backprop: str = "autograd"
    bug: str = "none"  # none or one of core.engine.scratch.BUGS (by_hand only)
    bug_layer: int = 1  # the weight layer fcK carrying the bug, counted from 1
    dropout_on: bool = False
    kinks: bool = False
    mistake: str = "none"  # none or perturb_copy
    examples: int = DEFAULT_EXAMPLES
    at: str = "init"  # a stored run's weights: init or final (see check_stored_run; no stored run: ignored)

    def __post_init__(self) -> None:
        problems = {}
        if self.precision not in PRECISIONS:
            problems["precision"] = f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        if not (isinstance(self.eps, float) and 0 < self.eps <= 1):
            problems["eps"] = f"ε must be a number in (0, 1], got {self.eps!r}"
        if self.backprop not in ("autograd", "by_hand"):
            problems["backprop"] = f"backprop must be autograd or by_hand, got {self.backprop!r}"
        if self.bug != "none" and self.bug not in BUGS:
            problems["bug"] = f"planted bug must be none or one of {', '.join(BUGS)}, got {self.bug!r}"
        if self.bug != "none" and self.backprop != "by_hand":
            problems["bug"] = "a planted bug lives in the by-hand backward: choose backprop by_hand"
        if not (isinstance(self.bug_layer, int) and self.bug_layer >= 1):
            problems["bug_layer"] = f"bug layer must be a layer number from 1, got {self.bug_layer!r}"
        if self.mistake not in ("none",) + MISTAKES:
            problems["mistake"] = f"mistake must be none or one of {', '.join(MISTAKES)}, got {self.mistake!r}"
        if not (isinstance(self.examples, int) and 2 <= self.examples <= MAX_EXAMPLES):
            problems["examples"] = f"examples must be a whole number in [2, {MAX_EXAMPLES}], got {self.examples!r}"
        if self.at not in AT_CHOICES:
            problems["at"] = f"at must be one of {', '.join(AT_CHOICES)}, got {self.at!r}"
        if problems:
            raise ConfigError(problems)

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`check_gradients` (``at`` goes to :func:`check_stored_run` apart)."""
        return {"dtype": PRECISIONS[self.precision], "eps": self.eps, "backprop": self.backprop,
                "bugs": {self.bug_layer - 1: self.bug} if self.bug != "none" else None,
                "dropout_active": self.dropout_on, "at_kinks": self.kinks,
                "mistake": None if self.mistake == "none" else self.mistake, "n_examples": self.examples}

    def to_query(self) -> dict[str, str]:
        default = CheckOptions()
        return {f.name: str(int(v) if isinstance(v, bool) else v) for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) != getattr(default, f.name)}

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "CheckOptions":
        values, problems = {}, {}
        for f in dataclasses.fields(cls):
            if f.name not in query:
                continue
            raw = str(query[f.name]).strip()
            try:
                kind = type(f.default)
                if kind is bool:
                    values[f.name] = raw.lower() in ("1", "true")
                elif kind is int:
                    number = float(raw)
                    if not number.is_integer():
                        raise ValueError
                    values[f.name] = int(number)
                else:
                    values[f.name] = kind(raw)
            except ValueError:
                problems[f.name] = f"{f.name} = {raw!r} is not a {kind.__name__}"
        if problems:
            raise ConfigError(problems)
        return cls(**values)

