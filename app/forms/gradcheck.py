"""The gradient-check form: a network (a lesson preset or the schema's knobs), the weights to check
(its initialization, or a stored run at its initialization or its stored final weights), and the
switches that show why checks fail, as one :class:`GradCheckConfig` job; and the seed's three checks.
The address bar holds all of it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import streamlit as st

from core.engine.config import BUILTIN_DATASETS, DEPTH, ConfigError, RunConfig
from core.lab.gradcheck.mistakes import FLOAT32, VARIANT_SEEDS
from core.lab.gradcheck.options import AT_CHOICES, MAX_EXAMPLES, CheckOptions
from core.lab.gradcheck.stored import weights_status
from core.lab.gradcheck.task import GradCheckConfig
from core.lessons.presets import PRESETS, get_preset
from core.lessons.setups import (GRADCHECK_KNOBS, GRADCHECK_LINK_KEYS, GRADCHECK_SEED_PRESET, RunSetup,
                                 gradcheck_network, gradcheck_seed_checks)
from core.engine.task import DIGEST_CHARS, shortened
from core.engine.scratch import BUGS
from core.serve import owners
from core.serve.jobs import get_manager
from core.serve.store import RunStore

from ..text import (FALLBACK_DATASET, dataset_available, dataset_title, describe_run, picker_labels, plain,
                    upload_is_mine)
from ..views.jobs import config_status, submit_job, train_button
from . import url
from .fields import knob_widget, shown, validate, widget_value

PAGE = "gradcheck"
KNOBS = GRADCHECK_KNOBS
OPTION_KEYS = {"precision": "gc_precision", "eps": "gc_eps", "backprop": "gc_backprop", "bug": "gc_bug",
               "bug_layer": "gc_bug_layer", "dropout_on": "gc_dropout_on", "kinks": "gc_kinks",
               "mistake": "gc_mistake", "examples": "gc_examples", "at": "gc_at"}
PRESET_KEY, RUN_KEY, SAVED, FALLBACK = "gc_preset", "gc_run", "gc_saved", "gc_fallback"
CHECK_JOB, SEED_JOBS = "gc_job", "gc_seed_jobs"  # session: the key of the last check, the seed's three keys
SEED_PRESET = GRADCHECK_SEED_PRESET
DEFAULT_PRESET = "B-regularization/0"
INIT = "initialization"
RUN_KEY_PATTERN = re.compile(rf"{RunConfig.KIND}-[0-9a-f]{{{DIGEST_CHARS}}}")  # RunConfig.key(): what stored_run may name
EPS_CHOICES = [float(f"1e-{k}") for k in range(1, 14)]
MISTAKE_TOGGLE = "gc_mistake_toggle"
BUG_TEXT = {"none": "no bug", "missing_activation_derivative": "missing activation derivative",
            "transposed_weight": "transposed weight", "mean_sum_mismatch": "mean/sum mismatch"}


def knob_key(name: str) -> str:
    return f"gc_cfg_{name}"


@dataclass
class CheckForm:
    config: RunConfig | None
    options: CheckOptions | None
    run_key: str | None  # a stored run to check instead of the form's network
    check: GradCheckConfig | None = None  # the job: the network or the stored run, with the options
    problems: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    fallback: str | None = None  # the dataset asked for, replaced by the offline fallback


def preset_runs() -> dict[str, str]:
    """"name/index" -> label of every preset run."""
    return {f"{p.name}/{i}": f"{p.lesson} · {p.title} — {label}" for p in PRESETS.values()
            for i, (label, _) in enumerate(p.runs)}


def preset_config(choice: str) -> RunConfig:
    name, _, index = choice.partition("/")
    return PRESETS[name].runs[int(index or 0)][1]


def _load_config(cfg: RunConfig) -> None:
    _load_network(gradcheck_network(cfg.to_query(), dataset_available))


def _load_network(network: RunSetup) -> None:
    st.session_state.pop(FALLBACK, None)
    if network.fallback:
        st.session_state[FALLBACK] = network.fallback
    for name in KNOBS:
        st.session_state[knob_key(name)] = widget_value(network.config, name)


def _load_options(options: CheckOptions) -> None:
    for name, key in OPTION_KEYS.items():
        st.session_state[key] = getattr(options, name)
    st.session_state[MISTAKE_TOGGLE] = options.mistake == "perturb_copy"


def _on_preset() -> None:
    choice = st.session_state.get(PRESET_KEY)
    if choice:
        _load_config(preset_config(choice))


def _prepare() -> list[str]:
    query = url.incoming_query(PAGE)
    if query is None:
        defaults = {n: widget_value(preset_config(DEFAULT_PRESET), n) for n in KNOBS}
        url.restore(SAVED, defaults | {name: getattr(CheckOptions(), name) for name in OPTION_KEYS},
                    lambda n: OPTION_KEYS.get(n, knob_key(n)))
        st.session_state.setdefault(MISTAKE_TOGGLE, st.session_state.get(OPTION_KEYS["mistake"]) == "perturb_copy")
        return []
    notices = []
    if not query:  # first visit: the lesson's network
        st.session_state[PRESET_KEY] = DEFAULT_PRESET
        _load_config(preset_config(DEFAULT_PRESET))
        _load_options(CheckOptions())
        return notices
    page_keys = set(OPTION_KEYS) | set(GRADCHECK_LINK_KEYS)
    network, notices = url.parse_link({k: v for k, v in query.items() if k not in page_keys}, set(KNOBS) | {DEPTH},
                                      lambda kept: gradcheck_network(kept, dataset_available),
                                      lambda: gradcheck_network(preset_config(DEFAULT_PRESET).to_query(),
                                                                dataset_available))
    options, more = url.parse_link({k: v for k, v in query.items() if k in OPTION_KEYS}, set(OPTION_KEYS),
                                   CheckOptions.from_query, CheckOptions)
    notices += more
    st.session_state[PRESET_KEY] = query.get("preset") if query.get("preset") in preset_runs() else None
    _load_network(network)
    _load_options(options)
    stored = str(query.get("stored_run") or "")
    if stored and not RUN_KEY_PATTERN.fullmatch(stored):
        notices.append(f"The link's stored run {shortened(stored)} is not a run key, which was ignored.")
        stored = ""
    st.session_state[RUN_KEY] = stored or INIT
    return notices


def _stored_runs(store: RunStore) -> dict[str, str]:
    runs = {INIT: "Initialization of the network above"}
    for meta in store.list_runs(kind="run"):
        if not upload_is_mine(str((meta.get("config") or {}).get("dataset", ""))):
            continue  # a run on another browser's upload
        kept = " · final weights stored" if weights_status(meta)[0] else ""
        try:
            runs[meta["key"]] = f"Stored run: {describe_run(RunConfig.from_dict(meta['config'], strict=False))}{kept}"
        except Exception:  # a run of an older schema: listed by key
            runs[meta["key"]] = f"Stored run {meta['key']}{kept}"
    return runs


def weights_choice(store: RunStore, run_key: str | None) -> list[str]:
    """At initialization / at the run's final weights, offered only for a stored run whose final weights
    are stored; otherwise the check is at initialization (a link asking for missing weights says why)."""
    meta = store.meta(run_key) if run_key else None
    stored, why = weights_status(meta) if meta is not None else (False, "")
    if stored:
        st.radio("Which weights of the run", list(AT_CHOICES), key=OPTION_KEYS["at"], format_func=AT_CHOICES.get,
                 horizontal=True, help="Its initialization (same seed and init as the run), or the weights it "
                                       "ended with, kept in the run store.")
        return []
    notices = []
    if meta is not None and st.session_state.get(OPTION_KEYS["at"]) == "final":
        notices.append(f"The link asked for this run's final weights, but {why}: it is checked at initialization.")
    st.session_state[OPTION_KEYS["at"]] = "init"
    return notices


def network_form() -> None:
    """The preset picker and the schema knobs that shape the network's gradients."""
    st.selectbox("Network from a lesson", list(preset_runs()), key=PRESET_KEY, index=None, on_change=_on_preset,
                 format_func=preset_runs().get, placeholder="Choose a lesson's network…",
                 help="Loads the network of a lesson's experiment into the settings below.")
    values = {n: st.session_state.get(knob_key(n)) for n in KNOBS}
    with st.expander("Network settings", expanded=False):
        cols = st.columns(3)
        for i, name in enumerate(n for n in KNOBS if shown(n, values)):
            if name == "dataset":
                options = list(BUILTIN_DATASETS)
                if values["dataset"] not in options and values["dataset"]:
                    options.append(values["dataset"])  # an upload named by a link
                knob_widget(name, knob_key(name), container=cols[i % 3], options=options,
                           format_func=picker_labels(options))
            else:
                knob_widget(name, knob_key(name), container=cols[i % 3])


