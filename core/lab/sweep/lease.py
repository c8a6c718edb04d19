"""Which sweep runner holds which running trial, so that several front-ends can run trials of one study.

A runner (:func:`core.lab.sweep.runner.run_sweep`) holds a :class:`Lease` on its study while it runs: a record
in the study's system attributes (machine, process id, a heartbeat every HEARTBEAT_S seconds, ended or not),
and every trial it asks is stamped with the lease's id. A RUNNING trial is an orphan, cut short by a killed
runner and to be asked again, when its runner is known to be gone (:func:`orphans`): its lease ended, its
heartbeat is older than GRACE_S (a runner on another machine), or its process no longer exists (this machine,
at once). A RUNNING trial without a stamp (its runner died between asking and stamping it) is an orphan when
no other runner holds the study, or once it started more than GRACE_S ago. Only Optuna's public API is used.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid

import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 10.0  # a live runner writes its heartbeat this often
GRACE_S = 60.0  # a runner silent this long is taken for dead (clocks of the machines agree to well within it)
RUNNER_ATTR = "runner"  # the trial's user attribute naming the lease that asked it
LEASE_PREFIX = "lease:"  # the study's system attributes holding the leases

_held: set[str] = set()  # leases held by runners of this process
_held_lock = threading.Lock()


def machine() -> str:
    """This host and process-id namespace: where a process id names the same process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


class Lease:
    """A runner's hold on a study (a context manager: held inside ``with``; the heartbeat runs in a thread)."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage):
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"sweep-lease-{self.id[:8]}", daemon=True)

    def __enter__(self) -> "Lease":
        with _held_lock:
            _held.add(self.id)
        self._write(ended=False)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        with _held_lock:
            _held.discard(self.id)
        try:
            self._write(ended=True)
        except Exception:  # the database is gone: the heartbeat goes stale by itself
            pass

    def stamp(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(RUNNER_ATTR, self.id)

    def shared(self, study: optuna.Study) -> bool:
        """Whether another live runner holds the study (a cheap read: the study's system attributes)."""
        return bool(live_leases(study, self.storage) - {self.id})

    def _write(self, ended: bool) -> None:
        record = {"machine": machine(), "pid": os.getpid(), "beat": time.time(), "ended": ended}
        self.storage.set_study_system_attr(self.study_id, LEASE_PREFIX + self.id, record)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write(ended=False)
            except Exception:  # a database blip: the next beat tries again
                pass


def _alive(lease_id: str, record: dict, now: float) -> bool:
    if record.get("ended") or now - record.get("beat", 0.0) > GRACE_S:
        return False
    if record.get("machine") != machine():
        return True
    if record.get("pid") == os.getpid():
        return lease_id in _held
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def live_leases(study: optuna.Study, storage: optuna.storages.BaseStorage) -> set[str]:
    """The ids of the leases on ``study`` whose runners are alive."""
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))
    now = time.time()
    return {key.removeprefix(LEASE_PREFIX) for key, record in attrs.items()
            if key.startswith(LEASE_PREFIX) and _alive(key.removeprefix(LEASE_PREFIX), record, now)}


def orphans(study: optuna.Study, storage: optuna.storages.BaseStorage, mine: str | None = None) -> list[FrozenTrial]:
    """The RUNNING trials of ``study`` whose runner is gone (see the module docstring); ``mine`` is the
    asking runner's lease."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    live = live_leases(study, storage)
    others = bool(live - {mine})
    now = time.time()
    out = []
    for trial in running:
        owner = trial.user_attrs.get(RUNNER_ATTR)
        if owner is not None:
            gone = owner not in live
        else:
            age = now - trial.datetime_start.timestamp() if trial.datetime_start else math.inf
            gone = not others or age > GRACE_S
        if gone:
            out.append(trial)
    return out
