"""The course's families of runs as task configs: LESSONS A's grid, fixes and seeds, the Regularization
page's tour, LESSONS D's families as grid jobs, the networks of its loss surface, and its sweeps. Data,
not mechanism: each is built from the presets (core.lessons.presets) and a lab config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from core.engine import data
from core.engine.config import RunConfig
from core.lab.grid import GridConfig, overrides
from core.lab.sweep.space import Dist, SweepConfig
from core.lessons.presets import (A_FALLBACK, A_LESSON_FIXES_DEPTH, A_SEEDS, D_BASE, D_SEARCH_SPACE, FALLBACK_DATASET,
                                   RELU_BELOW, Preset, get_preset, relu_below_sigmoid_above)


# --- LESSONS A ----------------------------------------------------------------------------------
A_BIG_DATASETS = ("mnist", "fashion-mnist")


def vanishing_log_every(dataset: str) -> int:
    """The lesson logs every 100 steps on the 60,000-image sets, every 10 on the small ones."""
    return 100 if dataset in A_BIG_DATASETS else 10


def vanishing_grid(epochs: int) -> GridConfig:
    """LESSONS A's grid: sigmoid, tanh and ReLU with 1-8 hidden layers of 10 units, MNIST, SGD lr 0.2, batch 32."""
    base = RunConfig(dataset="mnist", epochs=epochs, batch_size=32, optimizer="sgd", lr=0.2, val_fraction=0.1,
                     log_every=vanishing_log_every("mnist"))
    return GridConfig(base=base, activations=("sigmoid", "tanh", "relu"), depths=tuple(range(1, 9)), width=10)


VANISHING_QUICK = vanishing_grid(epochs=1)  # the Vanishing page's default: one epoch
VANISHING_LESSON = vanishing_grid(epochs=5)  # LESSONS A, as the coursework ran it: 5 epochs


def vanishing_fallback(grid: GridConfig) -> GridConfig:
    """A lesson A grid as it trains on Digits: A_FALLBACK's epochs and Digits' log interval."""
    base = grid.base.replace(dataset=FALLBACK_DATASET, log_every=vanishing_log_every(FALLBACK_DATASET),
                             epochs=dict(A_FALLBACK.overrides)["epochs"])
    return grid.replace(base=base)


def lesson_fixes(grid: GridConfig, depth: int = A_LESSON_FIXES_DEPTH) -> GridConfig:
    """The fixes of ``grid``'s sigmoid network with ``depth`` hidden layers of ``grid.width`` units (the Vanishing
    page's section 2; by default the LESSONS A preset's depth)."""
    return fixes_grid(grid.base.replace(hidden=(grid.width,) * depth, activation="sigmoid"))


def fixes_grid(base: RunConfig) -> GridConfig:
    """LESSONS A's fixes for a deep sigmoid network, side by side with the same seed: ReLU, ReLU + He,
    Xavier, BatchNorm, LayerNorm, a smaller learning rate, ReLU below and sigmoid above (the overrides of the
    A-fixes preset, the last two scaled to this base)."""
    runs = get_preset("A-fixes").runs
    first = runs[0][1]
    base = base.replace(activation=first.activation)
    variants, seen = [], set()
    for label, cfg in runs:
        diff = overrides(cfg, first)
        if "lr" in diff:  # "a smaller learning rate" relative to this base
            diff["lr"] = base.lr * cfg.lr / first.lr
            label = f"{first.activation}, lr {diff['lr']:g}"
        if label == RELU_BELOW:  # one activation per layer: as many as this base has
            diff["activation"] = relu_below_sigmoid_above(base.depth)
        cell = base.replace(**diff)
        if cell not in seen:
            seen.add(cell)
            variants.append((label, diff))
    return GridConfig(base=base, variants=tuple(variants))


def seeds_grid(base: RunConfig, seeds: Sequence[int] = A_SEEDS) -> GridConfig:
    """The same network with each seed, as one grid job (the A-sigmoid-seeds family on this base)."""
    return GridConfig(base=base, variants=tuple((f"seed {s}", {"seed": s}) for s in seeds))


def stuck_by_seed(seeds: GridConfig, stuck: Mapping[str, bool | None]) -> dict[int, bool | None]:
    """seed -> stuck verdict of a seeds grid's cells, from label -> verdict (None: not finished)."""
    return {cfg.seed: stuck.get(label) for label, cfg in seeds.cells()}


# --- the Regularization page's tour: every technique on the 8x8 digits, in seconds --------------------
TOUR_BASE = RunConfig(dataset="digits", hidden=(128, 128), activation="relu", optimizer="adam", lr=1e-3,
                      batch_size=32, epochs=30, val_fraction=0.2, log_every=20, seed=0)
TOUR_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("L1 0.0005", {"l1": 0.0005}),
    ("L2 0.001", {"l2": 0.001}),
    ("dropout 0.3 (nn.Dropout)", {"dropout": 0.3}),
    ("dropout 0.3 (inverted)", {"dropout": 0.3, "dropout_impl": "inverted"}),
    ("BatchNorm", {"norm": "batchnorm"}),
    ("LayerNorm", {"norm": "layernorm"}),
    ("LayerNorm + dropout 0.3", {"norm": "layernorm", "dropout": 0.3}),
]
TOUR = tuple((label, TOUR_BASE.replace(**overrides)) for label, overrides in TOUR_VARIANTS)


