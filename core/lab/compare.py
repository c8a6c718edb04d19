"""A comparison of runs as a task config: a family of ``(label, RunConfig)`` written as a base network
plus one row of regularization settings and a few overrides per variant (:class:`ComparisonConfig`),
with canonical JSON, a key (kind "cmp") and a URL round-trip (``variants`` as compact JSON)."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import pandas as pd

from core.engine.config import ConfigError, RunConfig, format_value, parse_value
from core.engine.task import TaskConfig, canonical_json, clipped, query_json, reject_unknown, shortened
from core.lab.grid import GridConfig

MAX_VARIANTS = 12
REGULARIZATION_FIELDS = ("norm", "dropout", "dropout_impl", "l1", "l2")
OVERRIDE_FIELDS = ("lr", "hidden", "arch")  # blank in a variant row = the base network's value
ROW_COLUMNS = ("variant",) + REGULARIZATION_FIELDS + OVERRIDE_FIELDS
_DEFAULT = RunConfig()


# --- family <-> base + rows --------------------------------------------------------------
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


def blank(value: Any) -> bool:
    """An empty cell of a variant row: None, NaN, pandas' NA or blank text."""
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
        raw[name] = getattr(RunConfig(), name) if blank(value) else value
    for name in OVERRIDE_FIELDS:
        if not blank(row.get(name)):
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


# --- the shareable config ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparisonConfig(TaskConfig):
    """A base network and its variants: ``variants`` = ((label, ((field, value), ...)), ...), the
    fields among :data:`REGULARIZATION_FIELDS` and :data:`OVERRIDE_FIELDS` that a row sets."""

    KIND: ClassVar[str] = "cmp"
    KIND_NAME: ClassVar[str] = "comparison"

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
                if blank(value):
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
        reject_unknown(data, ("base", "variants"), "comparison")
        try:
            variants = tuple((str(label), dict(items)) for label, items in data.get("variants", []))
        except (TypeError, ValueError):
            raise ConfigError({"variants": "Each variant must be [label, {setting: value}]"}) from None
        return cls(RunConfig.from_dict(data.get("base", {})), variants)

    def to_query(self, like: "ComparisonConfig | None" = None) -> dict[str, str]:
        """The base's non-default fields, plus ``variants`` as compact JSON. With ``like`` (the family a link
        names by ``lesson=``) holding the same variants, only the base's differences from ``like``'s base: the
        link stays short and reopens as ``{**like.to_query(), **this}`` (old links, with variants, still open)."""
        if like is not None and like.variants == self.variants:
            return {f.name: format_value(getattr(self.base, f.name)) for f in dataclasses.fields(RunConfig)
                    if getattr(self.base, f.name) != getattr(like.base, f.name)}
        variants = [[label, {k: format_value(v) if k == "hidden" else v for k, v in items}]
                    for label, items in self.variants]
        return {**self.base.to_query(), "variants": canonical_json(variants)}

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "ComparisonConfig":
        """Inverse of :meth:`to_query`; keys that are not config fields are ignored."""
        base = RunConfig.from_query({k: v for k, v in query.items() if k != "variants"})
        variants = query_json(query, "variants", [])
        if isinstance(variants, list) and len(variants) > MAX_VARIANTS:
            raise ConfigError({"variants": f"The link has {len(variants):,} variants: compare at most {MAX_VARIANTS}"})
        return cls.from_dict({"base": base.to_dict(), "variants": variants})


def family_jobs(family: list[tuple[str, RunConfig]]) -> list:
    """The jobs a family trains as when none of it is stored: its distinct variants (two or more) together as ONE
    grid job (batched where shapes allow), else each run alone (one variant, or a family a grid cannot hold)."""
    distinct: dict[str, tuple[str, RunConfig]] = {}
    for label, cfg in family:
        distinct.setdefault(cfg.key(), (label, cfg))
    fresh = list(distinct.values())
    if len(fresh) >= 2:
        try:
            return [GridConfig.from_runs(fresh)]
        except ConfigError:
            pass
    return [cfg for _, cfg in fresh]
