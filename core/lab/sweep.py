"""Hyperparameter sweeps: a search space over RunConfig knobs, searched by Optuna.

A :class:`SweepConfig` is a base :class:`RunConfig`, a declared subset of its knobs with
distributions (:class:`Dist`: a list of values, an integer range, or a log-uniform range), an
Optuna sampler (grid, random, TPE) and pruner (none, median, successive halving), a trial
budget and a seed. "depth" and "width" are derived knobs that build ``hidden``. Every value a
distribution can give is checked by the RunConfig schema, so a bad range gets the schema's
own message.

:func:`run_sweep` drives Optuna by ask-and-tell: it asks a batch of trials, trains the
trials that share a data stream (:data:`core.engine.train.LOCKSTEP_FIELDS`) as one batched lanes job
(:func:`core.lab.grid.plan_grid`, :class:`core.engine.batched.StackedLanes`; only trials that share a
stack, see :func:`split_plan`), reports each trial's
validation accuracy at epoch ends to the pruner, and tells Optuna the result. A trial whose
run is already in the run store is told from the store without training; a diverged trial is
told as failed and the sweep goes on. The study lives in an RDB (SQLite in the cache folder,
or any SQLAlchemy URL in ``GRADIENT_LAB_SWEEP_DB``), so a cancelled or killed sweep resumes
with its finished trials intact: trials left running are asked again with the same values.
Registered with the job manager as kind "sweep".
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from core.engine import catalog
from core.engine import data as datasets
from core.engine import paths
from core.engine.batched import StackedLanes, stack_key
from core.engine.config import FIELDS, MAX_HIDDEN_LAYERS, ConfigError, RunConfig, format_value, parse_value
from core.engine.task import TaskConfig
from core.engine.events import (SERVED_FROM_STORE, CellEvent, Event, RunFailed, RunFinished, StoredRun, SweepStarted,
                               TrialDone)
from core.lab.grid import plan_grid
from core.engine.lanes import ModuleLanes
from core.engine.models import count_parameters
from core.engine.train import train_lanes

optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported as events, not log lines

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving")
SAMPLER_TITLES = {"grid": "Grid search", "random": "Random search", "tpe": "Bayesian search (TPE)"}
PRUNER_TITLES = {"none": "No pruning", "median": "Median pruner", "halving": "Successive halving"}
KINDS = ("categorical", "int", "log")
DERIVED = ("depth", "width")  # build ``hidden`` = (width,) * depth
NOT_SEARCHABLE = ("dataset", "device", "hidden", "log_every")
MAX_TRIALS = 500
MAX_PARALLEL = 32  # trials asked (and trained side by side) at once
TPE_PARALLEL = 4  # TPE learns from finished trials: ask few at a time
INTERRUPTED = "interrupted"  # the outcome of a trial cut short by a cancel or a killed process: asked again
PRUNE_PARALLEL = 2  # a pruner compares against finished trials: ask few at a time
DB_ENV = "GRADIENT_LAB_SWEEP_DB"


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
        raise ConfigError({name: f"Search range for {name!r} must look like c:a,b or i:1:5 or l:0.0001:0.01, "
                                 f"got {text!r}"})


def _parse(name: str, value: Any) -> Any:
    if name in DERIVED:
        if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
            raise ValueError(f"{name.capitalize()} must be a whole number, got {value!r}")
        return int(str(value).strip())
    return parse_value(name, value)


def _clean(dist: Dist) -> Dist:
    """Values parsed to the field's type (raises ConfigError naming the knob)."""
    name = dist.name
    if name not in FIELDS and name not in DERIVED:
        raise ConfigError({name: f"Unknown setting {name!r} in the search space"})
    if name in NOT_SEARCHABLE:
        hint = " (search depth and width instead)" if name == "hidden" else ""
        raise ConfigError({name: f"{name!r} cannot be searched{hint}"})
    if dist.kind not in KINDS:
        raise ConfigError({name: f"Distribution of {name!r} must be one of {', '.join(KINDS)}, got {dist.kind!r}"})
    try:
        if dist.kind == "categorical":
            choices = tuple(_parse(name, v) for v in dist.choices)
            if len(set(choices)) != len(choices):
                raise ConfigError({name: f"Search space for {name} lists a value twice: {list(choices)}"})
            return Dist(name, "categorical", choices)
        low, high = _parse(name, dist.low), _parse(name, dist.high)
    except ValueError as exc:
        raise ConfigError({name: str(exc)}) from None
    kind_of = "int" if name in DERIVED else FIELDS[name].type
    if dist.kind == "int" and kind_of != "int":
        raise ConfigError({name: f"An integer range needs a whole-number setting; {name!r} is not one"})
    if dist.kind == "log" and (kind_of != "float" or not low > 0):
        raise ConfigError({name: f"A log-uniform range needs a number setting with a lower end above 0; "
                                 f"{name!r} from {low!r} is not one"})
    if low > high:
        raise ConfigError({name: f"Search range for {name!r} runs from {low!r} down to {high!r}: swap the ends"})
    return Dist(name, dist.kind, (), float(low) if dist.kind == "log" else int(low),
                float(high) if dist.kind == "log" else int(high))


