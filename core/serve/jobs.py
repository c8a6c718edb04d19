"""Process-wide job manager: a queue per device, bounded worker threads, dedup by config key.

``submit(config)`` returns the config's key. The same config asked twice while queued or
running is one job (30 students pressing Train watch one run); a config already in the
store is served from it without training. Pages poll ``snapshot(key, since=n)``, which
returns only the events they have not seen. Worker threads never touch any UI.

New jobs meet the server caps of :mod:`core.serve.budget` (cost, memory, estimated training time, queue
length in all and per browser); a refusal raises :class:`Refused` naming the cap. Quotas count per browser
(:mod:`core.serve.identity`), which a reload does not renew; when the queue is full, a browser holding
fewer jobs than the heaviest submitter still gets in: that submitter's oldest queued job is dropped.
A job that trains past ``GRADIENT_LAB_MAX_JOB_MINUTES`` is stopped, saying so.

Watchers are sessions; one that has not looked at its job for :data:`WATCHER_TTL` seconds (a closed
tab, a reloaded page) no longer counts, and a browser's Cancel drops all of its own sessions.

Finished jobs stay in memory up to a byte budget of their histories. A history keeps only its latest decision
boundary (:class:`core.engine.events.DecisionBoundary`) and CNN filters (:class:`core.engine.events.ConvFilters`) in
full; the earlier ones keep their step and numbers. A run's trained weights
(:class:`core.engine.events.FinalWeights`) go to the store; the history in memory and every snapshot
hold that event without its arrays.

Besides :class:`RunConfig`, other task configs (e.g. a grid of runs) plug in with
a row of :data:`core.serve.runners.RUNNERS`: anything with ``key()``, ``to_dict()`` and a ``device`` field.

A worker takes the next queued job together with the queued single runs it can train in lockstep
(:mod:`core.serve.cobatch`, up to ``GRADIENT_LAB_MAX_COBATCH``) and trains them as one lanes task; each run
stays its own job (events, stored result, cancel).

A run that trains alone can be paused, stepped k batches and resumed (:meth:`JobManager.pause`, ``step``,
``resume``) by the browser that started it, through a :class:`core.serve.pause.Hold` the loop waits on between
steps. A co-batched run cannot (pausing it would hold the runs batched with it); neither can a grid or sweep. A paused
run still counts against its browser's quota; a pause longer than ``GRADIENT_LAB_MAX_PAUSE_MINUTES`` ends the run,
stored as "paused" with its history; paused time does not count against the job's time cap.

Workers are processes by default (:mod:`core.serve.workers`): training never shares the web server's
GIL, and a worker that dies fails only its job. ``processes=False`` (or
``GRADIENT_LAB_WORKER_PROCESSES=0``) runs jobs in threads of this process instead, for tests
and notebooks. ``slots`` (a function of device and index) supplies other workers with :class:`ProcessSlot`'s
``run``/``start``/``stop``/``warmup``: the Ray backend's trainer actors (:mod:`core.serve.ray_backend`).

:func:`get_manager` is this manager, unless ``GRADIENT_LAB_RAY_ADDRESS`` names a Ray cluster: then it is the
backend of :data:`BACKENDS` loaded by name (a plugin: this module never imports Ray), a front-end of the
cluster's one scheduler, with this manager's public API.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from core.serve import budget
from core.serve import cobatch, owners
from core.serve.budget import Refused
from core.engine.config import RunConfig
from core.engine.events import (RUN_ENDINGS, SERVED_FROM_STORE, TERMINAL_STATUSES, Event, RunFailed, LATEST_ONLY, keep_latest,
                                status_of, without_weights)
from core.serve.runners import runner_for, store_links
from core.serve.scheduler import BACKGROUND, FairQueue
from core.serve.pause import MAX_STEP_BATCHES, Hold
from core.serve.store import RunStore, StoredRun
from core.engine.train import resolve_device
from core.serve.workers import ProcessSlot, default_threads

ACTIVE = ("queued", "running")
EVENT_OVERHEAD_BYTES = 200  # an event object and its small fields
WATCHER_TTL = 90.0  # seconds a session counts as watching a job without looking at it (pages poll every second)


def _processes_by_default() -> bool:
    return os.environ.get("GRADIENT_LAB_WORKER_PROCESSES", "1").lower() not in ("0", "false", "no")


@dataclass
class Watcher:
    """A session watching a job: its browser, and when it last looked (the manager's clock)."""

    browser: str
    seen: float


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
    session: str | None = None  # the browser session that started it (None: CLI, notebook, test)
    browser: str | None = None  # the browser that started it: its quota, its "Cancel for everyone"
    watchers: dict[str, Watcher] = field(default_factory=dict)  # session -> Watcher, until it cancels
    deadline: float | None = None  # the manager's clock past which it is stopped (GRADIENT_LAB_MAX_JOB_MINUTES)
    stop_reason: str = ""  # why the server stopped it (the time cap), told in its last event
    outcome: str = "failed"  # terminal status announced by the runner; becomes ``status`` once stored
    nbytes: int = 0  # approximate memory of ``events``
    hold: Hold | None = None  # while it trains alone: its pause state (see pause, step, resume)
    paused_since: float | None = None  # the manager's clock when it was paused (None while not paused)


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
    watchers: int = 0  # browsers watching it now
    started_by: str | None = None  # the browser that started it
    watched_by: frozenset = frozenset()  # those browsers
    pausable: bool = False  # it trains alone now: its starter may pause, step and resume it
    paused: bool = False  # a pause (or a step's pause) is asked for
    paused_at: int | None = None  # the step the paused run waits at (None while it trains)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


def event_bytes(event: Event) -> int:
    """Approximate memory of one event: its arrays, lists and dicts (nested ones too), plus a fixed overhead."""
    total = EVENT_OVERHEAD_BYTES
    stack = list(vars(event).values())
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (list, tuple)):
            total += 8 * len(value)
            stack.extend(v for v in value if isinstance(v, (list, tuple, dict, np.ndarray)))
        elif isinstance(value, dict):
            total += 64 * len(value)
            stack.extend(v for v in value.values() if isinstance(v, (list, tuple, dict, np.ndarray)))
    return total


