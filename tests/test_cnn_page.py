"""AppTest of the Inside-a-CNN page: train the lesson's CNN on Digits from a link, then the filters with their
smoothness, the feature maps and probabilities of the linked test image, and the hand convolution whose value equals
the layer's own output; bad links are said and the rest kept."""
from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import MAIN, texts
from app.forms.cnn import KNOBS, config_from_link, lesson_base, picks_from_link
from core.engine.config import FIELDS, format_value
from core.lessons.presets import CNN_SLOW
from core.engine.models import count_parameters
from core.lab.convnet import cnn_against_mlp_here
from core.serve import budget
from core.serve.jobs import get_manager

PAGE = "../pages/cnn.py"


@pytest.fixture
def app_env(isolated_cache, no_mnist):
    return isolated_cache


def open_cnn(query: dict) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=180)
    at.switch_page(PAGE)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def train(at: AppTest) -> AppTest:
    at.button(key="cnn_train").click().run()
    for key in list(get_manager()._jobs):
        assert get_manager().wait(key, timeout=300).status == "finished"
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_page_trains_and_shows_inside_the_cnn(app_env):
    at = open_cnn({"dataset": "mnist", "epochs": "2", "image": "7", "layer": "2", "channel": "3", "row": "4", "col": "5"})
    assert at.title[0].value == "Inside a CNN"
    assert "MNIST is not available on this server" in texts(at.warning)  # Digits trains instead; the link keeps MNIST
    assert at.selectbox(key="cnn_dataset").value == "digits"
    assert at.number_input(key="cnn_epochs").value == 2
    train(at)
    words = texts(at.markdown).replace("\\", "")
    before, after = map(float, re.search(r"\*\*([+-][\d.]+)\*\* at initialization, \*\*([+-][\d.]+)\*\* after", words).groups())
    assert after > before  # a trained first layer is smoother than its random start (see test_convnet.py)
    assert "Test image 7 is a" in words
    assert [n.value for n in (at.number_input(key=f"cnn_{p}") for p in ("image", "layer", "channel", "row", "col"))] \
        == [7, 2, 3, 4, 5]
    hand = re.search(r"= ([+-][\d.]+)\. The layer's own output at \(4, 5\) reads ([+-][\d.]+)", words)
    assert hand and float(hand.group(1)) == pytest.approx(float(hand.group(2)), abs=2e-4)
    assert at.query_params["dataset"] == "mnist" and at.query_params["image"] == "7"
    at.number_input(key="cnn_layer").set_value(1).run()  # the picks go on working on the trained network
    assert not at.exception and "layer" not in at.query_params


def test_bad_links_are_said_and_the_rest_kept(app_env):
    at = open_cnn({"dataset": "moons", "epochs": "0", "image": "abc"})
    warned = texts(at.warning).replace("\\", "")
    assert "Epochs (epochs) = 0 is out of range" in warned and "Image must be a whole number" in warned
    assert "needs an image dataset, not the 2-D toy set 'moons'" in warned
    assert at.number_input(key="cnn_epochs").value == lesson_base().epochs
    cfg, notices = config_from_link({"dataset": "moons"})
    assert cfg == lesson_base() and "needs an image dataset" in notices[0]
    picks, notices = picks_from_link({"image": "-3", "row": "2"})
    assert picks["row"] == 2 and picks["image"] == 0 and "image" in notices[0]
    assert set(KNOBS) <= set(FIELDS)  # the page's knobs are the schema's, limits and all


def test_an_image_out_of_range_is_brought_in_with_a_message(app_env):
    at = train(open_cnn({"image": "99999"}))
    assert "Test image 99999 is out of range" in texts(at.warning).replace("\\", "")
    assert at.number_input(key="cnn_image").value == 0


