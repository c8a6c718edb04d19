"""The CNN figures (app/figures/cnn.py) draw what core.lab.convnet computed: every filter and map in its tile,
the hand convolution's numbers, the true class marked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.figures import cnn as figures
from core.lab import convnet


def test_mosaic_puts_every_tile_in_its_place_with_gaps_between():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    grid, corners = figures.mosaic(tiles, cols=2)
    assert grid.shape == (3 * 2 + 2 * figures.GAP, 2 * 3 + figures.GAP)
    for tile, (x, y) in zip(tiles, corners):
        np.testing.assert_array_equal(grid[y:y + 2, x:x + 3], tile)
    assert np.isnan(grid).sum() == grid.size - tiles.size  # everything else is a blank gap


def test_filters_figure_draws_every_filter_on_a_symmetric_scale_with_its_smoothness():
    weight = torch.randn(6, 1, 3, 3, generator=torch.Generator().manual_seed(0)).numpy()
    smooth = convnet.filter_smoothness(weight)
    fig = figures.filters_figure(weight, smooth)
    (heat,) = fig.data
    assert heat.zmin == -heat.zmax == -np.abs(weight).max()
    z = np.asarray(heat.z, dtype=float)
    assert np.nansum(z) == pytest.approx(weight.round(4).sum(), abs=1e-3)
    assert [a.text for a in fig.layout.annotations] == [f"{i}: I={s:+.2f}" for i, s in enumerate(smooth)]


def test_feature_maps_share_one_scale():
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 3.0)])
    (heat,) = figures.feature_maps_figure(maps, "conv 1").data
    assert (heat.zmin, heat.zmax) == (0.0, 3.0)
    (flat,) = figures.feature_maps_figure(np.zeros((2, 4, 4)), "dead").data
    assert flat.zmax > flat.zmin  # all-zero maps (dead ReLUs) still draw


def test_hand_convolution_figure_shows_its_numbers_and_their_sum():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.rand(1, 5, 5, generator=g), torch.randn(2, 1, 3, 3, generator=g), torch.randn(2, generator=g)
    hand = convnet.hand_convolution(x, w, b, 1, 2, 0, stride=1, padding=1)
    fig = figures.hand_convolution_figure(hand)
    patch, kernel, product = fig.data
    for trace, values in ((patch, hand.patch[0]), (kernel, hand.kernel[0]), (product, hand.product[0])):
        np.testing.assert_allclose([[float(t) for t in row] for row in trace.text], values, atol=6e-3)
    assert f"= {hand.value:+.4f}" in fig.layout.title.text
    deep = convnet.hand_convolution(torch.rand(6, 4, 4), torch.randn(1, 6, 3, 3), None, 0, 0, 0)
    fig = figures.hand_convolution_figure(deep, layer=2)
    assert len(fig.data) == 3 * figures.MAX_HAND_CHANNELS and "of 6)" in fig.layout.title.text


def test_probabilities_figure_marks_the_true_class():
    fig = figures.probabilities_figure(np.array([0.1, 0.7, 0.2]), ["a", "b", "c"], true_label=2)
    (bars,) = fig.data
    assert list(bars.x) == [0.1, 0.7, 0.2] and list(bars.marker.color).index("#2ca02c") == 2
