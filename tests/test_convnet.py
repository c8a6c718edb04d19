"""Inside a CNN (core/lab/convnet.py) against its oracles: the hand convolution against conv2d, the filter
smoothness against its theory for random weights and on a real training run, the feature maps against the model's
own forward pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.engine.config import RunConfig
from core.lab import convnet
from helpers import train_events

CNN = RunConfig(dataset="digits", arch="cnn", hidden=(32,), epochs=3, batch_size=32, log_every=50, seed=1)


# --- the hand convolution ----------------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 1), (3, 2), (1, 2)])
def test_hand_convolution_equals_conv2d_at_every_position(stride, padding):
    g = torch.Generator().manual_seed(stride * 10 + padding)
    x = torch.randn(3, 7, 9, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    oracle = nn.functional.conv2d(x.unsqueeze(0), w, b, stride=stride, padding=padding)[0]
    rows, cols = convnet.conv_output_shape((7, 9), (3, 3), stride, padding)
    assert (rows, cols) == tuple(oracle.shape[1:])
    for channel in range(4):
        for row in range(rows):  # every position, padded borders and corners included
            for col in range(cols):
                hand = convnet.hand_convolution(x, w, b, channel, row, col, stride, padding)
                assert hand.value == pytest.approx(oracle[channel, row, col].item(), abs=1e-12)
                assert hand.product.sum() + hand.bias == pytest.approx(hand.value, abs=1e-12)
                np.testing.assert_array_equal(hand.kernel, w[channel].numpy())


def test_the_patch_holds_zeros_where_the_kernel_hangs_over_the_padding():
    x = torch.arange(1.0, 17.0).reshape(1, 4, 4)
    w = torch.ones(1, 1, 3, 3)
    corner = convnet.hand_convolution(x, w, None, 0, 0, 0, stride=1, padding=1)
    assert (corner.top, corner.left) == (-1, -1)
    np.testing.assert_array_equal(corner.patch[0], [[0, 0, 0], [0, 1, 2], [0, 5, 6]])
    assert corner.value == 1 + 2 + 5 + 6 and corner.bias == 0.0


def test_bad_convolutions_say_what_is_wrong():
    x, w = torch.zeros(1, 4, 4), torch.zeros(2, 1, 5, 5)
    with pytest.raises(ValueError, match="larger than its 4x4 input"):
        convnet.hand_convolution(x, w, None, 0, 0, 0)
    assert convnet.conv_output_shape((4, 4), (5, 5), 1, 1) == (2, 2)  # padding gives it room
    w = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="Output channel 2 is out of range"):
        convnet.hand_convolution(x, w, None, 2, 0, 0)
    with pytest.raises(ValueError, match="Output row 2 is out of range"):
        convnet.hand_convolution(x, w, None, 0, 2, 0)
    with pytest.raises(ValueError, match="reads 1 input channels but the input has 3"):
        convnet.hand_convolution(torch.zeros(3, 4, 4), w, None, 0, 0, 0)
    with pytest.raises(ValueError, match="Stride must be at least 1"):
        convnet.hand_convolution(x, w, None, 0, 0, 0, stride=0)


# --- filter smoothness -------------------------------------------------------------------------------
def test_smoothness_of_random_filters_is_moran_expectation():
    """Independent weights: Moran's I averages -1/(n-1) (-1/8 for 3x3), whatever their distribution."""
    g = torch.Generator().manual_seed(0)
    for draw in (torch.randn(20_000, 1, 3, 3, generator=g), torch.rand(20_000, 1, 3, 3, generator=g)):
        assert convnet.filter_smoothness(draw).mean() == pytest.approx(convnet.random_smoothness(3), abs=0.01)
    conv = nn.Conv2d(1, 20_000, 3)  # PyTorch's own initialization of a conv layer
    assert convnet.filter_smoothness(conv.weight).mean() == pytest.approx(-1 / 8, abs=0.01)


def moran_by_definition(grid: np.ndarray) -> float:
    """Moran's I written from its textbook definition: an explicit rook-neighbour weight matrix over the cells."""
    rows, cols = grid.shape
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    near = np.array([[abs(r1 - r2) + abs(c1 - c2) == 1 for r2, c2 in cells] for r1, c1 in cells], dtype=float)
    d = grid.ravel() - grid.mean()
    return len(cells) / near.sum() * (d @ near @ d) / (d @ d)


def test_smoothness_is_morans_i_and_sees_structure():
    g = torch.Generator().manual_seed(1)
    filters = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    expected = [np.mean([moran_by_definition(f[i].numpy()) for i in range(2)]) for f in filters]
    np.testing.assert_allclose(convnet.filter_smoothness(filters), expected, rtol=1e-12)
    ramp = torch.tensor([[0.0, 1, 2], [1, 2, 3], [2, 3, 4]])  # a smooth edge
    checker = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
    ramp_i, checker_i = convnet.filter_smoothness(torch.stack([ramp, checker]).unsqueeze(1))
    assert ramp_i > 0.4 and checker_i < -0.8
    assert convnet.filter_smoothness(torch.ones(1, 1, 3, 3))[0] == 0.0  # a constant filter: no structure, no NaN
    with pytest.raises(ValueError, match="conv weights"):
        convnet.filter_smoothness(torch.zeros(3, 3))


