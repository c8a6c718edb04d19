"""Compare a family of runs: edit it (a base network + a table of variants), train it, watch it live.

Building blocks, usable by any page that compares runs:

- :func:`family_from_runs` / :func:`variant_configs`: a family of ``(label, RunConfig)`` <->
  a base config plus one row per variant (regularization settings and a few overrides).
- :func:`family_editor`: preset buttons, the base-network form and the variant table; returns
  the family the student set up (or the problems to fix).
- :func:`train_button`: submits the family to the job manager (new variants as one grid job,
  stored ones from the run store); only job keys are kept, in session state.
- :func:`comparison_view`: polls every job in one ``st.fragment`` (``run_every`` only while
  something is queued or running) and draws overlaid curves, the generalization gap, weight
  histograms and a results table.

Widget values live under ``<prefix>_*`` session keys and are re-seeded from a saved copy
after a page switch (Streamlit drops the state of widgets that were not drawn).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.config import ACTIVATIONS, BUILTIN_DATASETS, ConfigError, OPTIMIZERS, RunConfig, format_value, knob_of
from core.grid import GridConfig, cell_events
from core.jobs import SERVED_FROM_STORE, get_manager
from core.presets import PRESETS

from . import compare_figures as cf
from . import live, upload_ui, widgets

POLL_SECONDS = 1.0
REDRAW_SECONDS = 2.0
SMALL_VALIDATION = 100  # below this many validation examples, say how coarse validation accuracy is
MAX_VARIANTS = 12
REGULARIZATION_FIELDS = ("norm", "dropout", "dropout_impl", "l1", "l2")
OVERRIDE_FIELDS = ("lr", "hidden", "arch")  # blank in a variant row = the base network's value
BASE_FIELDS = ("dataset", "hidden", "activation", "optimizer", "lr", "batch_size", "epochs", "seed")
ROW_COLUMNS = ("variant",) + REGULARIZATION_FIELDS + OVERRIDE_FIELDS
NORM_NAMES = {"none": "none", "batchnorm": "BatchNorm", "layernorm": "LayerNorm"}
DROPOUT_NAMES = {"torch": "nn.Dropout", "inverted": "ours (inverted)"}

DEFAULT_BASE = RunConfig(dataset="digits", hidden=(128, 128), activation="relu", optimizer="adam", lr=1e-3,
                         batch_size=32, epochs=30, val_fraction=0.2, log_every=20, seed=0)
DEFAULT_VARIANTS: list[tuple[str, dict]] = [
    ("none", {}),
    ("L1 0.0005", {"l1": 0.0005}),
    ("L2 0.001", {"l2": 0.001}),
    ("dropout 0.3 (nn.Dropout)", {"dropout": 0.3}),
    ("dropout 0.3 (inverted)", {"dropout": 0.3, "dropout_impl": "inverted"}),
    ("BatchNorm", {"norm": "batchnorm"}),
    ("LayerNorm", {"norm": "layernorm"}),
    ("LayerNorm + dropout 0.3", {"norm": "layernorm", "dropout": 0.3}),
]


@dataclass(frozen=True)
class FamilyPreset:
    """A button that loads a family: a lesson's preset family, or the built-in tour of techniques."""

    button: str
    help: str
    runs: tuple[tuple[str, RunConfig], ...]
    lesson: str = ""
    description: str = ""
    hint: str = ""


def _lesson(name: str, button: str, hint: str = "") -> FamilyPreset:
    preset = PRESETS[name]
    return FamilyPreset(button, f"Lesson {preset.lesson}: {preset.title}", preset.runs, preset.lesson,
                        preset.description, hint)


FAMILY_PRESETS: dict[str, FamilyPreset] = {
    "tour": FamilyPreset("Every technique (fast)",
                         "None, L1, L2, dropout (nn.Dropout and our inverted class), BatchNorm, LayerNorm and "
                         "LayerNorm + dropout on the 8×8 digits: trains in seconds.",
                         tuple((label, DEFAULT_BASE.replace(**kw)) for label, kw in DEFAULT_VARIANTS)),
    "B": _lesson("B-regularization", "LESSONS B · your image folder",
                 "To use your own images, open “Upload your own data” below, upload a zip with one folder per "
                 "class, and press “Train the variants on this dataset”."),
    "C": _lesson("C-kaggle-mnist", "LESSONS C · LayerNorm + dropout"),
    "E": _lesson("E-eight-networks", "LESSONS E · eight networks"),
}


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


