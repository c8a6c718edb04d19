"""Finished runs on disk (diskcache), keyed by the config key.

Each run is three entries: ``meta:<key>`` (JSON summary), ``events:<key>`` (JSON events) and
``arrays:<key>`` (npz bytes). Only text and plain bytes are stored, never pickles; a damaged
entry is reported in :attr:`RunStore.problems` and skipped.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from . import paths
from .events import Event, decode_events, encode_events

log = logging.getLogger(__name__)
DEFAULT_SIZE_LIMIT = 4 * 2**30  # 4 GiB, then least-recently-stored runs are evicted


@dataclass
class StoredRun:
    key: str
    meta: dict
    events: list[Event]


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
    return summary


class RunStore:
    def __init__(self, directory: str | Path | None = None, size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = Path(directory) if directory else paths.private_dir("runs")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o700)
        self._cache = diskcache.Cache(str(self.directory), size_limit=size_limit, eviction_policy="least-recently-stored")
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def put(self, key: str, config: dict, events: list[Event], kind: str = "run", extra: dict | None = None) -> dict:
        text, blob = encode_events(events)
        meta = run_summary(key, config, events, kind)
        meta.update(extra or {})
        with self._cache.transact():
            self._cache.set(f"events:{key}", text)
            self._cache.set(f"arrays:{key}", blob)
            self._cache.set(f"meta:{key}", json.dumps(meta))
        return meta

    def meta(self, key: str) -> dict | None:
        raw = self._cache.get(f"meta:{key}")
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
            return meta
        except (TypeError, ValueError) as exc:
            self._report(key, exc)
            return None

    def get(self, key: str) -> StoredRun | None:
        meta = self.meta(key)
        if meta is None:
            return None
        try:
            events, _ = decode_events(self._cache.get(f"events:{key}"), self._cache.get(f"arrays:{key}"))
        except Exception as exc:  # damaged or half-evicted entry: skip it, never crash
            self._report(key, exc)
            return None
        return StoredRun(key, meta, events)

    def __contains__(self, key: str) -> bool:
        return f"meta:{key}" in self._cache

    def delete(self, key: str) -> None:
        for prefix in ("meta", "events", "arrays"):
            self._cache.delete(f"{prefix}:{key}")

    def list_runs(self, kind: str | None = None) -> list[dict]:
        """Summaries of every readable stored run, newest first."""
        out = []
        for cache_key in list(self._cache.iterkeys()):
            if isinstance(cache_key, str) and cache_key.startswith("meta:"):
                meta = self.meta(cache_key[5:])
                if meta is not None and (kind is None or meta.get("kind") == kind):
                    out.append(meta)
        return sorted(out, key=lambda m: m.get("saved_at", 0), reverse=True)

    def clear(self) -> None:
        self._cache.clear()

    def _report(self, key: str, exc: Exception) -> None:
        message = f"Stored run {key} is damaged and was skipped ({type(exc).__name__}: {exc})"
        log.warning(message)
        with self._lock:
            if message not in self.problems:
                self.problems.append(message)
