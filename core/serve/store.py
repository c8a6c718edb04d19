"""Finished runs on disk (diskcache), keyed by the config key.

Each run is three entries: ``meta:<key>`` (JSON summary), ``events:<key>:<version>`` (JSON
events) and ``arrays:<key>:<version>`` (npz bytes; a finished run's trained weights among them,
see :class:`core.engine.events.FinalWeights`; ``meta["weights"]`` says whether they are stored and why not). Saving again writes a new version's parts
first and then switches ``meta:<key>`` (one SQLite row, so the switch is atomic) before the
old version is deleted: a kill at any moment leaves the previous run or the new one readable.

Safety and failure:

- Only text and plain bytes are stored. Reading goes through :class:`SafeDisk`, which refuses
  rows whose key or value is marked as a pickle (a planted row is reported, never executed).
- The folder is 0700 and every file in it 0600.
- The size limit is true and counts whole runs: after a save, the least recently saved runs are
  evicted, all their parts together, until the stored bytes fit (the new run is never evicted;
  a run bigger than the whole limit is not saved).
- A ``cache.db`` that SQLite's integrity check calls damaged is moved aside and a fresh one started
  (a 0-byte one is named in a notice). A full disk, an I/O error or a locked database leave the file
  where it is and make the store memory-only: :meth:`RunStore.health` says so for a banner (and
  tries the disk again every :data:`HEALTH_RETRY_S` seconds, clearing it once the disk takes writes),
  and :meth:`RunStore.put` raises :class:`NotSaved` (the run stays readable from memory).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import diskcache

from core.engine import paths
from core.engine.events import NO_WEIGHTS, Event, FinalWeights, StoredRun, decode_events, encode_events

log = logging.getLogger(__name__)
DEFAULT_SIZE_LIMIT = 4 * 2**30  # 4 GiB of stored runs, then the least recently saved runs are evicted
MEMORY_LIMIT = 256 * 2**20  # runs kept in memory while the disk cannot take them
DB_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
STORE_ERRORS = (OSError, sqlite3.Error)
ORPHAN_AGE_S = 600  # a version's parts without a summary pointing to them are deleted after this
HEALTH_RETRY_S = 30.0  # a store that cannot write tries the disk again this often (when asked for its health)
FULL_BELOW_BYTES = 2**20  # a disk with less room than this counts as full
# what SQLite says of a damaged file, not of a failing disk (a short read: the file is shorter than it says)
DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ")
T = TypeVar("T")


class UnsafeRow(ValueError):
    """A stored row is marked as a pickle; it is refused, never unpickled."""


class DamagedDatabase(sqlite3.DatabaseError):
    """SQLite's integrity check found the database damaged."""


class NotSaved(RuntimeError):
    """A run could not be written to disk (it is kept in memory); the message says why."""


class RefusedKey:
    """Stands for a row key stored as a pickle (never unpickled)."""

    def __repr__(self) -> str:
        return "<refused pickled key>"


class SafeDisk(diskcache.Disk):
    """diskcache's Disk that stores and reads only str/bytes/numbers, never pickles; files are 0600."""

    def get(self, key, raw):
        return super().get(key, raw) if raw else RefusedKey()

    def fetch(self, mode, filename, value, read):
        if mode == diskcache.core.MODE_PICKLE:
            raise UnsafeRow("the row is stored as a pickle, which this store never reads")
        return super().fetch(mode, filename, value, read)

    def put(self, key):
        if type(key) not in (str, bytes):
            raise TypeError(f"store keys are text, not {type(key).__name__}")
        return super().put(key)

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if type(value) not in (str, bytes):
            raise TypeError(f"store values are text or bytes, not {type(value).__name__}")
        size, mode, filename, db_value = super().store(value, read, key)
        if filename:
            full = Path(self._directory, filename)
            full.chmod(0o600)
            for folder in (full.parent, full.parent.parent):
                folder.chmod(0o700)
        return size, mode, filename, db_value


def run_summary(key: str, config: dict, events: list[Event], kind: str = "run") -> dict:
    """The JSON summary kept beside a run (what a run library lists)."""
    started = next((e for e in events if e.kind == "started"), None)
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    summary: dict[str, Any] = {"key": key, "kind": kind, "config": config, "saved_at": time.time(),
                               "status": getattr(end, "status", "failed") if end else "unknown"}
    if started is not None:
        summary.update(device=started.device, device_name=started.device_name, n_params=started.n_params,
                       versions=started.versions, dataset_title=started.dataset.get("title"))
    if end is not None and end.kind == "finished":
        summary.update({k: getattr(end, k) for k in ("test_acc", "test_loss", "val_acc", "val_loss", "elapsed",
                                                      "epoch_seconds", "reason", "step")})
    summary["weights"] = weights_summary(events, summary["status"])
    ends = [e for e in events if e.kind == "eval" and float(e.epoch).is_integer() and e.val_acc == e.val_acc]
    if ends:  # the best epoch-end validation accuracy (the whole split), for the library's ranking
        best = max(ends, key=lambda e: e.val_acc)
        summary.update(best_val_acc=best.val_acc, best_val_epoch=best.epoch)
    return summary


