"""A grid of runs trained as one job: e.g. activation x depth for the vanishing-gradients lesson.

A :class:`GridConfig` is a base :class:`RunConfig` plus axes (activations, depths, inits, norms)
and/or named variants (explicit overrides, e.g. the "Fixes" view: ReLU, He init, BatchNorm, a
smaller learning rate). :meth:`GridConfig.cells` lists every combination as (label, RunConfig).

:func:`run_grid` trains every cell in ONE job through :func:`core.engine.family.train_family`: cells
that share a data stream (same dataset, split, seed, batch size, epochs, log interval) train in
lockstep as one batched model; a cell that cannot be batched (CNN, dropout, mixed widths, by hand)
trains on its own, and the grid says so. Each cell emits exactly
the events of a single run, wrapped in :class:`CellEvent`; a cell that diverges ends alone.
Each ended cell is handed to the job manager (the only writer to the store), which files it
under its own key, so the single-run pages replay it instantly. Registered with the job manager as kind "grid".
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from core.engine.config import ACTIVATIONS, INITS, MAX_HIDDEN_LAYERS, NORMS, ConfigError, RunConfig, parse_value
from core.engine.task import MAX_DIGITS, TaskConfig, canonical_json, first_few, parse_json, reject_unknown, shortened
from core.engine.events import CellEvent, Event, GridStarted, RunFailed, RunFinished
from core.engine.family import plan_family, train_family
from core.engine.train import resolve_device

MAX_CELLS = 60
MAX_GRID_WIDTH = 256  # every cell of a batched grid is in memory at once: keep them small
AXES = {"activations": ("activation", ACTIVATIONS), "inits": ("init", INITS), "norms": ("norm", NORMS)}

Variant = tuple[str, tuple[tuple[str, Any], ...]]  # (label, ((field, value), ...))
DEPTHS_EXAMPLE = "e.g. 1-8 or 1,2,4"


def _depths_from_text(text: str) -> list[int]:
    """A link's depths, ``lo-hi`` or a comma list: bounds are checked before any list is built, and a
    refusal names at most a few of the offending parts (any text gives a short message)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > MAX_CELLS:
        raise ConfigError({"depths": f"Depths lists {len(parts):,} values: a grid has at most {MAX_CELLS} cells"})
    bad = [part for part in parts if not _depth_part(part)]
    if bad:
        raise ConfigError({"depths": f"Depths {first_few(bad)}: each must be a whole number 0-{MAX_HIDDEN_LAYERS}, "
                                     f"{DEPTHS_EXAMPLE}"})
    if len(parts) == 1 and "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        if lo > hi:
            raise ConfigError({"depths": f"Depths {lo}-{hi}: the range must go up, {DEPTHS_EXAMPLE}"})
        return list(range(lo, hi + 1))
    if any("-" in part for part in parts):
        raise ConfigError({"depths": f"Depths {shortened(text)}: a range lo-hi stands alone, {DEPTHS_EXAMPLE}"})
    return [int(part) for part in parts]


def _depth_part(part: str) -> bool:
    """Whether ``part`` is a depth or a ``lo-hi`` range of depths within 0..MAX_HIDDEN_LAYERS."""
    ends = part.split("-")
    return (len(ends) <= 2 and all(end.isdigit() and len(end) <= MAX_DIGITS and int(end) <= MAX_HIDDEN_LAYERS
                                   for end in ends))


def _variants_from_json(text: str) -> list[tuple[str, dict]]:
    """A link's variants: a JSON list of at most MAX_CELLS ``[label, {setting: value}]`` pairs."""
    try:
        raw = parse_json(text, "Variants")
    except ConfigError as exc:
        raise ConfigError({"variants": exc.problems["json"]}) from None
    if not isinstance(raw, list):
        raise ConfigError({"variants": f"Variants must be a JSON list of [label, {{setting: value}}], got "
                                       f"{shortened(raw)}"})
    if len(raw) > MAX_CELLS:
        raise ConfigError({"variants": f"The link has {len(raw):,} variants: a grid has at most {MAX_CELLS} cells"})
    malformed = [v for v in raw if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                        and isinstance(v[1], dict))]
    if malformed:
        raise ConfigError({"variants": f"Each variant must be [label, {{setting: value}}], not {first_few(malformed)}"})
    return [(label, items) for label, items in raw]