# --- session state --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """Session-state keys of one family editor (``prefix`` keeps two editors apart)."""

    prefix: str

    def field(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    @property
    def rest(self) -> str:  # the base config's other settings (query-string form)
        return f"{self.prefix}_base_rest"

    @property
    def saved(self) -> str:  # the form's values, to re-seed the widgets after a page switch
        return f"{self.prefix}_base_saved"

    @property
    def rows(self) -> str:
        return f"{self.prefix}_rows"

    @property
    def edited(self) -> str:
        return f"{self.prefix}_rows_edited"

    @property
    def version(self) -> str:
        return f"{self.prefix}_rows_version"

    @property
    def preset(self) -> str:
        return f"{self.prefix}_preset"

    @property
    def fallback(self) -> str:
        return f"{self.prefix}_dataset_fallback"

    @property
    def family(self) -> str:  # [{"label", "key"}] of the family last submitted: job keys only
        return f"{self.prefix}_family"

    @property
    def editor(self) -> str:
        return f"{self.prefix}_variants_{st.session_state.get(self.version, 0)}"


def _form_value(cfg: RunConfig, name: str) -> Any:
    return widgets.widget_value(cfg, name)


def load_family(keys: Keys, runs, preset: str | None = None) -> None:
    """Put a family into the form and the variant table (before they render, or from a callback)."""
    base, rows = family_from_runs(runs)
    state = st.session_state
    for name in BASE_FIELDS:
        state[keys.field(name)] = _form_value(base, name)
    state[keys.rest] = base.to_query()
    state[keys.rows] = rows
    state.pop(keys.edited, None)
    state[keys.version] = state.get(keys.version, 0) + 1
    state[keys.preset] = preset
    state.pop(keys.fallback, None)
    _apply_dataset_fallback(keys)
    state[keys.saved] = {name: state[keys.field(name)] for name in BASE_FIELDS}


def _apply_dataset_fallback(keys: Keys) -> None:
    """A dataset that cannot load here is replaced by the offline fallback (and remembered for a notice)."""
    field_key = keys.field("dataset")
    name = st.session_state.get(field_key, widgets.FALLBACK_DATASET)
    if name != widgets.FALLBACK_DATASET and not widgets.dataset_available(name):
        st.session_state[keys.fallback] = name
        st.session_state[field_key] = widgets.FALLBACK_DATASET


def _prepare(keys: Keys) -> None:
    state = st.session_state
    if keys.rows not in state:
        load_family(keys, FAMILY_PRESETS["tour"].runs, "tour")
    saved = state.get(keys.saved, {})
    for name in BASE_FIELDS:  # widgets not drawn on the last run (another page) lost their state
        if keys.field(name) not in state:
            state[keys.field(name)] = saved.get(name, _form_value(DEFAULT_BASE, name))
    if keys.editor not in state and keys.edited in state:  # the table's edits survive a page switch
        state[keys.rows] = state.pop(keys.edited)
        state[keys.version] = state.get(keys.version, 0) + 1


# --- the editor ------------------------------------------------------------------------------------
def preset_buttons(keys: Keys) -> None:
    """One button per family preset (LESSONS B, C, E and the fast tour); a click loads it."""
    cols = st.columns(len(FAMILY_PRESETS))
    for col, (name, preset) in zip(cols, FAMILY_PRESETS.items()):
        col.button(preset.button, key=f"{keys.prefix}_load_{name}", help=preset.help, width="stretch",
                   on_click=load_family, args=(keys, preset.runs, name),
                   type="primary" if st.session_state.get(keys.preset) == name else "secondary")
    loaded = FAMILY_PRESETS.get(st.session_state.get(keys.preset) or "")
    if loaded is not None and loaded.lesson:
        hint = f"  \n{widgets.plain(loaded.hint)}" if loaded.hint else ""
        st.info(f"**{widgets.plain(loaded.help)}.** {widgets.plain(loaded.description)}{hint}",
                icon=":material/menu_book:")


def _on_dataset_change(keys: Keys) -> None:
    st.session_state.pop(keys.fallback, None)
    _apply_dataset_fallback(keys)


def base_form(keys: Keys) -> tuple[RunConfig | None, dict[str, str]]:
    """The settings every variant shares; returns (base config or None, problems by field)."""
    state = st.session_state
    uploads = [u["name"] for u in upload_ui.session_uploads()]
    options = list(BUILTIN_DATASETS) + [n for n in uploads if n not in BUILTIN_DATASETS]
    if state.get(keys.field("dataset")) not in options:
        options.append(state.get(keys.field("dataset")))
    if state.get(keys.field("activation")) not in ACTIVATIONS:
        state[keys.field("activation")] = "relu"
    if state.get(keys.field("optimizer")) not in OPTIMIZERS:
        state[keys.field("optimizer")] = "adam"

    def help_of(name: str) -> str:
        return knob_of(name).help

    def current(name: str) -> Any:  # also passed as the widget's value: the browser never shows a stale default
        return state.get(keys.field(name))

    top = st.columns([3, 2, 2, 2])
    top[0].selectbox("Dataset", options, index=options.index(current("dataset")), key=keys.field("dataset"),
                     format_func=upload_ui.dataset_label, help=help_of("dataset") + " Or upload your own below.",
                     on_change=_on_dataset_change, args=(keys,))
    top[1].text_input("Hidden layers", value=current("hidden"), key=keys.field("hidden"), help=help_of("hidden"),
                      placeholder="e.g. 128,64")
    top[2].selectbox("Activation", ACTIVATIONS, index=ACTIVATIONS.index(current("activation")),
                     key=keys.field("activation"), help=help_of("activation"))
    top[3].selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(current("optimizer")),
                     key=keys.field("optimizer"), help=help_of("optimizer"))
    low = st.columns(4)
    low[0].number_input("Learning rate", min_value=1e-6, max_value=10.0, value=current("lr"), step=0.0001,
                        format="%g", key=keys.field("lr"), help=help_of("lr") + " A variant may set its own.")
    low[1].number_input("Batch size", min_value=1, max_value=4096, value=current("batch_size"), step=8,
                        key=keys.field("batch_size"), help=help_of("batch_size"))
    low[2].number_input("Epochs", min_value=1, max_value=200, value=current("epochs"), key=keys.field("epochs"),
                        help=help_of("epochs"))
    low[3].number_input("Seed", min_value=0, max_value=2**31 - 1, value=current("seed"), key=keys.field("seed"),
                        help="Every variant uses this seed: the same split, initial weights and batch order, so "
                             "the regularization is the only difference.")
    values = {name: state.get(keys.field(name)) for name in BASE_FIELDS}
    state[keys.saved] = dict(values)
    rest = dict(state.get(keys.rest) or {})
    try:
        merged = RunConfig.from_query(rest).to_dict()
    except ConfigError:
        merged = RunConfig().to_dict()
    merged.update(values)
    cfg, problems = widgets.validate(merged)
    fallback = state.get(keys.fallback)
    if fallback and values["dataset"] == widgets.FALLBACK_DATASET:
        widgets.dataset_fallback_notice(fallback)
    elif fallback:
        state.pop(keys.fallback, None)
    for problem in problems.values():
        st.error(widgets.plain(problem))
    return cfg, problems