def weights_summary(events: list[Event], status: str) -> dict:
    """{"stored": True, "bytes", "step"} when the run's final weights are among its events, else
    {"stored": False, "reason"}."""
    weights = next((e for e in events if e.kind == "weights"), None)
    if weights is not None and weights.weights:
        return {"stored": True, "bytes": weights.nbytes, "step": weights.step}
    if weights is not None:
        return {"stored": False, "reason": weights.skipped or NO_WEIGHTS}
    if status != "finished":
        return {"stored": False, "reason": f"weights are stored for finished runs only, and this run ended as {status}"}
    return {"stored": False, "reason": NO_WEIGHTS}


def _part_names(key: str, version: str | None) -> tuple[str, str]:
    suffix = f":{version}" if version else ""  # no version: a run saved before versions existed
    return f"events:{key}{suffix}", f"arrays:{key}{suffix}"


def integrity_problem(db: Path) -> str | None:
    """What SQLite's quick_check finds wrong with the database file, read-only (None when it is sound
    or absent); raises sqlite3.Error or OSError when the file cannot be read to tell (a failing disk)."""
    if not db.is_file():
        return None
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = connection.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        if str(getattr(exc, "sqlite_errorname", "")).startswith(DAMAGE_CODES):
            return str(exc)
        raise
    finally:
        connection.close()
    return None if row is not None and row[0] == "ok" else f"integrity check: {row[0] if row else 'no answer'}"


