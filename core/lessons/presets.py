"""Every experiment of LESSONS.md A-E as named configs, and how each runs on the offline fallback.

A preset is a titled family of one or more :class:`RunConfig` (e.g. "the eight networks of
E" is one preset of eight). Experiments are overrides of a lesson's base config, never copies.
A lesson whose dataset is missing on a server trains on Digits instead; its :class:`Fallback`
holds the settings for which its phenomenon still shows there (found by experiment), and
:meth:`Preset.for_server` applies them. Descriptions say what an experiment tests, never what it
will show: outcomes are written from the runs (core/lessons.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from core.engine import data
from core.engine.config import RunConfig

FALLBACK_DATASET = "digits"

Overrides = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Fallback:
    """How a lesson trains on Digits: overrides for every run (besides the dataset), per-label
    overrides on top, and why they differ from the lesson's own settings."""

    why: str
    overrides: Overrides = ()
    runs: tuple[tuple[str, Overrides], ...] = ()


@dataclass(frozen=True)
class Preset:
    name: str
    lesson: str
    title: str
    description: str
    runs: tuple[tuple[str, RunConfig], ...]  # (label, config)
    fallback: Fallback | None = None

    @property
    def config(self) -> RunConfig:
        """The first (or only) config of the family."""
        return self.runs[0][1]

    @property
    def datasets(self) -> set[str]:
        return {cfg.dataset for _, cfg in self.runs}

    def on_fallback(self) -> "Preset":
        """This lesson on Digits with its fallback settings (its description says what changed)."""
        fb = self.fallback or Fallback("The same settings on the 8x8 digits.")
        per_label = dict(fb.runs)
        runs = tuple((label, cfg.replace(**{"dataset": FALLBACK_DATASET, **dict(fb.overrides),
                                            **dict(per_label.get(label, ()))}))
                     for label, cfg in self.runs)
        return Preset(self.name, self.lesson, self.title, f"{self.description} On Digits: {fb.why}", runs, self.fallback)

    def for_server(self, available: Callable[[str], bool] = data.available) -> tuple["Preset", str | None]:
        """The preset as it trains here: itself, or its Digits version when one of its datasets is
        missing (then also the missing dataset's name, for the fallback notice)."""
        missing = sorted(d for d in self.datasets if d != FALLBACK_DATASET and not available(d))
        return (self.on_fallback(), missing[0]) if missing else (self, None)


def _family(name: str, lesson: str, title: str, description: str, base: RunConfig,
            variants: list[tuple[str, dict]], fallback: Fallback | None = None) -> Preset:
    return Preset(name, lesson, title, description, tuple((label, base.replace(**kw)) for label, kw in variants),
                  fallback)


# A. Activations and vanishing gradients (seeds 000/001, Question 1)
A_BASE = RunConfig(dataset="mnist", epochs=5, batch_size=32, optimizer="sgd", lr=0.2, hidden=(10,),
                   activation="sigmoid", log_every=200, val_fraction=0.1)
# B. Regularization on an image folder (seeds 000/001, Question 2); fashion3 stands in for the seeds' folder
B_BASE = RunConfig(dataset="fashion3", hidden=(13, 13, 13), batch_size=32, epochs=25, optimizer="sgd", lr=0.003,
                   log_every=50, val_fraction=0.1)
# B, with an overfitting baseline: few training images, a wide network (found by experiment on Fashion-MNIST).
B_OVERFIT = RunConfig(dataset="fashion-mnist", train_limit=500, val_fraction=0.1, hidden=(256, 256), activation="relu",
                      optimizer="adam", lr=1e-3, batch_size=32, epochs=40, log_every=100)
B_VARIANTS = [("none", {}), ("L1 0.0003", {"l1": 3e-4}), ("L2 0.01", {"l2": 0.01}),
              ("dropout 0.5", {"dropout": 0.5, "dropout_impl": "inverted"})]
