"""Lecture scripts: an ordered list of steps, each a page and its setup (exactly what a shareable link
holds), a title, two or three talking points and what to look at.

A lecture is a small TOML file::

    title = "Vanishing gradients and their fixes"
    summary = "One line on what the class will see."

    [[steps]]
    title = "Deep sigmoid networks get stuck"
    link = "vanishing?activations=sigmoid,relu&depths=1-8"
    points = ["First point.", "Second point."]
    look_at = "The accuracy heatmap's sigmoid row."

``link`` is what the page's address bar holds (the part after the server's address; a whole address
works too). Built-in lectures live beside this module (``lectures/*.toml``); an instructor's own come
from the folder named by ``GRADIENT_LAB_LECTURES_DIR`` or an upload. A bad file raises
:class:`LectureError` naming the field and its line; it never stops the other lectures from loading.
"""
from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..engine.config import OPTIMIZERS, RunConfig
from ..engine.task import ConfigError, clipped, shortened
from ..lab import race
from ..lab.compare import ComparisonConfig
from ..lab.gradcheck.options import CheckOptions
from ..lab.grid import GridConfig
from ..lab.sweep.space import SweepConfig
from .presets import PRESETS
from .setups import fix_depth_of, page_jobs

BUILTIN_DIR = Path(__file__).resolve().parent / "lectures"
LECTURES_DIR_ENV = "GRADIENT_LAB_LECTURES_DIR"
MAX_FILE_BYTES = 64 * 1024
MAX_STEPS = 40
MAX_TITLE_CHARS = 120
MAX_POINT_CHARS = 400
MIN_POINTS, MAX_POINTS = 2, 3
MAX_FILES = 100  # lecture files read from the instructor's folder
BUILTIN_ORDER = ("vanishing", "regularization", "optimizers", "gradcheck", "sweeps")  # the course's order
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
TOP_FIELDS = ("title", "summary", "steps")
STEP_FIELDS = ("title", "link", "points", "look_at")
RUN_FIELDS = set(RunConfig.__dataclass_fields__)
RACE_KEYS = {"fn", "steps", "optimizers", "kappa", "x0", "y0", "lr", "lr_adaptive", "momentum", "rms_alpha",
             "beta1", "beta2"}


class LectureError(ValueError):
    """A lecture file the schema refuses: which field, on which line, and why."""

    def __init__(self, source: str, field: str, line: int | None, problem: str):
        self.source, self.field, self.line, self.problem = source, field, line, problem
        where = f", line {line}" if line else ""
        super().__init__(f"{clipped(source, 80)}: {field}{where}: {clipped(problem, 300)}")


@dataclass(frozen=True)
class Step:
    title: str
    page: str
    setup: tuple[tuple[str, str], ...]  # the page's query, in link order
    points: tuple[str, ...]
    look_at: str

    @property
    def query(self) -> dict[str, str]:
        return dict(self.setup)

    @property
    def link(self) -> str:
        """The step's address below the server's: the page and its setup."""
        return f"{self.page}?{urllib.parse.urlencode(self.setup, safe=',-')}" if self.setup else self.page


@dataclass(frozen=True)
class Lecture:
    name: str
    title: str
    summary: str
    steps: tuple[Step, ...]
    source: str = "built-in"  # built-in, the folder, or an upload

    def step(self, number: int) -> Step:
        """Step ``number`` (1-based), clamped to the lecture."""
        return self.steps[min(max(number, 1), len(self.steps)) - 1]


