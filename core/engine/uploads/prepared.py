"""Prepared uploads on disk: ``<cache>/uploads/<digest>.npz``, found again by content hash, under a byte quota."""
from __future__ import annotations

import errno
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.engine import data
from core.engine import paths
from core.engine.config import UPLOAD_PREFIX
from core.engine.uploads import limits
from core.engine.uploads.limits import DIGEST_CHARS, FORMAT_VERSION, UploadError, _size


@dataclass
class UploadResult:
    """A prepared upload: its dataset name (``upload:<digest>``), the dataset and what happened."""

    name: str
    dataset: data.Dataset
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many files
    notes: list[str] = field(default_factory=list)
    from_cache: bool = False


def _as_bytes(payload: bytes, kind: str) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the uploaded file's bytes, got {type(payload).__name__}")
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if size > limits.MAX_UPLOAD_BYTES:
        raise UploadError(f"The {kind} is {_size(size)}; the limit is {_size(limits.MAX_UPLOAD_BYTES)}.")
    blob = bytes(payload)
    if len(blob) < 4096 and not blob.strip():
        raise UploadError(f"The {kind} is empty.")
    return blob


def _digest(blob: bytes, *options: object) -> str:
    h = hashlib.sha256(repr((FORMAT_VERSION,) + options).encode())
    h.update(b"\0")
    h.update(blob)
    return h.hexdigest()[:DIGEST_CHARS]


def _npz_path(digest: str) -> Path:
    return paths.cache_dir() / "uploads" / f"{digest}.npz"  # not created until something is saved


_digest_locks: dict[str, threading.Lock] = {}
_digest_locks_guard = threading.Lock()


def _lock_for(digest: str) -> threading.Lock:
    with _digest_locks_guard:
        return _digest_locks.setdefault(digest, threading.Lock())



def _from_cache(digest: str) -> UploadResult | None:
    """The upload prepared earlier (this process or an earlier one), when its npz exists."""
    if not _npz_path(digest).is_file():
        return None
    name = UPLOAD_PREFIX + digest
    try:
        ds = data.load_dataset(name)
    except data.DatasetUnavailable:  # damaged file: prepare it again
        return None
    try:
        os.utime(_npz_path(digest))  # recently used: evicted last
    except OSError:
        pass
    return UploadResult(name, ds, {}, ["This file was uploaded before: reused its prepared copy."], from_cache=True)


def _finish(digest: str, title: str, classes: list[str], x: torch.Tensor, y: torch.Tensor,
            skipped: dict[str, int], notes: list[str], test_fraction: float = limits.ZIP_TEST_FRACTION) -> UploadResult:
    """Split off the fixed test set (none when ``test_fraction`` is 0), save the npz, register the dataset."""
    name = UPLOAD_PREFIX + digest
    if test_fraction:
        ds = data.split_off_test(name, title, classes, x, y, test_fraction)
    else:
        ds = data.Dataset(name, title, classes, x, y, x[:0], y[:0])
        notes = notes + ["No test set held out: all rows are for training and validation (the validation fraction "
                         "of the run splits them). Choose a test fraction to keep a test set apart."]
    target = paths.private_dir("uploads") / f"{digest}.npz"
    try:
        data.save_npz(ds, target)
        enforce_quota(keep=target)
    except OSError as exc:
        reason = "its disk is full" if exc.errno == errno.ENOSPC else f"{type(exc).__name__}: {exc}"
        raise UploadError(f"The server could not save the prepared dataset ({reason}). This is not a problem "
                          f"with your file: try again later or tell the course staff.") from None
    data.register_dataset(ds)
    return UploadResult(name, ds, dict(skipped), notes, from_cache=False)


def quota_bytes() -> int:
    """Bytes prepared uploads may take on disk (GRADIENT_LAB_UPLOADS_QUOTA_MB)."""
    raw = os.environ.get("GRADIENT_LAB_UPLOADS_QUOTA_MB", "").strip()
    try:
        return int(float(raw) * limits.MB) if raw else limits.DEFAULT_QUOTA_MB * limits.MB
    except ValueError:
        return limits.DEFAULT_QUOTA_MB * limits.MB


def enforce_quota(keep: Path) -> None:
    """Evict the least recently used prepared uploads until all fit the quota; ``keep`` (the new one) stays.

    Raises :class:`UploadError` (and removes ``keep``) when the new upload alone is over the quota."""
    quota = quota_bytes()
    files = []
    for path in keep.parent.glob("*.npz"):
        if path.name.endswith(".tmp.npz"):
            continue
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        files.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in files)
    new_size = keep.stat().st_size
    if new_size > quota:
        keep.unlink(missing_ok=True)
        raise UploadError(f"The prepared dataset takes {_size(new_size)}, more than the server's quota for uploads "
                          f"of {_size(quota)} (GRADIENT_LAB_UPLOADS_QUOTA_MB): use fewer or smaller images.")
    for _, size, path in sorted(files):
        if total <= quota:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size