def _variant_columns() -> dict:
    cc = st.column_config

    def number(label: str, help: str, **kw) -> Any:
        return cc.NumberColumn(label, help=help, format="%g", width="small", **kw)

    return {
        "variant": cc.TextColumn("Variant", help="A name for this variant (plain text).", max_chars=60,
                                 required=True, width="medium"),
        "norm": cc.SelectboxColumn("Normalization", options=list(NORM_NAMES), format_func=NORM_NAMES.get, width=130,
                                   default="none", help=knob_of("norm").help),
        "dropout": cc.NumberColumn("Dropout p", help=knob_of("dropout").help, format="%g", width=100, min_value=0.0,
                                   max_value=0.9, step=0.05, default=0.0),
        "dropout_impl": cc.SelectboxColumn("Dropout class", options=list(DROPOUT_NAMES), format_func=DROPOUT_NAMES.get,
                                           default="torch", width=125,
                                           help="nn.Dropout, or the project's from-scratch InvertedDropout (same "
                                                "maths: drop with probability p, scale the rest by 1/(1−p), off in "
                                                "eval mode)."),
        "l1": number("L1 λ", knob_of("l1").help, min_value=0.0, max_value=1.0, step=0.0001, default=0.0),
        "l2": number("L2 λ", knob_of("l2").help, min_value=0.0, max_value=1.0, step=0.0001, default=0.0),
        "lr": cc.NumberColumn("Learning rate", help="Empty = the base network's learning rate.", format="%g",
                              width=105, min_value=1e-6, max_value=10.0),
        "hidden": cc.TextColumn("Hidden layers", width=130, help="Empty = the base network's, e.g. 128,64."),
        "arch": cc.SelectboxColumn("MLP / CNN", options=["mlp", "cnn"], width=90,
                                   help="Empty = the base network's (cnn: two 3×3 conv layers of 32 filters before "
                                        "the hidden layers)."),
    }


