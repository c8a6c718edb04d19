"""The job manager on a Ray cluster: several front-ends share one queue, one dedup and one store.

Loaded by name by :func:`core.serve.jobs.get_manager` when ``GRADIENT_LAB_RAY_ADDRESS`` is set (the local
default never imports Ray). Three parts:

- :class:`Scheduler`, one named, detached actor: a :class:`~core.serve.jobs.JobManager` (fair queue, dedup,
  watchers, quotas, co-batching, time cap) whose worker slots are trainer actors, and the only writer of
  the run store on its node (it serves the store's reads to every front-end).
- :class:`Trainer`, one actor per GPU (``num_gpus=1``) or CPU trainers where there are none: it warms up in
  its constructor, streams a task's events back as a generator, polls cancel flags set by
  :meth:`Trainer.cancel`, and is restarted by Ray when it dies (the job it held fails, saying so).
- :class:`RayJobManager`, a front-end's manager: the JobManager's public API, each call forwarded to the
  scheduler. When the cluster cannot be reached it raises :class:`ClusterUnavailable` with plain words.

Actors must import ``core``: the front-end passes its own checkout as ``PYTHONPATH`` in the actors'
runtime environment, so every node needs the code at the same path (one image; see docs/cluster.md).
"""
from __future__ import annotations

import inspect
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import ray.exceptions
import torch

from core.engine.events import Event, RunFailed
from core.engine.train import train
from core.serve.budget import Unreachable
from core.serve.cobatch import HARD_MAX_COBATCH
from core.serve.jobs import JobManager, Snapshot
from core.serve.pause import Hold
from core.serve.runners import runner_for, store_links
from core.serve.store import RunStore, StoredRun
from core.serve.workers import WARMUP_CONFIG, default_threads

NAMESPACE = "gradient-lab"
SCHEDULER = "gl-scheduler"
HEAD = "node:__internal_head__"  # the head node's own resource: the scheduler (and so the store) lives there
REPO = Path(__file__).resolve().parents[2]
CANCEL_POLL_SECONDS = 0.05
RECONNECT_S = 10.0  # a front-end that lost the cluster tries to connect again at most this often
RESTART_WAIT_S = 120.0  # a dead trainer's slot waits this long for Ray to restart it
CALL_TIMEOUT_S = float(os.environ.get("GRADIENT_LAB_RAY_TIMEOUT_S", "30"))


class ClusterUnavailable(Unreachable):
    """The Ray cluster (its head or the scheduler actor) cannot be reached now."""


UNAVAILABLE = ("The training cluster cannot be reached; nothing stored is lost. Try again in a minute: this "
               "server reconnects by itself when the cluster is back.")


def unavailable(exc: BaseException) -> ClusterUnavailable:
    return ClusterUnavailable(f"{UNAVAILABLE} ({type(exc).__name__})")


def trainer_died(step: int) -> RunFailed:
    return RunFailed(step, "The trainer running this job died (its node ran out of memory, was stopped, or crashed). "
                     "This run was lost; nothing stored was touched, and the trainer has been restarted: press "
                     "Train to try again.", "WorkerDied", 0.0)


# --- the trainer actor --------------------------------------------------------------------------------------
class _Flag:
    """A cancel flag a runner polls, set from another call of the actor."""

    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


