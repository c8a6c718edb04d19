"""The one run-config schema: it drives widgets, the URL, the cache key, the CLI and sweeps.

Every field carries a :class:`Knob` in its metadata (group, label, help, choices or
range). ``RunConfig(...)`` validates on construction and raises :class:`ConfigError`
naming every bad field, its value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

from core.engine.task import MAX_DIGITS, ConfigError, TaskConfig, shortened


# Knobs newer than stored runs: at their default they stay out of the JSON, so every older key and link is unchanged.
OMITTED_AT_DEFAULT = ("residual", "conv_channels", "conv_kernel", "conv_stride", "conv_padding", "conv_pool")
BUILTIN_DATASETS = ("digits", "mnist", "fashion-mnist", "fashion3", "spiral", "moons", "circles", "xor", "blobs")
TOY_DATASETS = ("spiral", "moons", "circles", "xor", "blobs")
UPLOAD_PREFIX = "upload:"
_UPLOAD_RE = re.compile(r"^upload:[0-9a-f]{8,64}$")

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "linear")
INITS = ("default", "xavier", "he", "normal", "zeros")
NORMS = ("none", "batchnorm", "layernorm")
DROPOUT_IMPLS = ("torch", "inverted")
LOSSES = ("cross_entropy", "mse", "softmax_cross_entropy")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
OPTIMIZER_IMPLS = ("torch", "ours")
LR_SCHEDULES = ("constant", "step", "cosine", "warmup")
ARCHS = ("mlp", "cnn")
DEVICES = ("auto", "cpu", "cuda")
BACKPROPS = ("autograd", "by_hand")
BY_HAND_ACTIVATIONS = ("sigmoid", "tanh", "relu")  # what core/scratch.py writes out
GROUPS = ("Data", "Architecture", "Regularization", "Optimization")

CONV_POOLS = ("none", "max", "avg")
POOL_SIZE = 2  # pooling windows are 2x2 with stride 2
# Image shapes (channels, height, width) of the built-in image sets: the schema checks a CNN's blocks against them.
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "fashion3": (1, 28, 28)}

MAX_HIDDEN_LAYERS = 20
MAX_CONV_BLOCKS = 6
MAX_CONV_CHANNELS = 512
MAX_WIDTH = 4096
MAX_TRAIN_LIMIT = 10_000_000


@dataclass(frozen=True)
class Knob:
    """How one config field is shown, parsed and checked."""

    group: str
    label: str
    help: str
    choices: tuple[str, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    log: bool = False  # widgets use a log scale
    lo_open: bool = False  # lo itself is not allowed
    # The knob matters only when another field has one of these values, e.g. (("optimizer", ("rmsprop",)),);
    # forms show it only then. Empty: always used.
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()


def knob(default: Any, **spec: Any) -> Any:
    return field(default=default, metadata={"knob": Knob(**spec)})


@dataclass(frozen=True)
class RunConfig(TaskConfig):
    """Everything that decides a training run (and so its cache key)."""

    KIND: ClassVar[str] = "run"

    # Data
    dataset: str = knob("digits", group="Data", label="Dataset",
                        help="Built-in dataset, or an uploaded one (upload:<hash>).")
    data_noise: float = knob(0.1, group="Data", label="Toy-set noise", lo=0.0, hi=1.0,
                             help="Noise of the 2-D toy sets (ignored for images).")
    val_fraction: float = knob(0.1, group="Data", label="Validation fraction", lo=0.0, hi=0.5,
                               lo_open=True, help="Share of the training data held out for validation.")
    seed: int = knob(0, group="Data", label="Seed", lo=0, hi=2**31 - 1,
                     help="Seeds the split, the initial weights, the batch order and dropout.")
    train_limit: int = knob(0, group="Data", label="Training examples", lo=0, hi=MAX_TRAIN_LIMIT,
                            help="Train on only this many examples of the training split (a seeded subset; "
                                 "0 = all). Small training sets overfit: the place to see regularization work.")
    label_noise: float = knob(0.0, group="Data", label="Noisy training labels", lo=0.0, hi=0.9,
                              help="Share of the training examples whose label is replaced by another class, "
                                   "drawn at random (seeded; validation and test keep their true labels). A network "
                                   "that memorizes its training set learns the wrong labels too.")
    # Architecture
    arch: str = knob("mlp", group="Architecture", label="Architecture", choices=ARCHS,
                     help="mlp: fully connected; cnn: conv blocks (by default two of 32 3x3 filters) before the "
                          "hidden layers.")
    conv_channels: tuple[int, ...] = knob((32, 32), group="Architecture", label="Conv channels", lo=1,
                                          hi=MAX_CONV_CHANNELS, when=(("arch", ("cnn",)),),
                                          help="Filters of each conv block, first to last, e.g. 32,32 "
                                               f"(1-{MAX_CONV_BLOCKS} blocks). Each block: convolution, "
                                               "normalization, activation, pooling.")
    conv_kernel: int = knob(3, group="Architecture", label="Conv kernel", lo=1, hi=9, when=(("arch", ("cnn",)),),
                            help="Height and width of every conv block's kernels (3 = 3x3).")
    conv_stride: int = knob(1, group="Architecture", label="Conv stride", lo=1, hi=4, when=(("arch", ("cnn",)),),
                            help="How far each kernel moves between outputs: stride 2 halves the maps.")
    conv_padding: int = knob(1, group="Architecture", label="Conv padding", lo=0, hi=4, when=(("arch", ("cnn",)),),
                             help="Rings of zeros around each block's input (1 keeps a 3x3 kernel's maps their size).")
    conv_pool: str = knob("none", group="Architecture", label="Pooling", choices=CONV_POOLS,
                          when=(("arch", ("cnn",)),),
                          help=f"After each conv block: none, max or avg over {POOL_SIZE}x{POOL_SIZE} windows "
                               "(halves the maps, and the cost of the next block).")
    hidden: tuple[int, ...] = knob((64, 64), group="Architecture", label="Hidden layers",
                                   lo=1, hi=MAX_WIDTH,
                                   help=f"Width of each hidden layer, e.g. 128,64 (0-{MAX_HIDDEN_LAYERS} layers).")
    activation: str = knob("relu", group="Architecture", label="Activation", choices=ACTIVATIONS,
                           help="Non-linearity after every hidden layer, or one per hidden layer, first to last, "
                                "e.g. relu,relu,sigmoid (MLP only).")
    residual: bool = knob(False, group="Architecture", label="Residual connections", when=(("arch", ("mlp",)),),
                          help="Each hidden layer after the first adds its input to its output, x + f(x), so the "
                               "gradient has a path around every activation and the first layers of a deep sigmoid "
                               "or tanh network keep learning. Needs an MLP of at least 2 hidden layers of one width.")
    init: str = knob("default", group="Architecture", label="Initialization", choices=INITS,
                     help="default = PyTorch's; xavier (Glorot) suits sigmoid/tanh, he (Kaiming) suits ReLU.")
    init_std: float = knob(0.01, group="Architecture", label="Init std (normal)", lo=0.0, hi=10.0,
                           lo_open=True, log=True, help="Standard deviation for init=normal.")
    # Regularization
    norm: str = knob("none", group="Regularization", label="Normalization", choices=NORMS,
                     help="Normalization after each hidden linear layer, before the activation.")
    dropout: float = knob(0.0, group="Regularization", label="Dropout p", lo=0.0, hi=0.9,
                          help="Probability of dropping a hidden unit while training.")
    dropout_impl: str = knob("torch", group="Regularization", label="Dropout implementation",
                             choices=DROPOUT_IMPLS,
                             help="torch = nn.Dropout; inverted = the project's from-scratch inverted dropout.")
    l1: float = knob(0.0, group="Regularization", label="L1 lambda", lo=0.0, hi=1.0,
                     help="Adds lambda * sum|w| (weights, not biases) to the loss.")
    l2: float = knob(0.0, group="Regularization", label="L2 lambda", lo=0.0, hi=1.0,
                     help="Adds lambda * sum w^2 (weights, not biases) to the loss.")
    # Optimization
    loss: str = knob("cross_entropy", group="Optimization", label="Loss", choices=LOSSES,
                     help="cross_entropy on logits; mse between softmax and one-hot targets; or "
                          "softmax_cross_entropy: softmax, then cross-entropy (as report 004 did it): the "
                          "softmax is applied twice, so the loss cannot fall below ln(1 + (classes-1)/e) "
                          "(1.46 for 10 classes); the true cross-entropy is shown beside it.")
    optimizer: str = knob("adam", group="Optimization", label="Optimizer", choices=OPTIMIZERS,
                          help="momentum and nesterov are SGD with momentum.")
    lr: float = knob(1e-3, group="Optimization", label="Learning rate", lo=0.0, hi=1000.0,
                     lo_open=True, log=True, help="Step size.")
    momentum: float = knob(0.9, group="Optimization", label="Momentum", lo=0.0, hi=0.999,
                           when=(("optimizer", ("momentum", "nesterov")),),
                           help="Heavy-ball coefficient mu of momentum and Nesterov: v <- mu*v + g.")
    rms_alpha: float = knob(0.99, group="Optimization", label="RMSProp alpha", lo=0.0, hi=0.9999,
                            when=(("optimizer", ("rmsprop",)),),
                            help="Smoothing of RMSProp's running mean of squared gradients (textbook 0.99).")
    rms_momentum: float = knob(0.0, group="Optimization", label="RMSProp momentum", lo=0.0, hi=0.999,
                               when=(("optimizer", ("rmsprop",)),),
                               help="Momentum on RMSProp's scaled step (0 = plain RMSProp).")
    beta1: float = knob(0.9, group="Optimization", label="Adam beta1", lo=0.0, hi=0.999,
                        when=(("optimizer", ("adam", "nadam")),),
                        help="Decay of Adam's / Nadam's running mean of gradients (first moment).")
    beta2: float = knob(0.999, group="Optimization", label="Adam beta2", lo=0.0, hi=0.9999,
                        when=(("optimizer", ("adam", "nadam")),),
                        help="Decay of Adam's / Nadam's running mean of squared gradients (second moment).")
    weight_decay: float = knob(0.0, group="Optimization", label="Weight decay", lo=0.0, hi=1.0,
                               help="The optimizer's own decay of every parameter (biases and norm parameters "
                                    "too), not part of the reported loss. Coupled: wd*w is added to the "
                                    "gradient (for Adam/Nadam it is then rescaled like the gradient); "
                                    "decoupled (Adam/Nadam only): w shrinks by lr*wd*w each step, as in AdamW.")
    weight_decay_mode: str = knob("coupled", group="Optimization", label="Weight-decay form",
                                  choices=WEIGHT_DECAY_MODES, when=(("optimizer", ("adam", "nadam")),),
                                  help="coupled = L2 added to the gradient (torch Adam/NAdam weight_decay); "
                                       "decoupled = AdamW-style shrinking of the weights, apart from the gradient.")
    optimizer_impl: str = knob("torch", group="Optimization", label="Optimizer implementation",
                               choices=OPTIMIZER_IMPLS,
                               help="torch = torch.optim; ours = the project's from-scratch update rules "
                                    "(core/optimizers.py), the same formulas written out.")
    lr_schedule: str = knob("constant", group="Optimization", label="Learning-rate schedule", choices=LR_SCHEDULES,
                            help="constant; step = multiply by gamma every few epochs; cosine = decay to 0 along "
                                 "half a cosine; warmup = ramp up linearly, then constant.")
    lr_step_every_epochs: int = knob(2, group="Optimization", label="Step decay every (epochs)", lo=1, hi=200,
                                     when=(("lr_schedule", ("step",)),),
                                     help="The step schedule multiplies the learning rate by gamma this often.")
    lr_gamma: float = knob(0.5, group="Optimization", label="Step decay gamma", lo=0.0, hi=1.0, lo_open=True,
                           when=(("lr_schedule", ("step",)),),
                           help="Factor of each step decay.")
    warmup_epochs: float = knob(1.0, group="Optimization", label="Warm-up (epochs)", lo=0.0, hi=200.0, lo_open=True,
                                when=(("lr_schedule", ("warmup",)),),
                                help="The warm-up raises the learning rate linearly from lr/steps to lr over this many epochs.")
    batch_size: int = knob(64, group="Optimization", label="Batch size", lo=1, hi=4096,
                           help="Examples per step.")
    epochs: int = knob(10, group="Optimization", label="Epochs", lo=1, hi=200, help="Passes over the training data.")
    log_every: int = knob(100, group="Optimization", label="Log every (steps)", lo=1, hi=100_000,
                          help="Evaluate and record layer stats every this many steps (and at each epoch end).")
    device: str = knob("auto", group="Optimization", label="Device", choices=DEVICES,
                       help="auto = the GPU when there is one, else the CPU.")
    backprop: str = knob("autograd", group="Optimization", label="Backprop", choices=BACKPROPS,
                         help="autograd = PyTorch computes the gradients; by_hand = the network of core/scratch.py, "
                              "forward and backward written out, trained with SGD written out (plain MLP, "
                              "sigmoid/tanh/ReLU, no normalization or dropout).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        channels = self.conv_channels
        if isinstance(channels, int) and not isinstance(channels, bool):
            channels = (channels,)
        if isinstance(channels, (list, tuple)):
            object.__setattr__(self, "conv_channels", tuple(channels))
        if isinstance(self.activation, (str, list, tuple)):
            object.__setattr__(self, "activation", canonical_activation(self.activation, len(self.hidden)))
        problems = _problems(self)
        if problems:
            raise ConfigError(problems)

    # --- derived -------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.hidden)

    @property
    def layer_activations(self) -> tuple[str, ...]:
        """The activation after each hidden layer, first to last."""
        names = split_activations(self.activation)
        return names if len(names) > 1 else names * self.depth

    @property
    def is_toy(self) -> bool:
        return self.dataset in TOY_DATASETS

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["conv_channels"] = list(self.conv_channels)
        for name in OMITTED_AT_DEFAULT:
            if getattr(self, name) == DEFAULTS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = True) -> "RunConfig":
        """Build from a mapping of (possibly string) values; unknown keys are an error when strict."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown and strict:
            raise ConfigError({k: f"Unknown setting {k!r}" for k in unknown})
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                try:
                    values[f.name] = parse_value(f.name, data[f.name])
                except ValueError as exc:
                    problems[f.name] = str(exc)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_query(self) -> dict[str, str]:
        """Readable query-string form holding only fields that differ from the defaults."""
        default = RunConfig()
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out[f.name] = format_value(value)
        return out

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "RunConfig":
        """Inverse of :meth:`to_query`; non-config keys (e.g. page ids) are ignored. ``depth=N`` (the word people
        type) means N hidden layers of the config's width (the first width of ``hidden``, or the default's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in query.items() if k in names}
        if DEPTH in query:
            try:
                width = parse_hidden(values.get("hidden", format_value(cls().hidden)))
            except ValueError:  # from_dict names the bad hidden=
                width = ()
            values["hidden"] = (width[0] if width else cls().hidden[0],) * depth_of(query[DEPTH])
        return cls.from_dict(values)


# --- helpers ---------------------------------------------------------------------------
def fields_by_group() -> dict[str, list[dataclasses.Field]]:
    out: dict[str, list[dataclasses.Field]] = {g: [] for g in GROUPS}
    for f in dataclasses.fields(RunConfig):
        out[f.metadata["knob"].group].append(f)
    return out


def knob_of(name: str) -> Knob:
    return FIELDS[name].metadata["knob"]


def knob_applies(name: str, values: Mapping[str, Any]) -> bool:
    """Whether field ``name`` affects a run with these settings (see :attr:`Knob.when`)."""
    return all(values.get(other) in allowed for other, allowed in knob_of(name).when)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
WIDTH_LISTS = {"hidden": MAX_WIDTH, "conv_channels": MAX_CONV_CHANNELS}  # knobs that hold a list of widths


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


DEPTH = "depth"  # a link's word for the number of hidden layers (RunConfig.from_query); the knob is hidden
QUERY_NAMES = tuple(FIELDS) + (DEPTH,)  # what a RunConfig link may hold


def depth_of(value: Any) -> int:
    """``depth=`` of a link: a whole number of hidden layers in [0, MAX_HIDDEN_LAYERS] (ConfigError naming depth)."""
    text = str(value).strip()
    if not (text.isdigit() and len(text) <= MAX_DIGITS and int(text) <= MAX_HIDDEN_LAYERS):
        raise ConfigError({DEPTH: f"Depth (depth, the number of hidden layers) = {_short(text)} must be a whole "
                                  f"number 0-{MAX_HIDDEN_LAYERS}; the widths themselves are hidden=, e.g. 64,64,64"})
    return int(text)


def parse_hidden(value: Any) -> tuple[int, ...]:
    """'128,64' / '[128, 64]' / [128, 64] / 128 / '' -> tuple of widths."""
    if isinstance(value, (list, tuple)):
        items: Iterable[Any] = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        text = value.strip().strip("[]()")
        items = [t for t in re.split(r"[,\s;x]+", text) if t]
    else:
        raise ValueError(f"Hidden layers must be a list of widths, got {_short(value)}")
    out = []
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit())):
            raise ValueError(f"Hidden layers must be whole numbers like 128,64; got {_short(value)}")
        if isinstance(item, str) and len(item.strip()) > MAX_DIGITS:
            raise ValueError(f"Hidden layers (hidden) has a {len(item.strip())}-digit width: each width must be "
                             f"in [1, {MAX_WIDTH}]")
        out.append(int(item))
    return tuple(out)


def parse_channels(value: Any) -> tuple[int, ...]:
    """'32,64' / [32, 64] / 32 -> the conv blocks' channels (messages name conv_channels)."""
    try:
        return parse_hidden(value)
    except ValueError:
        raise ValueError(f"Conv channels (conv_channels) must be whole numbers like 32,32 (one per block); got "
                         f"{_short(value)}") from None


