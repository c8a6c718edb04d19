"""The one seam every task config shares (a run, a grid, a surface, a sweep, a comparison, a gradient
check, a co-batch): canonical JSON, a stable sha256 key, and the JSON round trip.

A task config is a frozen dataclass that subclasses :class:`TaskConfig`, names its kind in ``KIND``
(the key's prefix and the payload's name, so keys never collide across kinds), and writes
``to_dict`` / ``from_dict``. The key is ``f"{KIND}-"`` + 24 hex digits of
sha256(canonical JSON of ``{"schema": SCHEMA_VERSION, KIND_NAME: key_data()}``): the same config gives
the same key in any process, on any server, in any session.

Kinds whose config travels in the address bar write ``to_query`` / ``from_query`` in their own format;
:func:`query_json` and :func:`query_int` read the values those formats share, with readable errors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar, Iterable, Mapping, Sequence, TypeVar

T = TypeVar("T", bound="TaskConfig")
DIGEST_CHARS = 24
SCHEMA_VERSION = 2  # 2: per-optimizer knobs (RMSProp's own alpha/momentum), weight-decay form
MAX_DIGITS = 18  # longer whole numbers are out of every range (and Python refuses past 4300 digits)
MAX_JSON_DEPTH = 32  # a config nests 3 levels; deeper JSON in a link or file is refused


class ConfigError(ValueError):
    """One or more invalid fields; ``problems`` maps field name -> message."""

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(self.problems.values()))


def clipped(text: object, limit: int = 200) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how long it was: bounded for any input."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shortened(value: Any, limit: int = 40) -> str:
    """``repr(value)``, clipped (a value quoted back in a message)."""
    return clipped(repr(value), limit)


def first_few(values: Sequence[Any], limit: int = 5) -> str:
    """The first ``limit`` values (each shortened) and how many there are: names offenders in bounded text."""
    shown = ", ".join(shortened(v) for v in values[:limit])
    return shown if len(values) <= limit else f"{shown} and {len(values) - limit:,} more ({len(values):,} in all)"


def parse_json(text: str, what: str) -> Any:
    """``json.loads(text)``, or a ConfigError naming ``what`` for text that is not JSON, holds a number
    Python refuses, or nests deeper than MAX_JSON_DEPTH (never a RecursionError)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError({"json": f"{what} JSON nests too deeply (at most {MAX_JSON_DEPTH} levels)"}) from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ConfigError({"json": f"{what} is not valid JSON: {clipped(exc)}"}) from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ConfigError({"json": f"{what} JSON nests too deeply (at most {MAX_JSON_DEPTH} levels)"})
    return data


def json_depth(data: Any) -> int:
    """How deeply lists and objects nest in ``data`` (a scalar is 0), counted without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def json_object(text: str, what: str) -> dict[str, Any]:
    """The settings object a config's JSON holds; a clear ConfigError when it is not one."""
    data = parse_json(text, what)
    if not isinstance(data, dict):
        raise ConfigError({"json": f"{what} JSON must be an object of settings"})
    return data


def canonical_json(data: Any) -> str:
    """Sorted keys, no spaces: equal data gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def digest(data: Any) -> str:
    """The first 24 hex digits of sha256 of ``data``'s canonical JSON."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:DIGEST_CHARS]


def reject_unknown(data: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """A ConfigError naming every key of ``data`` that is not a known ``what`` setting."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError({k: f"Unknown {what} setting {k!r}" for k in unknown})


def query_json(query: Mapping[str, str], name: str, default: Any = None) -> Any:
    """The JSON value of query parameter ``name`` (``default`` when absent or empty)."""
    text = query.get(name)
    if not text:
        return default
    text = str(text)
    try:
        return parse_json(text, f"The link's {name} setting")
    except ConfigError as exc:
        if cut_off(text):
            raise ConfigError({name: f"The link's {name} setting stops before its end: the link looks cut off "
                                     "(copied or pasted only in part). Copy the whole link again."}) from None
        raise ConfigError({name: str(exc)}) from None


def cut_off(text: str) -> bool:
    """Whether JSON text opens more brackets or quotes than it closes: what a link cut short leaves."""
    depth, quoted, escaped = 0, False, False
    for char in text:
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return quoted or depth > 0


def query_int(query: Mapping[str, str], name: str) -> int | None:
    """The whole number in query parameter ``name`` (None when absent or empty)."""
    text = str(query.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > MAX_DIGITS:
        raise ConfigError({name: f"{name.capitalize()} must be a whole number, got {shortened(text)}"})
    return int(text)


class TaskConfig:
    """Mixin for a frozen dataclass task config: ``to_json``, ``from_json``, ``key``, ``replace``."""

    KIND: ClassVar[str]  # the key's prefix: "run", "grid", ...
    KIND_NAME: ClassVar[str | None] = None  # the payload's name when it differs from KIND (kept for stable keys)

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass writes its own
        raise NotImplementedError(f"{type(self).__name__} must define to_dict()")

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:  # pragma: no cover - every subclass writes its own
        raise NotImplementedError(f"{cls.__name__} must define from_dict()")

    def key_data(self) -> Any:
        """What the key hashes (by default, the whole config)."""
        return self.to_dict()

    @classmethod
    def _digest(cls, data: Any) -> str:
        """24 hex digits of sha256 of ``data`` as this kind's payload (schema version included)."""
        return digest({"schema": SCHEMA_VERSION, cls.KIND_NAME or cls.KIND: data})

    def key(self) -> str:
        """Stable id: sha256 of the canonical JSON (same config -> same key anywhere)."""
        return f"{self.KIND}-" + self._digest(self.key_data())

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json_object(text, cls.__name__))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)