# --- LESSONS D: the families as one grid job each, the loss surface's networks -------------------------
def _on_server(name: str, available: Callable[[str], bool]) -> Preset:
    return get_preset(name).for_server(available)[0]


def optimizers_fallback(available: Callable[[str], bool] = data.available) -> tuple[str, str] | None:
    """(missing dataset, what else changes) when the Optimizers lesson trains on Digits here, else None."""
    preset, missing = get_preset("D-optimizers").for_server(available)
    return (missing, preset.fallback.why) if missing and preset.fallback else None


def optimizer_family_grids(epochs: int, ours: bool, schedule: Mapping[str, Any],
                           available: Callable[[str], bool] = data.available) -> dict[str, tuple[str, str, GridConfig]]:
    """slot -> (heading, button label, grid): each family as one batched grid job (same seed, batches and
    initial weights), on Digits where its dataset is missing. Raises ConfigError when the settings cannot train."""
    impl = "ours" if ours else "torch"

    def family(preset: str) -> GridConfig:
        return GridConfig.from_runs([(label, cfg.replace(epochs=int(epochs), optimizer_impl=impl, **schedule))
                                     for label, cfg in _on_server(preset, available).runs])

    adam = dict(_on_server("D-optimizers", available).runs)["adam"].replace(epochs=int(epochs), **schedule)
    return {"opt_six": ("Six optimizers", "Train the six optimizers", family("D-optimizers")),
            "opt_losses": ("Cross-entropy vs MSE", "Train cross-entropy vs MSE", family("D-losses")),
            "opt_impl": ("Ours vs PyTorch (Adam)", "Train Adam: ours vs PyTorch",
                         GridConfig.from_runs([("adam · torch", adam),
                                               ("adam · ours", adam.replace(optimizer_impl="ours"))]))}


def surface_networks(available: Callable[[str], bool] = data.available) -> dict[str, RunConfig]:
    """The networks whose loss surface can be drawn: E #2 and the six D networks (on Digits where their
    dataset is missing)."""
    networks = {"E #2: 128-64 ReLU, Adam": _on_server("E2", available).config}
    networks.update({f"D: 3 x 128, {label}": cfg for label, cfg in _on_server("D-optimizers", available).runs})
    return networks


# --- sweeps: LESSONS D's search, and offline -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPreset:
    name: str
    title: str
    description: str
    sweep: SweepConfig


def _categorical(space: Mapping[str, Sequence]) -> tuple[Dist, ...]:
    return tuple(Dist(name, "categorical", tuple(values)) for name, values in space.items())


LECTURE_BASE = D_BASE.replace(epochs=1, log_every=400)
SWEEP_PRESETS: dict[str, SweepPreset] = {p.name: p for p in (
    SweepPreset("D-sweep", "Seed 003's search space on Fashion-MNIST",
                "Epochs {5, 10}, 3-5 hidden layers of 32/64/128, weight decay {0, 0.0005, 0.5}, lr {1e-3, 1e-4}, "
                "six optimizers, batch {16, 32, 64}, default or Xavier init, sigmoid/tanh/ReLU; "
                "10% of the training data held out for validation. Random search, 60 trials.",
                SweepConfig(D_BASE, _categorical(D_SEARCH_SPACE), "random", "none", 60)),
    SweepPreset("D-sweep-lecture", "A lecture-size sweep on Fashion-MNIST (one epoch per trial)",
                "Seed 003's network family at one epoch, batch 64: 1-3 hidden layers of 32/64/128, three "
                "optimizers, lr log-uniform in [1e-4, 1e-2], three activations. 12 trials of random search.",
                SweepConfig(LECTURE_BASE, (Dist("depth", "int", (), 1, 3), Dist("width", "categorical", (32, 64, 128)),
                                           Dist("optimizer", "categorical", ("sgd", "momentum", "adam")),
                                           Dist("lr", "log", (), 1e-4, 1e-2),
                                           Dist("activation", "categorical", ("sigmoid", "tanh", "relu"))),
                            "random", "none", 12)),
    SweepPreset("D-sweep-grid", "A small grid on Fashion-MNIST (one epoch per trial)",
                "Every combination of optimizer {sgd, adam} x lr {1e-3, 1e-2} x activation {tanh, relu}: "
                "8 points, each trained once.",
                SweepConfig(LECTURE_BASE.replace(hidden=(64, 64)),
                            _categorical({"optimizer": ["sgd", "adam"], "lr": [1e-3, 1e-2],
                                          "activation": ["tanh", "relu"]}), "grid", "none", 8)),
    SweepPreset("digits-sweep", "Offline: the same idea on the 8x8 digits (seconds per trial)",
                "Scikit-learn's digits, always available offline: 1-3 hidden layers of 16/32/64, three optimizers, "
                "lr log-uniform in [1e-3, 3e-1], 10 epochs, batch 32. 16 trials of random search.",
                SweepConfig(RunConfig(dataset="digits", epochs=10, batch_size=32, log_every=50, val_fraction=0.2),
                            (Dist("depth", "int", (), 1, 3), Dist("width", "categorical", (16, 32, 64)),
                             Dist("optimizer", "categorical", ("sgd", "momentum", "adam")),
                             Dist("lr", "log", (), 1e-3, 0.3),
                             Dist("activation", "categorical", ("sigmoid", "tanh", "relu"))), "random", "none", 16)),
)}