BOOL_WORDS = {"true": True, "1": True, "on": True, "yes": True, "false": False, "0": False, "off": False, "no": False}


def split_activations(value: str) -> tuple[str, ...]:
    """'relu, relu,sigmoid' -> ('relu', 'relu', 'sigmoid'); 'relu' -> ('relu',)."""
    return tuple(t.strip() for t in value.split(","))


def canonical_activation(value: str | list | tuple, depth: int) -> str:
    """One name for every layer as itself; a per-layer list as 'a,b,c', collapsed to one name when every layer
    has the same one and the list is as long as the depth (so 'relu,relu' with 2 layers keeps relu's key)."""
    names = tuple(str(v).strip() for v in value) if isinstance(value, (list, tuple)) else split_activations(value)
    if len(names) == depth and len(set(names)) == 1:
        return names[0]
    return ",".join(names)


def activation_problem(cfg: "RunConfig") -> str | None:
    """Why ``cfg.activation`` is not one known name or a list of one known name per hidden layer."""
    names = split_activations(cfg.activation)
    allowed = ", ".join(ACTIVATIONS)
    if len(names) == 1:
        return None if names[0] in ACTIVATIONS else (f"Activation (activation) = {_short(cfg.activation)} is not "
                                                     f"allowed: one of {allowed}, or one per hidden layer")
    if cfg.arch != "mlp":
        return ("Activation (activation): one per hidden layer needs the MLP; the CNN takes one activation for "
                "all its layers")
    if len(names) != cfg.depth:
        return (f"Activation (activation) lists {len(names)} activations for {cfg.depth} hidden layers: give one "
                f"name for all, or exactly one per hidden layer")
    bad = [f"layer {i} ({_short(n)})" for i, n in enumerate(names, 1) if n not in ACTIVATIONS]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return f"Activation (activation): unknown activation at hidden {', '.join(bad[:5])}{more}: allowed {allowed}"
    return None