def variant_table(keys: Keys) -> list[dict]:
    """The editable table of variants (one row each); returns its rows as plain dicts."""
    frame = pd.DataFrame(st.session_state[keys.rows], columns=list(ROW_COLUMNS))
    frame = frame.astype({"lr": "float64", "dropout": "float64", "l1": "float64", "l2": "float64"})
    edited = st.data_editor(frame, key=keys.editor, num_rows="dynamic", hide_index=True, width="stretch",
                            placeholder="(base)", column_config=_variant_columns())
    rows = records(edited)
    st.session_state[keys.edited] = rows
    return rows


def family_editor(prefix: str = "reg", upload_area: Callable[[Keys], None] | None = None
                  ) -> tuple[list[tuple[str, RunConfig]], list[str]]:
    """Preset buttons, the base network, (an upload area), the variant table: returns (family, problems)."""
    keys = Keys(prefix)
    _prepare(keys)
    preset_buttons(keys)
    st.subheader("1 · Data and the network every variant shares", divider="gray")
    base, base_problems = base_form(keys)
    if upload_area is not None:
        upload_area(keys)
    st.subheader("2 · Variants", divider="gray")
    st.caption("One row per network. Each row sets its own regularization; “(base)” means the setting above. "
               "Click a cell to change it, add a row at the bottom, or tick rows on the left and press the bin to "
               "delete them.")
    rows = variant_table(keys)
    if base is None:
        return [], ["Fix the base network's settings above."]
    family, problems = variant_configs(base, rows)
    for problem in problems:
        st.error(widgets.plain(problem))
    if not rows:
        problems.append("Add at least one variant.")
    return family, problems


def base_split(keys: Keys) -> tuple[float, int]:
    """(validation fraction, seed) of the base network: how every variant splits its data."""
    rest = st.session_state.get(keys.rest) or {}
    try:
        fraction = float(rest.get("val_fraction", RunConfig().val_fraction))
    except ValueError:
        fraction = RunConfig().val_fraction
    seed = st.session_state.get(keys.field("seed"))
    return fraction, int(seed) if isinstance(seed, int) else 0


def use_dataset(keys: Keys, name: str) -> None:
    """Callback: make ``name`` the base network's dataset."""
    st.session_state[keys.field("dataset")] = name
    st.session_state.pop(keys.fallback, None)
    saved = st.session_state.setdefault(keys.saved, {})
    saved["dataset"] = name


# --- training -------------------------------------------------------------------------------------
def _trained_or_training(manager, cfg: RunConfig) -> bool:
    """Whether ``cfg`` is stored (deterministic outcome) or already queued / running as its own job."""
    snap = manager.snapshot(cfg.key())
    return snap is not None and snap.status in ("queued", "running") + SERVED_FROM_STORE


