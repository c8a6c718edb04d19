"""What a page trains for a link's setup on first load, in one place: the page's form reads its link with
these functions, and preparing a lecture (:func:`core.lessons.lectures.step_jobs`) warms what they return,
so a warmed key is exactly what the page's Train buttons submit.

``available(dataset)`` says whether a dataset loads on this server; a missing one gets the page's fallback
(:data:`FALLBACK_DATASET`, with the lesson's Digits settings where the lesson has some) and the setup names
the dataset it replaced, for the page's notice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..engine.config import MAX_HIDDEN_LAYERS, ConfigError, RunConfig
from ..engine.task import MAX_DIGITS, shortened
from ..lab.compare import ComparisonConfig, family_jobs
from ..lab.gradcheck.mistakes import SEED_VARIANTS, VARIANT_SEEDS
from ..lab.gradcheck.options import CheckOptions
from ..lab.gradcheck.task import GradCheckConfig
from ..lab.grid import GridConfig
from ..lab.surface import SurfaceConfig
from ..lab.sweep.space import SweepConfig
from .families import (SWEEP_PRESETS, TOUR, lesson_fixes, optimizer_family_grids, optimizers_fallback, seeds_grid,
                       surface_networks, vanishing_log_every)
from .presets import A_FALLBACK, A_FIXES_DEPTH, FALLBACK_DATASET, PRESETS, get_preset

Available = Callable[[str], bool]


def _without(query: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in keys}


# --- Playground ------------------------------------------------------------------------------------
PLAYGROUND_LINK_KEYS = ("preset", "run")  # the preset picker's keys: they name the lesson, not the config


@dataclass(frozen=True)
class RunSetup:
    config: RunConfig  # as it trains here
    fallback: str | None = None  # the linked dataset this server lacks


def run_on_server(cfg: RunConfig, available: Available) -> RunSetup:
    """``cfg`` on this server: on the fallback dataset when its own is missing (the Playground's rule)."""
    if cfg.dataset == FALLBACK_DATASET or available(cfg.dataset):
        return RunSetup(cfg)
    return RunSetup(cfg.replace(dataset=FALLBACK_DATASET), cfg.dataset)


def playground_setup(query: Mapping[str, str], available: Available) -> RunSetup:
    """The Playground's run for a link (its preset and run keys only label the lesson)."""
    return run_on_server(RunConfig.from_query(_without(query, PLAYGROUND_LINK_KEYS)), available)


# --- Vanishing gradients ---------------------------------------------------------------------------
VANISHING_RUN_FIELDS = ("dataset", "lr", "optimizer", "epochs", "batch_size", "init", "norm", "seed")  # its knobs
VANISHING_LINK_KEYS = ("fix_depth", "lesson")
A_FALLBACK_EPOCHS = dict(A_FALLBACK.overrides)["epochs"]


def vanishing_fields_on_server(fields: Mapping[str, Any], available: Available) -> tuple[dict[str, Any], str | None]:
    """(the Vanishing form's run fields as they train here, the dataset the fallback replaced or None): a missing
    dataset becomes Digits with LESSONS A's Digits epochs (:data:`core.lessons.presets.A_FALLBACK`)."""
    fields = dict(fields)
    name = fields["dataset"]
    if name == FALLBACK_DATASET or available(name):
        return fields, None
    fields.update(dataset=FALLBACK_DATASET, epochs=A_FALLBACK_EPOCHS)
    return fields, name


def vanishing_grid_of(fields: Mapping[str, Any], activations: Sequence[str], depths: tuple[int, int],
                      width: int) -> GridConfig:
    """The grid the Vanishing form trains: its run fields, activations x depths ``lo``-``hi`` of ``width`` units
    (raises ConfigError)."""
    lo, hi = depths
    base = RunConfig(**{name: fields[name] for name in VANISHING_RUN_FIELDS}, val_fraction=0.1,
                     log_every=vanishing_log_every(fields["dataset"]))
    return GridConfig(base=base, activations=tuple(activations), depths=tuple(range(lo, hi + 1)), width=int(width))


def fix_depth_of(text: str | None) -> int | None:
    """The link's ``fix_depth`` (None when absent; raises ConfigError when not 1-MAX_HIDDEN_LAYERS)."""
    if text is None:
        return None
    text = str(text).strip()
    if not (text.isdigit() and len(text) <= MAX_DIGITS and 1 <= int(text) <= MAX_HIDDEN_LAYERS):
        raise ConfigError({"fix_depth": f"fix_depth = {shortened(text)}: allowed whole numbers 1-{MAX_HIDDEN_LAYERS}"})
    return int(text)


@dataclass(frozen=True)
class VanishingSetup:
    grid: GridConfig  # section 1, as it trains here
    fix_depth: int  # the sigmoid network of sections 2 and 3
    fallback: str | None = None  # the linked dataset this server lacks

    @property
    def fixes(self) -> GridConfig:
        return lesson_fixes(self.grid, self.fix_depth)

    @property
    def seeds(self) -> GridConfig:
        return seeds_grid(self.fixes.base)

    def jobs(self) -> list:
        """The page's three Train buttons: the grid, the fixes, the seeds."""
        return [self.grid, self.fixes, self.seeds]


def vanishing_setup_of(grid: GridConfig, fix_depth: int | None, available: Available) -> VanishingSetup:
    """The Vanishing form's setup for ``grid`` (its knobs only, on this server) and the depth to fix."""
    fields, fallback = vanishing_fields_on_server({name: getattr(grid.base, name) for name in VANISHING_RUN_FIELDS},
                                                  available)
    depths = grid.depths or (grid.base.depth,)
    return VanishingSetup(vanishing_grid_of(fields, grid.activations or (grid.base.activation,),
                                            (min(depths), max(depths)), grid.width),
                          fix_depth if fix_depth is not None else A_FIXES_DEPTH, fallback)


def vanishing_setup(query: Mapping[str, str], available: Available) -> VanishingSetup:
    """The Vanishing page's setup for a link (raises ConfigError naming the bad setting)."""
    grid = GridConfig.from_query(_without(query, VANISHING_LINK_KEYS))
    return vanishing_setup_of(grid, fix_depth_of(query.get("fix_depth")), available)


# --- Regularization --------------------------------------------------------------------------------
# The page's family buttons (its ``lesson=`` link key) -> the lesson preset whose runs they load; "" = the tour.
REGULARIZATION_FAMILIES = {"tour": "", "B": "B-regularization", "B-overfit": "B-overfit", "C": "C-kaggle-mnist",
                           "E": "E-eight-networks"}
REGULARIZATION_LINK_KEYS = ("lesson",)


def regularization_family(name: str, available: Available) -> tuple[tuple, str | None]:
    """A family button's runs as they train here (a lesson's Digits settings where its dataset is missing), and the
    missing dataset's name."""
    preset = REGULARIZATION_FAMILIES[name]
    if not preset:
        return TOUR, None
    here, missing = PRESETS[preset].for_server(available)
    return here.runs, missing


@dataclass(frozen=True)
class ComparisonSetup:
    config: ComparisonConfig  # as it trains here
    lesson: str | None = None  # the family button the link names
    fallback: str | None = None  # the linked dataset this server lacks

    def jobs(self) -> list:
        """The page's Train button on a server that has stored none of the variants."""
        return family_jobs(self.config.family())


def regularization_setup(query: Mapping[str, str], available: Available) -> ComparisonSetup:
    """The Regularization page's comparison for a link; a link without variants (typed by hand) compares its
    lesson's family, else the tour's (raises ConfigError naming the bad setting)."""
    lesson = query.get("lesson")
    if "variants" not in query:
        runs, _ = regularization_family(lesson if lesson in REGULARIZATION_FAMILIES else "tour", available)
        query = {**ComparisonConfig.from_runs(runs).to_query(), **query}
    linked = ComparisonConfig.from_query(_without(query, REGULARIZATION_LINK_KEYS))
    if lesson and lesson not in REGULARIZATION_FAMILIES:
        raise ConfigError({"lesson": f"lesson = {shortened(lesson)}: choose one of {', '.join(REGULARIZATION_FAMILIES)}"})
    base = run_on_server(linked.base, available)
    fallback = base.fallback
    if fallback is None and lesson in REGULARIZATION_FAMILIES and linked.base.dataset == FALLBACK_DATASET:
        fallback = regularization_family(lesson, available)[1]  # a typed lesson link, filled with its Digits settings
    return ComparisonSetup(ComparisonConfig.from_rows(base.config, linked.rows()), lesson, fallback)


# --- Gradient check --------------------------------------------------------------------------------
GRADCHECK_KNOBS = ("dataset", "arch", "hidden", "activation", "norm", "dropout", "dropout_impl", "loss", "l1", "l2",
                   "init", "init_std", "seed")  # what shapes a network's gradients: the page's knobs
GRADCHECK_LINK_KEYS = ("preset", "stored_run")
GRADCHECK_SEED_PRESET = "B-regularization"  # the seed's network, checked three ways


def gradcheck_network(query: Mapping[str, str], available: Available) -> RunSetup:
    """The network a link's check runs on here: its knobs only (raises ConfigError naming the bad setting)."""
    linked = RunConfig.from_query(query)
    return run_on_server(RunConfig(**{name: getattr(linked, name) for name in GRADCHECK_KNOBS}), available)


def gradcheck_seed_checks(available: Available) -> tuple[GradCheckConfig, ...]:
    """The B network checked the three ways of SEED_VARIANTS, each at its VARIANT_SEEDS initializations, on the
    offline fallback dataset where its own is missing."""
    cfg = run_on_server(get_preset(GRADCHECK_SEED_PRESET).config, available).config
    return tuple(GradCheckConfig(cfg, options, seeds=VARIANT_SEEDS[label]) for label, options in SEED_VARIANTS.items())


def gradcheck_jobs(query: Mapping[str, str], available: Available) -> list:
    """The page's two buttons: the link's check (unless it checks a stored run, whose weights only the store
    knows) and the seed's three checks."""
    options = set(CheckOptions.__dataclass_fields__)
    network = gradcheck_network(_without(query, tuple(options) + GRADCHECK_LINK_KEYS), available)
    check = CheckOptions.from_query({k: v for k, v in query.items() if k in options})
    mine = [] if query.get("stored_run") else [GradCheckConfig(network.config, check, None)]
    return mine + list(gradcheck_seed_checks(available))


# --- Sweeps ----------------------------------------------------------------------------------------
SWEEP_FIRST_PRESET = "D-sweep-lecture"  # what a first visit loads
SWEEP_FALLBACK_PRESET = "digits-sweep"  # a preset whose dataset is missing here: the same lesson offline


@dataclass(frozen=True)
class SweepSetup:
    sweep: SweepConfig
    fallback: str | None = None  # the preset's dataset this server lacks

    def jobs(self) -> list:
        """The page's Run button and its "same budget, two samplers" button (random search and TPE; none for a
        grid search)."""
        return [self.sweep] + (sweep_pair(self.sweep) if self.sweep.sampler != "grid" else [])


def sweep_pair(sweep: SweepConfig) -> list[SweepConfig]:
    return [sweep.replace(sampler="random"), sweep.replace(sampler="tpe")]


def sweep_preset(name: str, available: Available) -> SweepSetup:
    sweep = SWEEP_PRESETS[name].sweep
    if available(sweep.base.dataset):
        return SweepSetup(sweep)
    return SweepSetup(SWEEP_PRESETS[SWEEP_FALLBACK_PRESET].sweep, sweep.base.dataset)


def sweeps_setup(query: Mapping[str, str], available: Available) -> SweepSetup:
    """A link's sweep (one with a search space), else the first visit's preset (raises on a bad link)."""
    if any(k.startswith("space_") for k in query):
        return SweepSetup(SweepConfig.from_query(query))
    return sweep_preset(SWEEP_FIRST_PRESET, available)


# --- Optimizers ------------------------------------------------------------------------------------
OPTIMIZERS_FIRST_EPOCHS = 1  # the families' epochs on first load (one epoch already separates the optimizers)
SURFACE_FIRST_DIRECTIONS, SURFACE_FIRST_RESOLUTION = "pca", 41


def surface_first_training(on_digits: bool) -> tuple[int, int]:
    """(epochs, log interval) the loss surface's network trains with on first load: an epoch of Digits is about
    20 steps, so more epochs and a denser log give the path enough points."""
    return (10, 10) if on_digits else (2, 100)


def surface_of(network: RunConfig, batchnorm: bool, directions: str, resolution: int, epochs: int,
               log_every: int) -> SurfaceConfig:
    """The loss-surface job of the Optimizers page's form."""
    run = network.replace(epochs=int(epochs), log_every=int(log_every), norm="batchnorm" if batchnorm else "none")
    return SurfaceConfig(run=run, directions=directions, resolution=int(resolution))


def optimizers_jobs(query: Mapping[str, str], available: Available) -> list:
    """The page's Train buttons on first load: the three LESSONS D families and the first network's loss surface.
    The link holds only the 2-D race's settings, which the page computes as it draws (no job)."""
    schedule = {"lr_schedule": RunConfig().lr_schedule}
    grids = optimizer_family_grids(OPTIMIZERS_FIRST_EPOCHS, False, schedule, available)
    network = next(iter(surface_networks(available).values()))
    epochs, log_every = surface_first_training(optimizers_fallback(available) is not None)
    surface = surface_of(network, False, SURFACE_FIRST_DIRECTIONS, SURFACE_FIRST_RESOLUTION, epochs, log_every)
    return [grid for _, _, grid in grids.values()] + [surface]


# --- every page ------------------------------------------------------------------------------------
def _data_jobs(query: Mapping[str, str], available: Available) -> list:
    return []  # the Data page trains nothing: it draws the dataset when shown


PAGE_JOBS: dict[str, Callable[[Mapping[str, str], Available], list]] = {
    "playground": lambda query, available: [playground_setup(query, available).config],
    "vanishing": lambda query, available: vanishing_setup(query, available).jobs(),
    "regularization": lambda query, available: regularization_setup(query, available).jobs(),
    "gradcheck": gradcheck_jobs,
    "sweeps": lambda query, available: sweeps_setup(query, available).jobs(),
    "optimizers": optimizers_jobs,
    "data": _data_jobs,
}


def page_jobs(page: str, query: Mapping[str, str], available: Available) -> list:
    """The task configs ``page``'s Train buttons submit on first load of a link holding ``query``, on a server
    where ``available`` says which datasets load."""
    jobs = PAGE_JOBS.get(page)
    return jobs(query, available) if jobs is not None else []