def _describe(exc: BaseException, directory: Path | None = None) -> str:
    """Why the disk refused, in words: "the disk is full" also when SQLite says only "disk I/O error"
    (its shared-memory file cannot grow) while the folder's disk has no room left."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "full" in str(exc).lower():
        return "the disk is full"
    if directory is not None and "disk I/O error" in str(exc) and _free_bytes(directory) < FULL_BELOW_BYTES:
        return "the disk is full; SQLite says disk I/O error"
    return f"{type(exc).__name__}: {exc}"


def _is_empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return FULL_BELOW_BYTES


class RunStore:
    def __init__(self, directory: str | Path | None = None, size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = Path(directory) if directory else paths.private_dir("runs")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o700)
        self.size_limit = int(size_limit)
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._health: str | None = None
        self._failed_at = 0.0  # time.monotonic() of the last disk failure
        self.retry_s = HEALTH_RETRY_S
        self._memory: dict[str, tuple[dict, list[Event]]] = {}  # key -> (meta, events) not on disk
        self._cache: diskcache.Cache | None = self._open()

    # --- opening ---------------------------------------------------------------------------
    def _open(self) -> diskcache.Cache | None:
        """The disk cache; None (memory-only, with a banner) when the disk fails. Only a database the
        integrity check calls damaged is moved aside: a full disk or an I/O error leaves it in place."""
        db = self.directory / "cache.db"
        was_empty = _is_empty_file(db)
        try:
            cache = self._open_checked()
        except sqlite3.DatabaseError as exc:
            try:
                damage = integrity_problem(db)
            except STORE_ERRORS:  # the check cannot read the file either: the disk, not the database
                return self._degrade(exc)
            if damage is None:
                return self._degrade(exc)
            aside = self._move_database_aside()
            self._note(f"The run store's database was damaged ({damage}); it was moved aside to {aside.name} and "
                       f"a fresh one started. Runs stored before are no longer listed.")
            try:
                return self._open_checked()
            except STORE_ERRORS as again:
                return self._degrade(again)
        except OSError as exc:
            return self._degrade(exc)
        if was_empty:
            self._note("The run store's database (cache.db) was an empty file, so the store started empty: runs "
                       "stored in it before (if any) were lost before this start, e.g. when the disk was full.")
        return cache

    def _open_checked(self) -> diskcache.Cache:
        cache = diskcache.Cache(str(self.directory), disk=SafeDisk, size_limit=2**62, cull_limit=0,
                                eviction_policy="none")
        try:
            row = cache._sql("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise DamagedDatabase(f"integrity check: {row[0] if row else 'no answer'}")
            cache._sql("SELECT COUNT(*) FROM Cache").fetchone()
        except BaseException:
            cache.close()
            raise
        self._private_files()
        self._drop_orphans(cache)
        return cache

    @staticmethod
    def _drop_orphans(cache: diskcache.Cache) -> None:
        """Delete parts of versions no summary points to (a save killed midway), once they are old enough
        that no other process can still be writing them."""
        current: dict[str, str | None] = {}
        parts: list[tuple[str, str, str]] = []
        for name in list(cache.iterkeys()):
            if not isinstance(name, str):
                continue
            kind, _, rest = name.partition(":")
            if kind == "meta":
                try:
                    current[rest] = json.loads(cache.get(name)).get("version")
                except (TypeError, ValueError, AttributeError, UnsafeRow):
                    current[rest] = None
            elif kind in ("events", "arrays") and rest.count(":") == 1:
                key, version = rest.split(":")
                parts.append((name, key, version))
        now_ns = time.time_ns()
        for name, key, version in parts:
            try:
                age_s = (now_ns - int(version[:-8], 16)) / 1e9
            except ValueError:
                age_s = ORPHAN_AGE_S
            if current.get(key) != version and age_s >= ORPHAN_AGE_S:
                cache.delete(name)

    def _move_database_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.directory / f"cache.db.damaged-{stamp}"
        for name in DB_FILES:
            source = self.directory / name
            if source.exists():
                source.replace(self.directory / (aside.name + name[len("cache.db"):]))
        return aside

    def _private_files(self) -> None:
        for name in DB_FILES:
            try:
                (self.directory / name).chmod(0o600)
            except FileNotFoundError:
                pass

    # --- health ----------------------------------------------------------------------------
    def health(self) -> str | None:
        """A sentence for a banner when the store is not saving to disk (None when all is well).

        A store that cannot write tries the disk again once :attr:`retry_s` seconds have passed since
        it last failed: reopening it, or writing and deleting a probe row; success clears the banner."""
        with self._lock:
            if self._health is not None and time.monotonic() - self._failed_at >= self.retry_s:
                self._retry_disk()
            return self._health

    def _retry_disk(self) -> None:
        self._failed_at = time.monotonic()  # one try per retry_s, whatever happens
        if self._cache is None:
            self._cache = self._open()
            if self._cache is None:
                return
        else:
            try:
                self._cache.set("health:probe", str(time.time()))
                self._cache.delete("health:probe")
            except STORE_ERRORS as exc:
                self._degrade(exc)
                return
        log.warning("The run store writes to disk again.")
        self._health = None

    def _degrade(self, exc: BaseException) -> None:
        message = (f"The run store cannot write to disk ({_describe(exc, self.directory)}): runs that end meanwhile are kept in "
                   f"memory only until the server restarts, and are marked 'not saved'. It tries the disk again "
                   f"every {self.retry_s:g} seconds.")
        with self._lock:
            if self._health is None:
                log.warning(message)
            self._health = message
            self._failed_at = time.monotonic()
        return None

    def _note(self, message: str) -> None:
        log.warning(message)
        with self._lock:
            if message not in self.problems:
                self.problems.append(message)

    def _safely(self, action: Callable[[diskcache.Cache], T], default: T) -> T:
        """Run a read on the disk cache; a failing disk or database degrades the store instead of raising."""
        cache = self._cache
        if cache is None:
            return default
        try:
            return action(cache)
        except STORE_ERRORS as exc:
            self._degrade(exc)
            return default

    # --- writing ---------------------------------------------------------------------------
    def put(self, key: str, config: dict, events: list[Event], kind: str = "run", extra: dict | None = None) -> dict:
        """Save a run (replacing an earlier one atomically); raises :class:`NotSaved` when the disk refuses."""
        text, blob = encode_events(events)
        meta = run_summary(key, config, events, kind)
        meta.update(extra or {})
        meta["version"] = f"{time.time_ns():x}{os.urandom(4).hex()}"
        meta["bytes"] = len(text.encode()) + len(blob)
        if meta["bytes"] > self.size_limit:
            self._keep_in_memory(key, meta, events)
            raise NotSaved(f"the run takes {meta['bytes'] / 2**20:.1f} MB, more than the run store's whole limit "
                           f"of {self.size_limit / 2**20:.1f} MB")
        if self._cache is None:
            self._keep_in_memory(key, meta, events)
            raise NotSaved(self._health or "the run store is not available")
        try:
            with self._lock:
                old = self._read_meta(key)
                events_name, arrays_name = _part_names(key, meta["version"])
                self._cache.set(events_name, text)
                self._cache.set(arrays_name, blob)
                self._cache.set(f"meta:{key}", json.dumps(meta))  # the atomic switch to the new version
                if old is not None and old.get("version") != meta["version"]:
                    self._delete_parts(key, old.get("version"))
                self._memory.pop(key, None)
                self._evict(keep=key)
                self._private_files()
        except STORE_ERRORS as exc:
            self._degrade(exc)
            self._cleanup_version(key, meta["version"])
            self._keep_in_memory(key, meta, events)
            raise NotSaved(_describe(exc, self.directory)) from None
        return meta

    def _cleanup_version(self, key: str, version: str) -> None:
        try:
            self._delete_parts(key, version)
        except STORE_ERRORS:
            pass

    def _delete_parts(self, key: str, version: str | None) -> None:
        for name in _part_names(key, version):
            self._cache.delete(name)

    def _keep_in_memory(self, key: str, meta: dict, events: list[Event]) -> None:
        with self._lock:
            self._memory.pop(key, None)
            self._memory[key] = (meta, list(events))
            while len(self._memory) > 1 and sum(m.get("bytes", 0) for m, _ in self._memory.values()) > MEMORY_LIMIT:
                self._memory.pop(next(iter(self._memory)))

    def _evict(self, keep: str) -> None:
        """Delete whole runs, least recently saved first, until the stored bytes fit the limit."""
        metas = [m for m in self._all_metas() if m.get("key") != keep]
        kept = self._read_meta(keep)
        total = sum(int(m.get("bytes", 0)) for m in metas) + int((kept or {}).get("bytes", 0))
        for meta in sorted(metas, key=lambda m: m.get("saved_at", 0)):
            if total <= self.size_limit:
                break
            self._cache.delete(f"meta:{meta['key']}")
            self._delete_parts(meta["key"], meta.get("version"))
            total -= int(meta.get("bytes", 0))

    def stored_bytes(self) -> int:
        """Bytes of all runs on disk, as counted against the size limit."""
        return sum(int(m.get("bytes", 0)) for m in self._safely(lambda c: self._all_metas(), []))

    # --- reading ---------------------------------------------------------------------------
    def _read_meta(self, key: str) -> dict | None:
        raw = self._cache.get(f"meta:{key}")
        if raw is None:
            return None
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not an object")
        return meta

    def _all_metas(self) -> list[dict]:
        out = []
        for cache_key in list(self._cache.iterkeys()):
            if isinstance(cache_key, RefusedKey):
                self._report("with a pickled key", UnsafeRow("a row key is stored as a pickle and was refused"))
            elif isinstance(cache_key, str) and cache_key.startswith("meta:"):
                meta = self.meta(cache_key[5:])
                if meta is not None:
                    out.append(meta)
        return out

    def meta(self, key: str) -> dict | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key][0]
        try:
            return self._safely(lambda c: self._read_meta(key), None)
        except (TypeError, ValueError) as exc:
            self._report(key, exc)
            return None

    def get(self, key: str) -> StoredRun | None:
        with self._lock:
            if key in self._memory:
                meta, events = self._memory[key]
                return StoredRun(key, meta, list(events))
        meta = self.meta(key)
        if meta is None:
            return None
        events_name, arrays_name = _part_names(key, meta.get("version"))
        try:
            parts = self._safely(lambda c: (c.get(events_name), c.get(arrays_name)), None)
            if parts is None:
                return None
            events, _ = decode_events(*parts)
        except Exception as exc:  # damaged or refused entry: skip it, never crash
            self._report(key, exc)
            return None
        return StoredRun(key, meta, events)

    def final_weights(self, key: str) -> FinalWeights | None:
        """The stored run's trained weights (None when the run is gone or has none stored)."""
        run = self.get(key)
        found = next((e for e in run.events if e.kind == "weights"), None) if run is not None else None
        return found if found is not None and found.weights else None

    def __contains__(self, key: str) -> bool:
        return key in self._memory or bool(self._safely(lambda c: f"meta:{key}" in c, False))

    def list_runs(self, kind: str | None = None) -> list[dict]:
        """Summaries of every readable stored run (disk and memory), newest first."""
        try:
            metas = {m["key"]: m for m in self._safely(lambda c: self._all_metas(), []) if "key" in m}
        except (TypeError, ValueError) as exc:
            self._report("(listing)", exc)
            metas = {}
        with self._lock:
            metas.update({key: meta for key, (meta, _) in self._memory.items()})
        out = [m for m in metas.values() if kind is None or m.get("kind") == kind]
        return sorted(out, key=lambda m: m.get("saved_at", 0), reverse=True)

    def _report(self, key: str, exc: Exception) -> None:
        self._note(f"Stored run {key} is damaged and was skipped ({type(exc).__name__}: {exc})")
