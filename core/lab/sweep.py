"""Hyperparameter sweeps: a search space over RunConfig knobs, searched by Optuna.

A :class:`SweepConfig` is a base :class:`RunConfig`, a declared subset of its knobs with
distributions (:class:`Dist`: a list of values, an integer range, or a log-uniform range), an
Optuna sampler (grid, random, TPE) and pruner (none, median, successive halving), a trial
budget and a seed. "depth" and "width" are derived knobs that build ``hidden``. Every value a
distribution can give is checked by the RunConfig schema, so a bad range gets the schema's
own message.

:func:`run_sweep` drives Optuna by ask-and-tell: it asks a batch of trials, trains the
trials as one family (:func:`core.engine.family.train_family`: those that share a data stream and a
stack train batched, the others alone, each as :func:`core.engine.train.train` would), reports each trial's
validation accuracy at epoch ends to the pruner, and tells Optuna the result. A trial whose
run is already in the run store is told from the store without training; a diverged trial is
told as failed and the sweep goes on. The study lives in an RDB (SQLite in the cache folder,
or any SQLAlchemy URL in ``GRADIENT_LAB_SWEEP_DB``), so a cancelled or killed sweep resumes
with its finished trials intact: trials left running are asked again with the same values.
Registered with the job manager as kind "sweep".
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from core.engine import catalog
from core.engine import data as datasets
from core.engine import paths
from core.engine.config import (FIELDS, MAX_HIDDEN_LAYERS, MAX_WIDTH, ConfigError, RunConfig, format_value,
                                knob_of, parse_value)
from core.engine.task import SCHEMA_VERSION, json_object
from core.engine.events import (SERVED_FROM_STORE, CellEvent, Event, RunFailed, RunFinished, StoredRun, SweepStarted,
                               TrialDone)
from core.engine.family import FamilyPlan, plan_family, train_family

optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported as events, not log lines

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving")
SAMPLER_TITLES = {"grid": "Grid search", "random": "Random search", "tpe": "Bayesian search (TPE)"}
PRUNER_TITLES = {"none": "No pruning", "median": "Median pruner", "halving": "Successive halving"}
KINDS = ("categorical", "int", "log")
DERIVED = ("depth", "width")  # build ``hidden`` = (width,) * depth
NOT_SEARCHABLE = ("dataset", "device", "hidden", "log_every")
MAX_TRIALS = 500
MAX_CHOICES = 100  # values listed for one searched knob
MAX_GRID_POINTS = 100_000  # points of a grid search (Optuna's GridSampler lists them all)
SHOWN = 3  # offenders a refusal names before counting the rest
MAX_PARALLEL = 32  # trials asked (and trained side by side) at once
TPE_PARALLEL = 4  # TPE learns from finished trials: ask few at a time
INTERRUPTED = "interrupted"  # the outcome of a trial cut short by a cancel or a killed process: asked again
PRUNE_PARALLEL = 2  # a pruner compares against finished trials: ask few at a time
DEFAULT_MAX_COST = 500_000.0  # GFLOP per sweep, override with GRADIENT_LAB_MAX_SWEEP_COST
DB_ENV = "GRADIENT_LAB_SWEEP_DB"
COST_ENV = "GRADIENT_LAB_MAX_SWEEP_COST"


class SweepStorageError(RuntimeError):
    """The study database cannot be opened (bad URL, server down, no permission)."""


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

    def suggest(self, trial: optuna.Trial) -> Any:
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
        raise ConfigError({shown(name): f"Search range for {shown(name)} must look like c:a,b or i:1:5 or "
                                        f"l:0.0001:0.01, got {shown(text)}"})


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as a refusal quotes it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def first_few(values: Sequence[Any]) -> str:
    """The first SHOWN values (each :func:`shown`), then how many more."""
    text = ", ".join(shown(v) for v in values[:SHOWN])
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


def cut(text: str, limit: int = 300) -> str:
    """A relayed message, at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _parse(name: str, value: Any) -> Any:
    if name in DERIVED:
        text = str(value).strip()
        if isinstance(value, bool) or not text.lstrip("-").isdigit() or len(text) > 18:
            raise ValueError(f"{name.capitalize()} must be a whole number of at most 18 digits, got {shown(value)}")
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
        raise ConfigError({name: f"Distribution of {name!r} must be one of {', '.join(KINDS)}, got {shown(dist.kind)}"})
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
        raise ConfigError({name: cut(str(exc))}) from None
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
                                 f"{name!r} from {shown(low)} is not one"})
    if low > high:
        raise ConfigError({name: f"Search range for {name!r} runs from {shown(low)} down to {shown(high)}: swap the ends"})
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
            raise ConfigError({"hidden": f"Depth = {shown(depth)}: allowed 0-{MAX_HIDDEN_LAYERS} hidden layers"})
        params["hidden"] = (int(width),) * int(depth)
    return base.replace(**params)


