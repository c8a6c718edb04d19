"""Build a model from a :class:`RunConfig`. No I/O here.

Initialization always draws from an explicit ``torch.Generator`` so that concurrent runs
never disturb each other's randomness.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from core.engine.config import POOL_SIZE, RunConfig, conv_stages

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class InvertedDropout(nn.Module):
    """Dropout written out by hand: zero each unit with probability p, scale the rest by 1/(1-p).

    Off in eval mode. Draws from ``self.generator`` (set per run) instead of the global RNG.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


ACTIVATION_MODULES = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU, "gelu": nn.GELU, "linear": nn.Identity,
}
_GAIN_NAME = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu",
              "elu": "relu", "gelu": "relu", "linear": "linear"}


def make_activation(name: str) -> nn.Module:
    return ACTIVATION_MODULES[name]()


def _norm(kind: str, width: int, conv: bool) -> nn.Module | None:
    if kind == "batchnorm":
        return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)
    if kind == "layernorm":
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)
    return None


def _dropout(cfg: RunConfig) -> nn.Module | None:
    if cfg.dropout <= 0:
        return None
    return InvertedDropout(cfg.dropout) if cfg.dropout_impl == "inverted" else nn.Dropout(cfg.dropout)


class Residual(nn.Module):
    """x + body(x): a hidden layer whose input is added to its output (widths equal)."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _block(layer: nn.Module, width: int, cfg: RunConfig, conv: bool, activation: str) -> list[nn.Module]:
    parts = [layer, _norm(cfg.norm, width, conv), make_activation(activation)]
    if not conv:
        parts.append(_dropout(cfg))
    return [p for p in parts if p is not None]


def build_model(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int,
                generator: torch.Generator | None = None) -> nn.Sequential:
    """MLP (or the small CNN) for ``input_shape`` -> ``n_classes`` logits, initialised per ``cfg.init``."""
    layers: list[nn.Module] = []
    if cfg.arch == "cnn":
        stages = conv_stages(cfg, input_shape)  # a ConfigError (a ValueError) naming what does not fit
        c_in = input_shape[0]
        for stage in stages:
            conv = nn.Conv2d(c_in, stage.channels, cfg.conv_kernel, stride=cfg.conv_stride, padding=cfg.conv_padding)
            layers += _block(conv, stage.channels, cfg, conv=True, activation=cfg.activation)
            if cfg.conv_pool in POOLS:
                layers.append(POOLS[cfg.conv_pool](POOL_SIZE))
            c_in = stage.channels
        features = math.prod(stages[-1].out_shape)
    else:
        features = math.prod(input_shape)
    layers.append(nn.Flatten())
    for k, (width, activation) in enumerate(zip(cfg.hidden, cfg.layer_activations)):
        block = _block(nn.Linear(features, width), width, cfg, conv=False, activation=activation)
        layers += [Residual(*block)] if cfg.residual and k > 0 else block
        features = width
    layers.append(nn.Linear(features, n_classes))
    model = nn.Sequential(*layers)
    init_weights(model, cfg, generator)
    return model


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers with a weight matrix (Linear, Conv2d), in forward order, with readable names."""
    out = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            kind = "conv" if isinstance(module, nn.Conv2d) else "fc"
            out.append((f"{kind}{len(out) + 1}", module))
    return out


def init_weights(model: nn.Module, cfg: RunConfig, generator: torch.Generator | None) -> None:
    """Initialise every Linear/Conv per ``cfg.init`` (PyTorch default, xavier, he, normal, zeros); xavier's and
    he's gain follow the activation after the layer (the output layer takes the last hidden layer's)."""
    layers = weight_layers(model)
    hidden = cfg.layer_activations or (cfg.activation,)
    followers = [hidden[0]] * (len(layers) - len(hidden) - 1) + list(hidden) + [hidden[-1]]
    with torch.no_grad():
        for (_, layer), activation in zip(layers, followers):
            gain_name = _GAIN_NAME[activation]
            w, b = layer.weight, layer.bias
            fan_in = w[0].numel()
            if cfg.init == "default":  # exactly what nn.Linear / nn.Conv2d do, but from our generator
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(b, -bound, bound, generator=generator)
                continue
            if cfg.init == "xavier":
                nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(gain_name), generator=generator)
            elif cfg.init == "he":
                nonlinearity = "leaky_relu" if gain_name == "leaky_relu" else "relu"
                nn.init.kaiming_normal_(w, nonlinearity=nonlinearity, generator=generator)
            elif cfg.init == "normal":
                nn.init.normal_(w, 0.0, cfg.init_std, generator=generator)
            elif cfg.init == "zeros":
                nn.init.zeros_(w)
            nn.init.zeros_(b)


def set_dropout_generator(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, InvertedDropout):
            module.generator = generator


def parameter_shapes(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> list[tuple[int, ...]]:
    """The shape of every parameter tensor :func:`build_model` makes for ``cfg``, in its order, without building
    it (a CNN on input that is not an image counts as the MLP; building it raises)."""
    norm = cfg.norm in ("batchnorm", "layernorm")
    shapes: list[tuple[int, ...]] = []
    features = math.prod(input_shape)
    if cfg.arch == "cnn" and len(input_shape) == 3:
        stages = conv_stages(cfg, input_shape)
        c_in, k = input_shape[0], cfg.conv_kernel
        for stage in stages:
            c = stage.channels
            shapes += [(c, c_in, k, k), (c,)] + [(c,)] * (2 * norm)
            c_in = c
        features = math.prod(stages[-1].out_shape)
    for width in cfg.hidden:
        shapes += [(width, features), (width,)] + [(width,)] * (2 * norm)
        features = width
    return shapes + [(n_classes, features), (n_classes,)]


def count_parameters(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Parameters of the model :func:`build_model` makes for ``cfg`` (the one counter: runs, lanes, caps, sweeps)."""
    return sum(math.prod(shape) for shape in parameter_shapes(cfg, input_shape, n_classes))


def penalty_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights that L1/L2 penalise: the Linear/Conv weight tensors (not biases, not norm scales)."""
    return [layer.weight for _, layer in weight_layers(model)]
