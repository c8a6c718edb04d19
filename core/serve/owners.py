"""Who may use an uploaded dataset: the browsers that uploaded it, each with its own title.

An upload is private to the browser that uploaded it (see :mod:`core.serve.identity`): its title,
its pictures and the runs trained on it are shown only there. The same bytes uploaded by two
browsers are one prepared dataset with two owners. Kept in ``<cache>/uploads/owners.json``
(owner-only), so a reload or a restart keeps a browser's uploads; at most :data:`MAX_OWNED` pairs,
the oldest uploads dropped first. Built-in datasets belong to everyone.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from typing import Any

from core.engine import paths
from core.engine.config import UPLOAD_PREFIX, RunConfig

MAX_OWNED = 20_000  # (upload, browser) pairs remembered
FILE = "owners.json"

_lock = threading.Lock()
_loaded: dict[Path, tuple[int, dict[str, dict[str, str]]]] = {}  # path -> (mtime_ns, {upload: {browser: title}})


def _path() -> Path:
    return paths.cache_dir() / "uploads" / FILE


def _read(path: Path) -> dict[str, dict[str, str]]:
    """The registry (from memory while the file is unchanged); empty when missing or unreadable."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    known = _loaded.get(path)
    if known is not None and known[0] == mtime:
        return known[1]
    try:
        raw = json.loads(path.read_text())
        table = {str(name): {str(b): str(t) for b, t in owners.items()} for name, owners in raw.items()}
    except (OSError, ValueError, AttributeError):
        table = {}
    _loaded[path] = (mtime, table)
    return table


def grant(name: str, browser: str, title: str) -> None:
    """``browser`` uploaded ``name`` (shown to it as ``title``)."""
    path = paths.private_dir("uploads") / FILE
    with _lock:
        table = {n: dict(o) for n, o in _read(path).items()}
        owners = table.pop(name, {})
        owners.pop(browser, None)
        owners[browser] = title
        table[name] = owners  # the newest upload last: the oldest are dropped first
        while sum(map(len, table.values())) > MAX_OWNED and len(table) > 1:
            table.pop(next(iter(table)))
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(table, out)
        os.replace(tmp, path)
        _loaded.pop(path, None)


def owned(browser: str | None) -> dict[str, str]:
    """The uploads ``browser`` owns, {name: title}, oldest first."""
    if browser is None:
        return {}
    with _lock:
        table = _read(_path())
        return {name: owners[browser] for name, owners in table.items() if browser in owners}


def may_use(dataset: str, browser: str | None) -> bool:
    """Whether ``browser`` may see or train on ``dataset`` (any built-in; an upload only if it owns it)."""
    if not dataset.startswith(UPLOAD_PREFIX):
        return True
    with _lock:
        return browser is not None and browser in _read(_path()).get(dataset, {})


def not_yours(dataset: str) -> str:
    """The one message for an upload another browser owns."""
    shown = dataset[:len(UPLOAD_PREFIX) + 10]
    return (f"The dataset {shown}… in this link is not yours: an upload is private to the browser that "
            "uploaded it. Upload the file yourself to train on it.")


def datasets_of(config: Any) -> set[str]:
    """The datasets a task config trains on: a run's, or its base run's (a grid, a sweep, a loss surface)."""
    if isinstance(config, RunConfig):
        return {config.dataset}
    return {inner.dataset for inner in (getattr(config, "base", None), getattr(config, "run", None))
            if isinstance(inner, RunConfig)}
