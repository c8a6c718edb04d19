"""Typed events emitted by the training loop, and the run record that collects them.

Events are plain dataclasses of JSON-able values plus numpy arrays; :func:`encode_events`
turns a list of them into JSON + one ``.npz`` blob (no pickle), :func:`decode_events` back.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Event":
        """Inverse of :meth:`to_dict` without the ``kind`` (see :func:`event_from_dict`)."""
        return cls(**raw)


@dataclass
class RunStarted(Event):
    kind: ClassVar[str] = "started"
    key: str
    config: dict
    device: str
    device_name: str
    n_params: int
    steps_per_epoch: int
    total_steps: int
    layers: list[str]
    layer_shapes: list[list[int]]
    dataset: dict
    started_at: float  # wall time (time.time()) when the training clock started: setup is over
    versions: dict
    log_every: int = 0  # the log interval actually used (0 in records made before it was stretched)
    notes: list[str] = field(default_factory=list)  # what the loop changed to keep the history bounded
    lanes: int = 1  # runs trained together in lockstep: time per epoch is the whole group's when > 1


@dataclass
class StepLosses(Event):
    """Data loss (the configured loss, without the penalty) of every step from ``first_step`` on, and
    where an L1/L2 penalty is on the penalty of each step (empty without one). With ``stride`` > 1
    each value is the mean of up to ``stride`` steps starting at ``first_step + k * stride``."""

    kind: ClassVar[str] = "steps"
    first_step: int
    losses: list[float]
    penalties: list[float] = field(default_factory=list)
    stride: int = 1


@dataclass
class Evaluation(Event):
    """Metrics at a log point, all in eval mode: train on a fixed subset of the training split (2048
    examples, core.engine.train.VAL_SUBSET), validation on the whole split at epoch ends and its first 2048
    examples (a fixed random subset) in between. ``*_running`` are the running means (train mode,
    dropout on) over the steps since the last log point. Losses are data losses (the configured
    loss; ``*_ce`` the true cross-entropy of the logits, equal to it for loss=cross_entropy);
    ``penalty`` is the L1 + L2 term on top. ``elapsed`` is training seconds (the clock starts at
    the first step), so ETA = elapsed / step * (total_steps - step)."""

    kind: ClassVar[str] = "eval"
    step: int
    epoch: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    penalty: float
    elapsed: float
    train_loss_running: float = float("nan")
    train_acc_running: float = float("nan")
    train_ce: float = float("nan")
    val_ce: float = float("nan")


@dataclass
class LayerStats(Event):
    """Per weight layer at a log point: gradient norm, mean |W_t - W_0|, mean |W_t - W_prev_log|,
    fraction of saturated (sigmoid/tanh) or dead (ReLU) units, |W_t - W_0| pooled to <= 64x64,
    the share of weights with |w| < 1e-3, and a 64-bin histogram of w over [-hist_bound, hist_bound], the
    smallest power of two >= max|w| (core.engine.probes.hist_bound). Records made before ``hist_bound``
    existed have 40 bins over [-max|w|, max|w|]."""

    kind: ClassVar[str] = "layers"
    step: int
    epoch: float
    layers: list[str]
    grad_norm: list[float]
    weight_change: list[float]
    weight_delta: list[float]
    saturation: list[float | None]
    heatmaps: list[np.ndarray] = field(default_factory=list)
    near_zero: list[float] = field(default_factory=list)
    weight_absmax: list[float] = field(default_factory=list)
    weight_hist: list[np.ndarray] = field(default_factory=list)
    hist_bound: list[float] = field(default_factory=list)


@dataclass
class DecisionBoundary(Event):
    """A 2-D set's class regions at a log point, in eval mode, on a grid of ``xs`` (columns) by ``ys`` (rows):
    ``pred`` the predicted class of each grid point (uint8 [ny, nx]) and ``confidence`` that class's probability
    (uint8 [ny, nx], 0-255 for 0-1). A run's history keeps only its latest boundary in full: the earlier ones
    keep their step and lose their arrays (:func:`keep_latest`). A network small enough to draw also
    carries its diagram (core.engine.neurons): each layer's neuron maps on the coarser ``map_xs`` by ``map_ys`` grid
    of the same plane (float32 [units, ny, nx], inputs first, class probabilities last) and its weight matrices
    (float32 [out, in] per weight layer)."""

    kind: ClassVar[str] = "boundary"
    step: int
    epoch: float
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    pred: np.ndarray | None = None
    confidence: np.ndarray | None = None
    map_xs: np.ndarray | None = None
    map_ys: np.ndarray | None = None
    neuron_maps: list[np.ndarray] | None = None
    edge_weights: list[np.ndarray] | None = None

    @property
    def kept(self) -> bool:
        """Whether it still holds its grid (the latest boundary of a history)."""
        return self.pred is not None


@dataclass
class ConvFilters(Event):
    """A CNN's first convolution layer at a log point (found by type: core.engine.probes.first_conv): each shown
    filter's smoothness (Moran's I, core.engine.probes.filter_smoothness), the mean over all the layer's filters
    now and at initialization, and the first MAX_FILTERS filters themselves (float32 [filters, in, kh, kw]). A
    run's history keeps only its latest filters (:func:`keep_latest`); the earlier events keep their numbers."""

    kind: ClassVar[str] = "filters"
    step: int
    epoch: float
    layer: str  # the weight layer's name (core.engine.models.weight_layers), e.g. conv1
    total: int  # filters in the layer (the first MAX_FILTERS are sent)
    mean_smoothness: float
    initial_smoothness: float
    smoothness: list[float]  # per shown filter
    filters: np.ndarray | None = None

    @property
    def kept(self) -> bool:
        """Whether it still holds its filters (the latest of a history)."""
        return self.filters is not None