def test_the_cnn_races_an_mlp_of_at_least_its_parameters(app_env):
    at = train(open_cnn({}))
    versus = dict(cnn_against_mlp_here(lesson_base()).family())
    counts = {label: count_parameters(cfg, (1, 8, 8), 10) for label, cfg in versus.items()}  # Digits: 8x8, 10 classes
    table = next(d.value for d in at.dataframe if "params" in d.value)
    shown = dict(zip(table["variant"], table["params"]))
    assert shown == counts and counts["MLP"] >= counts["CNN"]  # the counts beside the accuracies
    acc = dict(zip(table["variant"], table["val acc"]))
    words = texts(at.markdown).replace("\\", "")
    sentence = next(line for line in words.split("\n") if "won" in line)
    assert f"{counts['CNN']:,}" in sentence and f"{counts['MLP']:,}" in sentence
    loser = "MLP" if acc["CNN"] > acc["MLP"] else "CNN"
    assert not sentence.startswith(f"The {loser} won")  # written from the results on screen


def test_a_pair_over_the_cap_is_refused_naming_the_cap_and_the_estimate(app_env, monkeypatch):
    versus = dict(cnn_against_mlp_here(lesson_base()).family())
    between = (budget.estimate(versus["CNN"]).cost + budget.estimate(versus["MLP"]).cost) / 2
    assert budget.estimate(versus["CNN"]).cost < between < budget.estimate(versus["MLP"]).cost
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_COST", str(between))  # the CNN fits, its MLP does not
    at = open_cnn({})
    at.button(key="cnn_train").click().run()
    error = texts(at.error).replace("\\", "")
    assert "Could not start training" in error and "GRADIENT_LAB_MAX_JOB_COST" in error and "parameters" in error
    assert not get_manager()._jobs  # neither was queued: the CNN does not train alone
    assert at.number_input(key="cnn_epochs").value == lesson_base().epochs  # the settings are kept


def test_the_network_knobs_presets_and_bad_shapes(app_env):
    """A link's network knobs fill the form; a shape that does not fit is said naming the value and keeps the
    settings; seed 004's #8 is one click away, and the lesson's CNN one click back."""
    at = open_cnn({"conv_channels": "8,16", "conv_pool": "max", "hidden": "24", "norm": "batchnorm"})
    assert at.text_input(key="cnn_conv_channels").value == "8,16" and at.selectbox(key="cnn_conv_pool").value == "max"
    assert at.text_input(key="cnn_hidden").value == "24" and at.selectbox(key="cnn_norm").value == "batchnorm"
    assert at.query_params["conv_channels"] == "8,16" and not at.error  # the link keeps what differs from the lesson
    at.text_input(key="cnn_conv_channels").set_value("8,8,8,8").run()  # Digits: 8 -> 4 -> 2 -> 1, then nothing
    error = texts(at.error).replace("\\", "")
    assert "Pooling (conv_pool) = 'max'" in error and "block 4 leaves 1x1" in error
    assert at.text_input(key="cnn_conv_channels").value == "8,8,8,8"  # nothing lost: fix one value
    at.button(key="cnn_preset_slow").click().run()
    assert "slow" in at.button(key="cnn_preset_slow").label and not at.error
    shown = {n: at.text_input(key=f"cnn_{n}").value for n in ("conv_channels", "hidden")}
    assert shown == {"conv_channels": format_value(CNN_SLOW.conv_channels), "hidden": format_value(CNN_SLOW.hidden)}
    assert at.selectbox(key="cnn_conv_pool").value == "none" and at.number_input(key="cnn_epochs").value == 20
    assert at.number_input(key="cnn_batch_size").value == 64 and at.number_input(key="cnn_train_limit").value == 0
    assert at.selectbox(key="cnn_dataset").value == "digits"  # Fashion-MNIST is missing here: Digits trains instead
    assert "Fashion-MNIST is not available on this server" in texts(at.warning).replace("\\", "")
    at.button(key="cnn_preset_lesson").click().run()
    assert at.text_input(key="cnn_conv_channels").value == format_value(lesson_base().conv_channels)
    assert at.number_input(key="cnn_epochs").value == lesson_base().epochs and not at.error
