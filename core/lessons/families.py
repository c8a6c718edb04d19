"""The course's families of runs as task configs: LESSONS A's fixes and seeds as grids, LESSONS D's
sweeps. Data, not mechanism: each is built from the presets (core.lessons.presets) and a lab config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from core.engine.config import RunConfig
from core.lab.grid import GridConfig, overrides
from core.lab.sweep.space import Dist, SweepConfig
from core.lessons.presets import A_SEEDS, D_BASE, D_SEARCH_SPACE, get_preset


# --- LESSONS A ----------------------------------------------------------------------------------
def fixes_grid(base: RunConfig) -> GridConfig:
    """LESSONS A's fixes for a deep sigmoid network, side by side with the same seed: ReLU, ReLU + He,
    Xavier, BatchNorm, LayerNorm, a smaller learning rate (the overrides of the A-fixes preset)."""
    runs = get_preset("A-fixes").runs
    first = runs[0][1]
    base = base.replace(activation=first.activation)
    variants, seen = [], set()
    for label, cfg in runs:
        diff = overrides(cfg, first)
        if "lr" in diff:  # "a smaller learning rate" relative to this base
            diff["lr"] = base.lr * cfg.lr / first.lr
            label = f"{first.activation}, lr {diff['lr']:g}"
        cell = base.replace(**diff)
        if cell not in seen:
            seen.add(cell)
            variants.append((label, diff))
    return GridConfig(base=base, variants=tuple(variants))


def seeds_grid(base: RunConfig, seeds: Sequence[int] = A_SEEDS) -> GridConfig:
    """The same network with each seed, as one grid job (the A-sigmoid-seeds family on this base)."""
    return GridConfig(base=base, variants=tuple((f"seed {s}", {"seed": s}) for s in seeds))


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