# --- the sweep config ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    """A base run, a search space over some of its knobs, how to search it, and the budget.

    ``parallel`` is how many trials are asked (and trained side by side) at once; 0 lets the
    sampler and pruner pick it.
    """

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
            problems["sampler"] = f"Sampler {shown(self.sampler)} is not allowed: one of {', '.join(SAMPLERS)}"
        if self.pruner not in PRUNERS:
            problems["pruner"] = f"Pruner {shown(self.pruner)} is not allowed: one of {', '.join(PRUNERS)}"
        for name, lo, hi in (("trials", 1, MAX_TRIALS), ("seed", 0, 2**31 - 1), ("parallel", 0, MAX_PARALLEL)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                problems[name] = f"{name.capitalize()} = {shown(value)}: allowed {lo}-{hi}"
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
                    return {dist.name: cut(f"Search space for {dist.name}: {exc}")}
        if "depth" in self.names and "width" in self.names:
            depth, width = self.dist("depth"), self.dist("width")
            for d, w in itertools.product(depth.ends(), width.ends()):
                try:
                    trial_config(self.base, {"depth": d, "width": w})
                except ConfigError as exc:
                    return {"depth": cut(f"Search space for depth x width: {exc}")}
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
        if self.pruner != "none":
            return PRUNE_PARALLEL
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
        costs = [6 * mlp_parameters(cfg.hidden, shape.n_inputs, shape.n_classes, cfg.arch) * shape.n_train
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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _digest(data: dict) -> str:
        payload = json.dumps({"schema": SCHEMA_VERSION, "sweep": data}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def key(self) -> str:
        """Stable id: sha256 of the canonical JSON (same sweep -> same key anywhere)."""
        return "sweep-" + self._digest(self.to_dict()) + f"-{self.trials}"

    def replace(self, **changes: Any) -> "SweepConfig":
        return dataclasses.replace(self, **changes)

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

    @classmethod
    def from_json(cls, text: str) -> "SweepConfig":
        return cls.from_dict(json_object(text, "Sweep config"))

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
                        raise ConfigError({name: f"{name.capitalize()} must be a whole number, got {shown(value)}"}) from None
        space = tuple(Dist.from_text(k[len("space_"):], v) for k, v in sorted(query.items()) if k.startswith("space_"))
        return cls(base=base, space=space, **settings)


@dataclass(frozen=True)
class DataShape:
    """What a cost estimate needs to know about a dataset."""

    n_train: int
    n_inputs: int
    n_classes: int


def data_shape(cfg: RunConfig) -> DataShape:
    """Training examples after the validation split, inputs per example and classes (loads the dataset)."""
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    n_train = len(datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)[0])
    return DataShape(n_train, math.prod(ds.input_shape), ds.n_classes)


def mlp_parameters(hidden: Sequence[int], n_inputs: int, n_classes: int, arch: str = "mlp") -> int:
    """Weights and biases of the MLP head (the CNN's conv layers add 32*9+32 + 32*32*9+32 and its
    flattened input is 32 channels)."""
    widths = [n_inputs * (32 if arch == "cnn" else 1), *hidden, n_classes]
    conv = (32 * 9 + 32 + 32 * 32 * 9 + 32) if arch == "cnn" else 0
    return conv + sum(a * b + b for a, b in zip(widths, widths[1:]))


def max_cost() -> float:
    """The server's cap on a sweep's estimated GFLOP (GRADIENT_LAB_MAX_SWEEP_COST)."""
    raw = os.environ.get(COST_ENV, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_MAX_COST
    except ValueError:
        return DEFAULT_MAX_COST


def check_budget(sweep: SweepConfig, shape: DataShape | None = None) -> float:
    """The sweep's estimated GFLOP; raises ConfigError when it is above the server's cap."""
    cost = sweep.cost(shape or data_shape(sweep.base))
    cap = max_cost()
    if cost > cap:
        per_trial = cost / sweep.n_trials
        raise ConfigError({"trials": f"{sweep.n_trials} trials x ~{format_gflop(per_trial)} each = "
                                     f"~{format_gflop(cost)}, above this server's cap of {format_gflop(cap)} "
                                     f"({COST_ENV}): fewer trials, fewer epochs or smaller networks"})
    return cost


def format_gflop(gflop: float) -> str:
    for unit, scale in (("PFLOP", 1e6), ("TFLOP", 1e3), ("GFLOP", 1.0)):
        if gflop >= scale:
            return f"{gflop / scale:.3g} {unit}"
    return f"{gflop * 1e3:.3g} MFLOP"


# --- the study's storage -------------------------------------------------------------------------
def storage_url() -> str:
    """GRADIENT_LAB_SWEEP_DB, or an SQLite file in the cache folder."""
    url = os.environ.get(DB_ENV, "").strip()
    return url or f"sqlite:///{paths.private_dir('sweeps') / 'studies.db'}"


def redact(url: str) -> str:
    """The URL with any password hidden."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