def overrides(cfg: RunConfig, reference: RunConfig) -> dict[str, Any]:
    """The settings in which ``cfg`` differs from ``reference``."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)
            if getattr(cfg, f.name) != getattr(reference, f.name)}


def _variant(label: Any, overrides: Any) -> Variant:
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    parsed = []
    for name, value in items:
        try:
            parsed.append((str(name), parse_value(str(name), value)))
        except (KeyError, ValueError):
            parsed.append((str(name), value))  # reported by validation
    return str(label), tuple(sorted(parsed))


@dataclass(frozen=True)
class GridConfig(TaskConfig):
    """A base run and what varies across the grid's cells.

    ``activations``, ``depths`` (hidden-layer counts, each ``width`` units wide), ``inits`` and
    ``norms`` are axes; an empty axis keeps the base's value. ``variants`` are named overrides
    (label, {field: value}) crossed with the axes, e.g. ``("ReLU + He", {"activation": "relu",
    "init": "he"})``; a variant may not set a field that is also an axis.
    """

    KIND: ClassVar[str] = "grid"

    base: RunConfig = field(default_factory=RunConfig)
    activations: tuple[str, ...] = ()
    depths: tuple[int, ...] = ()
    width: int = 10
    inits: tuple[str, ...] = ()
    norms: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("activations", "inits", "norms"):
            set_(name, tuple(str(v) for v in getattr(self, name)))
        try:
            set_("depths", tuple(int(d) for d in self.depths))
        except (TypeError, ValueError):
            raise ConfigError({"depths": f"Depths must be whole numbers, got {shortened(self.depths)}"}) from None
        set_("variants", tuple(_variant(label, overrides) for label, overrides in self.variants))
        problems = self._problems()
        if problems:
            raise ConfigError(problems)

    # --- the cells --------------------------------------------------------------------------------
    def _combinations(self) -> list[tuple[str, dict]]:
        axes: list[list[tuple[str, dict]]] = [[(label, dict(items)) for label, items in self.variants] or [("", {})]]
        for name, (fld, _) in AXES.items():
            values = getattr(self, name)
            if name == "inits":  # depth comes between activation and init in labels
                axes.append([(f"x{d}", {"hidden": (self.width,) * d}) for d in self.depths] or [("", {})])
            axes.append([(v, {fld: v}) for v in values] or [("", {})])
        out = []
        for combo in itertools.product(*axes):
            label = " ".join(part for part, _ in combo if part) or "base"
            overrides: dict = {}
            for _, o in combo:
                overrides.update(o)
            out.append((label, overrides))
        return out

    def cells(self) -> list[tuple[str, RunConfig]]:
        """Every combination as (label, config), variants outermost, then activation, depth, init, norm."""
        return [(label, self.base.replace(**overrides)) for label, overrides in self._combinations()]

    @property
    def n_cells(self) -> int:
        return (max(len(self.variants), 1) * max(len(self.activations), 1) * max(len(self.depths), 1)
                * max(len(self.inits), 1) * max(len(self.norms), 1))

    @property
    def device(self) -> str:
        return self.base.device

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "activations": list(self.activations), "depths": list(self.depths),
                "width": self.width, "inits": list(self.inits), "norms": list(self.norms),
                "variants": [[label, {k: list(v) if isinstance(v, tuple) else v for k, v in items}]
                             for label, items in self.variants]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GridConfig":
        data = dict(data)
        base = RunConfig.from_dict(data.pop("base", {}))
        reject_unknown(data, (f.name for f in dataclasses.fields(cls)), "grid")
        data["variants"] = [tuple(v) for v in data.get("variants", [])]
        return cls(base=base, **data)

    def to_query(self) -> dict[str, str]:
        """Readable query-string form: the base's non-default fields, then the grid's own (axes as
        comma lists, depths as ``lo-hi`` when consecutive, variants as compact JSON)."""
        out = self.base.to_query()
        for name in ("activations", "inits", "norms"):
            if getattr(self, name):
                out[name] = ",".join(getattr(self, name))
        d = self.depths
        if d:
            consecutive = len(d) > 1 and list(d) == list(range(d[0], d[0] + len(d)))
            out["depths"] = f"{d[0]}-{d[-1]}" if consecutive else ",".join(map(str, d))
        if self.width != GridConfig.__dataclass_fields__["width"].default:
            out["width"] = str(self.width)
        if self.variants:
            out["variants"] = canonical_json(self.to_dict()["variants"])
        return out

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "GridConfig":
        """Inverse of :meth:`to_query` (raises ConfigError with readable messages)."""
        own = {"activations", "inits", "norms", "depths", "width", "variants"}
        base = RunConfig.from_query({k: v for k, v in query.items() if k not in own})
        data: dict[str, Any] = {"base": base.to_dict()}
        for name in ("activations", "inits", "norms"):
            if query.get(name):
                data[name] = [v.strip() for v in str(query[name]).split(",") if v.strip()]
        depths = str(query.get("depths") or "").strip()
        if depths:
            data["depths"] = _depths_from_text(depths)
        if query.get("width"):
            width = str(query["width"]).strip()
            if not width.isdigit() or len(width) > MAX_DIGITS:
                raise ConfigError({"width": f"Width {shortened(width)} must be a whole number 1-{MAX_GRID_WIDTH}"})
            data["width"] = int(width)
        if query.get("variants"):
            data["variants"] = _variants_from_json(str(query["variants"]))
        return cls.from_dict(data)

    @classmethod
    def from_runs(cls, runs: Sequence[tuple[str, RunConfig]], base: RunConfig | None = None) -> "GridConfig":
        """A grid of named variants: each run's differences from ``runs[0]``, applied to ``base``
        (default ``runs[0]``). E.g. a preset family's ``runs``."""
        first = runs[0][1]
        return cls(base=base or first, variants=tuple((label, overrides(cfg, first)) for label, cfg in runs))

    # --- validation -------------------------------------------------------------------------------
    def _problems(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        for name, (fld, allowed) in AXES.items():
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if bad:
                problems[name] = f"{name.capitalize()} {first_few(bad)} not allowed: choose from {', '.join(allowed)}"
            elif len(set(values)) != len(values):
                problems[name] = f"{name.capitalize()} lists a value twice: {first_few(values)}"
        if any(not 0 <= d <= MAX_HIDDEN_LAYERS for d in self.depths):
            problems["depths"] = (f"Depths {first_few([d for d in self.depths if not 0 <= d <= MAX_HIDDEN_LAYERS])}: "
                                 f"each must be 0-{MAX_HIDDEN_LAYERS} hidden layers")
        elif len(set(self.depths)) != len(self.depths):
            problems["depths"] = f"Depths lists a value twice: {first_few(self.depths)}"
        if isinstance(self.width, bool) or not isinstance(self.width, int) or not 1 <= self.width <= MAX_GRID_WIDTH:
            problems["width"] = f"Width = {self.width!r}: allowed 1-{MAX_GRID_WIDTH} units per hidden layer in a grid"
        axis_fields = {fld for name, (fld, _) in AXES.items() if getattr(self, name)} | ({"hidden"} if self.depths else set())
        labels = [label for label, _ in self.variants]
        if any(not label.strip() for label in labels) or len(set(labels)) != len(labels):
            problems["variants"] = f"Variant labels must be non-empty and distinct, got {first_few(labels)}"
        for label, items in self.variants:
            unknown = [k for k, _ in items if k not in RunConfig.__dataclass_fields__]
            clash = [k for k, _ in items if k in axis_fields]
            if unknown:
                problems["variants"] = f"Variant {shortened(label)} sets unknown settings {first_few(unknown)}"
            elif clash:
                problems["variants"] = f"Variant {shortened(label)} sets {clash}, which the grid also varies as an axis"
        if problems:
            return problems
        if self.n_cells > MAX_CELLS:
            problems["cells"] = (f"The grid has {self.n_cells} cells: at most {MAX_CELLS} (fewer activations, depths, "
                                 f"inits, norms or variants)")
            return problems
        seen: dict[RunConfig, str] = {}
        for label, overrides in self._combinations():
            try:
                cfg = self.base.replace(**overrides)
            except ConfigError as exc:
                problems["cells"] = f"Cell {shortened(label)}: {exc}"
                break
            if cfg in seen:
                problems["cells"] = f"Cells {shortened(seen[cfg])} and {shortened(label)} are the same run"
                break
            seen[cfg] = label
        return problems


# --- the runner -----------------------------------------------------------------------------------
FileRun = Callable[[str, RunConfig, list[Event]], None]


def run_grid(grid: GridConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
             file_run: FileRun | None = None) -> RunFinished | RunFailed:
    """Train every cell of ``grid`` (see the module docstring); returns the grid's terminal event.

    ``file_run(key, config, events)`` receives each ended cell (the job manager's
    :meth:`~core.serve.jobs.JobManager.file_run`, which decides what to store)."""
    t0 = time.perf_counter()
    cancel = cancel or threading.Event()
    cells = grid.cells()
    keys = [cfg.key() for _, cfg in cells]
    plan = plan_family(cells)
    emit(GridStarted(key=grid.key(), cells=[{"label": label, "key": k, "config": cfg.to_dict()}
                                            for (label, cfg), k in zip(cells, keys)],
                     batched=plan.batched, alone=plan.alone, notes=plan.notes,
                     device=resolve_device(grid.device).type, started_at=time.time()))
    ends: list[Event | None] = [None] * len(cells)
    history: list[list[Event]] = [[] for _ in cells]
    store_problems: list[str] = []

    def cell_emit(i: int) -> Callable[[Event], None]:
        label, cfg = cells[i]

        def on_event(event: Event) -> None:
            history[i].append(event)
            emit(CellEvent(i, label, event))
            if event.kind in ("finished", "failed"):
                ends[i] = event
                if file_run is not None:
                    try:
                        file_run(keys[i], cfg, list(history[i]))
                    except Exception as exc:  # disk full etc.: the grid's own record still holds the cell
                        store_problems.append(f"{type(exc).__name__}: {exc}")
        return on_event

    # cells keep metrics only (no final weights)
    train_family([cfg for _, cfg in cells], [cell_emit(i) for i in range(len(cells))], plan, cancel, keys)
    return _finish(ends, cancel, t0, store_problems, emit)


def _finish(ends: list[Event | None], cancel: threading.Event, t0: float, store_problems: list[str],
            emit: Callable[[Event], None]) -> RunFinished | RunFailed:
    elapsed = time.perf_counter() - t0
    failed = [e for e in ends if e is None or e.kind == "failed"]
    statuses = [getattr(e, "status", "failed") for e in ends if e is not None]
    step = max((e.step for e in ends if e is not None), default=0)
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("finished", "diverged", "cancelled") if s in statuses)
    note = f" (cells not filed separately: {store_problems[0]})" if store_problems else ""
    if failed:
        first = next((e.message for e in failed if e is not None), "a cell did not end")
        end: RunFinished | RunFailed = RunFailed(step, f"{len(failed)} of {len(ends)} cells failed: {first}{note}",
                                                 "GridCellFailed", elapsed)
    else:
        status = "cancelled" if cancel.is_set() or "cancelled" in statuses else "finished"
        end = RunFinished(status=status, step=step, epoch=max((e.epoch for e in ends), default=0.0),
                          elapsed=elapsed, reason=f"{len(ends)} cells: {counts}{note}")
    emit(end)
    return end





def cell_events(events: Iterable[Event]) -> dict[int, list[Event]]:
    """A grid job's events split per cell (the unwrapped single-run events of each)."""
    out: dict[int, list[Event]] = {}
    for event in events:
        if isinstance(event, CellEvent):
            out.setdefault(event.cell, []).append(event.event)
    return out