def test_first_layer_filters_grow_smoother_on_a_real_run():
    end, events = train_events(CNN)
    assert end.status == "finished" and end.test_acc > 0.5  # it learned (chance is 0.1)
    weights = next(e for e in events if e.kind == "weights").weights
    ds = convnet.image_dataset(CNN)
    start = convnet.first_conv(convnet.cnn_model(CNN, ds)).weight
    trained = convnet.first_conv(convnet.cnn_model(CNN, ds, weights)).weight
    before, after = convnet.filter_smoothness(start), convnet.filter_smoothness(trained)
    assert after.mean() > before.mean() and (after > before).mean() > 0.5
    # what training added is smooth: well above the -1/8 of unstructured weights
    assert convnet.filter_smoothness(trained - start).mean() > 0.0


# --- feature maps -------------------------------------------------------------------------------------
def test_feature_maps_follow_the_models_own_forward_pass():
    ds = convnet.image_dataset(CNN)
    model = convnet.cnn_model(CNN, ds)
    image, label = convnet.test_image(ds, 3)
    assert image.shape == ds.input_shape and 0 <= label < 10 and 0.0 <= image.min() <= image.max() <= 1.0
    fm = convnet.feature_maps(model, image)
    assert [(m.layer, m.stage) for m in fm.maps] == [(1, "activation"), (2, "activation")]
    first = torch.relu(nn.functional.conv2d(image.unsqueeze(0), fm.convs[0].weight, fm.convs[0].bias, padding=1))[0]
    np.testing.assert_allclose(fm.maps[0].maps, first.detach().numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model(image.unsqueeze(0))[0], 0).numpy()
    np.testing.assert_allclose(fm.probabilities, expected, rtol=1e-5)
    assert fm.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    for layer in (1, 2):  # the hand convolution reads the same value as the layer's own output
        hand = convnet.hand_convolution_at(fm, layer, 5, 0, 7)
        assert hand.value == pytest.approx(fm.pre_activation[layer - 1][5, 0, 7].item(), abs=1e-5)


def test_feature_maps_after_pooling():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                          nn.BatchNorm2d(6), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6, 3))
    fm = convnet.feature_maps(model, torch.rand(1, 8, 8, generator=g))
    assert [(m.layer, m.stage, m.maps.shape) for m in fm.maps] == [
        (1, "activation", (4, 8, 8)), (1, "pooling", (4, 4, 4)), (2, "activation", (6, 2, 2)), (2, "pooling", (6, 1, 1))]
    np.testing.assert_array_equal(fm.conv_inputs[1].numpy(), fm.maps[1].maps)  # conv 2 slides over the pooled maps


def test_bad_input_gets_a_clear_message():
    ds = convnet.image_dataset(CNN)
    with pytest.raises(ValueError, match=f"Test image {len(ds.y_test)} is out of range"):
        convnet.test_image(ds, len(ds.y_test))
    with pytest.raises(ValueError, match="out of range"):
        convnet.test_image(ds, -1)
    with pytest.raises(ValueError, match="not an image dataset"):
        convnet.image_dataset(RunConfig(dataset="moons"))
    with pytest.raises(ValueError, match="has no convolution layer"):
        convnet.cnn_model(CNN.replace(arch="mlp"), ds)
    with pytest.raises(ValueError, match="has no convolution layer"):
        convnet.first_conv(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        convnet.cnn_model(CNN, ds, {"0.weight": np.zeros((2, 1, 3, 3), np.float32)})
    fm = convnet.feature_maps(convnet.cnn_model(CNN, ds), convnet.test_image(ds, 0)[0])
    with pytest.raises(ValueError, match="Conv layer 3 is out of range"):
        convnet.hand_convolution_at(fm, 3, 0, 0, 0)


@pytest.mark.slow
def test_first_layer_filters_grow_smoother_on_real_mnist(shared_mnist):
    """The lesson's CNN on a seeded subset of the real MNIST (skipped where ../shared/datasets lacks it)."""
    cfg = CNN.replace(dataset="mnist", train_limit=1000, epochs=1, hidden=(64,))
    end, events = train_events(cfg)
    assert end.status == "finished" and end.test_acc > 0.5
    weights = next(e for e in events if e.kind == "weights").weights
    ds = convnet.image_dataset(cfg)
    start = convnet.first_conv(convnet.cnn_model(cfg, ds)).weight
    trained = convnet.first_conv(convnet.cnn_model(cfg, ds, weights)).weight
    assert convnet.filter_smoothness(trained).mean() > convnet.filter_smoothness(start).mean()
    assert convnet.filter_smoothness(trained - start).mean() > 0.0