def options_form(cfg: RunConfig | None) -> None:
    """The switches: precision, ε, backprop, a planted bug, dropout, kinks, the seed's mistake."""
    a, b, c = st.columns(3)
    a.radio("Precision", ["float64", "float32"], key=OPTION_KEYS["precision"], horizontal=True,
            help="float64 is how a gradient check must run; float32 shows what rounding does.")
    a.select_slider("ε (finite-difference step)", EPS_CHOICES, key=OPTION_KEYS["eps"],
                    format_func=lambda v: f"{v:.0e}",
                    help="Too large: the central difference's truncation error (~ε²) shows; too small: "
                         "rounding error (~1e-16/ε) takes over.")
    a.number_input("Examples in the check batch", 2, MAX_EXAMPLES, key=OPTION_KEYS["examples"],
                   help="The first training examples of the config's split.")
    b.radio("Backprop to compare with", ["autograd", "by_hand"], key=OPTION_KEYS["backprop"], horizontal=True,
            format_func={"autograd": "autograd", "by_hand": "by hand (core/engine/scratch.py)"}.get,
            help="By hand: forward and backward written out, for plain MLPs with sigmoid, tanh or ReLU.")
    by_hand = st.session_state.get(OPTION_KEYS["backprop"]) == "by_hand"
    if not by_hand:
        st.session_state[OPTION_KEYS["bug"]] = "none"
    b.selectbox("Planted bug in the by-hand backward", ["none", *BUGS], key=OPTION_KEYS["bug"],
                format_func=BUG_TEXT.get, disabled=not by_hand,
                help="Choose 'by hand' above to plant one. The chart should point at the layer you choose.")
    n_layers = len(cfg.hidden) + 1 if cfg is not None else 1
    if st.session_state.get(OPTION_KEYS["bug_layer"]) not in range(1, n_layers + 1):
        st.session_state[OPTION_KEYS["bug_layer"]] = 1
    b.selectbox("Layer with the bug", list(range(1, n_layers + 1)), key=OPTION_KEYS["bug_layer"],
                format_func=lambda k: f"fc{k}", disabled=st.session_state.get(OPTION_KEYS["bug"]) == "none")
    c.toggle("Dropout on while checking", key=OPTION_KEYS["dropout_on"],
             help="Every evaluation then draws a new dropout mask. Off by default.")
    c.toggle("Put ReLU units on their kink", key=OPTION_KEYS["kinks"],
             help="Shifts each hidden bias so every unit's pre-activation on the first example is exactly 0.")
    c.toggle("Perturb a copy of the weights", key=MISTAKE_TOGGLE,  # a label that fits the column on one line
             help="The seed's mistake: the perturbation goes to a copy while the loss is computed with the model's "
                  "own weights.")
    st.session_state[OPTION_KEYS["mistake"]] = "perturb_copy" if st.session_state.get(MISTAKE_TOGGLE) else "none"


