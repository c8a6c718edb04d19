"""Inside a CNN: one convolution worked through by hand, how much structure first-layer filters have, and the
feature maps of one image through every conv layer.

The network is the one :func:`core.engine.models.build_model` makes for a ``RunConfig`` with ``arch="cnn"``
(its initialization, or trained weights loaded into it). Bad input raises ``ValueError`` with a readable
message: an image index out of range, a dataset that is not images, a kernel larger than its input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from core.engine import catalog, probes
from core.engine.config import MAX_HIDDEN_LAYERS, MAX_WIDTH, RunConfig, conv_output_size
from core.engine.data import Dataset, batch_features
from core.engine.models import build_model, count_parameters, parameter_shapes
from core.lab.compare import ComparisonConfig

CNN_LABEL, MLP_LABEL = "CNN", "MLP"


# --- one convolution by hand ------------------------------------------------------------------------
@dataclass(frozen=True)
class HandConvolution:
    """Output ``(out_channel, row, col)`` of a convolution, written out: the input patch the kernel covers
    (zeros where it hangs over the padded border), the kernel, their elementwise product, and
    ``product.sum() + bias``."""

    patch: np.ndarray  # [in_channels, kh, kw]
    kernel: np.ndarray  # [in_channels, kh, kw]
    product: np.ndarray  # patch * kernel
    bias: float
    value: float  # product.sum() + bias
    out_channel: int
    row: int
    col: int
    top: int  # the patch's first input row (negative inside the top padding)
    left: int  # the patch's first input column


def conv_output_shape(input_hw: tuple[int, int], kernel_hw: tuple[int, int], stride: int, padding: int) -> tuple[int, int]:
    """(rows, cols) of the output; ValueError when the kernel is larger than the padded input or the stride
    leaves no output."""
    if stride < 1 or padding < 0:
        raise ValueError(f"Stride must be at least 1 and padding at least 0, got stride {stride}, padding {padding}")
    (h, w), (kh, kw) = input_hw, kernel_hw
    if kh > h + 2 * padding or kw > w + 2 * padding:
        raise ValueError(f"The {kh}x{kw} kernel is larger than its {h}x{w} input with padding {padding} "
                         f"({h + 2 * padding}x{w + 2 * padding}): it has no position to sit at")
    return conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)


def hand_convolution(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_channel: int,
                     row: int, col: int, stride: int = 1, padding: int = 0) -> HandConvolution:
    """One output value of ``conv2d(input, weight, bias, stride, padding)`` computed by hand.

    ``input`` is one image or feature map ``[in_channels, H, W]``; ``weight`` is ``[out, in, kh, kw]``."""
    if input.dim() != 3 or weight.dim() != 4:
        raise ValueError(f"hand_convolution needs an input [channels, height, width] and a weight "
                         f"[out, in, kh, kw]; got shapes {tuple(input.shape)} and {tuple(weight.shape)}")
    if weight.shape[1] != input.shape[0]:
        raise ValueError(f"The kernel reads {weight.shape[1]} input channels but the input has {input.shape[0]}")
    rows, cols = conv_output_shape(tuple(input.shape[1:]), tuple(weight.shape[2:]), stride, padding)
    _check_index("Output channel", out_channel, weight.shape[0])
    _check_index("Output row", row, rows)
    _check_index("Output column", col, cols)
    kh, kw = weight.shape[2:]
    padded = nn.functional.pad(input.detach(), (padding, padding, padding, padding))
    top, left = row * stride, col * stride
    patch = padded[:, top:top + kh, left:left + kw].double().cpu().numpy()
    kernel = weight[out_channel].detach().double().cpu().numpy()
    product = patch * kernel
    b = float(bias[out_channel].detach()) if bias is not None else 0.0
    return HandConvolution(patch, kernel, product, b, float(product.sum() + b), out_channel, row, col,
                           top - padding, left - padding)


def _check_index(what: str, index: int, size: int) -> None:
    if not 0 <= int(index) < size:
        raise ValueError(f"{what} {index} is out of range: there are {size} (0-{size - 1})")


# --- how much structure a filter has ------------------------------------------------------------------
# The measure lives in the engine, which sends it at every log point of a CNN's run (core.engine.events.ConvFilters).
random_smoothness = probes.random_smoothness
filter_smoothness = probes.filter_smoothness


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first convolution (ValueError for a network without one, e.g. an MLP)."""
    conv = probes.first_conv(model)
    if conv is not None:
        return conv
    raise ValueError("This network has no convolution layer: choose the CNN architecture (arch=cnn)")


# --- the network and one image ------------------------------------------------------------------------
def image_dataset(cfg: RunConfig) -> Dataset:
    """The config's dataset, which must hold images [channels, height, width] (ValueError otherwise)."""
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    if not ds.is_image or len(ds.input_shape) != 3:
        raise ValueError(f"{ds.title} is not an image dataset (its inputs have shape {ds.input_shape}; CSV pixel "
                         "columns that are not a square number, or a 2-D toy set): a CNN needs images; choose MNIST, "
                         "Fashion-MNIST, Digits, an image-folder zip or a CSV of square images")
    return ds


def cnn_model(cfg: RunConfig, ds: Dataset, weights: Mapping[str, np.ndarray] | None = None) -> nn.Sequential:
    """The CNN ``cfg`` builds, at its initialization (same seed as its run) or with ``weights`` (a state_dict of
    arrays, e.g. a finished run's stored weights) loaded; in eval mode."""
    if cfg.arch != "cnn":
        raise ValueError(f"Architecture (arch) = {cfg.arch!r} has no convolution layer: choose cnn")
    model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
    if weights is not None:
        try:
            model.load_state_dict({name: torch.from_numpy(np.asarray(a)) for name, a in weights.items()})
        except RuntimeError as exc:
            raise ValueError(f"The stored weights do not fit the network this config builds ({exc})") from None
    return model.eval()


