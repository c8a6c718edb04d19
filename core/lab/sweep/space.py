"""A sweep's search space: which RunConfig knobs vary and how, the trial each point is, and what it costs.

A :class:`SweepConfig` is a base :class:`RunConfig`, a declared subset of its knobs with distributions
(:class:`Dist`: a list of values, an integer range, or a log-uniform range), an Optuna sampler (grid,
random, TPE) and pruner (none, median, successive halving), a trial budget and a seed. "depth" and
"width" are derived knobs that build ``hidden``. Bounds (depth, width, a knob's choices, list lengths,
grid points) are checked before anything is built from a request, every value a distribution can give
by the RunConfig schema; every refusal names a few offenders and counts the rest.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from core.engine import catalog
from core.engine import data as datasets
from core.engine.config import (FIELDS, MAX_HIDDEN_LAYERS, MAX_WIDTH, ConfigError, RunConfig, format_value,
                                knob_of, parse_value)
from core.engine.task import MAX_DIGITS, TaskConfig, clipped, shortened
from core.engine.models import count_parameters

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving")
SAMPLER_TITLES = {"grid": "Grid search", "random": "Random search", "tpe": "Bayesian search (TPE)"}
PRUNER_TITLES = {"none": "No pruning", "median": "Median pruner", "halving": "Successive halving"}
KINDS = ("categorical", "int", "log")
DERIVED = ("depth", "width")  # build ``hidden`` = (width,) * depth
NOT_SEARCHABLE = ("dataset", "device", "hidden", "conv_channels", "log_every")
MAX_TRIALS = 500
MAX_CHOICES = 100  # values listed for one searched knob
MAX_GRID_POINTS = 100_000  # points of a grid search (Optuna's GridSampler lists them all)
SHOWN = 3  # offenders a refusal names before counting the rest
MAX_PARALLEL = 32  # trials asked (and trained side by side) at once
TPE_PARALLEL = 4  # TPE learns from finished trials: ask few at a time
PRUNE_PARALLEL = 2  # the median pruner compares against finished trials: ask few at a time


# --- the search space --------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """One searched knob: ``categorical`` (``choices``), ``int`` (``low``..``high``) or
    ``log`` (log-uniform in [``low``, ``high``])."""

    name: str
    kind: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None

    @property
    def size(self) -> float:
        """Number of distinct values (inf for a continuous range)."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int":
            return int(self.high) - int(self.low) + 1
        return math.inf

    def optuna(self):
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=True)

    def suggest(self, trial: Trial) -> Any:
        """This knob's value in ``trial`` (the sampler's pick, or the value the trial already holds)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=True)

    def ends(self) -> list:
        """What the schema must accept: every choice, or both ends of a range."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def values(self) -> list:
        """Every value (categorical, int) or the two ends (log)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return [self.low, self.high]

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high}

    def to_text(self) -> str:
        """URL form: ``c:a,b`` / ``i:1:5`` / ``l:0.0001:0.01``."""
        if self.kind == "categorical":
            return "c:" + ",".join(format_value(v) for v in self.choices)
        return f"{self.kind[0]}:{format_value(self.low)}:{format_value(self.high)}"

    @classmethod
    def from_text(cls, name: str, text: str) -> "Dist":
        kind, _, rest = str(text).partition(":")
        if kind == "c":
            return cls(name, "categorical", tuple(v for v in rest.split(",") if v != ""))
        low, _, high = rest.partition(":")
        if kind in ("i", "l") and low and high:
            return cls(name, "int" if kind == "i" else "log", (), low, high)
        raise ConfigError({shortened(name): f"Search range for {shortened(name)} must look like c:a,b or i:1:5 or "
                                        f"l:0.0001:0.01, got {shortened(text)}"})


def first_few(values: Sequence[Any]) -> str:
    """The first SHOWN values (each :func:`shown`), then how many more."""
    text = ", ".join(shortened(v) for v in values[:SHOWN])
    return text + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


DERIVED_RANGES = {"depth": (0, MAX_HIDDEN_LAYERS), "width": (1, MAX_WIDTH)}


def _derived_problem(name: str, values: Sequence[int]) -> str | None:
    """Why depth or width values cannot build ``hidden`` (checked before any is built)."""
    lo, hi = DERIVED_RANGES[name]
    bad = [v for v in values if not lo <= v <= hi]
    if not bad:
        return None
    if name == "depth":
        return f"Hidden layers (hidden) has {first_few(bad)} layers: allowed {lo}-{hi}"
    return f"Hidden layers (hidden) width {first_few(bad)}: each width must be in [{lo}, {hi}]"


def _choice_problem(name: str, values: Sequence[Any]) -> str | None:
    """Why values of a knob with a fixed list of choices are not among them."""
    knob = knob_of(name)
    bad = [v for v in values if knob.choices is not None and v not in knob.choices]
    if not bad:
        return None
    return f"{knob.label} ({name}) = {first_few(bad)} is not allowed: one of {', '.join(knob.choices)}"


def _parse(name: str, value: Any) -> Any:
    if name in DERIVED:
        text = str(value).strip()
        if isinstance(value, bool) or not text.lstrip("-").isdigit() or len(text) > MAX_DIGITS:
            raise ValueError(f"{name.capitalize()} must be a whole number of at most {MAX_DIGITS} digits, "
                             f"got {shortened(value)}")
        return int(text)
    return parse_value(name, value)


def _clean(dist: Dist) -> Dist:
    """Values parsed to the field's type and, for depth and width, within their bounds (raises ConfigError
    naming the knob); nothing is built from them yet."""
    name = dist.name
    if name in NOT_SEARCHABLE:
        hint = " (search depth and width instead)" if name == "hidden" else ""
        raise ConfigError({name: f"{name!r} cannot be searched{hint}"})
    if dist.kind not in KINDS:
        raise ConfigError({name: f"Distribution of {name!r} must be one of {', '.join(KINDS)}, "
                                 f"got {shortened(dist.kind)}"})
    if dist.kind == "categorical" and len(dist.choices) > MAX_CHOICES:
        raise ConfigError({name: f"Search space for {name} lists {len(dist.choices)} values: at most {MAX_CHOICES}"})
    try:
        if dist.kind == "categorical":
            choices = tuple(_parse(name, v) for v in dist.choices)
            if len(set(choices)) != len(choices):
                twice = [v for i, v in enumerate(choices) if v in choices[:i]]
                raise ConfigError({name: f"Search space for {name} lists a value twice: {first_few(twice)}"})
            values: Sequence = choices
        else:
            low, high = _parse(name, dist.low), _parse(name, dist.high)
            values = (low, high)
    except ValueError as exc:
        raise ConfigError({name: clipped(str(exc))}) from None
    problem = _derived_problem(name, values) if name in DERIVED else _choice_problem(name, values)
    if problem:
        raise ConfigError({name: f"Search space for {name}: {problem}"})
    if dist.kind == "categorical":
        return Dist(name, "categorical", choices)
    kind_of = "int" if name in DERIVED else FIELDS[name].type
    if dist.kind == "int" and kind_of != "int":
        raise ConfigError({name: f"An integer range needs a whole-number setting; {name!r} is not one"})
    if dist.kind == "log" and (kind_of != "float" or not low > 0):
        raise ConfigError({name: f"A log-uniform range needs a number setting with a lower end above 0; "
                                 f"{name!r} from {shortened(low)} is not one"})
    if low > high:
        raise ConfigError({name: f"Search range for {name!r} runs from {shortened(low)} down to {shortened(high)}: "
                                 "swap the ends"})
    return Dist(name, dist.kind, (), float(low) if dist.kind == "log" else int(low),
                float(high) if dist.kind == "log" else int(high))


def trial_config(base: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """The run of one point of the space (depth/width build ``hidden``); raises the schema's ConfigError."""
    params = dict(params)
    depth, width = params.pop("depth", None), params.pop("width", None)
    if depth is not None or width is not None:
        width = width if width is not None else (base.hidden[0] if base.hidden else 64)
        depth = depth if depth is not None else len(base.hidden)
        if not 0 <= depth <= MAX_HIDDEN_LAYERS:  # before (width,) * depth is built
            raise ConfigError({"hidden": f"Depth = {shortened(depth)}: allowed 0-{MAX_HIDDEN_LAYERS} hidden layers"})
        params["hidden"] = (int(width),) * int(depth)
    return base.replace(**params)