def parse_value(name: str, value: Any) -> Any:
    """Coerce a raw value (e.g. from a URL or CLI) to the field's type."""
    f = FIELDS[name]
    label = f.metadata["knob"].label
    if name == "hidden":
        return parse_hidden(value)
    if name == "conv_channels":
        return parse_channels(value)
    if name == "activation" and isinstance(value, (list, tuple)):  # a per-layer list in JSON
        return ",".join(str(v).strip() for v in value)
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in BOOL_WORDS:
            return BOOL_WORDS[text]
        raise ValueError(f"{label} ({name}) must be on or off (true/false), got {_short(value)}")
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    digits = str(value).strip().lstrip("+-") if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if kind in ("int", "float") and digits.isdigit() and len(digits) > MAX_DIGITS:
        k = f.metadata["knob"]
        raise ValueError(f"{label} ({name}) = a {len(digits)}-digit number is out of range: allowed {_allowed(k)}")
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} ({name}) must be a {'whole number' if kind == 'int' else 'number'}, "
                         f"got {_short(value)}") from None
    if not isinstance(value, str):
        raise ValueError(f"{label} ({name}) must be text, got {_short(value)}")
    return value.strip()




def _short(value: Any, limit: int = 40) -> str:
    return shortened(value, limit)


def _allowed(k: Knob) -> str:
    if k.choices:
        return "one of " + ", ".join(k.choices)
    left = "(" if k.lo_open else "["
    return f"{left}{_num(k.lo)}, {_num(k.hi)}]"