def submit_family(family: list[tuple[str, RunConfig]]) -> list[dict]:
    """Queue the family; returns one ``{"label", "key"}`` per variant (``key``: its run key).

    Variants stored or already training are served as their own jobs; the others (two or more)
    train together as ONE grid job (core.grid: batched where shapes allow) and also get
    ``"grid"`` (the grid's job key) and ``"cell"`` (their index in it). Each finished cell is
    filed under its own run key, so the next time it is served from the store like any run.
    """
    manager = get_manager()
    entries = [{"label": label, "key": cfg.key()} for label, cfg in family]
    fresh: dict[str, tuple[str, RunConfig]] = {}
    for (label, cfg), entry in zip(family, entries):
        if entry["key"] not in fresh and not _trained_or_training(manager, cfg):
            fresh[entry["key"]] = (label, cfg)
    cells: dict[str, int] = {}
    grid_key = None
    if len(fresh) >= 2:
        try:
            grid = GridConfig.from_runs(list(fresh.values()))
        except ConfigError:  # a family the grid cannot hold: train the variants one by one
            grid = None
        if grid is not None:
            grid_key = manager.submit(grid)
            cells = {key: i for i, key in enumerate(fresh)}
    for (label, cfg), entry in zip(family, entries):
        if entry["key"] in cells:
            entry.update(grid=grid_key, cell=cells[entry["key"]])
        else:
            manager.submit(cfg)
    return entries


def train_button(family: list[tuple[str, RunConfig]], problems: list[str], prefix: str = "reg") -> None:
    """The Train button (and a one-line summary); a click queues the family and remembers its job keys."""
    keys = Keys(prefix)
    left, right = st.columns([1, 4], vertical_alignment="center")
    n = len(family)
    clicked = left.button(f"Train {n} variant{'s' if n != 1 else ''}", type="primary",
                          icon=":material/play_arrow:",
                          disabled=bool(problems) or not family, key=f"{prefix}_train",
                          help="Trains every variant with the same seed (same data order and initial weights). "
                               "Variants trained before, by anyone, load from the run store at once.")
    if family:
        cfg = family[0][1]
        right.caption(widgets.plain(f"{n} networks on {upload_ui.dataset_label(cfg.dataset)}, {cfg.epochs} "
                                    f"epoch{'s' if cfg.epochs != 1 else ''} each, batch {cfg.batch_size}, seed "
                                    f"{cfg.seed}. New variants train together in one job (batched where their "
                                    "shapes allow); variants trained before load from the run store at once."))
    if clicked and family and not problems:
        try:
            st.session_state[keys.family] = submit_family(family)
        except Exception as exc:  # e.g. a device that vanished: say so, no traceback
            st.error(widgets.plain(f"Could not start training: {exc}"))
    shown = st.session_state.get(keys.family)
    if shown and [r["key"] for r in shown] != [cfg.key() for _, cfg in family]:
        st.info("These are the results of the variants you trained last. The settings above have changed since: "
                "press **Train** to run them.", icon=":material/info:")


# --- the live comparison ----------------------------------------------------------------------------
def _feed(key: str) -> live.Feed | None:
    snap = get_manager().snapshot(key)
    if snap is None:
        return None
    return live.Feed(events=snap.events, status=snap.status, from_cache=snap.from_cache, saved_at=snap.saved_at,
                     error=snap.error, queue_position=snap.queue_position)


def _cell_feed(grid, events: list) -> live.Feed:
    """One cell of a grid job as a run's feed (its own events; the job's queue state until it starts)."""
    end = next((e for e in reversed(events) if e.kind in ("finished", "failed")), None)
    if end is not None:
        status = "failed" if end.kind == "failed" else end.status
    elif grid.done:  # the job ended without this cell ending: it was cancelled, or the job failed
        status = "cancelled" if grid.status == "cancelled" else "failed"
    elif grid.status == "queued" or not events:
        status = "queued"
    else:
        status = "running"
    return live.Feed(events=events, status=status, from_cache=grid.from_cache, saved_at=grid.saved_at,
                     error=grid.error if status == "failed" and end is None else "",
                     queue_position=grid.queue_position if grid.status == "queued" else None)


