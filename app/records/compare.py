"""A comparison of runs as data: the family model, its shareable config, weight summaries, results.

Pure (no Streamlit). A family is a list of ``(label, RunConfig)``; a :class:`ComparisonConfig`
is the same family written as a base network plus one row of regularization settings and a
few overrides per variant, with canonical JSON, a key and a URL round-trip like RunConfig's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from core.engine.config import ConfigError, RunConfig, format_value, parse_value
from core.engine.task import SCHEMA_VERSION, clipped, parse_json, shortened

from .run import RunView

MAX_VARIANTS = 12
NEAR_ZERO_LABEL = "|w| < 0.001"
REGULARIZATION_FIELDS = ("norm", "dropout", "dropout_impl", "l1", "l2")
OVERRIDE_FIELDS = ("lr", "hidden", "arch")  # blank in a variant row = the base network's value
ROW_COLUMNS = ("variant",) + REGULARIZATION_FIELDS + OVERRIDE_FIELDS
_DEFAULT = RunConfig()


# --- family <-> base + rows (pure) --------------------------------------------------------------
def _mode(values: list[Any]) -> Any:
    """The most common value (the first one seen wins a tie)."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def family_from_runs(runs: tuple[tuple[str, RunConfig], ...] | list) -> tuple[RunConfig, list[dict]]:
    """Split a family into a base config (the most common value of every setting) and variant rows.

    Rows hold every regularization setting and, where a run differs from the base, its learning
    rate, hidden layers or architecture (None = the base's). Other differences are not kept.
    """
    configs = [cfg for _, cfg in runs]
    common = {f.name: _mode([getattr(c, f.name) for c in configs]) for f in dataclasses.fields(RunConfig)
              if f.name not in REGULARIZATION_FIELDS}
    base = configs[0].replace(**common, norm="none", dropout=0.0, dropout_impl="torch", l1=0.0, l2=0.0)
    rows = []
    for label, cfg in runs:
        row = {"variant": label, **{name: getattr(cfg, name) for name in REGULARIZATION_FIELDS}}
        row["lr"] = cfg.lr if cfg.lr != base.lr else None
        row["hidden"] = format_value(cfg.hidden) if cfg.hidden != base.hidden else None
        row["arch"] = cfg.arch if cfg.arch != base.arch else None
        rows.append(row)
    return base, rows


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def row_config(base: RunConfig, row: dict) -> RunConfig:
    """One variant row applied to the base network (raises ConfigError with readable messages)."""
    raw = base.to_dict()
    for name in REGULARIZATION_FIELDS:
        value = row.get(name)
        raw[name] = getattr(RunConfig(), name) if _blank(value) else value
    for name in OVERRIDE_FIELDS:
        if not _blank(row.get(name)):
            raw[name] = row[name]
    return RunConfig.from_dict(raw)


def variant_configs(base: RunConfig, rows: list[dict]) -> tuple[list[tuple[str, RunConfig]], list[str]]:
    """(family, problems): every row as (unique label, config); problems name the row and setting."""
    family, problems, seen = [], [], Counter()
    for i, row in enumerate(rows):
        label = " ".join(str(row.get("variant") or "").split()) or f"variant {i + 1}"
        seen[label] += 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        try:
            family.append((label, row_config(base, row)))
        except ConfigError as exc:
            problems.append(f"Row {i + 1} ({label}): " + " ".join(exc.problems.values()))
    if len(rows) > MAX_VARIANTS:
        problems.append(f"{len(rows)} variants: compare at most {MAX_VARIANTS} at a time.")
    return family, problems


def records(frame: pd.DataFrame) -> list[dict]:
    """Data-editor rows as plain dicts (NaN / NA -> None), only the known columns."""
    out = []
    for row in frame.to_dict("records"):
        out.append({c: (None if _blank(row.get(c)) else row.get(c)) for c in ROW_COLUMNS})
    return out


@dataclass
class WeightSnapshot:
    """The weight distribution of every layer of one run at one log point (from LayerStats)."""

    step: int
    epoch: float
    layers: list[str]
    near_zero: list[float]  # share of |w| < 1e-3 per layer
    absmax: list[float]
    hists: list[np.ndarray]  # 40 counts over [-absmax, absmax] per layer
    sizes: list[int]  # weights per layer (0 when unknown)

    @property
    def overall_near_zero(self) -> float:
        """Share of all weights with |w| < 1e-3 (layers weighted by their size)."""
        if not self.near_zero:
            return float("nan")
        sizes = np.asarray(self.sizes[: len(self.near_zero)], dtype=float)
        if len(sizes) != len(self.near_zero) or sizes.sum() <= 0:
            return float(np.mean(self.near_zero))
        return float(np.dot(sizes, self.near_zero) / sizes.sum())