def _num(x: float | None) -> str:
    return "-inf" if x is None else (str(int(x)) if float(x).is_integer() else repr(x))


def _problems(cfg: RunConfig) -> dict[str, str]:
    problems: dict[str, str] = {}
    for f in dataclasses.fields(cfg):
        k: Knob = f.metadata["knob"]
        value = getattr(cfg, f.name)
        if f.name == "dataset":
            if not (value in BUILTIN_DATASETS or _UPLOAD_RE.match(str(value))):
                problems[f.name] = (f"{k.label} (dataset) = {_short(value)} is unknown: allowed "
                                    f"{', '.join(BUILTIN_DATASETS)} or an uploaded dataset")
            continue
        if f.name == "activation":
            problem = activation_problem(cfg) if isinstance(value, str) else f"{k.label} (activation) must be text"
            if problem:
                problems[f.name] = problem
            continue
        if f.name == "residual":
            if not isinstance(value, bool):
                problems[f.name] = f"{k.label} (residual) = {_short(value)} must be on or off (true/false)"
            elif value and residual_problem(cfg):
                problems[f.name] = residual_problem(cfg)
            continue
        if f.name == "hidden":
            if len(value) > MAX_HIDDEN_LAYERS:
                problems[f.name] = (f"{k.label} (hidden) has {len(value)} layers: allowed "
                                    f"0-{MAX_HIDDEN_LAYERS}")
            elif any(not (1 <= w <= MAX_WIDTH) for w in value):
                problems[f.name] = f"{k.label} (hidden) = {format_value(value)}: each width must be in [1, {MAX_WIDTH}]"
            continue
        if f.name == "conv_channels":
            if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_CONV_BLOCKS:
                problems[f.name] = (f"{k.label} (conv_channels) = {_short(format_value(value), 60)}: give 1-"
                                    f"{MAX_CONV_BLOCKS} blocks (allowed), e.g. 32,32")
            elif any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CONV_CHANNELS for c in value):
                problems[f.name] = (f"{k.label} (conv_channels) = {_short(format_value(value), 60)}: each block's "
                                    f"channels allowed in [1, {MAX_CONV_CHANNELS}]")
            continue
        if k.choices is not None:
            if value not in k.choices:
                problems[f.name] = f"{k.label} ({f.name}) = {_short(value)} is not allowed: {_allowed(k)}"
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems[f.name] = f"{k.label} ({f.name}) = {_short(value)} must be a number"
            continue
        if value != value or value in (float("inf"), float("-inf")):
            problems[f.name] = f"{k.label} ({f.name}) = {value!r} must be a finite number"
            continue
        too_low = value < k.lo or (k.lo_open and value == k.lo)
        if too_low or value > k.hi:
            problems[f.name] = f"{k.label} ({f.name}) = {_num(value)} is out of range: allowed {_allowed(k)}"
    by_hand = by_hand_problem(cfg)
    if by_hand:
        problems["backprop"] = by_hand
    if cfg.arch == "cnn" and cfg.dataset in TOY_DATASETS:
        problems["arch"] = f"Architecture (arch) = 'cnn' needs an image dataset, not the 2-D toy set {cfg.dataset!r}"
    if cfg.arch == "cnn" and cfg.dataset in IMAGE_SHAPES and not any(n.startswith("conv_") for n in problems):
        try:
            conv_stages(cfg, IMAGE_SHAPES[cfg.dataset])
        except ConfigError as exc:
            problems.update(exc.problems)
    return problems


