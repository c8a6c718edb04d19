"""Process-wide job manager: a queue per device, bounded worker threads, dedup by config key.

``submit(config)`` returns the config's key. The same config asked twice while queued or
running is one job (30 students pressing Train watch one run); a config already in the
store is served from it without training. Pages poll ``snapshot(key, since=n)``, which
returns only the events they have not seen. Worker threads never touch any UI.

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

import torch

from .config import RunConfig
from .events import RUN_ENDINGS, TERMINAL_STATUSES, Event, RunFailed, status_of
from .store import RunStore
from .train import resolve_device, train

Runner = Callable[[Any, Callable[[Event], None], threading.Event], Event]
TERMINAL = TERMINAL_STATUSES  # the names pages import; the statuses live in core.events
STORED_STATUSES = RUN_ENDINGS
SERVED_FROM_STORE = ("finished", "diverged")  # deterministic outcomes; a cancelled run trains again
KEEP_DONE_JOBS = 256

_RUNNERS: dict[type, tuple[str, Runner, bool]] = {}


def register_runner(config_type: type, kind: str, runner: Runner, uses_store: bool = False) -> None:
    """Teach the manager to run another kind of task config.

    With ``uses_store`` the runner is called as ``runner(config, emit, cancel, file_run=...)``: it hands
    the runs it is made of (e.g. a grid's cells) to :meth:`JobManager.file_run`, so the manager stays the
    only writer to the store."""
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
    def submit(self, config: Any, force: bool = False) -> str:
        """Queue ``config`` (or join its live job, or serve it from the store); returns its key.

        ``force`` trains again even if a stored result exists (a live job is still shared).
        """
        if type(config) not in _RUNNERS:
            raise TypeError(f"no runner registered for {type(config).__name__}")
        kind = _RUNNERS[type(config)][0]
        key = config.key()
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and (job.status in ("queued", "running") or
                                    (not force and job.status in SERVED_FROM_STORE)):
                return key
            if not force:
                cached = self._from_store(key, config, kind)
                if cached is not None:
                    self._remember(cached)
                    return key
            device = resolve_device(config.device).type
            job = Job(key=key, config=config, kind=kind, device=device)
            self._remember(job)
            self._queue(device).put(job)
            self._ensure_workers(device)
        return key

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

    def file_run(self, key: str, config: Any, events: list[Event]) -> None:
        """Store a run another job trained (a grid's cell) under its own key, with the manager's policy:
        only outcomes served from the store, never over an equal result stored already. Raises when
        the save fails (the caller says so)."""
        status = next((s for s in map(status_of, reversed(events)) if s is not None), None)
        if status not in SERVED_FROM_STORE:
            return
        meta = self.store.meta(key)
        if meta is None or meta.get("status") not in SERVED_FROM_STORE:
            self.store.put(key, config.to_dict(), list(events), "run")

    # --- internals -------------------------------------------------------------------------
    def _remember(self, job: Job) -> None:
        self._jobs[job.key] = job
        self._jobs.move_to_end(job.key)
        while len(self._jobs) > KEEP_DONE_JOBS:
            oldest = next((k for k, j in self._jobs.items() if j.status in TERMINAL), None)
            if oldest is None:
                break
            del self._jobs[oldest]

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
                status = status_of(event)
                if status is not None:
                    job.error = getattr(event, "message", "") or getattr(event, "reason", "")
                    job.outcome = status

        try:
            runner(job.config, emit, job.cancel_flag, **({"file_run": self.file_run} if uses_store else {}))
        except Exception as exc:  # a bug in a runner must not kill the worker
            emit(RunFailed(0, f"{type(exc).__name__}: {exc}", type(exc).__name__, 0.0))
        status = job.outcome
        if status in STORED_STATUSES:
            try:
                meta = self.store.put(job.key, job.config.to_dict(), job.events, kind)
                job.saved_at = meta["saved_at"]
            except Exception as exc:  # disk full etc.: keep the result in memory, say so
                job.error = f"{job.error} (not saved to the run store: {exc})".strip()
        with self._lock:
            job.status, job.finished_at = status, time.time()


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide manager (a module-level singleton that no browser can clear)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
