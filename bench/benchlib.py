"""What every benchmark starts with: the repository importable, the course's datasets found
(``../shared/datasets`` unless GRADIENT_LAB_DATA_DIR says otherwise), no downloads; and a timer
that waits for the GPU. Import it before anything from core/."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"
if SHARED.is_dir() and "GRADIENT_LAB_DATA_DIR" not in os.environ:
    os.environ["GRADIENT_LAB_DATA_DIR"] = str(SHARED)
os.environ.setdefault("GRADIENT_LAB_OFFLINE", "1")

import torch  # noqa: E402

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of ``fn()``, GPU work included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result