@dataclass(frozen=True)
class ConvStage:
    """One conv block on a given input: its channels, its convolution's map size and its output's (after pooling)."""

    channels: int
    conv_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.out_hw)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Rows (or columns) of a convolution's output: floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_stages(cfg: RunConfig, input_shape: tuple[int, ...]) -> list[ConvStage]:
    """Each conv block's shapes on images ``input_shape`` (channels, height, width); a ConfigError naming the block,
    the value and the shapes so far when a kernel is larger than its padded input or pooling leaves no output."""
    if len(input_shape) != 3:
        raise ConfigError({"arch": f"Architecture (arch) = 'cnn' needs images (channels, height, width); these inputs "
                                   f"have shape {tuple(input_shape)}: CSV features that are not a square image, or a "
                                   "2-D toy set, train only the MLP"})
    k, s, p = cfg.conv_kernel, cfg.conv_stride, cfg.conv_padding
    h, w = input_shape[1:]
    trace = [f"kernel {k}, stride {s}, padding {p}: input {h}x{w}"]
    stages = []
    for block, channels in enumerate(cfg.conv_channels, 1):
        if k > min(h, w) + 2 * p:
            raise ConfigError({"conv_kernel": (
                f"Conv kernel (conv_kernel) = {k} is larger than block {block}'s input {h}x{w} with padding {p} "
                f"({h + 2 * p}x{w + 2 * p}): it has no position to sit at. Use a smaller kernel or stride, more "
                f"padding, less pooling or fewer blocks ({' -> '.join(trace)})")})
        h, w = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
        conv_hw = (h, w)
        trace.append(f"block {block} {h}x{w}")
        if cfg.conv_pool != "none":
            if min(h, w) < POOL_SIZE:
                raise ConfigError({"conv_pool": (
                    f"Pooling (conv_pool) = {cfg.conv_pool!r} needs maps of at least {POOL_SIZE}x{POOL_SIZE}, but "
                    f"block {block} leaves {h}x{w}: pooling would leave no output. Use no pooling, a smaller stride, "
                    f"more padding or fewer blocks ({' -> '.join(trace)})")})
            h, w = h // POOL_SIZE, w // POOL_SIZE
            trace.append(f"pooled {h}x{w}")
        stages.append(ConvStage(channels, conv_hw, (h, w)))
    return stages


