"""A gradient check as a job: :class:`GradCheckConfig` (kind "gradcheck") and its runner :func:`run_gradcheck`,
which emits each result (one per initialization checked) as a :class:`~core.engine.events.GradCheckDone` before
the check's end event."""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from core.engine.config import ConfigError, RunConfig
from core.engine.data import DatasetUnavailable
from core.engine.events import Event, RunFailed, RunFinished
from core.engine.task import TaskConfig
from core.lab.gradcheck.numeric import check_seeds
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.stored import NoStoredWeights, ReadRun, RunGone, check_stored_run

MAX_KEY_CHARS = 100
MAX_SEEDS = 64  # initializations one check job reads at most
MAX_SEED = 2**31 - 1  # RunConfig's largest seed


@dataclass(frozen=True)
class GradCheckConfig(TaskConfig):
    """One check: the network (a stored run's own config when ``stored_run`` is set), the check's switches, and
    optionally a stored run whose weights ``options.at`` picks (``run_version``, the store's version of that run,
    makes a run trained again a new check). ``seeds``: how many initializations of the network to check, seeds
    ``run.seed``, ``run.seed + 1``, ... (a stored run has one). Checks compute on the CPU."""

    KIND: ClassVar[str] = "gradcheck"
    run: RunConfig = field(default_factory=RunConfig)
    options: CheckOptions = field(default_factory=CheckOptions)
    stored_run: str | None = None
    run_version: str | None = None
    seeds: int = 1

    def __post_init__(self) -> None:
        problems = {}
        if not isinstance(self.run, RunConfig):
            problems["run"] = f"run must be a RunConfig, got {type(self.run).__name__}"
        if not isinstance(self.options, CheckOptions):
            problems["options"] = f"options must be CheckOptions, got {type(self.options).__name__}"
        for name in ("stored_run", "run_version"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_KEY_CHARS):
                problems[name] = f"{name} must be a key of at most {MAX_KEY_CHARS} characters, got {str(value)[:40]!r}"
        if not (isinstance(self.seeds, int) and not isinstance(self.seeds, bool) and 1 <= self.seeds <= MAX_SEEDS):
            problems["seeds"] = f"seeds must be a whole number in [1, {MAX_SEEDS}], got {str(self.seeds)[:40]!r}"
        elif self.seeds > 1 and self.stored_run is not None:
            problems["seeds"] = "a stored run has one initialization: check it at one seed"
        elif isinstance(self.run, RunConfig) and self.run.seed + self.seeds - 1 > MAX_SEED:
            problems["seeds"] = f"seeds {self.run.seed}..{self.run.seed + self.seeds - 1} pass the largest seed {MAX_SEED}"
        if self.stored_run is None and getattr(self.options, "at", "init") != "init":
            problems["at"] = "the final weights are a stored run's: choose a stored run to check them"
        if problems:
            raise ConfigError(problems)

    @property
    def device(self) -> str:
        return "cpu"

    def to_dict(self) -> dict[str, Any]:
        data = {"run": self.run.to_dict(), "options": dataclasses.asdict(self.options), "stored_run": self.stored_run,
                "run_version": self.run_version}
        return data | ({"seeds": self.seeds} if self.seeds != 1 else {})  # a one-seed check keeps its key

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GradCheckConfig":
        data = dict(data)
        run = RunConfig.from_dict(data.pop("run", {}))
        raw_options = data.pop("options", {})
        unknown = sorted(set(data) - {"stored_run", "run_version", "seeds"})
        if not isinstance(raw_options, Mapping):
            raise ConfigError({"options": "options must be an object of the check's switches"})
        unknown += sorted(f"options.{k}" for k in set(raw_options) - {f.name for f in dataclasses.fields(CheckOptions)})
        if unknown:
            raise ConfigError({k: f"Unknown gradient-check setting {k!r}" for k in unknown})
        return cls(run, CheckOptions(**raw_options), **data)


def run_gradcheck(config: GradCheckConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
                  read_run: ReadRun | None = None) -> RunFinished | RunFailed:
    """Run the check (a stored run's through ``read_run``); emits a :class:`GradCheckDone` per initialization checked
    and its end event (cancelled between two initializations, it ends with those done)."""
    t0 = time.perf_counter()

    def end(event: RunFinished | RunFailed) -> RunFinished | RunFailed:
        emit(event)
        return event

    if cancel is not None and cancel.is_set():
        return end(RunFinished("cancelled", 0, 0.0, 0.0, "cancelled before it started"))
    kwargs = config.options.kwargs()
    try:
        if config.stored_run is None:
            for done, result in enumerate(check_seeds(config.run, config.seeds, **kwargs)):
                emit(result.to_event())
                if cancel is not None and cancel.is_set() and done + 1 < config.seeds:
                    return end(RunFinished("cancelled", 0, 0.0, time.perf_counter() - t0,
                                           f"cancelled after {done + 1} of {config.seeds} initializations"))
        elif read_run is None:
            raise ValueError("A stored run's check needs the run store (read_run).")
        else:
            emit(check_stored_run(config.stored_run, read_run, at=config.options.at, **kwargs).to_event())
    except (RunGone, NoStoredWeights) as exc:
        return end(RunFailed(0, exc.args[0], type(exc).__name__, time.perf_counter() - t0))
    except (ValueError, DatasetUnavailable) as exc:
        return end(RunFailed(0, str(exc), type(exc).__name__, time.perf_counter() - t0))
    return end(RunFinished("finished", 0, 0.0, time.perf_counter() - t0))