def check_form() -> CheckForm:
    """Draw the whole form; returns what to check (or the problems) and writes the URL."""
    notices = _prepare()
    network_form()
    values = {n: st.session_state.get(knob_key(n)) for n in KNOBS}
    cfg, problems = validate(values)
    options_form(cfg)
    store = get_manager().store  # the one store of this server (the views read it too)
    runs = _stored_runs(store)
    chosen = st.session_state.get(RUN_KEY) or INIT
    meta = store.meta(chosen) if chosen != INIT and chosen not in runs else None
    hidden = str(((meta or {}).get("config") or {}).get("dataset", ""))
    if not upload_is_mine(hidden):  # a link to a run on another browser's upload
        notices.append(owners.not_yours(hidden))
        st.session_state[RUN_KEY] = chosen = INIT
    gone = chosen != INIT and chosen not in runs
    if gone:
        runs[chosen] = f"Stored run {chosen} (no longer exists)"
    st.selectbox("Weights to check", list(runs), key=RUN_KEY, format_func=runs.get,
                 help="A stored run is checked at its own initialization or, where the run store keeps its trained "
                      "weights (GRADIENT_LAB_MAX_WEIGHTS_MB), at those.")
    run_key = None if st.session_state.get(RUN_KEY) in (None, INIT) else st.session_state[RUN_KEY]
    notices += weights_choice(store, run_key)
    option_values = {name: st.session_state.get(key) for name, key in OPTION_KEYS.items()}
    options = None
    try:
        options = CheckOptions(**option_values)
    except ValueError as exc:
        problems.update(getattr(exc, "problems", {"options": str(exc)}))
    url.remember(SAVED, values | option_values)
    fallback = st.session_state.get(FALLBACK) if values.get("dataset") == FALLBACK_DATASET else None
    check = None
    if cfg is not None and options is not None:
        try:
            check = check_config(store, cfg, options, run_key)
        except ConfigError as exc:
            problems.update(exc.problems)
        query = {k: v for k, v in cfg.to_query().items() if k in KNOBS} | options.to_query()
        if fallback:
            query["dataset"] = fallback
        if st.session_state.get(PRESET_KEY):
            query["preset"] = st.session_state[PRESET_KEY]
        if run_key:
            query["stored_run"] = run_key
        url.write_query(PAGE, query)
    return CheckForm(cfg, options, run_key, check, problems, notices, fallback)


