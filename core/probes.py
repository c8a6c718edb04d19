"""Per-layer probes: gradient norms, weight change, saturated / dead units.

Cheap enough for every log point: a few reductions per weight tensor and one forward pass
of a small probe batch with hooks on the activation modules.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEATMAP_MAX = 64
HIST_BINS = 40
NEAR_ZERO = 1e-3  # |w| below this counts as (near) zero: L1's sparsity
SIGMOID_SATURATED = 0.025  # sigmoid'(z) = y(1-y) below 10% of its maximum 0.25
TANH_SATURATED = 0.1  # tanh'(z) = 1 - y^2 below 10% of its maximum 1


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight tensor as [out, in] (conv kernels flattened per output channel)."""
    return w.reshape(w.shape[0], -1)


def pooled_abs(delta: torch.Tensor, size: int = HEATMAP_MAX) -> np.ndarray:
    """|delta| as a matrix, average-pooled to at most size x size (float32)."""
    m = as_matrix(delta).abs()
    out_h, out_w = min(size, m.shape[0]), min(size, m.shape[1])
    pooled = F.adaptive_avg_pool2d(m[None, None].float(), (out_h, out_w))[0, 0]
    return pooled.cpu().numpy().astype(np.float32)


class WeightTracker:
    """Remembers W_0 and the weights at the previous log point of each layer."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.initial = [layer.weight.detach().clone() for layer in layers]
        self.previous = [w.clone() for w in self.initial]

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        norms = [layer.weight.grad.norm() if layer.weight.grad is not None else torch.zeros((), device=layer.weight.device)
                 for layer in self.layers]
        return torch.stack(norms)

    @torch.no_grad()
    def changes(self, with_heatmaps: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
        """(mean |W_t - W_0|, mean |W_t - W_prev|, pooled heatmaps) and moves W_prev to W_t."""
        total, delta, maps = [], [], []
        for layer, w0, wp in zip(self.layers, self.initial, self.previous):
            w = layer.weight.detach()
            d0 = w - w0
            total.append(d0.abs().mean())
            delta.append((w - wp).abs().mean())
            wp.copy_(w)
            if with_heatmaps:
                maps.append(pooled_abs(d0))
        return torch.stack(total), torch.stack(delta), maps


@torch.no_grad()
def weight_distribution(weights: list[torch.Tensor]) -> tuple[list[float], list[float], list[np.ndarray]]:
    """Per weight tensor: share of |w| < NEAR_ZERO, max |w|, and a histogram of w over [-max, max]."""
    near_zero, absmax, hists = [], [], []
    for weight in weights:
        w = weight.detach().flatten().float()
        top = float(w.abs().max()) or 1e-12
        near_zero.append(float((w.abs() < NEAR_ZERO).float().mean()))
        absmax.append(top)
        hists.append(torch.histc(w, bins=HIST_BINS, min=-top, max=top).cpu().numpy().astype(np.int64))
    return near_zero, absmax, hists


class ActivationProbe:
    """Forward hooks on activation modules measuring saturation (sigmoid/tanh) or dead units (ReLU)."""

    def __init__(self, model: nn.Module, n_weight_layers: int):
        self.modules = [m for m in model.modules() if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        self.all_acts = [m for m in model.modules()
                         if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Identity))]
        self.n_weight_layers = n_weight_layers
        self.values: dict[int, float] = {}

    def _hook(self, index: int):
        def hook(module: nn.Module, _inp, out: torch.Tensor) -> None:
            y = out.detach()
            if isinstance(module, nn.Sigmoid):
                frac = ((y * (1 - y)) < SIGMOID_SATURATED).float().mean()
            elif isinstance(module, nn.Tanh):
                frac = ((1 - y * y) < TANH_SATURATED).float().mean()
            else:  # ReLU: a unit is dead when it is zero for every example of the probe batch
                per_unit = (y > 0).reshape(y.shape[0], y.shape[1], -1).any(dim=2).any(dim=0)
                frac = 1.0 - per_unit.float().mean()
            self.values[index] = float(frac)
        return hook

    @torch.no_grad()
    def measure(self, model: nn.Module, x: torch.Tensor) -> list[float | None]:
        """Saturation per weight layer (None where the layer has no sigmoid/tanh/ReLU after it)."""
        if not self.modules:
            return [None] * self.n_weight_layers
        self.values = {}
        handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.all_acts)
                   if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        was_training = model.training
        model.eval()
        try:
            model(x)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        # the i-th activation follows the i-th weight layer; the output layer has none
        return [self.values.get(i) for i in range(self.n_weight_layers)]