def family_feeds(runs: list[dict]) -> tuple[list[live.Feed | None], list[str]]:
    """(a feed per variant, notes of its grid jobs): grid cells from their job while it is known here,
    otherwise (e.g. after a restart) the run filed under the cell's own key."""
    manager = get_manager()
    grids: dict[str, tuple[Any, dict]] = {}
    feeds, notes = [], []
    for run in runs:
        grid_key = run.get("grid")
        if grid_key:
            if grid_key not in grids:
                snap = manager.snapshot(grid_key)
                grids[grid_key] = (snap, cell_events(snap.events) if snap is not None else {})
                started = next((e for e in snap.events if e.kind == "grid_started"), None) if snap else None
                notes += list(started.notes) if started is not None else []
            snap, per_cell = grids[grid_key]
            if snap is not None:
                feeds.append(_cell_feed(snap, per_cell.get(run["cell"], [])))
                continue
        feeds.append(_feed(run["key"]))
    return feeds, notes


def comparison_view(runs: list[dict], poll_seconds: float = POLL_SECONDS, prefix: str = "cmp") -> None:
    """Live comparison of jobs ``[{"label", "key"}]``: polls while any is queued or running."""
    if not runs:
        return
    feeds, _ = family_feeds(runs)
    running = any(f is not None and not f.done for f in feeds)
    interval = poll_seconds if running else None
    st.fragment(run_every=interval)(_comparison_fragment)(runs, interval is not None, prefix)


def _status_text(feed: live.Feed | None, view) -> str:
    if feed is None:
        return "unknown (removed from the run store)"
    if feed.status == "queued":
        if feed.queue_position is None:  # a grid cell waiting for the cells before it
            return "waiting for its turn"
        return f"queued ({feed.queue_position} ahead)"
    if feed.done and feed.from_cache:
        return f"{feed.status} · cached"
    return feed.status


_drawn_lock = threading.Lock()
_drawn: OrderedDict = OrderedDict()  # family -> (monotonic time, data version) of the charts last built


def _chart_version(family: tuple, version: tuple, polling: bool) -> tuple:
    """Which data version to chart: the newest, except while training, when charts are rebuilt at most every
    REDRAW_SECONDS (process-wide, so every viewer of a family shares them): building Plotly figures holds the
    GIL that the training threads need."""
    key = (family, tuple(v[0] for v in version))
    now = time.monotonic()
    with _drawn_lock:
        last = _drawn.get(key)
        if polling and last is not None and now - last[0] < REDRAW_SECONDS:
            return last[1]
        _drawn[key] = (now, version + (family,))
        _drawn.move_to_end(key)
        while len(_drawn) > 64:
            _drawn.popitem(last=False)
        return version + (family,)


