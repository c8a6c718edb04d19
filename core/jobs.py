"""Process-wide job manager: a queue per device, bounded worker threads, dedup by config key.

``submit(config)`` returns the config's key. The same config asked twice while queued or
running is one job (30 students pressing Train watch one run); a config already in the
store is served from it without training. Pages poll ``snapshot(key, since=n)``, which
returns only the events they have not seen. Worker threads never touch any UI.

New jobs meet the server caps of :mod:`core.budget` (cost, memory, queue length in all and per
session); a refusal raises :class:`Refused` naming the cap. Finished jobs stay in memory up to a
byte budget of their histories.

Besides :class:`RunConfig`, other task configs (e.g. a grid of runs) plug in with
:func:`register_runner`: anything with ``key()``, ``to_dict()`` and a ``device`` field.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import budget, uploads  # uploads registers the fashion3 loader with core.data
from .budget import Refused
from .config import RunConfig
from .events import Event, RunFailed
from .store import RunStore
from .train import resolve_device, train

Runner = Callable[[Any, Callable[[Event], None], threading.Event], Event]
TERMINAL = ("finished", "cancelled", "diverged", "failed")
STORED_STATUSES = ("finished", "cancelled", "diverged")
SERVED_FROM_STORE = ("finished", "diverged")  # deterministic outcomes; a cancelled run trains again
ACTIVE = ("queued", "running")
EVENT_OVERHEAD_BYTES = 200  # an event object and its small fields

_RUNNERS: dict[type, tuple[str, Runner, bool]] = {}


def register_runner(config_type: type, kind: str, runner: Runner, uses_store: bool = False) -> None:
    """Teach the manager to run another kind of task config.

    With ``uses_store`` the runner is called as ``runner(config, emit, cancel, store=...)`` with
    the manager's run store, e.g. to file the runs a grid is made of under their own keys."""
    _RUNNERS[config_type] = (kind, runner, uses_store)


register_runner(RunConfig, "run", lambda cfg, emit, cancel: train(cfg, [emit], cancel))


@dataclass
class Job:
    key: str
    config: Any
    kind: str
    device: str
    status: str = "queued"
    events: list[Event] = field(default_factory=list)
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    from_cache: bool = False
    saved_at: float | None = None
    outcome: str = "failed"  # terminal status announced by the runner; becomes ``status`` once stored
    sessions: set = field(default_factory=set)  # browser sessions that asked for it (None: CLI/tests)
    nbytes: int = 0  # approximate memory of ``events``


@dataclass
class Snapshot:
    """What a poller needs: status, the events after ``since``, and bookkeeping."""

    key: str
    kind: str
    status: str
    events: list[Event]
    n_events: int
    from_cache: bool
    saved_at: float | None
    error: str
    queue_position: int | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def event_bytes(event: Event) -> int:
    """Approximate memory of one event: its arrays and lists, plus a fixed overhead."""
    total = EVENT_OVERHEAD_BYTES
    stack = list(vars(event).values())
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (list, tuple)):
            total += 8 * len(value)
            stack.extend(v for v in value if isinstance(v, (list, tuple, np.ndarray)))
        elif isinstance(value, dict):
            total += 64 * len(value)
    return total


def _status_of(event: Event) -> str | None:
    if event.kind == "finished":
        return event.status
    if event.kind == "failed":
        return "failed"
    return None