@dataclass
class RunFinished(Event):
    """End of a run: status is finished, cancelled, diverged or pruned (stopped early by a sweep's
    pruner); history is kept in all of them.

    train/val metrics are the last log point's (eval mode, see :class:`Evaluation`); ``elapsed``
    and ``epoch_seconds`` are training time; ``*_ce`` the true cross-entropy beside the loss."""

    kind: ClassVar[str] = "finished"
    status: str
    step: int
    epoch: float
    elapsed: float
    reason: str = ""
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    misclassified: list[dict] = field(default_factory=list)
    misclassified_images: np.ndarray | None = None
    decision_grid: dict | None = None  # 2-D inputs only: {"xs", "ys", "pred" [ny][nx], "confidence" [ny][nx]}
    val_ce: float | None = None
    test_ce: float | None = None


@dataclass
class FinalWeights(Event):
    """A finished single run's trained weights, sent just before its :class:`RunFinished`: the state_dict of
    the model :func:`core.engine.models.build_model` builds for the config, as float32 arrays (``weights``).
    ``nbytes`` is their size; ``skipped`` says why they are not kept (over GRADIENT_LAB_MAX_WEIGHTS_MB),
    and ``weights`` is then empty. Job histories in memory hold the event without its arrays
    (:func:`without_weights`); the run store keeps them."""

    kind: ClassVar[str] = "weights"
    step: int
    weights: dict[str, np.ndarray]
    nbytes: int
    skipped: str = ""


@dataclass
class RunFailed(Event):
    kind: ClassVar[str] = "failed"
    step: int
    message: str
    error_type: str
    elapsed: float


@dataclass
class GridStarted(Event):
    """A grid of runs (core.lab.grid) begins: its cells, which of them train batched together, which alone."""

    kind: ClassVar[str] = "grid_started"
    key: str
    cells: list[dict]  # per cell: label, key, config
    batched: list[list[int]]  # groups of cells trained in lockstep as one batched model
    alone: list[int]  # cells trained one after another by the single-run loop
    notes: list[str]  # why some cells train alone
    device: str
    started_at: float


@dataclass
class CellEvent(Event):
    """An event of one cell of a grid, wrapped with the cell's index and label."""

    kind: ClassVar[str] = "cell"
    cell: int
    label: str
    event: Event

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cell": self.cell, "label": self.label, "event": self.event.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CellEvent":
        return cls(raw["cell"], raw["label"], event_from_dict(raw["event"]))


