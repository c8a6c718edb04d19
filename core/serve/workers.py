"""Training off the web server's GIL: each worker slot is a spawned child process.

:meth:`ProcessSlot.run` ships a task config to its child, forwards a cancel, and hands every
event the child streams back to ``emit`` in this process, so the job manager (the only writer
of the run store) keeps its API and records. A child that dies mid-job (killed, segfault, out
of memory) ends that job as failed with the reason, and the next job gets a fresh child.

Children import the engine only (no Streamlit). Each warms up once when it starts: torch
imported, the default dataset loaded, one tiny training run taken, so a student's first Train
after a server start does not wait for any of that.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

import torch

from core.serve.cobatch import HARD_MAX_COBATCH
from core.engine.config import RunConfig
from core.engine.events import Event, RunFailed
from core.serve.pause import Hold
from core.serve.runners import runner_for, store_links
from core.serve.store import StoredRun
from core.engine.train import train

_SPAWN = mp.get_context("spawn")
POLL_SECONDS = 0.05
# The warm-up: the default dataset (always offline) and a network small enough to train in well under a second.
WARMUP_CONFIG = RunConfig(dataset="digits", hidden=(16,), epochs=1, batch_size=512, log_every=1000)


class _SharedFlag:
    """Lane i's cancel flag of a co-batch, as the parent sets it in shared memory."""

    def __init__(self, flags: Any, i: int):
        self.flags, self.i = flags, i

    def is_set(self) -> bool:
        return bool(self.flags[self.i])