class JobManager:
    def __init__(self, store: RunStore | None = None, workers: dict[str, int] | None = None):
        self._store = store
        self.workers = workers or {"cpu": int(os.environ.get("GRADIENT_LAB_CPU_WORKERS", "1")),
                                   "cuda": int(os.environ.get("GRADIENT_LAB_GPU_WORKERS", "2"))}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queues: dict[str, queue.Queue] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.RLock()

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore()
        return self._store

    # --- public API ------------------------------------------------------------------------
    def submit(self, config: Any, force: bool = False, session: str | None = None) -> str:
        """Queue ``config`` (or join its live job, or serve it from the store); returns its key.

        ``force`` trains again even if a stored result exists (a live job is still shared).
        ``session`` identifies the browser session, for the per-session queue cap (None: CLI, tests).
        Raises :class:`Refused` when a new job would pass a server cap.
        """
        if type(config) not in _RUNNERS:
            raise TypeError(f"no runner registered for {type(config).__name__}")
        kind = _RUNNERS[type(config)][0]
        key = config.key()
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and (job.status in ACTIVE or (not force and job.status in SERVED_FROM_STORE)):
                job.sessions.add(session)
                return key
            if not force:
                cached = self._from_store(key, config, kind)
                if cached is not None:
                    self._remember(cached)
                    return key
        try:
            device = resolve_device(config.device).type
        except RuntimeError as exc:  # e.g. device=cuda on a server without a GPU
            raise Refused(str(exc)) from None
        budget.check(config)  # outside the lock: may load the dataset once
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.status in ACTIVE:  # someone queued it meanwhile
                job.sessions.add(session)
                return key
            self._check_queue(session)
            job = Job(key=key, config=config, kind=kind, device=device, sessions={session})
            self._remember(job)
            self._queue(device).put(job)
            self._ensure_workers(device)
        return key

    def _check_queue(self, session: str | None) -> None:
        active = [j for j in self._jobs.values() if j.status in ACTIVE]
        limit = int(budget.cap("GRADIENT_LAB_MAX_QUEUED"))
        if len(active) >= limit:
            raise Refused(f"The server has {len(active)} jobs waiting or running, its cap "
                          f"(GRADIENT_LAB_MAX_QUEUED = {limit}); try again when some have finished.")
        if session is not None:
            mine = sum(session in j.sessions for j in active)
            per_session = int(budget.cap("GRADIENT_LAB_MAX_QUEUED_PER_SESSION"))
            if mine >= per_session:
                raise Refused(f"You already have {mine} jobs waiting or running, the cap per session "
                              f"(GRADIENT_LAB_MAX_QUEUED_PER_SESSION = {per_session}); wait for one to finish "
                              f"or cancel one.")

    def snapshot(self, key: str, since: int = 0) -> Snapshot | None:
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                stored = self.store.get(key)
                if stored is None:
                    return None
                job = self._job_from_stored(stored, None)
                self._remember(job)
            position = None
            if job.status == "queued":
                waiting = [j for j in self._jobs.values() if j.status == "queued" and j.device == job.device]
                position = next((i for i, j in enumerate(waiting) if j.key == key), None)
            return Snapshot(key, job.kind, job.status, list(job.events[since:]), len(job.events), job.from_cache,
                            job.saved_at, job.error, position)

    def cancel(self, key: str) -> bool:
        """Ask a queued or running job to stop (it ends as "cancelled" with its history)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.status not in ("queued", "running"):
                return False
            job.cancel_flag.set()
            return True

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"queued": 0, "running": 0}
            for job in self._jobs.values():
                if job.status in out:
                    out[job.status] += 1
            return out

    def wait(self, key: str, timeout: float | None = None, poll: float = 0.05) -> Snapshot:
        """Block until the job ends (for the CLI and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self.snapshot(key)
            if snap is None:
                raise KeyError(key)
            if snap.done or (deadline is not None and time.monotonic() > deadline):
                return snap
            time.sleep(poll)

    # --- internals -------------------------------------------------------------------------
    def _remember(self, job: Job) -> None:
        if not job.nbytes and job.events:
            job.nbytes = sum(event_bytes(e) for e in job.events)
        self._jobs[job.key] = job
        self._jobs.move_to_end(job.key)
        self._trim()

    def _trim(self) -> None:
        """Forget the least recently used finished jobs until their histories fit the byte budget."""
        limit = budget.cap("GRADIENT_LAB_MAX_DONE_JOBS_MB") * 2**20
        done = [j for j in self._jobs.values() if j.status not in ACTIVE]
        total = sum(j.nbytes for j in done)
        for job in done[:-1]:  # the newest finished job stays whatever its size
            if total <= limit:
                break
            del self._jobs[job.key]
            total -= job.nbytes

    def memory_bytes(self) -> int:
        """Approximate bytes of the histories held in memory."""
        with self._lock:
            return sum(j.nbytes for j in self._jobs.values())

    def _from_store(self, key: str, config: Any, kind: str) -> Job | None:
        meta = self.store.meta(key)
        if meta is None or meta.get("status") not in SERVED_FROM_STORE:
            return None
        stored = self.store.get(key)
        return None if stored is None else self._job_from_stored(stored, config, kind)

    @staticmethod
    def _job_from_stored(stored, config: Any, kind: str | None = None) -> Job:
        meta = stored.meta
        return Job(key=stored.key, config=config or meta.get("config"), kind=kind or meta.get("kind", "run"),
                   device=meta.get("device", "cpu"), status=meta.get("status", "finished"), events=stored.events,
                   from_cache=True, saved_at=meta.get("saved_at"), error=meta.get("reason", ""))

    def _queue(self, device: str) -> queue.Queue:
        if device not in self._queues:
            self._queues[device] = queue.Queue()
        return self._queues[device]

    @staticmethod
    def _share_cpu() -> None:
        """Train on all cores but one (GRADIENT_LAB_TORCH_THREADS overrides), so the web server stays responsive."""
        threads = int(os.environ.get("GRADIENT_LAB_TORCH_THREADS") or max(1, (os.cpu_count() or 1) - 1))
        torch.set_num_threads(threads)

    def _ensure_workers(self, device: str) -> None:
        alive = [t for t in self._threads if t.is_alive() and t.name.startswith(f"gl-worker-{device}")]
        if not alive and device == "cpu":
            self._share_cpu()
        for i in range(len(alive), self.workers.get(device, 1)):
            t = threading.Thread(target=self._work, args=(device,), name=f"gl-worker-{device}-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def _work(self, device: str) -> None:
        q = self._queue(device)
        while True:
            job: Job = q.get()
            try:
                self._run(job)
            finally:
                q.task_done()

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.cancel_flag.is_set():
                job.status, job.error = "cancelled", "cancelled before it started"
                return
            job.status, job.started_at = "running", time.time()
        kind, runner, uses_store = _RUNNERS[type(job.config)]

        def emit(event: Event) -> None:
            with self._lock:
                job.events.append(event)
                job.nbytes += event_bytes(event)
                status = _status_of(event)
                if status is not None:
                    job.error = getattr(event, "message", "") or getattr(event, "reason", "")
                    job.outcome = status

        try:
            runner(job.config, emit, job.cancel_flag, **({"store": self.store} if uses_store else {}))
        except Exception as exc:  # a bug in a runner must not kill the worker
            emit(RunFailed(0, f"{type(exc).__name__}: {exc}", type(exc).__name__, 0.0))
        status = job.outcome
        if status in STORED_STATUSES:
            try:
                meta = self.store.put(job.key, job.config.to_dict(), job.events, kind)
                job.saved_at = meta["saved_at"]
            except Exception as exc:  # disk full etc.: the store keeps it in memory; say so
                job.error = f"{job.error} (not saved: {exc})".strip()
        with self._lock:
            job.status, job.finished_at = status, time.time()
            self._trim()


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide manager (a module-level singleton that no browser can clear)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