@dataclass
class SurfaceStarted(Event):
    """A loss-surface job (core.lab.surface) has its plane: grid coordinates, the projected path, variance explained."""

    kind: ClassVar[str] = "surface_started"
    key: str
    directions: str  # "random" (filter-normalized) or "pca"
    xs: list[float]  # coordinate along direction 1 of each grid column
    ys: list[float]  # coordinate along direction 2 of each grid row
    path: list[list[float]]  # the recorded weights projected onto the plane, first to last (last = origin)
    path_steps: list[int]  # the training step of each path point
    path_losses: list[float]  # the loss at each projected path point, in the plane
    explained: float  # share of the trajectory's variance lying in the plane
    explained_by_direction: list[float]
    n_examples: int
    final_loss: float  # the trained model's loss on the subset (the plane's origin)


@dataclass
class SurfaceRow(Event):
    """One filled row of the loss surface: loss and accuracy at (xs[i], ys[row]) for every column i."""

    kind: ClassVar[str] = "surface_row"
    row: int
    losses: list[float]
    accs: list[float]


@dataclass
class SweepStarted(Event):
    """A sweep (core.lab.sweep.runner) begins or resumes: where its Optuna study lives and what is left to do."""

    kind: ClassVar[str] = "sweep_started"
    key: str
    study_name: str
    storage: str  # the database URL with any password hidden
    budget: int  # trials the sweep runs in all
    done_before: int  # trials already told to the study (a resumed sweep)
    requeued: int  # interrupted trials asked again with the same parameters
    notes: list[str]
    started_at: float


@dataclass
class TrialDone(Event):
    """One trial of a sweep told to Optuna: state COMPLETE, PRUNED or FAIL, with its run's key."""

    kind: ClassVar[str] = "trial_done"
    number: int
    params: dict
    state: str
    value: float | None  # validation accuracy (the objective), None for a failed trial
    key: str  # the trial's run in the run store
    outcome: str  # finished, stored (told from the run store), pruned, diverged or failed
    reason: str = ""
    test_acc: float | None = None
    elapsed: float = 0.0


@dataclass
class GradCheckDone(Event):
    """A gradient check's result (core.lab.gradcheck): per layer {layer, parameters, checked, total, rel_diff,
    numeric_norm, analytic_norm}, sampled {layer, numeric, analytic} pairs, the overall relative difference,
    what was checked how (``settings``) and the notes."""

    kind: ClassVar[str] = "gradcheck"
    layers: list[dict]
    pairs: list[dict]
    overall: float
    settings: dict
    notes: list[str]


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in
                                        (RunStarted, StepLosses, Evaluation, LayerStats, DecisionBoundary, ConvFilters, FinalWeights, RunFinished,
                                         RunFailed, GridStarted, CellEvent, SurfaceStarted, SurfaceRow, SweepStarted,
                                         TrialDone, GradCheckDone)}
# The one list of how a run ends: RunFinished.status is one of RUN_ENDINGS; a RunFailed is "failed".
RUN_ENDINGS = ("finished", "cancelled", "diverged", "pruned", "paused")  # paused: a pause outlived its bound
TERMINAL_STATUSES = RUN_ENDINGS + ("failed",)
SERVED_FROM_STORE = ("finished", "diverged")  # deterministic outcomes: replayed; a cancelled run trains again
NO_WEIGHTS = ("no weights were stored with this run: it was stored before runs kept their weights, or it was a "
              "cell of a grid or a sweep's trial")


@dataclass
class StoredRun:
    """A finished run as a store keeps it: its key, its JSON summary and its events."""
    key: str
    meta: dict
    events: list[Event]


def weights_status(meta: dict) -> tuple[bool, str]:
    """(whether a stored run's final weights are in the store, why not) from its summary."""
    info = meta.get("weights")
    if not isinstance(info, dict):  # a run stored before runs kept their weights
        return False, NO_WEIGHTS
    return bool(info.get("stored")), str(info.get("reason") or "")


def status_of(event: Event) -> str | None:
    """The terminal status an event announces (None for the others)."""
    if event.kind == "finished":
        return event.status
    return "failed" if event.kind == "failed" else None


def without_weights(events: list[Event]) -> list[Event]:
    """The events with every :class:`FinalWeights` replaced by a copy without its arrays (the others as they are)."""
    return [replace(e, weights={}) if e.kind == "weights" and e.weights else e for e in events]