_storages: dict[str, optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` (one per URL and process); raises SweepStorageError with a clear
    message when it cannot be used."""
    url = url or storage_url()
    with _storages_lock:
        if url not in _storages:
            _storages[url] = _connect(url)
        return _storages[url]


def _connect(url: str) -> optuna.storages.RDBStorage:
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        if url.startswith("sqlite"):
            sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
            storage.engine.dispose()  # pooled connections reopen with the pragmas
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SweepStorageError(f"The sweep database {redact(url)} cannot be opened ({detail}). Check "
                                f"{DB_ENV} (any SQLAlchemy URL, e.g. postgresql://user@host/db) or unset it "
                                f"to use SQLite in the cache folder") from None


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler for ask-and-tell: its ``after_trial`` calls ``study.stop()``, which
    raises outside ``study.optimize``; the sweep stops by itself after every point (``n_trials``)."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _sqlite_pragmas(connection, _record) -> None:
    """WAL journal, and no fsync per commit (a study writes on every report and tell; a power
    cut may lose the last trials, never corrupt the file)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sampler(sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "grid":
        return AskTellGridSampler({d.name: d.values() for d in sweep.space}, seed=sweep.seed)
    if sweep.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=min(10, max(2, sweep.n_trials // 3)))
    return optuna.samplers.RandomSampler(seed=sweep.seed)


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if sweep.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(sweep: SweepConfig, storage: optuna.storages.BaseStorage | str | None = None) -> optuna.Study:
    """The sweep's study (created on first use), with its sampler and pruner."""
    storage = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
    try:
        return optuna.create_study(storage=storage, study_name=sweep.study_name(), direction="maximize",
                                   sampler=make_sampler(sweep), pruner=make_pruner(sweep), load_if_exists=True)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SweepStorageError(f"The sweep database cannot be used ({str(exc).splitlines()[0]})") from None


def load_study(sweep: SweepConfig, storage: optuna.storages.BaseStorage | str | None = None) -> optuna.Study | None:
    """The sweep's study if it exists (for pages), else None."""
    storage = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
    try:
        return optuna.load_study(study_name=sweep.study_name(), storage=storage, sampler=make_sampler(sweep))
    except KeyError:
        return None


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial used up budget: finished, pruned, or failed for a reason of its own
    (diverged); not one interrupted by a cancel or a restart."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("outcome", INTERRUPTED) != INTERRUPTED)


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """Running maximum of trial values (None for failed trials keeps the best so far)."""
    out, best = [], None
    for v in values:
        if v is not None and (best is None or v > best):
            best = v
        out.append(best)
    return out


# --- the runner ----------------------------------------------------------------------------------
BOUNDARIES = ("asked", "suggesting", "training", "telling")  # where a sweep may be killed, for at_boundary
Boundary = Callable[[str, int], None]


def run_sweep(sweep: SweepConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
              file_run: Callable[[str, RunConfig, list[Event]], None] | None = None,
              read_run: Callable[[str], StoredRun | None] | None = None,
              storage: optuna.storages.BaseStorage | str | None = None,
              at_boundary: Boundary | None = None) -> RunFinished | RunFailed:
    """Search the space (see the module docstring); returns the sweep's terminal event.

    ``read_run`` looks a trial's run up in the run store, ``file_run`` hands a trained trial's run
    to the job manager to store (the manager is the store's only writer). ``at_boundary(name, trial)``
    is called at each of BOUNDARIES a trial passes (tests kill the sweep there). When ``emit`` raises
    (a dying worker's broken pipe) the sweep stops: its trials in flight are interrupted, not failed."""
    t0 = time.perf_counter()
    stop = _Stop(cancel or threading.Event())
    emit = stop.guard(emit)
    at_boundary = at_boundary or (lambda name, number: None)
    try:
        check_budget(sweep)
        storage = storage if isinstance(storage, optuna.storages.BaseStorage) else open_storage(storage)
        study = open_study(sweep, storage)
        storage_text = redact(getattr(storage, "url", None) or storage_url())
    except (ConfigError, SweepStorageError, datasets.DatasetUnavailable) as exc:
        end = RunFailed(0, str(exc), type(exc).__name__, time.perf_counter() - t0)
        emit(end)
        return end
    requeued = _requeue_interrupted(study, storage)
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    notes = []
    if sweep.sampler == "grid" and sweep.trials > sweep.grid_size:
        notes.append(f"The grid has {sweep.grid_size:g} points: {sweep.n_trials} trials visit each once")
    emit(SweepStarted(sweep.key(), sweep.study_name(), storage_text, sweep.n_trials, done, requeued, notes, time.time()))
    while done < sweep.n_trials and not stop.is_set():
        asked = [_ask(study, sweep.space, at_boundary) for _ in range(min(sweep.batch, sweep.n_trials - done))]
        done += _run_batch(sweep, study, storage, asked, emit, stop, file_run, read_run, at_boundary)
    return _finish(sweep, study, stop, t0, emit)


class _Stop:
    """What stops a sweep: its cancel flag, or an event sink that raised (the worker it streams to is gone)."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.broken = threading.Event()

    def is_set(self) -> bool:
        return self.cancel.is_set() or self.broken.is_set()

    def guard(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        def send(event: Event) -> None:
            if self.broken.is_set():
                return
            try:
                emit(event)
            except Exception:  # BrokenPipeError and the like: nobody is listening any more
                self.broken.set()
        return send


def _ask(study: optuna.Study, space: Sequence[Dist], at_boundary: Boundary) -> optuna.Trial:
    """A new trial with a value for every knob of ``space``."""
    trial = study.ask()
    at_boundary("asked", trial.number)
    for k, dist in enumerate(space):
        if k:
            at_boundary("suggesting", trial.number)
        dist.suggest(trial)
    return trial


def _trial_id(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def _ask_again(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> None:
    """Trial ``number``, cut short, is failed as interrupted (not counted) and queued to be asked again: the
    copy keeps the values it had and what its sampler needs for the rest (a grid search's point, values
    given to enqueue_trial), so one killed before all its values were chosen gets the same point. The copy
    is queued before the original is failed: a kill in between repeats a point, never loses one."""
    trial_id = _trial_id(study, storage, number)
    frozen = storage.get_trial(trial_id)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=frozen.params,
                                              distributions=frozen.distributions, system_attrs=frozen.system_attrs))
    storage.set_trial_user_attr(trial_id, "outcome", INTERRUPTED)
    study.tell(number, state=TrialState.FAIL)


def _requeue_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Trials left RUNNING by a killed process (at any point: before all their values were chosen, while
    training, or between recording their outcome and being told) never finished: each is asked again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        _ask_again(study, storage, trial.number)
    return len(stale)


def _run_batch(sweep: SweepConfig, study: optuna.Study, storage: optuna.storages.BaseStorage,
               asked: list[optuna.Trial], emit: Callable[[Event], None], stop: _Stop,
               file_run: Callable[[str, RunConfig, list[Event]], None] | None,
               read_run: Callable[[str], StoredRun | None] | None, at_boundary: Boundary) -> int:
    """Train (or serve from the store) one batch of asked trials; returns how many were told."""
    configs: dict[int, RunConfig] = {}
    told, told_numbers = 0, set()

    def tell(trial: optuna.Trial, state: TrialState, value: float | None, outcome: str, reason: str = "",
             test_acc: float | None = None, elapsed: float = 0.0) -> None:
        nonlocal told
        trial.set_user_attr("outcome", outcome)
        if reason:
            trial.set_user_attr("reason", reason[:500])
        if test_acc is not None:
            trial.set_user_attr("test_acc", test_acc)
        at_boundary("telling", trial.number)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        told += 1
        told_numbers.add(trial.number)
        key = trial.user_attrs.get("key", "")
        emit(TrialDone(trial.number, dict(trial.params), state.name, value, key, outcome, reason, test_acc, elapsed))

    for trial in asked:
        try:
            cfg = trial_config(sweep.base, trial.params)
        except ConfigError as exc:  # a combination the schema refuses (ranges were checked end by end)
            tell(trial, TrialState.FAIL, None, "failed", str(exc))
            continue
        trial.set_user_attr("key", cfg.key())
        stored = read_run(cfg.key()) if read_run is not None else None
        if stored is not None and stored.meta.get("status") in SERVED_FROM_STORE:
            _tell_stored(trial, stored, tell)
        else:
            configs[trial.number] = cfg
    by_number = {t.number: t for t in asked}
    numbers = list(configs)
    hooks = [lane_hooks(sweep, by_number[n], configs[n], emit, file_run, tell, at_boundary) for n in numbers]
    cells = [(f"trial {n}", configs[n]) for n in numbers]
    if cells:  # every trial may have been served from the store
        train_family([cfg for _, cfg in cells], [h[0] for h in hooks], plan_trials(cells), stop,
                     prune=lambda i: hooks[i][1]())
    for number in numbers:  # cancelled before or while training: asked again on resume
        if number not in told_numbers:
            _ask_again(study, storage, number)
    return told


def plan_trials(cells: Sequence[tuple[str, RunConfig]]) -> FamilyPlan:
    """Which trials train batched (per data stream, those that share a stack: same width and optimizer
    settings, see core.engine.batched.stack_key) and which alone. Batching a stack of one gains nothing
    (bench_sweep measured it slower than the single-run lanes), so it trains alone."""
    return plan_family(cells, min_stack=2)


def lane_hooks(sweep: SweepConfig, trial: optuna.Trial, cfg: RunConfig, emit: Callable[[Event], None],
               file_run: Callable[[str, RunConfig, list[Event]], None] | None, tell: Callable[..., None],
               at_boundary: Boundary) -> tuple[Callable[[Event], None], Callable[[], str | None]]:
    """(the trial's event sink, its pruning question): epoch-end accuracies reported to the pruner, the
    trial told when its run ends."""
    history: list[Event] = []

    def on_event(event: Event) -> None:
        history.append(event)
        if event.kind == "eval":
            emit(CellEvent(trial.number, f"trial {trial.number}", event))
            if float(event.epoch).is_integer() and event.epoch >= 1:
                trial.report(event.val_acc, int(event.epoch))
                at_boundary("training", trial.number)
        elif event.kind in ("finished", "failed"):
            _tell_end(trial, cfg, event, history, file_run, tell)

    def should_prune() -> str | None:
        last = next((e for e in reversed(history) if e.kind == "eval"), None)
        if last is None or last.epoch >= cfg.epochs or not trial.should_prune():
            return None
        return f"pruned by the {PRUNER_TITLES[sweep.pruner].lower()} after epoch {int(last.epoch)}"
    return on_event, should_prune


def _epoch_ends(events: Sequence[Event]) -> list[tuple[int, float]]:
    return [(int(e.epoch), e.val_acc) for e in events if e.kind == "eval" and float(e.epoch).is_integer()
            and e.epoch >= 1]


def _tell_stored(trial: optuna.Trial, stored: StoredRun, tell: Callable[..., None]) -> None:
    """Tell a trial from its stored run (its epoch-end accuracies too, for the pruner), without training."""
    end = next((e for e in reversed(stored.events) if e.kind == "finished"), None)
    if end is None:
        tell(trial, TrialState.FAIL, None, "failed", "the stored run could not be read")
        return
    for epoch, val_acc in _epoch_ends(stored.events):
        trial.report(val_acc, epoch)
    if end.status == "diverged":
        tell(trial, TrialState.FAIL, None, "diverged", f"(from the run store) {end.reason}")
    else:
        tell(trial, TrialState.COMPLETE, end.val_acc, "stored", "served from the run store", end.test_acc)


def _tell_end(trial: optuna.Trial, cfg: RunConfig, event: Event, history: list[Event],
              file_run: Callable[[str, RunConfig, list[Event]], None] | None, tell: Callable[..., None]) -> None:
    if event.kind == "failed":
        tell(trial, TrialState.FAIL, None, "failed", event.message, elapsed=event.elapsed)
        return
    if event.status == "cancelled":
        return  # interrupted: asked again when the sweep resumes
    if event.status in SERVED_FROM_STORE and file_run is not None:
        try:  # so the Playground replays the trial; a disk problem does not stop the sweep
            file_run(cfg.key(), cfg, history)
        except Exception:  # disk full etc.: the study still holds the trial's result
            pass
    if event.status == "finished":
        tell(trial, TrialState.COMPLETE, event.val_acc, "finished", "", event.test_acc, event.elapsed)
    elif event.status == "pruned":
        tell(trial, TrialState.PRUNED, None, "pruned", event.reason, elapsed=event.elapsed)
    else:
        tell(trial, TrialState.FAIL, None, "diverged", event.reason, elapsed=event.elapsed)


def _finish(sweep: SweepConfig, study: optuna.Study, cancel: _Stop, t0: float,
            emit: Callable[[Event], None]) -> RunFinished:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if counted(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    counts = (f"{states.count(TrialState.COMPLETE)} finished, {states.count(TrialState.PRUNED)} pruned, "
              f"{states.count(TrialState.FAIL)} failed")
    best_text = (f"best validation accuracy {best.value:.4f} (trial {best.number})" if best is not None
                 else "no trial finished")
    status = "cancelled" if cancel.is_set() and len(states) < sweep.n_trials else "finished"
    end = RunFinished(status=status, step=len(states), epoch=0.0, elapsed=time.perf_counter() - t0,
                      reason=f"{len(states)} of {sweep.n_trials} trials: {counts}; {best_text}",
                      val_acc=best.value if best is not None else None,
                      test_acc=best.user_attrs.get("test_acc") if best is not None else None)
    emit(end)
    return end


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: number, state, value, params, outcome, run key, test accuracy."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                     "outcome": t.user_attrs.get("outcome", INTERRUPTED if t.state == TrialState.FAIL else ""),
                     "key": t.user_attrs.get("key", ""), "test_acc": t.user_attrs.get("test_acc"),
                     "reason": t.user_attrs.get("reason", "")})
    return rows


def top_configs(sweep: SweepConfig, study: optuna.Study, k: int = 3) -> list[tuple[optuna.trial.FrozenTrial, RunConfig]]:
    """The ``k`` best finished trials and their runs."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = sorted(complete, key=lambda t: (-t.value, t.number))[:k]
    return [(t, trial_config(sweep.base, t.params)) for t in best]