def residual_problem(cfg: RunConfig) -> str | None:
    """Why residual connections (x + f(x) around each hidden layer after the first) do not fit this network."""
    if cfg.arch != "mlp":
        return "Residual connections (residual) are for the MLP; this config is a CNN"
    if cfg.depth < 2:
        return (f"Residual connections (residual) add a hidden layer's input to its output, so they need at least 2 "
                f"hidden layers of one width; hidden = {format_value(cfg.hidden) or 'none'}")
    unequal = [f"layer {i} ({a}) to layer {i + 1} ({b})" for i, (a, b) in enumerate(zip(cfg.hidden, cfg.hidden[1:]), 1)
               if a != b]
    if unequal:
        return (f"Residual connections (residual) add a hidden layer's input to its output, so consecutive hidden "
                f"layers need one width: hidden = {_short(format_value(cfg.hidden), 60)} changes width from "
                f"{', '.join(unequal[:3])}{' and more' if len(unequal) > 3 else ''}")
    return None


def by_hand_problem(cfg: RunConfig, training: bool = True) -> str | None:
    """Why ``backprop="by_hand"`` cannot train this config (None when it can, or autograd is chosen).

    ``training=False`` asks only whether the by-hand network can compute this config's gradients
    (whatever ``backprop`` says; the optimizer does not matter then)."""
    if training and cfg.backprop != "by_hand":
        return None
    wrong = []
    if cfg.arch != "mlp":
        wrong.append(f"architecture {_short(cfg.arch)} (only mlp)")
    if "," in cfg.activation:
        wrong.append(f"an activation per layer {_short(cfg.activation)} (only one for all layers)")
    elif cfg.activation not in BY_HAND_ACTIVATIONS:
        wrong.append(f"activation {_short(cfg.activation)} (only {', '.join(BY_HAND_ACTIVATIONS)})")
    if cfg.norm != "none":
        wrong.append(f"normalization {_short(cfg.norm)} (only none)")
    if cfg.dropout > 0:
        wrong.append(f"dropout {cfg.dropout:g} (only 0)")
    if cfg.residual:
        wrong.append("residual connections (only none)")
    if not wrong:
        return None
    return ("Backprop (backprop) = 'by_hand': the by-hand network (core/scratch.py) is a plain MLP trained with "
            "the update rules written out in core/optimizers.py; this config has " + "; ".join(wrong))