# Events of which a history keeps only the latest in full: kind -> the fields the earlier ones drop.
LATEST_ONLY = {"boundary": ("xs", "ys", "pred", "confidence", "map_xs", "map_ys", "neuron_maps", "edge_weights"),
               "filters": ("filters",)}


def keep_latest(events: list[Event], kind: str) -> list[tuple[Event, Event]]:
    """In place: every event of ``kind`` (one of LATEST_ONLY) but the last loses its arrays (keeps its step and
    numbers). Returns the (old, thinned) pairs. One pass over the list: called once per log point, it costs far
    less than the log point itself (a history holds at most a few thousand events)."""
    changed, latest = [], True
    dropped = dict.fromkeys(LATEST_ONLY[kind])
    for i in range(len(events) - 1, -1, -1):
        event = events[i]
        if event.kind != kind:
            continue
        if latest:
            latest = False
        elif event.kept:
            events[i] = replace(event, **dropped)
            changed.append((event, events[i]))
    return changed


def event_from_dict(raw: dict[str, Any]) -> Event:
    """An event from its :meth:`Event.to_dict` form (nested events included)."""
    raw = dict(raw)
    return EVENT_TYPES[raw.pop("kind")].from_dict(raw)


def _strip_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"$array": len(arrays) - 1}
    if isinstance(value, dict):
        return {k: _strip_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip_arrays(v, arrays) for v in value]
    return value


def _restore_arrays(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            return arrays[f"a{value['$array']}"]
        return {k: _restore_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_arrays(v, arrays) for v in value]
    return value


def _pack(arrays: list[np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """One flat array per dtype (npz member ``p<k>``) holding every array of that dtype, and an index:
    {"dtypes": [dtype k], "arrays": [[k, offset, shape] per array]}. Hundreds of small arrays become a few."""
    dtypes: list[str] = []
    pieces: list[list[np.ndarray]] = []
    sizes: list[int] = []
    where = []
    for a in arrays:
        if a.dtype.str not in dtypes:
            dtypes.append(a.dtype.str)
            pieces.append([])
            sizes.append(0)
        k = dtypes.index(a.dtype.str)
        where.append([k, sizes[k], list(a.shape)])
        pieces[k].append(a.reshape(-1))
        sizes[k] += a.size
    return {f"p{k}": np.concatenate(parts) for k, parts in enumerate(pieces)}, {"dtypes": dtypes, "arrays": where}


def _unpack(flats: dict[str, np.ndarray], index: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`_pack`: ``a<i>`` -> array i (a view of its dtype's flat array)."""
    out = {}
    for i, (k, offset, shape) in enumerate(index["arrays"]):
        flat = flats[f"p{k}"]
        size = int(np.prod(shape, dtype=np.int64))
        if flat.dtype.str != index["dtypes"][k] or offset < 0 or offset + size > flat.size:
            raise ValueError(f"array {i} lies outside its packed data")
        out[f"a{i}"] = flat[offset:offset + size].reshape(shape)
    return out


def encode_events(events: list[Event], extra: dict | None = None) -> tuple[str, bytes]:
    """Events (+ JSON-able extra) -> (JSON text, npz bytes of the numeric arrays, packed one flat array per
    dtype: see :func:`_pack`)."""
    arrays: list[np.ndarray] = []
    payload = {"events": [_strip_arrays(e.to_dict(), arrays) for e in events], "extra": extra or {}}
    flats, payload["packed"] = _pack(arrays)
    buf = io.BytesIO()
    # what np.savez_compressed writes, at zlib's fastest level: compressing was most of a run's save time
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, flat in flats.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, flat, allow_pickle=False)
    return json.dumps(payload, allow_nan=True), buf.getvalue()


def decode_events(text: str, blob: bytes) -> tuple[list[Event], dict]:
    """Inverse of :func:`encode_events`; raises ValueError on damaged data. Never unpickles. Reads the
    earlier format too (one npz member ``a<i>`` per array, no ``packed`` index)."""
    payload = json.loads(text)
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "packed" in payload:
        arrays = _unpack(arrays, payload["packed"])
    events = [event_from_dict(_restore_arrays(raw, arrays)) for raw in payload["events"]]
    return events, payload.get("extra", {})
