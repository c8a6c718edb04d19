"""ReLU kinks: where a central difference averages two one-sided slopes and backprop takes one."""
from __future__ import annotations

import torch
from torch import nn

from core.engine.config import RunConfig

KINK_ACTIVATIONS = ("relu", "leaky_relu")


def move_to_kinks(cfg: RunConfig, model: nn.Module, x: torch.Tensor) -> int:
    """Shift each hidden layer's bias so that every unit's pre-activation on the first example is 0,
    the ReLU's kink; returns how many pre-activations now sit there. ReLU-type MLPs without norm only."""
    if cfg.arch != "mlp" or cfg.activation not in KINK_ACTIVATIONS or cfg.norm != "none" or not cfg.hidden:
        raise ValueError("The kink switch needs an MLP with ReLU or leaky ReLU, hidden layers and no normalization "
                         f"(this config: {cfg.arch}, {cfg.activation}, norm {cfg.norm}, {len(cfg.hidden)} hidden layers)")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    placed = 0
    with torch.no_grad():
        for linear in linears:
            z = {}
            handle = linear.register_forward_hook(lambda _m, _i, out: z.setdefault("z", out))
            was = [m.training for m in model.modules()]
            model.eval()
            model(x[:1])
            for m, t in zip(model.modules(), was):
                m.training = t
            handle.remove()
            linear.bias -= z["z"][0]
            placed += linear.out_features
    return placed


def near_kinks(model: nn.Module, x: torch.Tensor, width: float) -> tuple[int, int]:
    """(pre-activations within ``width`` of a ReLU / leaky-ReLU kink, all of them) for one forward of ``x``."""
    counts = [0, 0]

    def hook(_module: nn.Module, inputs: tuple, _out) -> None:
        z = inputs[0]
        counts[0] += int((z.abs() < width).sum())
        counts[1] += z.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return counts[0], counts[1]

