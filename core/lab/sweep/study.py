"""A sweep's Optuna study: where it is stored, how it is opened, and how a cut-short sweep resumes.

The study lives in an RDB (SQLite in the cache folder, or any SQLAlchemy URL in
``GRADIENT_LAB_SWEEP_DB``), so a cancelled or killed sweep resumes with its finished trials intact:
a trial cut short (by a cancel, a kill at any point, or a worker whose pipe broke) is failed as
interrupted, not counted, and asked again with the values it had (:func:`ask_again`). Only Optuna's
public API is used: the storage opened here, with trial ids from its public methods.
"""
from __future__ import annotations

import importlib.util
import os
import re
import threading
from typing import Sequence

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.trial import TrialState

from core.engine import paths
from core.engine.config import RunConfig
from core.lab.sweep.lease import orphans
from core.lab.sweep.space import SweepConfig, trial_config

optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported as events, not log lines

INTERRUPTED = "interrupted"  # the outcome of a trial cut short by a cancel or a killed process: asked again
WITHDRAWN = "withdrawn"  # a trial asked past the budget (two front-ends asked the last one at once): never run
DB_ENV = "GRADIENT_LAB_SWEEP_DB"


class SweepStorageError(RuntimeError):
    """The study database cannot be opened (bad URL, server down, no permission)."""


# --- the study's storage -------------------------------------------------------------------------
def storage_url() -> str:
    """GRADIENT_LAB_SWEEP_DB, or an SQLite file in the cache folder."""
    url = os.environ.get(DB_ENV, "").strip()
    return url or f"sqlite:///{paths.private_dir('sweeps') / 'studies.db'}"


POSTGRES_DRIVERS = ("psycopg", "psycopg2")  # SQLAlchemy dialect names, preferred first; psycopg is pinned
POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # a plain URL names no driver


def with_driver(url: str) -> str:
    """A plain ``postgresql://`` (or ``postgres://``) URL with the PostgreSQL driver that is installed
    (``postgresql+psycopg://``); other URLs as they are. SweepStorageError when no driver is installed."""
    scheme = next((s for s in POSTGRES_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        return url
    driver = next((d for d in POSTGRES_DRIVERS if importlib.util.find_spec(d) is not None), None)
    if driver is None:
        raise SweepStorageError(f"The sweep database {redact(url)} is PostgreSQL, and no PostgreSQL driver is "
                                f"installed: python3 -m pip install -r requirements-cluster.txt (psycopg), "
                                f"or unset {DB_ENV} to use SQLite in the cache folder")
    return f"postgresql+{driver}://" + url[len(scheme):]


def redact(url: str) -> str:
    """The URL with any password hidden."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


_storages: dict[str, optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` (one per URL and process); raises SweepStorageError with a clear
    message when it cannot be used."""
    url = with_driver(url or storage_url())
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
    (diverged); not one interrupted by a cancel or a restart, nor one withdrawn."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("outcome", INTERRUPTED) not in (INTERRUPTED, WITHDRAWN))


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """Running maximum of trial values (None for failed trials keeps the best so far)."""
    out, best = [], None
    for v in values:
        if v is not None and (best is None or v > best):
            best = v
        out.append(best)
    return out


# --- resuming ------------------------------------------------------------------------------------
def _trial_id(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def ask_again(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> None:
    """Trial ``number``, cut short, is failed as interrupted (not counted) and queued to be asked again: the
    copy keeps the values it had and what its sampler needs for the rest (a grid search's point, values
    given to enqueue_trial), so one killed before all its values were chosen gets the same point. The copy
    is queued before the original is failed: a kill in between repeats a point, never loses one. When another
    runner failed the original first (both took it for an orphan at once), this copy is withdrawn."""
    trial_id = _trial_id(study, storage, number)
    frozen = storage.get_trial(trial_id)
    if frozen.state != TrialState.RUNNING:
        return  # told, or asked again by another runner, since it was looked at
    copy_id = storage.create_new_trial(storage.get_study_id_from_name(study.study_name), optuna.trial.create_trial(
        state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
        system_attrs=frozen.system_attrs))
    try:
        storage.set_trial_user_attr(trial_id, "outcome", INTERRUPTED)
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(copy_id, "outcome", WITHDRAWN)
        storage.set_trial_state_values(copy_id, TrialState.FAIL)


def requeue_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage, lease: str | None = None) -> int:
    """Trials left RUNNING by a killed process (at any point: before all their values were chosen, while
    training, or between recording their outcome and being told) never finished: each is asked again. Trials
    that another live runner (another front-end) is running are its own (:func:`core.lab.sweep.lease.orphans`;
    ``lease`` is the caller's)."""
    stale = orphans(study, storage, lease)
    for trial in stale:
        ask_again(study, storage, trial.number)
    return len(stale)


# --- reading a study -------------------------------------------------------------------------------
def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: number, state, value, params, outcome, run key, test accuracy."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("outcome") == WITHDRAWN:
            continue
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
