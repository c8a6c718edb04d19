"""A stored run's network checked at its initialization or at the trained weights the run store keeps for it
(runs over GRADIENT_LAB_MAX_WEIGHTS_MB keep none). The run is read through ``read_run`` (key -> its
:class:`~core.engine.events.StoredRun` or None): a job's link to the store, or a store's ``get``."""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from core.engine import catalog
from core.engine.config import RunConfig
from core.engine.events import StoredRun, weights_status
from core.engine.models import build_model
from core.lab.gradcheck.numeric import check_gradients
from core.lab.gradcheck.options import AT_CHOICES
from core.lab.gradcheck.result import GradCheck

ReadRun = Callable[[str], StoredRun | None]


class RunLister(Protocol):
    """What :func:`runs_with_weights` reads of a run store (core.serve.store.RunStore is one)."""

    def list_runs(self, kind: str | None = None) -> list[dict]: ...


class RunGone(LookupError):
    """The stored run asked for is not in the store (evicted, deleted, or never there)."""


class NoStoredWeights(LookupError):
    """The stored run has no trained weights in the store (an older run, a grid cell, over the cap)."""


def runs_with_weights(store: RunLister) -> list[dict]:
    """Summaries of the stored single runs whose final weights are stored, newest first."""
    return [m for m in store.list_runs(kind="run") if weights_status(m)[0]]


def _gone(key: str) -> RunGone:
    return RunGone(f"The stored run {key} no longer exists (it was deleted or evicted from the run store): "
                   "pick another run or check a config instead.")


def check_stored_run(key: str, read_run: ReadRun, at: str = "init", **options) -> GradCheck:
    """Check a stored run's network at its initialization (its config's own init: same seed), or with
    ``at="final"`` at the trained weights the run store keeps for it, loaded into the model its config
    builds. Raises :class:`RunGone` (no such run) or :class:`NoStoredWeights` (no weights kept)."""
    if at not in AT_CHOICES:
        raise ValueError(f"at must be one of {', '.join(AT_CHOICES)}, got {at!r}")
    run = read_run(key)
    if run is None:
        raise _gone(key)
    cfg = RunConfig.from_dict(run.meta["config"], strict=False)
    stored, why = weights_status(run.meta)
    if at == "init":
        result = check_gradients(cfg, **options)
        result.notes.insert(0, "This checks the run's config at its initialization (the run's own starting point: "
                               "same seed, same init)." + (" Its final weights are stored too: check at the run's "
                                                           "final weights to see the trained network." if stored else ""))
        result.settings.update(run=key, at="init", where="the run's initialization")
        return result
    if not stored:
        raise NoStoredWeights(f"No weights are stored for run {key}: {why}. Check it at initialization instead.")
    final = next((e for e in run.events if e.kind == "weights" and e.weights), None)
    if final is None:
        raise NoStoredWeights(f"The stored weights of run {key} could not be read (see the run store's problems). "
                              "Check it at initialization instead.")
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
    try:
        model.load_state_dict({name: torch.from_numpy(array) for name, array in final.weights.items()})
    except RuntimeError as exc:
        raise NoStoredWeights(f"The stored weights of run {key} do not fit the network its config builds here "
                              f"({exc}). Check it at initialization instead.") from None
    result = check_gradients(cfg, model=model, **options)
    result.notes.insert(0, f"This checks the run's final weights (after {final.step} training steps), loaded from the "
                           "run store into the network its config builds.")
    result.settings.update(run=key, at="final", step=final.step,
                           where=f"the run's final weights (step {final.step})")
    return result
