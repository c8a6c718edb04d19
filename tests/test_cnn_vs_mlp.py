"""The CNN against an MLP of at least as many parameters: the matched widths (counts equal sum(p.numel()) of the
built models), the comparison's family, the outcome sentence against the noise margin, and the lesson's relation on
real Fashion-MNIST and on the Digits fallback (the CNN's validation accuracy is the higher)."""
from __future__ import annotations

import pytest
import torch

from core.engine.catalog import load_dataset
from core.engine.models import build_model, count_parameters
from core.lab.convnet import CNN_LABEL, MLP_LABEL, cnn_against_mlp, matched_mlp_hidden
from core.lessons.noise import Scored, noise_margin
from core.lessons.presets import CNN_LESSON
from core.lessons.sentences import cnn_against_mlp_sentence
from helpers import train_events

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 16, 16)]  # MNIST / Fashion-MNIST, Digits, a colour upload


def numel(cfg, shape, classes=10) -> int:
    return sum(p.numel() for p in build_model(cfg, shape, classes, torch.Generator().manual_seed(0)).parameters())


@pytest.mark.parametrize("shape", SHAPES)
def test_the_mlp_has_at_least_the_cnns_parameters_and_the_counts_are_the_built_models(shape):
    cnn = CNN_LESSON.config
    family = dict(cnn_against_mlp(cnn, shape, 10).family())
    mlp = family[MLP_LABEL]
    assert numel(family[CNN_LABEL], shape) == count_parameters(family[CNN_LABEL], shape, 10)
    assert numel(mlp, shape) == count_parameters(mlp, shape, 10)
    assert numel(mlp, shape) >= numel(family[CNN_LABEL], shape)
    width = mlp.hidden[0]  # the smallest such width: one unit less falls short of the CNN
    assert numel(mlp.replace(hidden=(width - 1,) * len(mlp.hidden)), shape) < numel(family[CNN_LABEL], shape)
    assert len(mlp.hidden) == 2 + len(cnn.hidden)  # one hidden layer per CNN layer (two convs and the head)


def test_only_the_architecture_differs_and_the_cnn_is_the_lessons_own_run():
    family = dict(cnn_against_mlp(CNN_LESSON.config, (1, 28, 28), 10).family())
    cnn, mlp = family[CNN_LABEL], family[MLP_LABEL]
    assert cnn.key() == CNN_LESSON.config.key()  # the same stored run the inside view reads
    assert mlp.replace(arch="cnn", hidden=cnn.hidden) == cnn  # same seed, data, subset, optimizer, length


def test_a_cnn_no_mlp_can_match_is_said():
    huge = CNN_LESSON.config.replace(hidden=(4096,) * 20)  # 2 convs + 20 layers: the MLP gets the most allowed, 20
    with pytest.raises(ValueError, match="No MLP of 20 hidden layers up to 4,096 wide has the CNN's"):
        matched_mlp_hidden(huge, (3, 64, 64), 10)


def test_the_sentence_names_the_winner_only_beyond_the_noise():
    mlp = Scored(0.80, 2000)
    margin = noise_margin(Scored(0.80, 2000), mlp)
    ahead = cnn_against_mlp_sentence(Scored(0.80 + 2 * margin, 2000), mlp, 1000, 1200)
    assert ahead.startswith("The CNN won") and "1,000" in ahead and "1,200" in ahead
    behind = cnn_against_mlp_sentence(Scored(0.80 - 2 * margin, 2000), mlp, 1000, 1200)
    assert behind.startswith("The MLP won")
    level = cnn_against_mlp_sentence(Scored(0.80 + margin / 2, 2000), mlp, 1000, 1200)
    assert level.startswith("Neither won") and "within the noise" in level
    assert "won" not in cnn_against_mlp_sentence(None, mlp, 1000, 1200)


def val_accuracies(cnn_config) -> dict[str, float]:
    ds = load_dataset(cnn_config.dataset)
    out = {}
    for label, cfg in cnn_against_mlp(cnn_config, ds.input_shape, ds.n_classes).family():
        end, _ = train_events(cfg)
        assert end.status == "finished"
        out[label] = end.val_acc
    return out


@pytest.mark.slow
def test_the_cnn_beats_a_larger_mlp_on_real_fashion_mnist(isolated_cache, shared_fashion):
    # the lesson's CNN on a seeded subset of 1,000 training images, 2 epochs: about 35 s on one CPU thread
    acc = val_accuracies(CNN_LESSON.config.replace(dataset="fashion-mnist", train_limit=1000))
    assert acc[CNN_LABEL] > acc[MLP_LABEL] > 0.1  # both learned (chance is 0.1); the CNN learned more


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_cnn_beats_a_larger_mlp_on_the_digits_fallback(isolated_cache, seed):
    # the lesson's Digits settings: a seeded subset of 300 training images, 10 epochs (a few seconds each)
    acc = val_accuracies(CNN_LESSON.on_fallback().config.replace(seed=seed))
    assert acc[CNN_LABEL] > acc[MLP_LABEL] > 0.1