def _comparison_fragment(runs: list[dict], polling: bool, prefix: str) -> None:
    feeds, grid_notes = family_feeds(runs)
    if polling and all(f is None or f.done for f in feeds):
        st.rerun()  # a full rerun declares the fragment again without run_every: polling stops
    labels = [r["label"] for r in runs]
    views = [live.view_of(r["key"], f) if f is not None else None for r, f in zip(runs, feeds)]
    present = [(label, view) for label, view in zip(labels, views) if view is not None]
    snapshots = [cf.weight_snapshot(f.events) if f is not None else None for f in feeds]
    vkey = tuple((r["key"], f.token if f else None, len(f.events) if f else 0) for r, f in zip(runs, feeds))
    vkey = _chart_version(tuple(labels), vkey, polling)

    def chart(name: str, build: Callable[[], Any]) -> None:
        st.plotly_chart(live.cached_figure(vkey, name, build), key=f"{prefix}_{name}",
                        config={"displaylogo": False})

    statuses = [_status_text(f, v) for f, v in zip(feeds, views)]
    if polling:
        _progress_table(labels, feeds, views, statuses)
        if grid_notes:
            st.caption(widgets.plain("Variants of the same shape train batched in one job; " +
                                     "; ".join(grid_notes) + "."))
        if st.button("Cancel all", icon=":material/stop_circle:", key=f"{prefix}_cancel",
                     help="Stop every variant still queued or running; the charts keep what they have learned."):
            for job_key in {r.get("grid") or r["key"] for r in runs}:
                get_manager().cancel(job_key)
    for label, feed, view in zip(labels, feeds, views):
        if feed is not None and feed.status in ("failed", "diverged", "cancelled"):
            reason = view.reason if view is not None else feed.error
            st.warning(widgets.plain(f"{label}: {feed.status}. {reason or feed.error}"),
                       icon=":material/warning:")

    left, right = st.columns(2)
    with left:
        chart("loss", lambda: cf.overlay_figure(present, "loss"))
    with right:
        chart("acc", lambda: cf.overlay_figure(present, "acc"))
    left, right = st.columns(2)
    with left:
        chart("gap", lambda: cf.gap_figure(present))
    with right:
        chart("nearzero", lambda: cf.near_zero_figure(list(zip(labels, snapshots))))
    st.caption("Overfitting shows as a validation loss that rises while the training loss keeps falling, and as a "
               "growing gap. Click a variant in a legend to hide it, double-click to show it alone. Train metrics "
               "are averaged over the steps since the previous log point in training mode (dropout on), so a "
               "dropout variant can show a negative gap; validation is scored in eval mode (dropout off, BatchNorm "
               "on its running statistics).")
    n_val = min((int(v.started.dataset.get("n_val") or 0) for v in views if v is not None and v.started is not None),
                default=0)
    if 0 < n_val < SMALL_VALIDATION:
        st.info(f"The validation set has only {n_val} examples, so validation accuracy moves in steps of "
                f"1/{n_val} = {1 / n_val:.0%}: small differences between variants are noise. More examples per "
                "class (or a larger validation fraction) give smoother curves.", icon=":material/info:")

    st.subheader("Results", divider="gray")
    table = cf.results_table([(lb, v) for lb, v in zip(labels, views) if v is not None],
                             [s for s, v in zip(snapshots, views) if v is not None],
                             [s for s, v in zip(statuses, views) if v is not None])
    four = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(table, hide_index=True, width="stretch", key=f"{prefix}_results",
                 column_config={
                     **{c: four for c in ("train loss", "val loss", "test loss", "train acc", "val acc", "test acc")},
                     "gap": st.column_config.NumberColumn(format="%.4f", help="Train minus validation accuracy."),
                     "weights ≈ 0": st.column_config.NumberColumn(format="percent",
                                                                  help="Share of all weights with |w| < 0.001."),
                     "params": st.column_config.NumberColumn(format="localized"),
                     "s/epoch": st.column_config.NumberColumn(format="%.2f", help="Seconds per epoch.")})
    chance = next((v.chance_accuracy for v in views if v is not None and v.chance_accuracy is not None), None)
    if chance is not None:
        st.caption(f"Final metrics of each variant. Chance level (always guessing the most common class): "
                   f"{chance:.3f}. Losses are data losses (without the L1/L2 penalty), so they compare across "
                   "variants.")
    st.subheader("Inside the weights", divider="gray")
    st.caption("Compare the shapes: L1 drives many weights to (almost) zero, which shows as a spike in the middle "
               "and a large share near 0; L2 shrinks all weights towards zero.")
    chart("hist", lambda: cf.weight_hist_figure(list(zip(labels, snapshots))))


def _progress_table(labels: list[str], feeds, views, statuses: list[str]) -> None:
    rows = []
    for label, feed, view, status in zip(labels, feeds, views, statuses):
        prog = view.progress() if view is not None else None
        last = view.evals.iloc[-1] if view is not None and len(view.evals) else None
        rows.append({"variant": label, "status": status,
                     "progress": prog.fraction if prog is not None else (1.0 if feed and feed.done else 0.0),
                     "epoch": prog.epoch if prog is not None else None,
                     "validation accuracy": float(last["val_acc"]) if last is not None else None})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                            format="percent"),
                                "epoch": st.column_config.NumberColumn(format="%.1f"),
                                "validation accuracy": st.column_config.NumberColumn(format="%.4f")})