class JobManager:
    def __init__(self, store: RunStore | None = None, workers: dict[str, int] | None = None,
                 processes: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 slots: Callable[[str, int], ProcessSlot] | None = None):
        self._store = store
        self._clock = clock  # watcher expiry and the time cap (tests inject one)
        self.processes = _processes_by_default() if processes is None else processes
        self._new_slot = slots or (self._process_slot if self.processes else None)
        self._slots: list[ProcessSlot] = []
        self.workers = workers or {"cpu": int(os.environ.get("GRADIENT_LAB_CPU_WORKERS", "1")),
                                   "cuda": int(os.environ.get("GRADIENT_LAB_GPU_WORKERS", "2"))}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queues: dict[str, FairQueue] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.RLock()
        self._warming: threading.Thread | None = None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore()
        return self._store

    # --- public API ------------------------------------------------------------------------
    def submit(self, config: Any, force: bool = False, session: str | None = None,
               browser: str | None = None, background: bool = False) -> str:
        """Queue ``config`` (or join its live job, or serve it from the store); returns its key.

        ``force`` trains again even if a stored result exists (a live job is still shared).
        ``session`` (a browser session id) becomes one of the job's watchers; ``browser`` (the id a
        reload keeps; default: the session) owns its quota and may use only its own uploads. Queued
        jobs are handed to workers round-robin between browsers.
        ``background``: low priority (preparing a lecture): it trains only when no one else's job waits.
        Raises :class:`Refused` when a new job would pass a server cap.
        """
        kind = runner_for(config).kind
        key = config.key()
        browser = browser or session
        if browser is not None:
            for name in owners.datasets_of(config):
                if not owners.may_use(name, browser):
                    raise Refused(owners.not_yours(name))
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and (job.status in ACTIVE or (not force and job.status in SERVED_FROM_STORE)):
                if session is not None and job.status in ACTIVE:
                    self._watch(job, session, browser)
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
        budget.check_minutes(budget.check(config), device)  # outside the lock: may load the dataset once
        cobatch.max_group()  # a bad GRADIENT_LAB_MAX_COBATCH refuses every job, naming it
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.status in ACTIVE:  # someone queued it meanwhile
                if session is not None:
                    self._watch(job, session, browser)
                return key
            self._admit(browser)
            job = Job(key=key, config=config, kind=kind, device=device, session=session, browser=browser)
            if session is not None:
                self._watch(job, session, browser)
            self._remember(job)
            self._queue(device).put(job, BACKGROUND if background else browser)
            self._ensure_workers(device)
        return key

    def _watch(self, job: Job, session: str, browser: str) -> None:
        job.watchers[session] = Watcher(browser, self._clock())

    def _live(self, job: Job) -> dict[str, Watcher]:
        """The watchers that looked at the job within WATCHER_TTL seconds."""
        now = self._clock()
        return {s: w for s, w in job.watchers.items() if now - w.seen <= WATCHER_TTL}

    def _holds(self, job: Job, browser: str) -> bool:
        """Whether ``job`` counts against ``browser``'s quota: it started it, or one of its sessions watches it."""
        return job.browser == browser or any(w.browser == browser for w in self._live(job).values())

    def _admit(self, browser: str | None) -> None:
        """Check the queue caps for one more job of ``browser``; when the queue is full, drop the oldest queued
        job of the browser holding the most jobs if that is more than ``browser`` holds, else refuse."""
        active = [j for j in self._jobs.values() if j.status in ACTIVE and not j.cancel_flag.is_set()]
        mine = 0
        if browser is not None:
            mine = sum(self._holds(j, browser) for j in active)
            per_browser = int(budget.cap("GRADIENT_LAB_MAX_QUEUED_PER_SESSION"))
            if mine >= per_browser:
                raise Refused(f"You already have {mine} jobs waiting or running, the cap per browser "
                              f"(GRADIENT_LAB_MAX_QUEUED_PER_SESSION = {per_browser}), which a reload does not "
                              f"reset; wait for one to finish or cancel one.")
        limit = int(budget.cap("GRADIENT_LAB_MAX_QUEUED"))
        if len(active) < limit:
            return
        victim = self._heaviest_oldest(active, browser, mine) if browser is not None else None
        if victim is None:
            raise Refused(f"The server has {len(active)} jobs waiting or running, its cap "
                          f"(GRADIENT_LAB_MAX_QUEUED = {limit}); try again when some have finished.")
        held = sum(j.browser == victim.browser for j in active)
        self._queue(victim.device).remove(lambda j: j is victim)
        victim.cancel_flag.set()
        victim.status, victim.finished_at = "cancelled", time.time()
        victim.error = (f"Dropped from the full queue (GRADIENT_LAB_MAX_QUEUED = {limit}) before it started, to "
                        f"let a browser with fewer jobs in: the browser that queued it held the most jobs ({held}). "
                        "Press Train again when the queue is shorter.")

    def _heaviest_oldest(self, active: list[Job], browser: str, mine: int) -> Job | None:
        """The oldest queued job of the browser holding the most active jobs (more than ``mine``; ties: the one
        that submitted last), among jobs no other browser watches; None when there is none."""
        held = Counter(j.browser for j in active if j.browser is not None)
        latest: dict[str, float] = {}
        for j in active:
            if j.browser is not None:
                latest[j.browser] = max(latest.get(j.browser, 0.0), j.submitted_at)
        sheddable = [j for j in active if j.status == "queued" and j.browser not in (None, browser)
                     and all(w.browser == j.browser for w in self._live(j).values())]
        if not sheddable:
            return None
        heaviest = max({j.browser for j in sheddable}, key=lambda b: (held[b], latest[b]))
        if held[heaviest] <= mine:
            return None
        return min((j for j in sheddable if j.browser == heaviest), key=lambda j: j.submitted_at)

    def snapshot(self, key: str, since: int = 0) -> Snapshot | None:
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                stored = self.store.get(key)
                if stored is None:
                    return None
                job = self._job_from_stored(stored, None)
                self._remember(job)
            self._enforce_deadline(job)
            position = None
            if job.status == "queued" and job.device in self._queues:
                waiting = [j for j in self._queues[job.device].order() if j.status == "queued"]
                position = next((i for i, j in enumerate(waiting) if j is job), None)
            browsers = frozenset(w.browser for w in self._live(job).values())
            hold = job.hold
            return Snapshot(key, job.kind, job.status, without_weights(job.events[since:]), len(job.events),
                            job.from_cache, job.saved_at, job.error, position, len(browsers), job.browser, browsers,
                            hold is not None, hold is not None and hold.paused,
                            hold.paused_at if hold is not None else None)

    def status(self, key: str) -> str | None:
        """The status of job ``key`` if it is in memory (None if not): no events copied, no store read."""
        with self._lock:
            job = self._jobs.get(key)
            return job.status if job is not None else None

    def touch(self, key: str, session: str) -> None:
        """``session`` has just looked at job ``key``: it still counts as watching it (see WATCHER_TTL)."""
        with self._lock:
            job = self._jobs.get(key)
            watcher = job.watchers.get(session) if job is not None else None
            if watcher is not None:
                watcher.seen = self._clock()

    def cancel(self, key: str, session: str | None = None, everyone: bool = False, browser: str | None = None) -> bool:
        """Stop watching a queued or running job; True when the job itself is asked to stop.

        Without ``session`` (CLI, tests) the job stops. A browser session only leaves the job's
        watchers, together with every other session of its ``browser`` (default: the session), e.g.
        the page it reloaded: the job stops when no other session has looked at it within
        WATCHER_TTL seconds, or at once with ``everyone`` when that browser started it. A stopped
        job ends as "cancelled" with its history.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.status not in ("queued", "running"):
                return False
            if session is not None:
                browser = browser or session
                for gone in [s for s, w in job.watchers.items() if s == session or w.browser == browser]:
                    del job.watchers[gone]
                if self._live(job) and not (everyone and browser == job.browser):
                    return False
            job.cancel_flag.set()
            return True

    def pause(self, key: str, browser: str | None = None) -> None:
        """Hold job ``key`` before its next step (see :class:`core.serve.pause.Hold`). ``browser``: who asks (None:
        CLI, tests); only the browser that started it may. Raises :class:`Refused` saying why not."""
        with self._lock:
            job = self._pausable(key, browser)
            job.hold.pause(self._pause_seconds())
            if job.paused_since is None:
                job.paused_since = self._clock()

    def step(self, key: str, batches: int, browser: str | None = None) -> None:
        """Train ``batches`` more batches of job ``key``, then hold it again (a running one is paused after them)."""
        if not isinstance(batches, int) or not 1 <= batches <= MAX_STEP_BATCHES:
            raise Refused(f"A step trains 1 to {MAX_STEP_BATCHES} batches, not {batches!r}.")
        with self._lock:
            job = self._pausable(key, browser)
            job.hold.step(batches, self._pause_seconds())
            if job.paused_since is None:
                job.paused_since = self._clock()

    def resume(self, key: str, browser: str | None = None) -> None:
        """Let a paused job ``key`` train on; its time cap moves by the time it was paused."""
        with self._lock:
            job = self._pausable(key, browser)
            job.hold.resume()
            if job.paused_since is not None and job.deadline is not None:
                job.deadline += self._clock() - job.paused_since
            job.paused_since = None

    def _pausable(self, key: str, browser: str | None) -> Job:
        """Job ``key`` when ``browser`` may pause it now, else :class:`Refused` saying why."""
        job = self._jobs.get(key)
        if job is None or job.status != "running":
            status = "unknown here" if job is None else job.status
            raise Refused(f"Only a running run can be paused, stepped or resumed; this one is {status}.")
        if browser is not None and browser != job.browser:
            raise Refused("Only the browser that started this run can pause, step or resume it: others watch it "
                          "as it trains. Cancel stops watching it.")
        if job.hold is None:
            what = "a run trained in one batch with other runs (pausing it would hold theirs)" \
                if job.kind == "run" else f"a {job.kind}"
            raise Refused(f"This is {what}: pause, step and resume work on a run that trains alone.")
        return job

    @staticmethod
    def _pause_seconds() -> float:
        return budget.cap("GRADIENT_LAB_MAX_PAUSE_MINUTES") * 60

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"queued": 0, "running": 0}
            for job in self._jobs.values():
                if job.status in out:
                    out[job.status] += 1
            return out

    def start(self) -> None:
        """Start every device's workers now, so they warm up before the first Train; this process warms up
        too (in the background): the first submit's estimate then finds the default data loaded."""
        with self._lock:
            self._ensure_workers("cpu")
            if torch.cuda.is_available():
                self._ensure_workers("cuda")
            if self._warming is None:
                self._warming = threading.Thread(target=self._warm_estimates, name="gl-warm-estimates", daemon=True)
                self._warming.start()

    @staticmethod
    def _warm_estimates() -> None:
        """Estimate the default run once: loads its dataset (and the libraries behind it) in this process."""
        try:
            budget.check(RunConfig())
        except Exception:  # noqa: BLE001 - a failed warm-up is no reason not to serve: the real job says why
            pass

    def warmup_status(self) -> list[dict]:
        """Per worker process: its device and {"state", "seconds"} (empty in thread mode)."""
        return [{"device": slot.device, **slot.warmup()} for slot in self._slots]

    def shutdown(self) -> None:
        """Stop the worker processes (their threads then wait for work that never comes)."""
        for slot in self._slots:
            slot.stop()

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

    def read_run(self, key: str) -> StoredRun | None:
        """A stored run, for runners that look runs up (None when it is not stored or unreadable)."""
        return self.store.get(key)

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
                   device=meta.get("device", "cpu"), status=meta.get("status", "finished"),
                   events=without_weights(stored.events),
                   from_cache=True, saved_at=meta.get("saved_at"), error=meta.get("reason", ""))

    def _queue(self, device: str) -> FairQueue:
        if device not in self._queues:
            self._queues[device] = FairQueue()
        return self._queues[device]

    @staticmethod
    def _share_cpu() -> None:
        """Train on all cores but one (GRADIENT_LAB_TORCH_THREADS overrides), so the web server stays responsive."""
        threads = int(os.environ.get("GRADIENT_LAB_TORCH_THREADS") or max(1, (os.cpu_count() or 1) - 1))
        torch.set_num_threads(threads)

    def _ensure_workers(self, device: str) -> None:
        """One thread per worker slot; in process mode each thread feeds its own worker process."""
        alive = [t for t in self._threads if t.is_alive() and t.name.startswith(f"gl-worker-{device}")]
        if not alive and device == "cpu" and self._new_slot is None:
            self._share_cpu()
        for i in range(len(alive), self.workers.get(device, 1)):
            slot = None
            if self._new_slot is not None:
                slot = self._new_slot(device, i)
                slot.start()
                self._slots.append(slot)
            t = threading.Thread(target=self._work, args=(device, slot), name=f"gl-worker-{device}-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _process_slot(device: str, index: int) -> ProcessSlot:
        return ProcessSlot(device, default_threads(device), name=f"gl-trainer-{device}-{index}")

    def _work(self, device: str, slot: ProcessSlot | None) -> None:
        q = self._queue(device)
        hold = slot.hold if slot is not None else Hold()  # this worker's pause state, handed from job to job
        while True:
            try:
                group = cobatch.max_group()
            except Refused:  # submit refuses every job while the setting is bad: nothing is queued
                group = 1
            self._run(q.get_group(cobatch.compatible(lambda job: job.config), group,
                                  gather=cobatch.GATHER_SECONDS), slot, hold)

    def _run(self, jobs: list[Job], slot: ProcessSlot | None, hold: Hold) -> None:
        """Train the jobs (one, or compatible runs co-batched as one lanes task), then store each; a run trained
        alone waits on ``hold`` (this worker's: its slot's, or its own in thread mode) while paused."""
        deadline = self._clock() + budget.cap("GRADIENT_LAB_MAX_JOB_MINUTES") * 60  # checked on submit
        with self._lock:
            live = []
            for job in jobs:
                if job.cancel_flag.is_set():
                    job.status, job.error = "cancelled", job.error or "cancelled before it started"
                else:
                    job.status, job.started_at, job.deadline = "running", time.time(), deadline
                    live.append(job)
            if len(live) == 1 and runner_for(live[0].config).pausable:  # pausable from its first moment
                hold.reset()
                live[0].hold = hold
        if not live:
            return
        if len(live) == 1:
            task, emit, cancel, lanes = live[0].config, self._recorder(live[0]), live[0].cancel_flag, None
        else:  # each run keeps its own cancel flag (one lane stops alone) and is settled as soon as it ends
            task = cobatch.CoBatch(tuple(job.config for job in live))
            emit = cobatch.dispatch([self._recorder(job, settle=True) for job in live])
            cancel, lanes = threading.Event(), [job.cancel_flag for job in live]
        spec = runner_for(task)
        try:
            if slot is not None:
                slot.run(task, emit, cancel, self.file_run, self.read_run, lanes)
            else:
                spec.runner(task, emit, cancel, **store_links(spec, self.file_run, self.read_run, lanes, hold))
        except Exception as exc:  # a bug in a runner must not kill the worker
            emit(RunFailed(0, f"{type(exc).__name__}: {exc}", type(exc).__name__, 0.0))
        with self._lock:  # the slot's hold goes on to its next job
            for job in live:
                job.hold, job.paused_since = None, None
        for job in live:
            self._settle(job)

    def _recorder(self, job: Job, settle: bool = False) -> Callable[[Event], None]:
        """The emit that appends to ``job``'s history and notes how it ended (``settle``: and settles it then)."""
        def emit(event: Event) -> None:
            with self._lock:
                if job.stop_reason and status_of(event) == "cancelled":
                    event = dataclasses.replace(event, reason=f"{job.stop_reason}; {event.reason}")
                job.events.append(event)
                job.nbytes += event_bytes(event)
                if event.kind in LATEST_ONLY:  # only the latest decision boundary and CNN filters are kept in full
                    for old, thinned in keep_latest(job.events, event.kind):
                        job.nbytes -= event_bytes(old) - event_bytes(thinned)
                status = status_of(event)
                if status is not None:
                    job.error = getattr(event, "message", "") or getattr(event, "reason", "")
                    job.outcome = status
                else:
                    self._enforce_deadline(job)
            if settle and status is not None:
                self._settle(job)
        return emit

    def _enforce_deadline(self, job: Job) -> None:
        """Stop a running job that has passed its deadline, saying why (its last event tells it)."""
        if (job.status != "running" or job.deadline is None or job.stop_reason or job.paused_since is not None
                or self._clock() <= job.deadline):  # a paused job has its own bound (GRADIENT_LAB_MAX_PAUSE_MINUTES)
            return
        minutes = budget.cap("GRADIENT_LAB_MAX_JOB_MINUTES")
        job.stop_reason = (f"Stopped by the server: it trained longer than {minutes:g} minutes, the cap on one job "
                           f"(GRADIENT_LAB_MAX_JOB_MINUTES)")
        job.cancel_flag.set()

    def _settle(self, job: Job) -> None:
        """Store an ended job under its own key and give it its final status (once)."""
        if job.finished_at is not None:
            return
        status = job.outcome
        if status in RUN_ENDINGS:
            try:
                meta = self.store.put(job.key, job.config.to_dict(), job.events, job.kind)
                job.saved_at = meta["saved_at"]
                with self._lock:  # the weights live in the store now; the history in memory goes without them
                    job.events = without_weights(job.events)
                    job.nbytes = sum(event_bytes(e) for e in job.events)
            except Exception as exc:  # disk full etc.: the store keeps it in memory; say so
                job.error = f"{job.error} (not saved: {exc})".strip()
        with self._lock:
            job.status, job.finished_at = status, time.time()
            self._trim()


_manager: JobManager | None = None
_manager_lock = threading.Lock()
# Backends chosen by an environment variable, each a module with ``manager_from_env()`` (loaded by name, only then).
BACKENDS = {"GRADIENT_LAB_RAY_ADDRESS": "core.serve.ray_backend"}


def get_manager() -> JobManager:
    """The process-wide manager (a module-level singleton that no browser can clear)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            chosen = [module for setting, module in BACKENDS.items() if os.environ.get(setting)]
            _manager = importlib.import_module(chosen[0]).manager_from_env() if chosen else JobManager()
        return _manager