def _child_main(conn: Connection, cancel: Any, lane_flags: Any, hold_values: Any, warm: Any, warm_seconds: Any,
                device: str, threads: int) -> None:
    """The child: warm up, then run configs as they arrive until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal stops the parent, which stops us
    if threads > 0:
        torch.set_num_threads(threads)
    lanes = [_SharedFlag(lane_flags, i) for i in range(len(lane_flags))]
    hold = Hold(hold_values)  # the slot's pause state, set by the parent's job manager
    started = time.perf_counter()
    try:
        train(WARMUP_CONFIG.replace(device=device))
    finally:  # a failed warm-up is no reason not to serve: the real job reports its own error
        warm_seconds.value = time.perf_counter() - started
        warm.set()
    while True:
        try:
            config = conn.recv()
        except (EOFError, OSError):
            return
        if config is None:
            return
        spec = runner_for(config)
        send = lambda event: conn.send(("event", event))  # noqa: E731
        try:
            link = _StoreLink(conn)
            spec.runner(config, send, cancel, **store_links(spec, link.file_run, link.read_run, lanes, hold))
        except Exception as exc:  # a bug in a runner must not kill the worker
            send(RunFailed(0, f"{type(exc).__name__}: {exc}", type(exc).__name__, 0.0))
        conn.send(("done", None))


class _StoreLink:
    """A child's way to the run store, through the parent's job manager (the store's only writer):
    each call is a request on the pipe, answered before the runner goes on."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def file_run(self, key: str, config: Any, events: list[Event]) -> None:
        """Raises, as the manager's ``file_run`` does, when the save failed."""
        self.conn.send(("file", (key, config, events)))
        error = self.conn.recv()
        if error:
            raise OSError(error)

    def read_run(self, key: str) -> StoredRun | None:
        self.conn.send(("read", key))
        return self.conn.recv()


def death_reason(exitcode: int | None) -> str:
    """Plain words for how a worker process ended."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        cause = " (killed: often the machine ran out of memory)" if name == "SIGKILL" else ""
        how = f"was stopped by {name}{cause}"
    else:
        how = f"exited with code {exitcode}"
    return (f"The training process {how}. This run was lost; nothing stored was touched, and a new "
            "training process has been started: press Train to try again.")


class ProcessSlot:
    """One worker process for one device; runs one job at a time."""

    def __init__(self, device: str, threads: int = 0, name: str = "gl-trainer"):
        self.device, self.threads, self.name = device, threads, name
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel = _SPAWN.Event()
        self._lane_flags = _SPAWN.RawArray("b", HARD_MAX_COBATCH)  # per-lane cancels of a co-batch
        self.hold = Hold()  # pause, step, resume of the run it trains alone (shared memory, like the cancels)
        self._warm = _SPAWN.Event()
        self._warm_seconds = _SPAWN.Value("d", 0.0)
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.restarts = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child if it is not running (idempotent); it warms up in the background."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                return
            if self._proc is not None:
                self.restarts += 1
                self._close()
            self._warm.clear()
            parent, child = _SPAWN.Pipe()
            self._proc = _SPAWN.Process(target=_child_main, name=self.name, daemon=True,
                                        args=(child, self._cancel, self._lane_flags, self.hold.values, self._warm,
                                              self._warm_seconds, self.device, self.threads))
            self._proc.start()
            child.close()
            self._conn, self.started_at = parent, time.time()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._proc is None:
                return
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout)
            self._close()
            self._proc = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def warmup(self) -> dict:
        """{"state": "stopped" | "warming up" | "ready", "seconds": warm-up time once ready}."""
        if not self.alive:
            return {"state": "stopped", "seconds": None}
        if not self._warm.is_set():
            return {"state": "warming up", "seconds": time.time() - (self.started_at or time.time())}
        return {"state": "ready", "seconds": self._warm_seconds.value}

    # --- running a job --------------------------------------------------------------------------
    def run(self, config: Any, emit: Callable[[Event], None], cancel: threading.Event,
            file_run: Callable[[str, Any, list[Event]], None], read_run: Callable[[str], StoredRun | None],
            lane_cancels: Sequence[threading.Event] | None = None) -> None:
        """Run ``config`` in the child, emitting its events here (and answering its store requests
        with ``file_run`` / ``read_run``); ``cancel`` and each of ``lane_cancels`` (a co-batch's lanes)
        are forwarded as they are set. Returns when it has ended."""
        self.start()
        self._cancel.clear()
        lanes = list(lane_cancels or ())
        for i in range(len(lanes)):
            self._lane_flags[i] = 0
        last_step = 0
        try:
            self._conn.send(config)
        except (OSError, ValueError):
            pass  # the child is gone: found below
        forwarded = False
        while True:
            if cancel.is_set() and not forwarded:
                self._cancel.set()
                forwarded = True
            for i, flag in enumerate(lanes):
                if flag.is_set() and not self._lane_flags[i]:
                    self._lane_flags[i] = 1
            try:
                message = self._conn.recv() if self._conn.poll(POLL_SECONDS) else None
            except (EOFError, OSError):
                message = None
            if message is None:
                if self._proc.is_alive():
                    continue
                self._proc.join(1.0)
                emit(RunFailed(last_step, death_reason(self._proc.exitcode), "WorkerDied", 0.0))
                self.start()  # the replacement warms up while the next job waits
                return
            tag, payload = message
            if tag == "done":
                return
            if tag == "file":
                self._conn.send(_file_error(file_run, *payload))
                continue
            if tag == "read":
                self._conn.send(read_run(payload))
                continue
            last_step = getattr(payload, "step", last_step) or last_step
            emit(payload)


def _file_error(file_run: Callable[[str, Any, list[Event]], None], key: str, config: Any,
                events: list[Event]) -> str:
    try:
        file_run(key, config, events)
    except Exception as exc:  # reported to the child's runner, which says so in its result
        return f"{type(exc).__name__}: {exc}"
    return ""


def default_threads(device: str) -> int:
    """CPU threads per CPU worker: all cores but one (GRADIENT_LAB_TORCH_THREADS overrides), so the
    web server stays responsive; GPU workers keep torch's default."""
    if device != "cpu":
        return 0
    return int(os.environ.get("GRADIENT_LAB_TORCH_THREADS") or max(1, (os.cpu_count() or 1) - 1))