def weight_snapshot(events: list) -> WeightSnapshot | None:
    """The latest weight distribution recorded in a run's events (None before the first log point)."""
    stats = next((e for e in reversed(events) if e.kind == "layers" and getattr(e, "weight_hist", None)), None)
    if stats is None:
        return None
    started = next((e for e in events if e.kind == "started"), None)
    shapes = started.layer_shapes if started is not None else []
    sizes = [int(math.prod(s)) for s in shapes] if len(shapes) == len(stats.layers) else [0] * len(stats.layers)
    return WeightSnapshot(stats.step, stats.epoch, list(stats.layers), list(stats.near_zero),
                          list(stats.weight_absmax), [np.asarray(h) for h in stats.weight_hist], sizes)


# --- results -------------------------------------------------------------------------------------
RESULT_COLUMNS = ["variant", "status", "train loss", "val loss", "test loss", "train acc", "val acc", "test acc",
                  "gap", "weights ≈ 0", "params", "s/epoch", "trained"]


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def results_table(runs: list[tuple[str, RunView]], snapshots: list[WeightSnapshot | None] | None = None,
                  statuses: list[str] | None = None, groups: list[int] | None = None) -> pd.DataFrame:
    """One row per run: final train / validation / test loss and accuracy, the gap, sparsity, size, speed.

    ``groups``: how many runs trained batched together with each (1 = alone); a batched run's
    seconds per epoch are its whole group's, and the "trained" column says so."""
    rows = []
    for i, (label, view) in enumerate(runs):
        fin = view.finished
        snap = snapshots[i] if snapshots else None
        train_acc, val_acc = _num(getattr(fin, "train_acc", None)), _num(getattr(fin, "val_acc", None))
        rows.append({
            "variant": str(label),
            "status": statuses[i] if statuses else view.status,
            "train loss": _num(getattr(fin, "train_loss", None)),
            "val loss": _num(getattr(fin, "val_loss", None)),
            "test loss": _num(getattr(fin, "test_loss", None)),
            "train acc": train_acc,
            "val acc": val_acc,
            "test acc": _num(getattr(fin, "test_acc", None)),
            "gap": train_acc - val_acc,
            "weights ≈ 0": snap.overall_near_zero if snap is not None else float("nan"),
            "params": _num(view.started.n_params if view.started is not None else None),
            "s/epoch": _num(view.seconds_per_epoch),
            "trained": trained_text(groups[i] if groups else 1),
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# --- the shareable config ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparisonConfig:
    """A base network and its variants: ``variants`` = ((label, ((field, value), ...)), ...), the
    fields among :data:`REGULARIZATION_FIELDS` and :data:`OVERRIDE_FIELDS` that a row sets."""

    base: RunConfig
    variants: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def __post_init__(self) -> None:
        clean = []
        for label, items in self.variants:
            pairs = items.items() if isinstance(items, Mapping) else items
            parsed = []
            for name, value in pairs:
                if name not in ROW_COLUMNS[1:]:
                    raise ConfigError({"variants": f"Variant {shortened(label)}: unknown setting {shortened(name)}"})
                if _blank(value):
                    continue
                try:
                    value = parse_value(name, value)
                except (KeyError, ValueError) as exc:
                    raise ConfigError({"variants": f"Variant {shortened(label)}: {name} = {shortened(value)}: {exc}"}) from None
                if name not in REGULARIZATION_FIELDS or value != getattr(_DEFAULT, name):
                    parsed.append((name, value))  # a default regularization setting is the same as none given
            clean.append((str(label), tuple(sorted(parsed))))
        object.__setattr__(self, "variants", tuple(clean))
        _, problems = variant_configs(self.base, self.rows())
        if problems:
            raise ConfigError({"variants": clipped(" ".join(problems), 600)})

    @classmethod
    def from_rows(cls, base: RunConfig, rows: list[dict]) -> "ComparisonConfig":
        return cls(base, tuple((str(r.get("variant") or ""), {k: r.get(k) for k in ROW_COLUMNS[1:]}) for r in rows))

    @classmethod
    def from_runs(cls, runs) -> "ComparisonConfig":
        return cls.from_rows(*family_from_runs(runs))

    def rows(self) -> list[dict]:
        """One editor row per variant (None = the base's value)."""
        default = RunConfig()
        out = []
        for label, items in self.variants:
            row = {"variant": label, **{n: getattr(default, n) for n in REGULARIZATION_FIELDS},
                   **{n: None for n in OVERRIDE_FIELDS}}
            row.update({k: format_value(v) if k == "hidden" else v for k, v in items})
            out.append(row)
        return out

    def family(self) -> list[tuple[str, RunConfig]]:
        return variant_configs(self.base, self.rows())[0]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(),
                "variants": [[label, {k: list(v) if isinstance(v, tuple) else v for k, v in items}]
                             for label, items in self.variants]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ComparisonConfig":
        if not isinstance(data, Mapping) or not isinstance(data.get("variants", []), list):
            raise ConfigError({"variants": "A comparison is an object with a base and a list of variants"})
        try:
            variants = tuple((str(label), dict(items)) for label, items in data.get("variants", []))
        except (TypeError, ValueError):
            raise ConfigError({"variants": "Each variant must be [label, {setting: value}]"}) from None
        return cls(RunConfig.from_dict(data.get("base", {})), variants)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        """Stable id: sha256 of the canonical JSON."""
        payload = json.dumps({"schema": SCHEMA_VERSION, "comparison": self.to_dict()}, sort_keys=True,
                             separators=(",", ":"))
        return "cmp-" + hashlib.sha256(payload.encode()).hexdigest()[:24]

    def to_query(self) -> dict[str, str]:
        """The base's non-default fields, plus ``variants`` as compact JSON."""
        variants = [[label, {k: format_value(v) if k == "hidden" else v for k, v in items}]
                    for label, items in self.variants]
        return {**self.base.to_query(), "variants": json.dumps(variants, separators=(",", ":"))}

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "ComparisonConfig":
        """Inverse of :meth:`to_query`; keys that are not config fields are ignored."""
        base = RunConfig.from_query({k: v for k, v in query.items() if k != "variants"})
        try:
            variants = parse_json(str(query.get("variants", "[]")), "The variants")
        except ConfigError as exc:
            raise ConfigError({"variants": exc.problems["json"]}) from None
        if isinstance(variants, list) and len(variants) > MAX_VARIANTS:
            raise ConfigError({"variants": f"The link has {len(variants):,} variants: compare at most {MAX_VARIANTS}"})
        return cls.from_dict({"base": base.to_dict(), "variants": variants})


# --- a variant trained as a cell of a grid job --------------------------------------------------------
def cell_status(grid_status: str, grid_done: bool, events: list) -> str:
    """A grid cell's status from its own events and the job's (queued until it starts)."""
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if end is not None:
        return "failed" if end.kind == "failed" else end.status
    if grid_done:  # the job ended without this cell ending: it was cancelled, or the job failed
        return "cancelled" if grid_status == "cancelled" else "failed"
    return "queued" if grid_status == "queued" or not events else "running"


def status_text(status: str | None, from_cache: bool = False, queue_position: int | None = None) -> str:
    """A variant's status for the progress and results tables."""
    if status is None:
        return "unknown (removed from the run store)"
    if status == "queued":
        return "waiting for its turn" if queue_position is None else f"queued ({queue_position} ahead)"
    if from_cache and status in ("finished", "diverged", "cancelled"):
        return f"{status} · cached"
    return status


def outcome_summary(labels: list[str], statuses: list[str | None], reasons: list[str]) -> list[str]:
    """One line per outcome that needs saying (cancelled, diverged, failed), naming its variants once."""
    lines = []
    for status, verb in (("cancelled", "Cancelled"), ("diverged", "Diverged"), ("failed", "Failed")):
        hit = [(label, reason) for label, s, reason in zip(labels, statuses, reasons) if s == status]
        if not hit:
            continue
        names = ", ".join(label for label, _ in hit)
        if status == "cancelled":
            lines.append(f"{verb} before the end: {names}. Their curves show what they learned until then.")
        else:
            details = "; ".join(f"{label}: {reason}" if reason else label for label, reason in hit)
            lines.append(f"{verb}: {details}")
    return lines


def trained_text(group: int) -> str:
    """How a run trained: 'alone', or 'batched, 5 runs' (its time per epoch is then the group's)."""
    return "alone" if group <= 1 else f"batched, {group} runs (time is the group's)"
