"""Per-layer probes, each written once over a leading lane dimension.

Every function takes tensors shaped ``[lanes, ...]``: a single run (core.engine.lanes.ModuleLanes)
passes its tensors with ``unsqueeze(0)`` (a view), a batched grid (core.engine.batched.StackedLanes)
its stacked ``[cells, out, in]`` tensors as they are. Cheap enough for every log point: a few
reductions per weight tensor and one forward pass of a small probe batch.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

HEATMAP_MAX = 64
HIST_BINS = 64  # a power of two: a histogram over [-b, b] re-bins exactly onto [-2^k b, 2^k b] for 2^k <= HIST_BINS / 2
SMALLEST_HIST_BOUND = 2.0 ** -24  # the range of a layer whose weights are all zero
NEAR_ZERO = 1e-3  # |w| below this counts as (near) zero: L1's sparsity
SIGMOID_SATURATED = 0.025  # sigmoid'(z) = y(1-y) below 10% of its maximum 0.25
TANH_SATURATED = 0.1  # tanh'(z) = 1 - y^2 below 10% of its maximum 1
MEASURED_ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the others get no saturation figure


def as_matrices(w: torch.Tensor) -> torch.Tensor:
    """[lanes, out, ...] weights as [lanes, out, in] (conv kernels flattened per output channel)."""
    return w.reshape(w.shape[0], w.shape[1], -1)


@torch.no_grad()
def grad_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """[layers, lanes] norm of each lane's slice of each layer's gradient [lanes, ...]."""
    return torch.stack([g.flatten(1).norm(dim=1) for g in grads])


def weight_penalty(weights: Sequence[torch.Tensor], l1: float, l2: float) -> torch.Tensor | None:
    """[lanes] l1 * sum|w| + l2 * sum w^2 over each lane's weights (None when both are 0)."""
    if l1 == 0 and l2 == 0:
        return None
    total = torch.zeros(weights[0].shape[0], device=weights[0].device)
    if l1:
        total = total + l1 * sum(w.abs().flatten(1).sum(dim=1) for w in weights)
    if l2:
        total = total + l2 * sum(w.pow(2).flatten(1).sum(dim=1) for w in weights)
    return total


@torch.no_grad()
def weight_changes(weights: Sequence[torch.Tensor], initial: Sequence[torch.Tensor], previous: Sequence[torch.Tensor],
                   heatmaps: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """([layers, lanes] mean |W_t - W_0|, [layers, lanes] mean |W_t - W_prev|, per layer the pooled
    |W_t - W_0| as [lanes, <=64, <=64] float32 when ``heatmaps``); moves W_prev to W_t."""
    change, delta, maps = [], [], []
    for w, w0, wp in zip(weights, initial, previous):
        w = w.detach()
        d0 = as_matrices(w - w0).abs()
        change.append(d0.mean(dim=(1, 2)))
        delta.append((w - wp).abs().flatten(1).mean(dim=1))
        wp.copy_(w)
        if heatmaps:
            size = (min(HEATMAP_MAX, d0.shape[1]), min(HEATMAP_MAX, d0.shape[2]))
            maps.append(F.adaptive_avg_pool2d(d0.float().unsqueeze(1), size).squeeze(1).cpu().numpy().astype(np.float32))
    return torch.stack(change), torch.stack(delta), maps


def unit_saturation(activation: str, y: torch.Tensor) -> torch.Tensor | None:
    """[lanes] share of saturated (sigmoid, tanh) or dead (ReLU) units of post-activation outputs
    ``y`` [lanes, batch, units, *positions]; None for the other activations.

    Saturated: the activation's derivative below 10% of its maximum (share of all values); dead: a
    unit (channel) that is zero for every example and position of the probe batch."""
    if activation == "sigmoid":
        return ((y * (1 - y)) < SIGMOID_SATURATED).flatten(1).float().mean(dim=1)
    if activation == "tanh":
        return ((1 - y * y) < TANH_SATURATED).flatten(1).float().mean(dim=1)
    if activation == "relu":
        alive = (y > 0).flatten(3).any(dim=3) if y.dim() > 3 else y > 0  # [lanes, batch, units]
        return 1.0 - alive.any(dim=1).float().mean(dim=1)
    return None


def hist_bound(absmax: float) -> float:
    """The histogram range's half-width for weights up to ``absmax``: the smallest power of two >= it. Ranges
    of one layer over time are then nested by powers of two, so each log point's bins fit one fixed set."""
    return 2.0 ** math.ceil(math.log2(max(absmax, SMALLEST_HIST_BOUND)))


@torch.no_grad()
def weight_distribution(weights: Sequence[torch.Tensor]) -> tuple[list[float], list[float], list[float], list[np.ndarray]]:
    """Per weight tensor: share of |w| < NEAR_ZERO, max |w|, the histogram's bound b (:func:`hist_bound`) and
    a HIST_BINS-bin histogram of w over [-b, b]."""
    near_zero, absmax, bounds, hists = [], [], [], []
    for weight in weights:
        w = weight.detach().flatten().float()
        top = float(w.abs().max())
        bound = hist_bound(top)
        near_zero.append(float((w.abs() < NEAR_ZERO).float().mean()))
        absmax.append(top or 1e-12)
        bounds.append(bound)
        hists.append(torch.histc(w, bins=HIST_BINS, min=-bound, max=bound).cpu().numpy().astype(np.int32))
    return near_zero, absmax, bounds, hists