class Trainer:
    """One trainer: warms up once, then runs one task at a time, streaming its events."""

    def __init__(self, device: str, threads: int) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = device
        self._flags: dict[str, tuple[_Flag, list[_Flag]]] = {}  # run id -> its cancel and its lanes' cancels
        self._holds: dict[str, Hold] = {}  # run id -> its pause state (a run trained alone waits on it)
        started = time.perf_counter()
        try:
            train(WARMUP_CONFIG.replace(device=device))
        finally:  # a failed warm-up is no reason not to serve: the real job reports its own error
            self.warm_seconds = time.perf_counter() - started

    def ready(self) -> dict:
        return {"seconds": self.warm_seconds, "pid": os.getpid()}

    def cancel(self, run_id: str, lane: int | None = None) -> None:
        cancel, lanes = self._flags.get(run_id, (_Flag(), [_Flag()] * HARD_MAX_COBATCH))
        (cancel if lane is None else lanes[lane]).value = True

    def hold(self, run_id: str, method: str, *args: Any) -> None:
        """Pause, step or resume run ``run_id`` (the scheduler forwards its :class:`ForwardedHold`'s calls)."""
        getattr(self._holds.setdefault(run_id, Hold()), method)(*args)

    def hold_values(self, run_id: str) -> list[float] | None:
        """Run ``run_id``'s pause state as its loop sees it (where it waits, batches left), None when unknown."""
        hold = self._holds.get(run_id)
        return list(hold.values) if hold is not None else None

    def run(self, task: Any, run_id: str) -> Iterator[Event]:
        """The task's events, as they come (a generator: Ray streams each to the caller)."""
        cancel, lanes = self._flags.setdefault(run_id, (_Flag(), [_Flag() for _ in range(HARD_MAX_COBATCH)]))
        hold = self._holds.setdefault(run_id, Hold())
        events: list[Event] = []
        done = threading.Event()
        spec = runner_for(task)
        scheduler = ray.get_actor(SCHEDULER, namespace=NAMESPACE)
        links = store_links(spec, lambda *a: _raise_if(ray.get(scheduler.file_run.remote(*a))),
                            lambda key: ray.get(scheduler.read_run.remote(key)), lanes, hold)

        def work() -> None:
            try:
                spec.runner(task, events.append, cancel, **links)
            except Exception as exc:  # a bug in a runner must not kill the trainer
                events.append(RunFailed(0, f"{type(exc).__name__}: {exc}", type(exc).__name__, 0.0))
            finally:
                done.set()

        threading.Thread(target=work, name="gl-train", daemon=True).start()
        sent = 0
        try:
            while not done.wait(CANCEL_POLL_SECONDS) or sent < len(events):
                while sent < len(events):
                    yield events[sent]
                    sent += 1
        finally:
            self._flags.pop(run_id, None)
            self._holds.pop(run_id, None)


def _raise_if(error: str) -> None:
    if error:
        raise OSError(error)


class ForwardedHold(Hold):
    """The scheduler's copy of the pause state of the run a trainer actor trains: the manager pauses, steps and
    resumes it here; :meth:`sync` (the slot's forwarding thread) sends those calls to the trainer's own
    :class:`Hold`, then copies back where the trainer's loop waits, which snapshots read."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple]] = []  # calls since the last sync (all of them before the run starts)
        self._version = 0  # counts calls: a copy fetched before a later call is stale
        self._target: tuple[Any, str] | None = None  # (trainer actor, run id) while a run trains

    def _call(self, method: str, *args: Any) -> None:
        with self._lock:
            getattr(Hold, method)(self, *args)
            self._pending.append((method, args))
            self._version += 1

    def reset(self) -> None:
        with self._lock:
            Hold.reset(self)
            self._pending.clear()
            self._version += 1

    def pause(self, limit_seconds: float) -> None:
        self._call("pause", limit_seconds)

    def step(self, batches: int, limit_seconds: float) -> None:
        self._call("step", batches, limit_seconds)

    def resume(self) -> None:
        self._call("resume")

    def attach(self, actor: Any, run_id: str) -> None:
        with self._lock:
            self._target = (actor, run_id)

    def detach(self) -> None:
        with self._lock:
            self._target = None
            self._pending.clear()

    def sync(self) -> None:
        """Send the calls made since the last sync; while paused, copy the trainer's state back."""
        with self._lock:
            target, pending, version = self._target, list(self._pending), self._version
            if target is not None:
                self._pending.clear()
        if target is None:
            return
        actor, run_id = target
        for method, args in pending:
            ray.get(actor.hold.remote(run_id, method, *args))
        if not self.paused:
            return
        values = ray.get(actor.hold_values.remote(run_id))
        with self._lock:
            if values is not None and version == self._version and not self._pending:
                with self.values.get_lock():
                    self.values[:] = values