B_SEEDS = (0, 1, 2)
B_FALLBACK = Fallback("the same settings on the 8x8 digits (10 classes instead of the folder's 3).")
# Digits are too easy to overfit visibly: in our trials (Adam or momentum SGD, 50-400 training images, 256-512
# units, no label noise) no regularizer narrowed the gap by more than the seeds move it. Wrong labels give the
# network something to memorize that does not carry over to validation (found by experiment on Digits).
B_OVERFIT_NOISE = 0.15
B_OVERFIT_FALLBACK = Fallback(
    f"the same network on 500 of the 8x8 digits, {B_OVERFIT_NOISE:.0%} of whose labels are replaced by a wrong class "
    "drawn at random (validation and test keep the true labels), for 120 epochs (an epoch of 500 images is 16 "
    "steps). Clean digits are too easy to overfit visibly; the wrong labels are what a network can memorize "
    "without it helping on new images. Train accuracy is scored on the training labels, wrong ones included.",
    (("label_noise", B_OVERFIT_NOISE), ("epochs", 120)))
# C. MNIST from a Kaggle-style CSV (seed 002): 80/20 split, batch 128 -> 375 iterations per epoch
C_BASE = RunConfig(dataset="mnist", val_fraction=0.2, hidden=(150, 150), activation="relu", optimizer="adam",
                   lr=0.01, epochs=10, batch_size=128, log_every=75)
# D. Fashion-MNIST from scratch, optimizers and sweeps (seed 003)
D_BASE = RunConfig(dataset="fashion-mnist", val_fraction=0.1, hidden=(128, 128, 128), activation="relu",
                   init="xavier", optimizer="adam", lr=1e-3, batch_size=64, epochs=10, log_every=200)
# E. Eight networks on Fashion-MNIST (seed 004)
E_BASE = RunConfig(dataset="fashion-mnist", val_fraction=0.1, hidden=(128, 64), activation="relu",
                   optimizer="adam", lr=1e-3, batch_size=64, epochs=20)
# An epoch of Digits is about 20 steps of 64 images (of Fashion-MNIST about 840): log often enough to draw curves.
D_FALLBACK = Fallback("with metrics every 5 steps instead of every 200 (an epoch of Digits is about 20 steps of 64 "
                      "images, of Fashion-MNIST about 840).", (("log_every", 5),))

# The classic search space of seed 003 (core/sweep.py's D-sweep preset).
D_SEARCH_SPACE = {
    "epochs": [5, 10], "depth": [3, 4, 5], "width": [32, 64, 128], "weight_decay": [0.0, 0.0005, 0.5],
    "lr": [1e-3, 1e-4], "optimizer": ["sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam"],
    "batch_size": [16, 32, 64], "init": ["default", "xavier"], "activation": ["sigmoid", "tanh", "relu"],
}

A_FIXES_DEPTH = 4  # the deep sigmoid network of the fixes (also the Vanishing page's default: 1 epoch, stuck there)
# The LESSONS A preset's fixes and seeds (5 epochs): at 4 layers the sigmoid network escapes on MNIST (test accuracy
# 0.251), so they start from the grid's deepest sigmoid network; on Digits (20 epochs) seed 0 is stuck from 3 layers
# to 14. The page reads the depth against the grid's own results and offers the shallowest stuck one.
A_LESSON_FIXES_DEPTH = 8
# On Digits an epoch is ~36 steps instead of ~1700: 20 epochs let the shallow and the fixed networks learn there.
A_FALLBACK = Fallback("20 epochs instead of 5 (an epoch of Digits is about 36 steps, of MNIST about 1700), "
                      "metrics every 20 steps.", (("epochs", 20), ("log_every", 20)))


def relu_below_sigmoid_above(depth: int) -> str:
    """One activation per hidden layer: ReLU in the lower half of ``depth`` layers, sigmoid above. The first layers'
    gradient then passes half as many sigmoid derivatives (each at most 1/4) on its way down."""
    below = depth // 2
    return ",".join(["relu"] * below + ["sigmoid"] * (depth - below))


RELU_BELOW = "relu below, sigmoid above"
A_FIXES = [("sigmoid", {}), ("relu", {"activation": "relu"}), ("relu + he", {"activation": "relu", "init": "he"}),
           ("sigmoid + xavier", {"init": "xavier"}), ("sigmoid + batchnorm", {"norm": "batchnorm"}),
           ("sigmoid + layernorm", {"norm": "layernorm"}), ("sigmoid, lr 0.05", {"lr": 0.05}),
           (RELU_BELOW, {"activation": relu_below_sigmoid_above(A_FIXES_DEPTH)})]
