"""Co-batching: queued single runs that could be cells of one batched grid pass train as ONE job.

Thirty students pressing Train on thirty slightly different small networks would otherwise wait
for each other; the family trainer a grid uses (:func:`core.engine.family.train_family`) trains them
for a few times the cost of one. A worker that finds a job waits briefly (:data:`GATHER_SECONDS` after
each submit, bounded) so that a burst of submits is one group, not its first job alone and the rest after. A run joins the run at the head of the queue when both are batchable (:func:`core.engine.batched.why_not_batched`, hidden layers
at most :data:`core.lab.grid.MAX_GRID_WIDTH` wide), share the grid's data stream
(:func:`core.engine.family.lockstep_stream`), and the group's estimated memory stays within
``GRADIENT_LAB_MAX_JOB_MEMORY_MB``; a group holds at most ``GRADIENT_LAB_MAX_COBATCH`` runs
(default 32; 1 turns co-batching off).

A group is a :class:`CoBatch` task (kind "cobatch"). Lane i emits exactly the events of its run
trained alone, wrapped as ``CellEvent(i, key, event)``, and stops alone when its own cancel flag
is set; the job manager hands each lane's events to that run's own job (:func:`dispatch`), which
it stores under the run's own key.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

from core.serve import budget
from core.engine.batched import why_not_batched
from core.engine.config import ConfigError, RunConfig
from core.engine.events import CellEvent, Event, RunFailed, RunFinished, status_of
from core.engine.family import lockstep_stream, train_family
from core.engine.task import TaskConfig, reject_unknown
from core.lab.grid import MAX_GRID_WIDTH

HARD_MAX_COBATCH = 256  # the lanes a worker process has cancel flags for
GATHER_SECONDS = 0.15  # a worker waits this long for the next of a burst of submits before it starts a group


def max_group() -> int:
    """Runs trained as one job at most: ``GRADIENT_LAB_MAX_COBATCH`` within 1 to 256 (a bad setting: :class:`Refused`)."""
    return max(1, int(min(HARD_MAX_COBATCH, budget.cap("GRADIENT_LAB_MAX_COBATCH"))))


def batchable(cfg: Any) -> bool:
    """A single run that can be a lane of a stacked batch."""
    return isinstance(cfg, RunConfig) and why_not_batched(cfg) is None and max(cfg.hidden, default=0) <= MAX_GRID_WIDTH


def compatible(config_of: Callable[[Any], Any] = lambda item: item) -> Callable[[list, Any], bool]:
    """A predicate for :meth:`core.serve.scheduler.FairQueue.get_group`: may ``item`` join ``chosen``?
    ``config_of`` reads an item's config (e.g. a job's); streams and estimates are cached per predicate."""
    streams: dict[RunConfig, tuple] = {}
    estimates: dict[RunConfig, budget.Estimate | None] = {}
    n_train: dict = {}

    def stream(cfg: RunConfig) -> tuple:
        if cfg not in streams:
            streams[cfg] = lockstep_stream(cfg, n_train)
        return streams[cfg]

    def fits(configs: list[RunConfig]) -> bool:
        for cfg in configs:
            if cfg not in estimates:
                estimates[cfg] = budget.estimate_run(cfg)
        if any(estimates[c] is None for c in configs):  # its dataset cannot be loaded: it trains (and fails) alone
            return False
        total = sum((estimates[c] for c in configs[1:]), estimates[configs[0]])
        return total.memory_bytes <= budget.cap("GRADIENT_LAB_MAX_JOB_MEMORY_MB") * 2**20

    def ok(chosen: list, item: Any) -> bool:
        head, cfg = config_of(chosen[0]), config_of(item)
        try:
            return (batchable(head) and batchable(cfg) and stream(cfg) == stream(head)
                    and fits([config_of(c) for c in chosen] + [cfg]))
        except Exception:  # whatever goes wrong here, the run can still train alone (and report it)
            return False
    return ok


@dataclass(frozen=True)
class CoBatch(TaskConfig):
    """Queued runs trained as one lanes job (what a worker is handed; never stored itself)."""

    KIND: ClassVar[str] = "cobatch"

    runs: tuple[RunConfig, ...]

    def __post_init__(self) -> None:
        if not self.runs or not all(isinstance(r, RunConfig) for r in self.runs):
            raise ConfigError({"runs": "A co-batch is one or more run configs"})

    @property
    def device(self) -> str:
        return self.runs[0].device

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoBatch":
        reject_unknown(data, ("runs",), "co-batch")
        runs = data.get("runs")
        if not isinstance(runs, list) or not all(isinstance(r, Mapping) for r in runs):
            raise ConfigError({"runs": "A co-batch's runs must be a list of run settings"})
        return cls(tuple(RunConfig.from_dict(r) for r in runs))


def run_cobatch(group: CoBatch, emit: Callable[[Event], None], cancel: threading.Event | None = None,
                lane_cancels: Sequence[Any] | None = None) -> list[RunFinished | RunFailed]:
    """Train ``group``'s runs as one family (:func:`core.engine.family.train_family`): lane i's events go to
    ``emit`` as ``CellEvent(i, key, event)``; ``lane_cancels[i]`` (anything with ``is_set()``) stops lane i
    alone, ``cancel`` all of them."""
    runs = list(group.runs)

    def lane(i: int) -> Callable[[Event], None]:
        key = runs[i].key()
        return lambda event: emit(CellEvent(i, key, event))
    # each run keeps its weights and draws its live decision boundary, as alone
    return train_family(runs, [lane(i) for i in range(len(runs))], None, cancel, lane_cancels=lane_cancels,
                        final_weights=True, weights_problem=budget.weights_problem, live_boundary=True)


def dispatch(emits: Sequence[Callable[[Event], None]]) -> Callable[[Event], None]:
    """One emit for a co-batch from each run's own: a lane's event goes to its run; anything else
    (a runner's bug, a dead worker) ends every run that has not ended yet."""
    ended: set[int] = set()

    def emit(event: Event) -> None:
        lanes = [event.cell] if isinstance(event, CellEvent) else [i for i in range(len(emits)) if i not in ended]
        inner = event.event if isinstance(event, CellEvent) else event
        for i in lanes:
            if status_of(inner) is not None:
                ended.add(i)
            emits[i](inner)
    return emit