class RaySlot:
    """A JobManager worker slot backed by one trainer actor (ProcessSlot's interface)."""

    def __init__(self, device: str, index: int) -> None:
        self.device, self.name = device, f"gl-trainer-{device}-{index}"
        self.restarts, self.pid = 0, None
        self._actor = None
        self.hold = ForwardedHold()  # the manager's pause state of the run this slot trains alone

    def start(self) -> None:
        if self._actor is None:
            gpus = 1 if self.device == "cuda" else 0
            self._actor = ray.remote(Trainer).options(
                name=self.name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", num_gpus=gpus,
                num_cpus=0 if gpus else 1, max_restarts=-1, max_task_retries=0, max_concurrency=4,
            ).remote(self.device, default_threads(self.device))

    def stop(self) -> None:
        """Nothing: the trainer actor serves the next manager of this scheduler."""

    def warmup(self) -> dict:
        ready, _ = ray.wait([self._actor.ready.remote()], timeout=0.2)
        if not ready:
            return {"state": "warming up", "seconds": None}
        info = ray.get(ready[0])
        self.pid = info["pid"]
        return {"state": "ready", "seconds": info["seconds"]}

    def run(self, task: Any, emit: Callable[[Event], None], cancel: threading.Event,
            file_run: Callable, read_run: Callable, lane_cancels: Any = None) -> None:
        """Run ``task`` on the trainer, emitting its events here; cancels are forwarded as they are set.
        (The trainer files and reads runs through this scheduler actor, whose ``file_run``/``read_run``
        are these.)"""
        self.start()
        lanes, run_id = list(lane_cancels or ()), uuid.uuid4().hex
        finished = threading.Event()
        self.hold.attach(self._actor, run_id)
        threading.Thread(target=self._forward, args=(run_id, cancel, lanes, finished), daemon=True).start()
        step = 0
        try:
            for ref in self._actor.run.remote(task, run_id):
                event = ray.get(ref)
                step = getattr(event, "step", step) or step
                emit(event)
        except ray.exceptions.RayActorError:
            self.restarts += 1
            emit(trainer_died(step))
            self._await_restart()
        finally:
            finished.set()
            self.hold.detach()

    def _await_restart(self, timeout: float = RESTART_WAIT_S) -> None:
        """Wait until Ray has restarted the trainer (its constructor warms up) before taking the next job."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ray.get(self._actor.ready.remote(), timeout=timeout)
                return
            except ray.exceptions.RayError:  # still dead or restarting: ask again
                time.sleep(0.5)

    def _forward(self, run_id: str, cancel: threading.Event, lanes: list, finished: threading.Event) -> None:
        """Until the run finishes: its cancels to the trainer as they are set, and its pause state both ways."""
        sent: set = set()
        while not finished.wait(CANCEL_POLL_SECONDS):
            for lane, flag in [(None, cancel)] + list(enumerate(lanes)):
                if flag.is_set() and lane not in sent:
                    sent.add(lane)
                    self._actor.cancel.remote(run_id, lane)
            try:
                self.hold.sync()
            except ray.exceptions.RayError:  # the trainer died: its run fails on its own
                pass


# --- the scheduler actor -----------------------------------------------------------------------------------
class Scheduler:
    """The cluster's one job manager: every front-end's submits, snapshots and cancels come here."""

    def __init__(self, workers: dict[str, int] | None = None) -> None:
        self.reset(None, workers)

    def reset(self, store_dir: str | None, workers: dict[str, int] | None = None) -> None:
        """A fresh manager (tests: a fresh store); the old one's jobs are cancelled, the trainer actors stay."""
        old = getattr(self, "manager", None)
        for key in list(old._jobs) if old is not None else ():
            old.cancel(key)
        if workers is None:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            workers = {"cuda": gpus, "cpu": int(os.environ.get("GRADIENT_LAB_CPU_WORKERS", "1"))}
        store = RunStore(store_dir) if store_dir else None
        self.manager = JobManager(store, workers=workers, processes=False, slots=RaySlot)

    def call(self, name: str, *args, **kwargs) -> Any:
        return getattr(self.manager, name)(*args, **kwargs)

    def store_call(self, name: str, *args, **kwargs) -> Any:
        value = getattr(self.manager.store, name)
        return value(*args, **kwargs) if callable(value) else value

    def file_run(self, key: str, config: Any, events: list[Event]) -> str:
        try:
            self.manager.file_run(key, config, events)
        except Exception as exc:  # told to the trainer's runner, which says so in its result
            return f"{type(exc).__name__}: {exc}"
        return ""

    def read_run(self, key: str) -> StoredRun | None:
        return self.manager.read_run(key)

    def set_workers(self, workers: dict[str, int]) -> None:
        self.manager.workers = workers

    def trainer_pids(self) -> list[int | None]:
        for slot in self.manager._slots:
            slot.warmup()
        return [slot.pid for slot in self.manager._slots]


# --- a front-end -------------------------------------------------------------------------------------------
class RemoteStore:
    """The scheduler's run store, read from a front-end: RunStore's methods and properties, forwarded."""

    def __init__(self, front: "RayJobManager") -> None:
        self._front = front

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if inspect.isfunction(inspect.getattr_static(RunStore, name, None)):
            return lambda *args, **kwargs: self._front._ask("store_call", name, *args, **kwargs)
        return self._front._ask("store_call", name)

    def __contains__(self, key: str) -> bool:
        return self.meta(key) is not None