def test_image(ds: Dataset, index: int) -> tuple[torch.Tensor, int]:
    """Test image ``index`` as floats in [0, 1] [channels, height, width], and its label."""
    n = len(ds.y_test)
    if not 0 <= int(index) < n:
        raise ValueError(f"Test image {index} is out of range: {ds.title} has {n:,} test images (0-{n - 1:,})")
    return batch_features(ds.x_test[int(index)].unsqueeze(0))[0], int(ds.y_test[int(index)])


@dataclass(frozen=True)
class FeatureMap:
    """One stage of one conv layer: its channels' maps [channels, height, width]."""

    layer: int  # 1 = the first conv layer
    stage: str  # "activation" or "pooling"
    maps: np.ndarray


@dataclass(frozen=True)
class FeatureMaps:
    """One image through a CNN: each conv layer's input (what its kernels slide over) and output maps, and the
    predicted class probabilities."""

    conv_inputs: list[torch.Tensor]  # [in_channels, H, W] per conv layer
    convs: list[nn.Conv2d]
    maps: list[FeatureMap]
    probabilities: np.ndarray  # [classes]
    pre_activation: list[torch.Tensor]  # each conv's own output (before norm and activation)


def feature_maps(model: nn.Sequential, image: torch.Tensor) -> FeatureMaps:
    """Run one image [channels, H, W] through ``model`` (eval mode, no gradients), keeping every conv layer's
    input, its maps after the activation and after pooling (where the network pools), and the softmax."""
    if image.dim() != 3:
        raise ValueError(f"feature_maps needs one image [channels, height, width], got shape {tuple(image.shape)}")
    model.eval()
    inputs, convs, pre, maps = [], [], [], []
    x = image.unsqueeze(0)
    spatial = True
    with torch.no_grad():
        for module in model:
            if isinstance(module, nn.Conv2d):
                inputs.append(x[0])
                convs.append(module)
            x = module(x)
            if isinstance(module, nn.Flatten):
                spatial = False
            if not spatial or not convs:
                continue
            if isinstance(module, nn.Conv2d):
                pre.append(x[0])
            elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                maps.append(FeatureMap(len(convs), "pooling", x[0].numpy().copy()))
            elif not isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.Dropout, nn.Dropout2d)):
                maps.append(FeatureMap(len(convs), "activation", x[0].numpy().copy()))
        probabilities = torch.softmax(x[0], dim=0).numpy()
    return FeatureMaps(inputs, convs, maps, probabilities, pre)


def hand_convolution_at(fm: FeatureMaps, layer: int, out_channel: int, row: int, col: int) -> HandConvolution:
    """:func:`hand_convolution` of conv layer ``layer`` (1-based) at one output position, on the input that layer
    saw for the image of ``fm``."""
    if not 1 <= int(layer) <= len(fm.convs):
        raise ValueError(f"Conv layer {layer} is out of range: the network has {len(fm.convs)} (1-{len(fm.convs)})")
    conv = fm.convs[layer - 1]
    stride, padding = conv.stride[0], conv.padding[0]
    return hand_convolution(fm.conv_inputs[layer - 1], conv.weight, conv.bias, out_channel, row, col, stride, padding)


# --- the CNN against an MLP of at least as many parameters ----------------------------------------------
def conv_layer_count(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """How many convolution layers ``cfg`` builds on this input (0 for an MLP)."""
    return sum(1 for shape in parameter_shapes(cfg, input_shape, n_classes) if len(shape) == 4)


def matched_mlp_hidden(cnn: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> tuple[int, ...]:
    """Hidden widths of the MLP that races ``cnn``: one hidden layer per CNN layer (its convs and its head), all of
    one width (at most MAX_HIDDEN_LAYERS layers), the smallest width whose parameter count is at least the CNN's
    (ValueError when even MAX_WIDTH is short of it)."""
    target = count_parameters(cnn, input_shape, n_classes)
    depth = min(max(conv_layer_count(cnn, input_shape, n_classes) + len(cnn.hidden), 1), MAX_HIDDEN_LAYERS)
    mlp = cnn.replace(arch="mlp")

    def count(width: int) -> int:
        return count_parameters(mlp.replace(hidden=(width,) * depth), input_shape, n_classes)

    if count(MAX_WIDTH) < target:
        raise ValueError(f"No MLP of {depth} hidden layers up to {MAX_WIDTH:,} wide has the CNN's {target:,} "
                         "parameters: choose a smaller CNN")
    low, high = 1, MAX_WIDTH  # the count grows with the width: the smallest width reaching the target
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < target else (low, mid)
    return (low,) * depth


def cnn_against_mlp(cnn: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> ComparisonConfig:
    """The CNN and the MLP of :func:`matched_mlp_hidden` as one comparison: the same seed (split, subset, batch
    order), data, optimizer and length; only the architecture differs."""
    if cnn.arch != "cnn":
        raise ValueError(f"Architecture (arch) = {cnn.arch!r} has no convolution layer: choose cnn")
    hidden = matched_mlp_hidden(cnn, input_shape, n_classes)
    return ComparisonConfig(cnn, ((CNN_LABEL, {}), (MLP_LABEL, {"arch": "mlp", "hidden": hidden})))


def cnn_against_mlp_here(cnn: RunConfig) -> ComparisonConfig:
    """:func:`cnn_against_mlp` on the config's own dataset (loaded once per process; ValueError when it holds no
    images, DatasetUnavailable when it is missing)."""
    ds = image_dataset(cnn)
    return cnn_against_mlp(cnn, ds.input_shape, ds.n_classes)