# --- the sweep config ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig(TaskConfig):
    """A base run, a search space over some of its knobs, how to search it, and the budget.

    ``parallel`` is how many trials are asked (and trained side by side) at once; 0 lets the
    sampler and pruner pick it.
    """

    KIND: ClassVar[str] = "sweep"

    base: RunConfig = field(default_factory=lambda: RunConfig())
    space: tuple[Dist, ...] = ()
    sampler: str = "random"
    pruner: str = "none"
    trials: int = 20
    seed: int = 0
    parallel: int = 0

    def __post_init__(self) -> None:
        problems: dict[str, str] = {}
        cleaned = []
        space = [dist if isinstance(dist, Dist) else Dist(**dist) for dist in self.space]
        unknown = [d.name for d in space if d.name not in FIELDS and d.name not in DERIVED]
        if unknown:
            problems["space"] = f"Unknown settings in the search space: {first_few(unknown)}"
        for dist in space:
            if dist.name in unknown:
                continue
            try:
                cleaned.append(_clean(dist))
            except ConfigError as exc:
                problems.update(exc.problems)
            if len(problems) > SHOWN:  # a refusal names a few problems, not every one of a hostile list
                problems["space"] = f"{len(space)} searched knobs, at least {len(problems)} of them wrong"
                break
        object.__setattr__(self, "space", tuple(sorted(cleaned, key=lambda d: d.name)))
        names = [d.name for d in self.space]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            problems["space"] = f"The search space names a knob twice: {first_few(twice)}"
        if self.sampler not in SAMPLERS:
            problems["sampler"] = f"Sampler {shortened(self.sampler)} is not allowed: one of {', '.join(SAMPLERS)}"
        if self.pruner not in PRUNERS:
            problems["pruner"] = f"Pruner {shortened(self.pruner)} is not allowed: one of {', '.join(PRUNERS)}"
        for name, lo, hi in (("trials", 1, MAX_TRIALS), ("seed", 0, 2**31 - 1), ("parallel", 0, MAX_PARALLEL)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                problems[name] = f"{name.capitalize()} = {shortened(value)}: allowed {lo}-{hi}"
        if not problems:
            problems.update(self._space_problems())
        if problems:
            raise ConfigError(problems)

    def _space_problems(self) -> dict[str, str]:
        if not self.space:
            return {"space": "The search space is empty: choose at least one knob to vary (with two or more values)"}
        empty = [d.name for d in self.space if d.size == 0]
        if empty:
            return {"space": f"No values to search for {', '.join(empty)}: give each searched knob at least one"}
        if self.grid_size == 1:
            return {"space": "The search space has one point only: every trial would train the same run. "
                             "Give at least one knob two or more values"}
        if self.sampler == "grid" and not math.isfinite(self.grid_size):
            logs = [d.name for d in self.space if d.kind == "log"]
            return {"sampler": f"Grid search needs a finite list of values; {', '.join(logs)} is a continuous "
                               f"log-uniform range: list values instead, or use random or TPE"}
        if self.sampler == "grid" and self.grid_size > MAX_GRID_POINTS:
            return {"sampler": f"Grid search over {self.grid_size:.3g} points: at most {MAX_GRID_POINTS:,} (fewer "
                               f"values or shorter ranges), or use random or TPE"}
        # Every value a distribution can give, against the schema (the ends of ranges, each choice).
        for dist in self.space:
            for value in dist.ends():
                try:
                    trial_config(self.base, {dist.name: value})
                except ConfigError as exc:
                    return {dist.name: clipped(f"Search space for {dist.name}: {exc}")}
        if "depth" in self.names and "width" in self.names:
            depth, width = self.dist("depth"), self.dist("width")
            for d, w in itertools.product(depth.ends(), width.ends()):
                try:
                    trial_config(self.base, {"depth": d, "width": w})
                except ConfigError as exc:
                    return {"depth": clipped(f"Search space for depth x width: {exc}")}
        return {}

    # --- derived ----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.space]

    def dist(self, name: str) -> Dist:
        return next(d for d in self.space if d.name == name)

    @property
    def device(self) -> str:
        return self.base.device

    @property
    def grid_size(self) -> float:
        """Points in the space (inf when a knob is a continuous range)."""
        return math.prod(d.size for d in self.space)

    @property
    def n_trials(self) -> int:
        """Trials the sweep runs: the budget, at most every point once for grid search."""
        return int(min(self.trials, self.grid_size)) if self.sampler == "grid" else self.trials

    @property
    def batch(self) -> int:
        """Trials asked at once."""
        if self.parallel:
            return self.parallel
        if self.pruner == "median":
            return PRUNE_PARALLEL
        # successive halving compares a trial with every trial that reached the same epoch, finished or not
        return TPE_PARALLEL if self.sampler == "tpe" else min(self.n_trials, MAX_PARALLEL)

    def sample_points(self, n: int = 200) -> list[dict]:
        """``n`` points drawn uniformly (log-uniform for log ranges) with this sweep's seed: for estimates."""
        rng = random.Random(self.seed)
        out = []
        for _ in range(n):
            point = {}
            for d in self.space:
                if d.kind == "categorical":
                    point[d.name] = rng.choice(d.choices)
                elif d.kind == "int":
                    point[d.name] = rng.randint(int(d.low), int(d.high))
                else:
                    point[d.name] = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
            out.append(point)
        return out

    def trial_cost(self, shape: "DataShape") -> float:
        """Estimated GFLOP of one trial: 6 x parameters x training examples x epochs (forward +
        backward), averaged over points of the space."""
        costs = [6 * count_parameters(cfg, shape.input_shape, shape.n_classes) * shape.n_train
                 * cfg.epochs / 1e9 for cfg in (trial_config(self.base, p) for p in self.sample_points())]
        return sum(costs) / len(costs)

    def cost(self, shape: "DataShape") -> float:
        """Estimated GFLOP of the whole sweep (trials x estimated trial cost)."""
        return self.n_trials * self.trial_cost(shape)

    def study_name(self) -> str:
        """The Optuna study: the key without the budget, so a larger budget continues the same study."""
        return "sweep-" + self._digest(self.replace(trials=1).to_dict())

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "space": [d.to_dict() for d in self.space], "sampler": self.sampler,
                "pruner": self.pruner, "trials": self.trials, "seed": self.seed, "parallel": self.parallel}

    def key(self) -> str:
        """The task key with the trial budget appended (the study, :meth:`study_name`, leaves it out)."""
        return super().key() + f"-{self.trials}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepConfig":
        data = dict(data)
        base = RunConfig.from_dict(data.pop("base", {}))
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError({k: f"Unknown sweep setting {k!r}" for k in unknown})
        space = []
        for raw in data.pop("space", []):
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise ConfigError({"space": f"Each searched knob needs a name and a distribution, got {raw!r}"})
            raw = dict(raw)
            space.append(Dist(str(raw.pop("name")), str(raw.pop("kind", "categorical")),
                              tuple(raw.pop("choices", ())), raw.pop("low", None), raw.pop("high", None)))
        return cls(base=base, space=tuple(space), **data)

    def to_query(self) -> dict[str, str]:
        """Query-string form: the base run's fields, ``sweep_<setting>`` and ``space_<knob>``."""
        out = dict(self.base.to_query())
        default = SweepConfig.__dataclass_fields__
        for name in ("sampler", "pruner", "trials", "seed", "parallel"):
            value = getattr(self, name)
            if value != default[name].default:
                out[f"sweep_{name}"] = str(value)
        out.update({f"space_{d.name}": d.to_text() for d in self.space})
        return out

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "SweepConfig":
        """Inverse of :meth:`to_query`; other keys (page ids) are ignored."""
        base = RunConfig.from_query(query)
        settings: dict[str, Any] = {}
        for name in ("sampler", "pruner", "trials", "seed", "parallel"):
            if f"sweep_{name}" in query:
                value = query[f"sweep_{name}"]
                if name in ("sampler", "pruner"):
                    settings[name] = str(value)
                else:
                    try:
                        settings[name] = int(value)
                    except ValueError:
                        raise ConfigError({name: f"{name.capitalize()} must be a whole number, "
                                                 f"got {shortened(value)}"}) from None
        space = tuple(Dist.from_text(k[len("space_"):], v) for k, v in sorted(query.items()) if k.startswith("space_"))
        return cls(base=base, space=space, **settings)


@dataclass(frozen=True)
class DataShape:
    """What a cost estimate needs to know about a dataset."""

    n_train: int
    input_shape: tuple[int, ...]
    n_classes: int


def data_shape(cfg: RunConfig) -> DataShape:
    """Training examples after the validation split, the input's shape and classes (loads the dataset)."""
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    n_train = len(datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)[0])
    return DataShape(n_train, tuple(ds.input_shape), ds.n_classes)


def format_gflop(gflop: float) -> str:
    for unit, scale in (("PFLOP", 1e6), ("TFLOP", 1e3), ("GFLOP", 1.0)):
        if gflop >= scale:
            return f"{gflop / scale:.3g} {unit}"
    return f"{gflop * 1e3:.3g} MFLOP"