class _Connection:
    """This process's one connection to the cluster (Ray allows one): made again after the head was lost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0  # bumped on every (re)connect: front-ends fetch the scheduler's handle again
        self.lost_at: float | None = None  # when a call found the cluster gone (None: connected)

    def ensure(self, address: str) -> int:
        with self.lock:
            if ray.is_initialized() and self.lost_at is None:
                return self.generation
            if self.lost_at is not None and time.monotonic() - self.lost_at < RECONNECT_S:
                raise ClusterUnavailable(UNAVAILABLE)
            ray.shutdown()
            try:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                         _node_ip_address=os.environ.get("GRADIENT_LAB_RAY_NODE_IP", "127.0.0.1"),
                         runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
            except (ConnectionError, ray.exceptions.RayError) as exc:
                self.lost_at = time.monotonic()
                raise unavailable(exc) from None
            self.lost_at, self.generation = None, self.generation + 1
            return self.generation

    def lost(self) -> None:
        with self.lock:
            self.lost_at = self.lost_at or time.monotonic()


CONNECTION = _Connection()


class RayJobManager:
    """A front-end's job manager: JobManager's public API on the cluster's scheduler actor. A call that finds
    the cluster gone raises :class:`ClusterUnavailable`; later calls reconnect (every RECONNECT_S at most)."""

    def __init__(self, address: str, workers: dict[str, int] | None = None) -> None:
        self.address, self._workers = address, workers
        self._generation, self._scheduler = 0, None
        self.store = RemoteStore(self)
        self.processes = True
        self._handle()

    def _handle(self) -> Any:
        generation = CONNECTION.ensure(self.address)
        if generation != self._generation:
            self._scheduler = ray.remote(Scheduler).options(
                name=SCHEDULER, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0,
                resources={HEAD: 0.001}, max_concurrency=64, max_restarts=-1).remote(self._workers)
            self._generation = generation
        return self._scheduler

    def _ask(self, method: str, *args, **kwargs) -> Any:
        scheduler = self._handle()
        try:
            return ray.get(getattr(scheduler, method).remote(*args, **kwargs), timeout=CALL_TIMEOUT_S)
        except ray.exceptions.RayTaskError as exc:  # the manager's own error (e.g. Refused): raised as it is
            raise exc.cause from None
        except ray.exceptions.RayError as exc:
            CONNECTION.lost()
            raise unavailable(exc) from None

    def _call(self, name: str, *args, **kwargs) -> Any:
        return self._ask("call", name, *args, **kwargs)

    def submit(self, config: Any, force: bool = False, session: str | None = None,
               browser: str | None = None, background: bool = False) -> str:
        return self._call("submit", config, force=force, session=session, browser=browser, background=background)

    def snapshot(self, key: str, since: int = 0) -> Snapshot | None:
        return self._call("snapshot", key, since)

    def status(self, key: str) -> str | None:
        return self._call("status", key)

    def touch(self, key: str, session: str) -> None:
        self._call("touch", key, session)

    def cancel(self, key: str, session: str | None = None, everyone: bool = False, browser: str | None = None) -> bool:
        return self._call("cancel", key, session=session, everyone=everyone, browser=browser)

    def pause(self, key: str, browser: str | None = None) -> None:
        self._call("pause", key, browser=browser)

    def step(self, key: str, batches: int, browser: str | None = None) -> None:
        self._call("step", key, batches, browser=browser)

    def resume(self, key: str, browser: str | None = None) -> None:
        self._call("resume", key, browser=browser)

    def counts(self) -> dict[str, int]:
        return self._call("counts")

    def start(self) -> None:
        self._call("start")

    def warmup_status(self) -> list[dict]:
        return self._call("warmup_status")

    def memory_bytes(self) -> int:
        return self._call("memory_bytes")

    def read_run(self, key: str) -> StoredRun | None:
        return self._call("read_run", key)

    def file_run(self, key: str, config: Any, events: list[Event]) -> None:
        self._call("file_run", key, config, events)

    def shutdown(self) -> None:
        """Nothing: the scheduler and its trainers serve the other front-ends."""

    wait = JobManager.wait

    @property
    def workers(self) -> dict[str, int]:
        return self._call("__getattribute__", "workers")

    @workers.setter
    def workers(self, workers: dict[str, int]) -> None:
        """Trainers per device from now on (``start`` starts the missing ones)."""
        self._ask("set_workers", workers)

    def reset(self, store_dir: str | None, workers: dict[str, int] | None = None) -> None:
        """A fresh manager on the scheduler (tests and benchmarks: a fresh store, a number of trainers)."""
        self._ask("reset", store_dir, workers)

    def trainer_pids(self) -> list[int | None]:
        return self._ask("trainer_pids")


def manager_from_env() -> RayJobManager:
    """The front-end of the cluster at ``GRADIENT_LAB_RAY_ADDRESS`` (see docs/cluster.md)."""
    return RayJobManager(os.environ["GRADIENT_LAB_RAY_ADDRESS"])
