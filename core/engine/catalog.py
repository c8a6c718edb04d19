"""Every dataset by name: the built-ins of :mod:`core.engine.data`, and ``fashion3``, which is built
through the upload path (:mod:`core.engine.uploads`, which sits on top of core.engine.data). Anything
that loads a dataset a config names loads it here."""
from __future__ import annotations

from core.engine import data
from core.engine.uploads import load_fashion3


def load_dataset(name: str, noise: float = 0.1) -> data.Dataset:
    """The named dataset, loaded once per process (see :func:`core.engine.data.load_dataset`)."""
    if name == "fashion3" and not data.is_loaded(name):
        return load_fashion3()
    return data.load_dataset(name, noise)
