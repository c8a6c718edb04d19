"""Where Gradient Lab keeps things on disk (all overridable by environment variables).

- ``GRADIENT_LAB_CACHE_DIR``: root of everything the app writes (default: ``cache/`` in the repo).
- ``GRADIENT_LAB_DATA_DIR``: extra folders (``os.pathsep``-separated) searched read-only for
  MNIST / Fashion-MNIST raw files, before ``<cache>/datasets`` (where downloads go).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # core/engine/paths.py -> the repository


def cache_dir() -> Path:
    return Path(os.environ.get("GRADIENT_LAB_CACHE_DIR") or REPO_ROOT / "cache").resolve()


def private_dir(*parts: str) -> Path:
    """A folder under the cache, created owner-only (0700), as is a cache root created here."""
    path = cache_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)  # mode applies to the root only (its parents are not ours)
    for part in Path(*parts).parts if parts else ():
        path = path / part
        path.mkdir(exist_ok=True, mode=0o700)
    try:
        path.chmod(0o700)
    except OSError:
        pass
    return path


def private_file(path: str | Path) -> None:
    """Make ``path`` owner-only (0600), creating it empty first when missing, so it is never readable by
    others, not even for a moment. A file that cannot be made so is left as it is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
    except OSError:
        pass


def download_dir() -> Path:
    return private_dir("datasets")


def data_search_dirs() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get("GRADIENT_LAB_DATA_DIR", "").split(os.pathsep) if p]
    return extra + [cache_dir() / "datasets"]


def downloads_allowed() -> bool:
    return os.environ.get("GRADIENT_LAB_OFFLINE", "").lower() not in ("1", "true", "yes")