def trial_config(base: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """The run of one point of the space (depth/width build ``hidden``); raises the schema's ConfigError."""
    params = dict(params)
    depth, width = params.pop("depth", None), params.pop("width", None)
    if depth is not None or width is not None:
        width = width if width is not None else (base.hidden[0] if base.hidden else 64)
        depth = depth if depth is not None else len(base.hidden)
        if depth < 0:
            raise ConfigError({"hidden": f"Depth = {depth}: allowed 0-{MAX_HIDDEN_LAYERS} hidden layers"})
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
        for dist in self.space:
            dist = dist if isinstance(dist, Dist) else Dist(**dist)
            try:
                cleaned.append(_clean(dist))
            except ConfigError as exc:
                problems.update(exc.problems)
        object.__setattr__(self, "space", tuple(sorted(cleaned, key=lambda d: d.name)))
        names = [d.name for d in self.space]
        if len(set(names)) != len(names):
            problems["space"] = f"The search space names a knob twice: {names}"
        if self.sampler not in SAMPLERS:
            problems["sampler"] = f"Sampler {self.sampler!r} is not allowed: one of {', '.join(SAMPLERS)}"
        if self.pruner not in PRUNERS:
            problems["pruner"] = f"Pruner {self.pruner!r} is not allowed: one of {', '.join(PRUNERS)}"
        for name, lo, hi in (("trials", 1, MAX_TRIALS), ("seed", 0, 2**31 - 1), ("parallel", 0, MAX_PARALLEL)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                problems[name] = f"{name.capitalize()} = {value!r}: allowed {lo}-{hi}"
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
        # Every value a distribution can give, against the schema (the ends of ranges, each choice).
        for dist in self.space:
            for value in dist.ends():
                try:
                    trial_config(self.base, {dist.name: value})
                except ConfigError as exc:
                    return {dist.name: f"Search space for {dist.name}: {exc}"}
        if "depth" in self.names and "width" in self.names:
            depth, width = self.dist("depth"), self.dist("width")
            for d, w in itertools.product(depth.ends(), width.ends()):
                try:
                    trial_config(self.base, {"depth": d, "width": w})
                except ConfigError as exc:
                    return {"depth": f"Search space for depth x width: {exc}"}
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
                        raise ConfigError({name: f"{name.capitalize()} must be a whole number, got {value!r}"}) from None
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
        if url.startswith("sqlite") and (database := sqlalchemy.make_url(url).database) not in (None, "", ":memory:"):
            paths.private_file(database)  # owner-only (0600) before SQLite opens it; its -wal/-shm files follow
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
def run_sweep(sweep: SweepConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
              file_run: Callable[[str, RunConfig, list[Event]], None] | None = None,
              read_run: Callable[[str], StoredRun | None] | None = None,
              storage: optuna.storages.BaseStorage | str | None = None) -> RunFinished | RunFailed:
    """Search the space (see the module docstring); returns the sweep's terminal event.

    ``read_run`` looks a trial's run up in the run store, ``file_run`` hands a trained trial's run
    to the job manager to store (the manager is the store's only writer)."""
    t0 = time.perf_counter()
    cancel = cancel or threading.Event()
    try:
        study = open_study(sweep, storage)
        storage_text = redact(study._storage.url if hasattr(study._storage, "url") else storage_url())
    except (ConfigError, SweepStorageError, datasets.DatasetUnavailable) as exc:
        end = RunFailed(0, str(exc), type(exc).__name__, time.perf_counter() - t0)
        emit(end)
        return end
    requeued = _requeue_interrupted(study)
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    notes = []
    if sweep.sampler == "grid" and sweep.trials > sweep.grid_size:
        notes.append(f"The grid has {sweep.grid_size:g} points: {sweep.n_trials} trials visit each once")
    emit(SweepStarted(sweep.key(), sweep.study_name(), storage_text, sweep.n_trials, done, requeued, notes, time.time()))
    distributions = {d.name: d.optuna() for d in sweep.space}
    while done < sweep.n_trials and not cancel.is_set():
        asked = [study.ask(distributions) for _ in range(min(sweep.batch, sweep.n_trials - done))]
        done += _run_batch(sweep, study, asked, emit, cancel, file_run, read_run)
    return _finish(sweep, study, cancel, t0, emit)


def _requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process are asked again with the same values, then failed as
    interrupted (also one killed between recording its outcome and being told: it never finished)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.enqueue_trial(trial.params, skip_if_exists=False)
        study._storage.set_trial_user_attr(trial._trial_id, "outcome", INTERRUPTED)
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def _interrupt(study: optuna.Study, trial: optuna.Trial) -> None:
    """A cancelled trial is asked again (same values) when the sweep resumes."""
    study.enqueue_trial(trial.params)
    trial.set_user_attr("outcome", INTERRUPTED)
    study.tell(trial, state=TrialState.FAIL)


def _run_batch(sweep: SweepConfig, study: optuna.Study, asked: list[optuna.Trial], emit: Callable[[Event], None],
               cancel: threading.Event, file_run: Callable[[str, RunConfig, list[Event]], None] | None,
               read_run: Callable[[str], StoredRun | None] | None) -> int:
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
    cells = [(f"trial {n}", configs[n]) for n in numbers]
    batched, alone = split_plan(cells)

    def lane_emit(number: int) -> tuple[Callable[[Event], None], Callable[[], str | None]]:
        trial, cfg, history = by_number[number], configs[number], []

        def on_event(event: Event) -> None:
            history.append(event)
            if event.kind == "eval":
                emit(CellEvent(number, f"trial {number}", event))
                if float(event.epoch).is_integer() and event.epoch >= 1:
                    trial.report(event.val_acc, int(event.epoch))
            elif event.kind in ("finished", "failed"):
                _tell_end(trial, cfg, event, history, file_run, tell)

        def should_prune() -> str | None:
            last = next((e for e in reversed(history) if e.kind == "eval"), None)
            if last is None or last.epoch >= cfg.epochs or not trial.should_prune():
                return None
            return f"pruned by the {PRUNER_TITLES[sweep.pruner].lower()} after epoch {int(last.epoch)}"
        return on_event, should_prune

    for group in batched:
        if cancel.is_set():
            break
        group = [group[k] for k in StackedLanes.stacked_order([cells[i][1] for i in group])]
        hooks = [lane_emit(numbers[i]) for i in group]
        train_lanes([cells[i][1] for i in group], StackedLanes, [h[0] for h in hooks], cancel,
                    [cells[i][1].key() for i in group], prune=lambda lane: hooks[lane][1]())
    for i in alone:
        if cancel.is_set():
            break
        on_event, should_prune = lane_emit(numbers[i])
        train_lanes([cells[i][1]], ModuleLanes, [on_event], cancel, [cells[i][1].key()],
                    prune=lambda lane: should_prune())
    for number in numbers:  # cancelled before or while training: asked again on resume
        if number not in told_numbers:
            _interrupt(study, by_number[number])
    return told


def split_plan(cells: Sequence[tuple[str, RunConfig]]) -> tuple[list[list[int]], list[int]]:
    """Which trials train batched (per data stream, those that share a stack: same width and
    optimizer settings, see core.engine.batched.stack_key) and which alone. Batching a stack of one gains
    nothing (bench_sweep measured it slower than the single-run lanes), so it trains alone."""
    plan = plan_grid(cells)
    batched, alone = [], list(plan.alone)
    for group in plan.batched:
        stacks: dict[tuple, list[int]] = {}
        for i in group:
            stacks.setdefault(stack_key(cells[i][1]), []).append(i)
        shared = [i for members in stacks.values() if len(members) > 1 for i in members]
        alone += [i for members in stacks.values() if len(members) == 1 for i in members]
        if shared:
            batched.append(shared)
    return batched, sorted(alone)


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


def _finish(sweep: SweepConfig, study: optuna.Study, cancel: threading.Event, t0: float,
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