def check_config(store: RunStore, cfg: RunConfig, options: CheckOptions, run_key: str | None) -> GradCheckConfig:
    """The check to run: the form's network, or a stored run's own config at the store's version of it (a run
    that is gone keeps the form's network: its job says the run no longer exists)."""
    meta = store.meta(run_key) if run_key else None
    if meta is None:
        return GradCheckConfig(cfg, options, run_key)
    try:
        cfg = RunConfig.from_dict(meta["config"], strict=False)
    except (ConfigError, KeyError, TypeError):  # a run of an older schema: the job names the problem
        pass
    return GradCheckConfig(cfg, options, run_key, meta.get("version"))


def check_button(check: GradCheckConfig | None) -> None:
    """Check the gradients (again), as a job; the slot keeps the job's key."""
    train_button(check, CHECK_JOB, key="gc_check", label="Check the gradients",
                 help="Computes the finite differences on the server's workers. A check of these exact settings "
                      "is kept and shown to everyone who asks for it again.")


def seed_checks() -> tuple[GradCheckConfig, ...]:
    """The B network checked the three ways of :data:`core.lab.gradcheck.mistakes.SEED_VARIANTS`, each at its
    :data:`~core.lab.gradcheck.mistakes.VARIANT_SEEDS` initializations (on the offline fallback dataset, said in a caption, when its own is not on this server)."""
    cfg = get_preset(SEED_PRESET).config
    if not dataset_available(cfg.dataset):
        st.caption(plain(f"{dataset_title(cfg.dataset)} is not on this server: the same network is checked on "
                         f"{dataset_title(FALLBACK_DATASET)} (64 inputs instead of 784)."))
    return gradcheck_seed_checks(dataset_available)


def _seeds_busy(checks: tuple[GradCheckConfig, ...]) -> str | None:
    statuses = [config_status(check) for check in checks]
    if any(s in ("queued", "running") for s in statuses):
        return "running"
    return "finished" if all(s == "finished" for s in statuses) else None


def _submit_seeds(checks: tuple[GradCheckConfig, ...], force: bool) -> list[str]:
    return [submit_job(check, force) for check in checks]


def seed_button(checks: tuple[GradCheckConfig, ...]) -> None:
    """Check the seed's network three ways (three jobs); the slot keeps their keys."""
    train_button(checks, SEED_JOBS, key="gc_seed_check", label="Check the B network three ways",
                 submit=_submit_seeds, status=_seeds_busy,
                 help=f"The correct check, float32 with ε = 1e-7 at {VARIANT_SEEDS[FLOAT32]} initializations, and the "
                      "seed's perturbed copy, as three jobs.")
