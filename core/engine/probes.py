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
from torch import nn

HEATMAP_MAX = 64
HIST_BINS = 64  # a power of two: a histogram over [-b, b] re-bins exactly onto [-2^k b, 2^k b] for 2^k <= HIST_BINS / 2
SMALLEST_HIST_BOUND = 2.0 ** -24  # the range of a layer whose weights are all zero
NEAR_ZERO = 1e-3  # |w| below this counts as (near) zero: L1's sparsity
SIGMOID_SATURATED = 0.025  # sigmoid'(z) = y(1-y) below 10% of its maximum 0.25
TANH_SATURATED = 0.1  # tanh'(z) = 1 - y^2 below 10% of its maximum 1
MEASURED_ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the others get no saturation figure
MAX_FILTERS = 64  # first-layer filters a log point sends (a CNN's live filters)


def per_channel(d: torch.Tensor) -> torch.Tensor:
    """|W - W_0| [lanes, out, in, kh, kw] of a conv layer as [lanes, out, in]: the mean over each kernel, one
    cell per (output, input) channel pair; a dense layer's [lanes, out, in] as it is."""
    return d.mean(dim=(3, 4)) if d.dim() == 5 else d


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
    |W_t - W_0| as [lanes, <=64, <=64] float32 when ``heatmaps``: rows are output units or channels, columns
    inputs, or for a conv layer input channels (:func:`per_channel`)); moves W_prev to W_t."""
    change, delta, maps = [], [], []
    for w, w0, wp in zip(weights, initial, previous):
        w = w.detach()
        d0 = (w - w0).abs()
        change.append(d0.flatten(1).mean(dim=1))
        delta.append((w - wp).abs().flatten(1).mean(dim=1))
        wp.copy_(w)
        if heatmaps:
            d0 = per_channel(d0)
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


# --- a CNN's first-layer filters --------------------------------------------------------------------
def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The model's first convolution, found by its type (None for a network without one)."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def random_smoothness(kernel_size: int = 3) -> float:
    """Moran's I of filters whose weights are independent draws (any initialization): exactly -1/(n-1)
    in expectation, n = kernel_size**2 weights."""
    return -1.0 / (kernel_size * kernel_size - 1)


def filter_smoothness(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each filter's spatial smoothness: Moran's I of its kh x kw weights with rook (up/down/left/right)
    neighbours, averaged over its input channels. [out, in, kh, kw] -> [out].

    I = (n / W) * sum over neighbour pairs (w_i - m)(w_j - m) / sum_i (w_i - m)^2, W = number of ordered
    pairs. Independent random weights give -1/(n-1) on average (:func:`random_smoothness`); smooth blobs and
    edges, whose neighbours agree, give values towards +1; a checkerboard gives values near -1."""
    w = torch.as_tensor(np.asarray(weight) if not isinstance(weight, torch.Tensor) else weight).detach().double().cpu()
    if w.dim() != 4 or w.shape[2] < 2 or w.shape[3] < 2:
        raise ValueError(f"Filter smoothness needs conv weights [out, in, kh, kw] with kh, kw >= 2, got shape "
                         f"{tuple(w.shape)}")
    d = w - w.mean(dim=(2, 3), keepdim=True)
    across = (d[..., :, 1:] * d[..., :, :-1]).sum(dim=(2, 3))  # left-right pairs, each counted once
    down = (d[..., 1:, :] * d[..., :-1, :]).sum(dim=(2, 3))
    kh, kw = w.shape[2:]
    n = kh * kw
    pairs = 2 * (kh * (kw - 1) + kw * (kh - 1))  # ordered neighbour pairs
    spread = (d * d).sum(dim=(2, 3))
    moran = (n / pairs) * 2 * (across + down) / spread.clamp_min(1e-300)
    moran = torch.where(spread > 0, moran, torch.zeros_like(moran))  # a constant filter: no structure to measure
    return moran.mean(dim=1).numpy()


def smoothable(conv: nn.Conv2d) -> bool:
    """Whether :func:`filter_smoothness` can measure this layer's kernels (at least 2x2)."""
    return min(conv.kernel_size) >= 2