A_SEEDS = (0, 1, 2)
STUCK_MEANS = ("Stuck means: the loss stays at ln(classes) and the accuracy at the share of the one class the "
               "network predicts for every input.")

PRESET_LIST: list[Preset] = [
    _family("A-sigmoid-depth", "A", "Sigmoid with 1-4 hidden layers",
            "MNIST, width 10, SGD lr 0.2, batch 32, 5 epochs. The experiment: from which depth on does a sigmoid "
            f"network stop learning? {STUCK_MEANS} (The report printed accuracy 0.0099 for such networks.)",
            A_BASE, [(f"sigmoid x{d}", {"hidden": (10,) * d}) for d in (1, 2, 3, 4)], A_FALLBACK),
    _family("A-tanh-deep", "A", "tanh, many layers",
            "tanh with 14 hidden layers of width 10 (the report saw it stuck). The experiment: does it learn?",
            A_BASE, [("tanh x14", {"activation": "tanh", "hidden": (10,) * 14})], A_FALLBACK),
    _family("A-relu-deep", "A", "ReLU, 8 layers",
            "ReLU with 8 hidden layers of width 10 at lr 0.2 (the report saw it stuck). The experiment: does it "
            "learn?", A_BASE, [("relu x8", {"activation": "relu", "hidden": (10,) * 8})], A_FALLBACK),
    _family("A-fixes", "A", "Fixes for the deep sigmoid network",
            f"The {A_FIXES_DEPTH}-layer sigmoid network and the changes said to make it learn: ReLU, ReLU + He init, "
            "Xavier init, BatchNorm, LayerNorm, a quarter of the learning rate, ReLU in the lower half with sigmoid "
            "above, all with the same seed. The "
            f"experiment: which of them learn within the epochs given, and which stay stuck? {STUCK_MEANS}",
            A_BASE.replace(hidden=(10,) * A_FIXES_DEPTH), A_FIXES, A_FALLBACK),
    _family("A-sigmoid-seeds", "A", "The deep sigmoid network, three seeds",
            f"The {A_FIXES_DEPTH}-layer sigmoid network trained with seeds {', '.join(map(str, A_SEEDS))} (different "
            "initial weights and batch order), in one job. The experiment: does the seed decide whether it gets "
            f"stuck? {STUCK_MEANS}", A_BASE.replace(hidden=(10,) * A_FIXES_DEPTH),
            [(f"sigmoid x{A_FIXES_DEPTH}, seed {s}", {"seed": s}) for s in A_SEEDS], A_FALLBACK),
    _family("B-regularization", "B", "None / L1 / L2 / dropout on an image folder (as reported)",
            "The report's settings, as reported: 3 hidden x 13, batch 32, 25 epochs, SGD lr 0.003, on a 3-class "
            "Fashion-MNIST image folder. L1 = loss + lambda*sum|w|, L2 = loss + lambda*sum w^2; dropout is the "
            "project's hand-written class. These settings cannot show what a regularizer does. A regularizer "
            "narrows the distance between train and validation accuracy, and here there is none to narrow: SGD at "
            "lr 0.003 has barely trained the 13-unit network after 25 epochs (train and validation accuracy stay "
            "close together), and the three classes (T-shirt, trouser, sneaker) are easy (with Adam the same "
            "network gets practically every test image right). Compare the train and validation curves, then "
            "load \"Overfitting on purpose\".", B_BASE,
            [("none", {}), ("L1 0.0018", {"l1": 0.0018}), ("L2 0.0019", {"l2": 0.0019, "lr": 0.0033}),
             ("dropout 0.25", {"dropout": 0.25, "dropout_impl": "inverted", "lr": 0.0033})], B_FALLBACK),
    _family("B-overfit", "B", "Overfitting on purpose: None / L1 / L2 / dropout",
            f"A network that can memorize its training set: {B_OVERFIT.train_limit} Fashion-MNIST training images, "
            "2 hidden x 256 ReLU, Adam lr 0.001, batch 32, 40 epochs. The experiment: how far does train accuracy "
            "run ahead of validation accuracy without regularization, and how much does each regularizer narrow "
            "that gap?", B_OVERFIT, B_VARIANTS, B_OVERFIT_FALLBACK),
    _family("B-overfit-seeds", "B", "Overfitting on purpose: the baseline with three seeds",
            "The unregularized network of \"Overfitting on purpose\" with seeds 0, 1 and 2 (another training "
            "subset, initial weights and batch order each). The experiment: how much does the train - validation "
            "gap move from seed to seed? A regularizer's effect smaller than that is noise.", B_OVERFIT,
            [(f"none, seed {s}", {"seed": s}) for s in B_SEEDS], B_OVERFIT_FALLBACK),
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
             for opt in ("sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam")], D_FALLBACK),
    _family("D-losses", "D", "Cross-entropy vs mean squared error",
            "The same network trained with cross-entropy on logits and with MSE on softmax vs one-hot.", D_BASE.replace(epochs=5),
            [("cross-entropy", {}), ("mse", {"loss": "mse"})], D_FALLBACK),
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
    _family("E2-softmax-twice", "E", "E #2 as reported (softmax before cross-entropy) and correct",
            "The benchmark network trained twice, side by side: as report 004 did it (the network ends in a "
            "softmax and cross-entropy applies another one) and correctly (cross-entropy on the logits). The "
            "experiment: how much does the reported loss differ from the true one at about the same accuracy? "
            "Softmax applied twice squeezes the probabilities towards uniform, so that loss cannot fall below "
            "ln(1 + (classes - 1)/e) however well the network classifies.", E_BASE,
            [("#2 as reported (softmax twice)", {"loss": "softmax_cross_entropy"}), ("#2 correct", {})]),
    _family("E2", "E", "E #2: 784-128-64-10 on Fashion-MNIST",
            "The benchmark network: 128-64 ReLU, Adam lr 0.001, batch 64.", E_BASE, [("#2 128-64", {})]),
]