# --- each page's setup, checked by the schema that page's form reads ---------------------------------
def _without(query: Mapping[str, str], keys: set[str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in keys}


def _known(query: Mapping[str, str], known: set[str]) -> None:
    unknown = sorted(k for k in query if k not in known)
    if unknown:
        raise ConfigError({k: f"{shortened(k)} is not a setting of this page" for k in unknown[:5]})


def _playground(query: Mapping[str, str]) -> None:
    _known(query, RUN_FIELDS | {"preset", "run"})
    if "preset" in query and query["preset"] not in PRESETS:
        raise ConfigError({"preset": f"preset = {shortened(query['preset'])}: not a lesson preset"})
    RunConfig.from_query(_without(query, {"preset", "run"}))


def _run_only(query: Mapping[str, str]) -> None:
    _known(query, RUN_FIELDS)
    RunConfig.from_query(query)


def _vanishing(query: Mapping[str, str]) -> None:
    _known(query, RUN_FIELDS | {"activations", "depths", "width", "inits", "norms", "variants", "fix_depth", "lesson"})
    GridConfig.from_query(_without(query, {"fix_depth", "lesson"}))
    fix_depth_of(query.get("fix_depth"))


def _regularization(query: Mapping[str, str]) -> None:
    _known(query, RUN_FIELDS | {"variants", "lesson"})
    if "variants" in query:
        ComparisonConfig.from_query(_without(query, {"lesson"}))
    else:
        RunConfig.from_query(_without(query, {"lesson"}))


def _gradcheck(query: Mapping[str, str]) -> None:
    options = set(CheckOptions.__dataclass_fields__)
    _known(query, RUN_FIELDS | options | {"preset", "stored_run"})
    RunConfig.from_query(_without(query, options | {"preset", "stored_run"}))
    CheckOptions.from_query({k: v for k, v in query.items() if k in options})


def _sweeps(query: Mapping[str, str]) -> None:
    SweepConfig.from_query(query)


def _optimizers(query: Mapping[str, str]) -> None:
    _known(query, RACE_KEYS)
    if "fn" in query and query["fn"] not in race.FUNCTIONS:
        raise ConfigError({"fn": f"fn = {shortened(query['fn'])}: choose one of {', '.join(race.FUNCTIONS)}"})
    chosen = [o for o in query.get("optimizers", "").split(",") if o]
    if any(o not in OPTIMIZERS for o in chosen):
        raise ConfigError({"optimizers": f"optimizers = {shortened(query['optimizers'])}: "
                                         f"choose from {', '.join(OPTIMIZERS)}"})
    for name in RACE_KEYS - {"fn", "optimizers"}:
        if name in query:
            try:
                float(query[name])
            except ValueError:
                raise ConfigError({name: f"{name} = {shortened(query[name])}: not a number"}) from None


# page -> the check of its setup (the same config parsers its form reads links with)
PAGES: dict[str, Callable[[Mapping[str, str]], None]] = {
    "playground": _playground, "vanishing": _vanishing, "regularization": _regularization,
    "optimizers": _optimizers, "gradcheck": _gradcheck, "sweeps": _sweeps, "data": _run_only,
}


def split_link(link: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(page, setup) of a page's address, with or without the server's part; "" is the Playground."""
    parts = urllib.parse.urlsplit(link.strip())
    page = parts.path.rstrip("/").rsplit("/", 1)[-1] or "playground"
    setup = tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return page, setup


# --- the jobs a step's page trains (preparing a lecture) ---------------------------------------------
def step_jobs(step: Step, available: Callable[[str], bool]) -> list:
    """The task configs the step's page trains with exactly its setup on this server (``available``: whether a
    dataset loads here; a missing one gets the page's fallback): the page's own reading of its link."""
    return page_jobs(step.page, step.query, available)


# --- reading a file ------------------------------------------------------------------------------
def _lines(text: str) -> list[tuple[int, int, str]]:
    """(step index or -1, line number, key) for each ``key =`` line, so a problem can name its line."""
    found, step = [], -1
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[steps]]"):
            step += 1
            found.append((step, number, "[[steps]]"))
        match = re.match(r"([A-Za-z0-9_\-]+)\s*=", stripped)
        if match:
            found.append((step, number, match.group(1)))
    return found


def _line_of(lines: list[tuple[int, int, str]], step: int, key: str) -> int | None:
    for index, number, name in lines:
        if index == step and name == key:
            return number
    for index, number, name in lines:  # the step's header, when the key is missing
        if index == step and name == "[[steps]]":
            return number
    return None


def _text(value, field: str, limit: int, fail: Callable[[str, str], None]) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(field, "must be some text")
    if len(value) > limit:
        fail(field, f"is {len(value):,} characters long; at most {limit:,}")
    return " ".join(value.split())


def parse_lecture(text: str, name: str, source: str = "built-in") -> Lecture:
    """The lecture in ``text`` (TOML), every step's setup checked by its page's schema."""
    label = f"{name}.toml"
    if not NAME.fullmatch(name):
        raise LectureError(shortened(name), "name", None, "a lecture's name is 1-40 lowercase letters, digits, - or _")
    if len(text.encode()) > MAX_FILE_BYTES:
        raise LectureError(label, "file", None, f"is larger than {MAX_FILE_BYTES // 1024} KB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise LectureError(label, "file", int(line.group(1)) if line else None,
                           f"is not valid TOML ({clipped(str(exc), 160)})") from None
    lines = _lines(text)

    def fail(field: str, problem: str, step: int = -1) -> None:
        key = field.rsplit(".", 1)[-1]
        raise LectureError(label, field, _line_of(lines, step, key), problem)

    unknown = sorted(k for k in data if k not in TOP_FIELDS)
    if unknown:
        fail(unknown[0], f"is not a field of a lecture (fields: {', '.join(TOP_FIELDS)})")
    title = _text(data.get("title"), "title", MAX_TITLE_CHARS, fail)
    summary = _text(data.get("summary", title), "summary", MAX_POINT_CHARS, fail)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        fail("steps", "a lecture needs at least one [[steps]] table")
    if len(raw_steps) > MAX_STEPS:
        fail("steps", f"has {len(raw_steps):,} steps; at most {MAX_STEPS}")
    steps = [_step(raw, i, fail) for i, raw in enumerate(raw_steps)]
    return Lecture(name, title, summary, tuple(steps), source)


def _step(raw, index: int, fail: Callable[..., None]) -> Step:
    where = f"steps[{index + 1}]"

    def step_fail(field: str, problem: str) -> None:
        fail(f"{where}.{field}", problem, index)

    if not isinstance(raw, dict):
        fail(where, "must be a [[steps]] table", index)
    unknown = sorted(k for k in raw if k not in STEP_FIELDS)
    if unknown:
        step_fail(unknown[0], f"is not a field of a step (fields: {', '.join(STEP_FIELDS)})")
    title = _text(raw.get("title"), f"{where}.title", MAX_TITLE_CHARS, lambda f, p: step_fail("title", p))
    link = raw.get("link")
    if not isinstance(link, str) or len(link) > 4000:
        step_fail("link", "must be a page's address (text, at most 4,000 characters)")
    page, setup = split_link(link)
    check = PAGES.get(page)
    if check is None:
        step_fail("link", f"page {shortened(page)} is not one of {', '.join(PAGES)}")
    try:
        check(dict(setup))
    except ConfigError as exc:
        step_fail("link", "the page refuses these settings: "
                  + " ".join(clipped(p, 200) for p in list(exc.problems.values())[:3]))
    except (ValueError, TypeError) as exc:
        step_fail("link", f"the page cannot read these settings ({type(exc).__name__})")
    points = raw.get("points")
    if not isinstance(points, list) or not MIN_POINTS <= len(points) <= MAX_POINTS:
        step_fail("points", f"must be a list of {MIN_POINTS} or {MAX_POINTS} talking points")
    points = tuple(_text(p, f"{where}.points", MAX_POINT_CHARS, lambda f, p: step_fail("points", p)) for p in points)
    look_at = _text(raw.get("look_at"), f"{where}.look_at", MAX_POINT_CHARS, lambda f, p: step_fail("look_at", p))
    return Step(title, page, setup, points, look_at)


# --- where lectures come from --------------------------------------------------------------------
def _read_folder(folder: Path, source: str) -> tuple[dict[str, Lecture], list[str]]:
    lectures, problems = {}, []
    for path in sorted(folder.glob("*.toml"))[:MAX_FILES]:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise LectureError(path.name, "file", None, f"is larger than {MAX_FILE_BYTES // 1024} KB")
            lectures[path.stem] = parse_lecture(path.read_text(encoding="utf-8", errors="replace"), path.stem, source)
        except LectureError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{clipped(path.name, 80)}: file: could not be read ({type(exc).__name__})")
    return lectures, problems


def builtin_lectures() -> dict[str, Lecture]:
    lectures, problems = _read_folder(BUILTIN_DIR, "built-in")
    if problems:  # a built-in lecture is part of the code: the tests keep them valid
        raise LectureError("built-in lectures", "file", None, "; ".join(problems))
    return dict(sorted(lectures.items(), key=lambda item: (BUILTIN_ORDER + (item[0],)).index(item[0])))


def all_lectures() -> tuple[dict[str, Lecture], list[str]]:
    """Built-in lectures, then the instructor's folder (``GRADIENT_LAB_LECTURES_DIR``; same name replaces a
    built-in), and a problem line for each folder file the schema refused."""
    lectures = dict(BUILTIN)
    folder = os.environ.get(LECTURES_DIR_ENV)
    if not folder:
        return lectures, []
    if not Path(folder).is_dir():
        return lectures, [f"{LECTURES_DIR_ENV}: {clipped(folder, 120)} is not a folder, so no lectures were read from it."]
    own, problems = _read_folder(Path(folder), "the lecture folder")
    lectures.update(own)
    return lectures, problems


BUILTIN: dict[str, Lecture] = builtin_lectures()
