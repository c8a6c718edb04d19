"""Every experiment of LESSONS.md A-E as named configs.

A preset is a titled family of one or more :class:`RunConfig` (e.g. "the eight networks of
E" is one preset of eight). Experiments are overrides of a lesson's base config, never copies.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig


@dataclass(frozen=True)
class Preset:
    name: str
    lesson: str
    title: str
    description: str
    runs: tuple[tuple[str, RunConfig], ...]  # (label, config)

    @property
    def config(self) -> RunConfig:
        """The first (or only) config of the family."""
        return self.runs[0][1]


def _family(name: str, lesson: str, title: str, description: str, base: RunConfig,
            variants: list[tuple[str, dict]]) -> Preset:
    return Preset(name, lesson, title, description, tuple((label, base.replace(**kw)) for label, kw in variants))


# A. Activations and vanishing gradients (seeds 000/001, Question 1)
A_BASE = RunConfig(dataset="mnist", epochs=5, batch_size=32, optimizer="sgd", lr=0.2, hidden=(10,),
                   activation="sigmoid", log_every=200, val_fraction=0.1)
# B. Regularization on an image folder (seeds 000/001, Question 2); fashion3 stands in for the seeds' folder
B_BASE = RunConfig(dataset="fashion3", hidden=(13, 13, 13), batch_size=32, epochs=25, optimizer="sgd", lr=0.003,
                   log_every=50, val_fraction=0.1)
# C. MNIST from a Kaggle-style CSV (seed 002): 80/20 split, batch 128 -> 375 iterations per epoch
C_BASE = RunConfig(dataset="mnist", val_fraction=0.2, hidden=(150, 150), activation="relu", optimizer="adam",
                   lr=0.01, epochs=10, batch_size=128, log_every=75)
# D. Fashion-MNIST from scratch, optimizers and sweeps (seed 003)
D_BASE = RunConfig(dataset="fashion-mnist", val_fraction=0.1, hidden=(128, 128, 128), activation="relu",
                   init="xavier", optimizer="adam", lr=1e-3, batch_size=64, epochs=10, log_every=200)
# E. Eight networks on Fashion-MNIST (seed 004)
E_BASE = RunConfig(dataset="fashion-mnist", val_fraction=0.1, hidden=(128, 64), activation="relu",
                   optimizer="adam", lr=1e-3, batch_size=64, epochs=20)

# The classic search space of seed 003 (core/sweep.py's D-sweep preset).
D_SEARCH_SPACE = {
    "epochs": [5, 10], "depth": [3, 4, 5], "width": [32, 64, 128], "weight_decay": [0.0, 0.0005, 0.5],
    "lr": [1e-3, 1e-4], "optimizer": ["sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam"],
    "batch_size": [16, 32, 64], "init": ["default", "xavier"], "activation": ["sigmoid", "tanh", "relu"],
}

PRESET_LIST: list[Preset] = [
    _family("A-sigmoid-depth", "A", "Sigmoid with 1-4 hidden layers",
            "MNIST, width 10, SGD lr 0.2, batch 32, 5 epochs. Deeper sigmoid networks stop learning: loss stays "
            "at ln 10 = 2.3026 and accuracy at the majority-class share (~0.10, not the 0.0099 the report printed).",
            A_BASE, [(f"sigmoid x{d}", {"hidden": (10,) * d}) for d in (1, 2, 3, 4)]),
    _family("A-tanh-deep", "A", "tanh, many layers",
            "tanh with 14 hidden layers of width 10 (the report saw it stuck).", A_BASE,
            [("tanh x14", {"activation": "tanh", "hidden": (10,) * 14})]),
    _family("A-relu-deep", "A", "ReLU, 8 layers",
            "ReLU with 8 hidden layers of width 10 at lr 0.2 (the report saw it stuck).", A_BASE,
            [("relu x8", {"activation": "relu", "hidden": (10,) * 8})]),
    _family("A-fixes", "A", "Fixes for the deep sigmoid network",
            "The 4-layer sigmoid network, and what makes it learn: ReLU, ReLU + He init, Xavier init, "
            "BatchNorm, LayerNorm, a smaller learning rate.", A_BASE.replace(hidden=(10,) * 4),
            [("sigmoid", {}), ("relu", {"activation": "relu"}), ("relu + he", {"activation": "relu", "init": "he"}),
             ("sigmoid + xavier", {"init": "xavier"}), ("sigmoid + batchnorm", {"norm": "batchnorm"}),
             ("sigmoid + layernorm", {"norm": "layernorm"}), ("sigmoid, lr 0.05", {"lr": 0.05})]),
    _family("B-regularization", "B", "None / L1 / L2 / dropout on an image folder",
            "3 hidden x 13, batch 32, 25 epochs, SGD, on a 3-class Fashion-MNIST image folder. L1 = loss + "
            "lambda*sum|w|, L2 = loss + lambda*sum w^2; dropout is the project's hand-written class.", B_BASE,
            [("none", {}), ("L1 0.0018", {"l1": 0.0018}), ("L2 0.0019", {"l2": 0.0019, "lr": 0.0033}),
             ("dropout 0.25", {"dropout": 0.25, "dropout_impl": "inverted", "lr": 0.0033})]),
    _family("C-kaggle-mnist", "C", "MNIST CSV: 2 x 150 ReLU, then LayerNorm + dropout, then (lr, p) pairs",
            "80/20 split, Adam lr 0.01, batch 128 (375 iterations per epoch), metrics every 75 iterations. "
            "Dropout here follows every hidden layer.", C_BASE,
            [("plain", {}), ("layernorm + dropout 0.5", {"norm": "layernorm", "dropout": 0.5}),
             ("lr 0.001, p 0.2", {"norm": "layernorm", "dropout": 0.2, "lr": 0.001}),
             ("lr 0.0005, p 0.4", {"norm": "layernorm", "dropout": 0.4, "lr": 0.0005}),
             ("lr 0.0001, p 0.6", {"norm": "layernorm", "dropout": 0.6, "lr": 0.0001})]),
    _family("D-optimizers", "D", "One network, six optimizers",
            "Fashion-MNIST, 3 hidden x 128 ReLU, Xavier init: SGD, momentum, Nesterov, RMSProp, Adam, Nadam.",
            D_BASE.replace(epochs=5),
            [(opt, {"optimizer": opt, "lr": 0.01 if opt in ("sgd", "momentum", "nesterov") else 1e-3})
             for opt in ("sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam")]),
    _family("D-losses", "D", "Cross-entropy vs mean squared error",
            "The same network trained with cross-entropy on logits and with MSE on softmax vs one-hot.", D_BASE.replace(epochs=5),
            [("cross-entropy", {}), ("mse", {"loss": "mse"})]),
    _family("D-mnist-transfer", "D", "Three configurations picked by hand from the search space, on MNIST",
            "Three configurations picked by hand from the seed-003 search space, trained on MNIST (the Sweeps "
            "page moves a finished study's top three instead).", D_BASE.replace(dataset="mnist"),
            [("3 x 128 relu adam", {}),
             ("4 x 64 tanh nadam", {"hidden": (64,) * 4, "activation": "tanh", "optimizer": "nadam"}),
             ("5 x 128 relu rmsprop", {"hidden": (128,) * 5, "optimizer": "rmsprop", "lr": 1e-4, "batch_size": 32})]),
    _family("E-eight-networks", "E", "Eight networks on Fashion-MNIST",
            "Adam lr 0.001, batch 64, 20 epochs, ReLU; cross-entropy on logits (softmax applied once).", E_BASE,
            [("#1 128", {"hidden": (128,)}), ("#2 128-64", {}), ("#3 512-128-64", {"hidden": (512, 128, 64)}),
             ("#4 128-64 dropout 0.5", {"dropout": 0.5}), ("#5 128-64 batchnorm", {"norm": "batchnorm"}),
             ("#6 128-64 L1 0.001", {"l1": 0.001}), ("#7 128-64 L2 0.001", {"l2": 0.001}),
             ("#8 conv32-conv32-128-64", {"arch": "cnn"})]),
    _family("E2", "E", "E #2: 784-128-64-10 on Fashion-MNIST",
            "The benchmark network: 128-64 ReLU, Adam lr 0.001, batch 64.", E_BASE, [("#2 128-64", {})]),
]

PRESETS: dict[str, Preset] = {p.name: p for p in PRESET_LIST}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