PRESETS: dict[str, Preset] = {p.name: p for p in PRESET_LIST}

# Inside a CNN (issue 23): E #8's two conv layers (32 3x3 filters, stride 1, padding 1) with a 64-unit head, on a seeded
# subset of 2,000 training images for 2 epochs: about a minute on MNIST on one CPU thread (E #8 itself: 238 s an
# epoch). On Digits the fallback trains a seeded subset of 300 images for 10 epochs: with fewer examples the CNN's
# built-in locality shows, and it beats the MLP of at least as many parameters on every seed tried (0-4), where all of
# Digits' training images for 3 epochs gave ties and reversals on its 8x8 images (tests/test_cnn_vs_mlp.py).
CNN_LESSON = Preset("cnn", "Inside a CNN", "A small CNN (conv 32 3x3 -> conv 32 3x3 -> 64)",
                    "Two 3x3 convolution layers of 32 filters and a 64-unit head, Adam lr 0.001, on a seeded subset "
                    "of 2,000 training images.",
                    (("small CNN", RunConfig(dataset="mnist", arch="cnn", hidden=(64,), train_limit=2000, epochs=2,
                                             batch_size=32, log_every=50)),),
                    Fallback("a seeded subset of 300 training images for 10 epochs, where the CNN's advantage over the "
                             "MLP shows on 8x8 images.", (("train_limit", 300), ("epochs", 10))))

# Seed 004's Network #8 as the CNN page's slow preset: E #8's network, data and training (all of Fashion-MNIST, batch 64,
# 20 epochs) over the lesson's CNN, so the page's knobs load it. An epoch took 238 s on this CPU: for a GPU or patience.
E8 = dict(PRESETS["E-eight-networks"].runs)["#8 conv32-conv32-128-64"]
CNN_SLOW = CNN_LESSON.config.replace(**{name: getattr(E8, name) for name in (
    "dataset", "train_limit", "arch", "conv_channels", "conv_kernel", "conv_stride", "conv_padding", "conv_pool",
    "hidden", "norm", "dropout", "batch_size", "epochs")})


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
