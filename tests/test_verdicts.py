"""core.lessons.verdicts: "stuck" from what was learned, "vanishing" from the gradient profile, against oracles:
a constant network's softmax, and autograd through sigmoid/ReLU chains whose gradient ratio theory gives."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.engine import data as datasets
from core.lessons.presets import A_BASE
from core.lessons.verdicts import (EARLY_LOG_POINTS, SIGMOID_LAYERS, SIGMOID_MAX_SLOPE, VANISHING_RATIO, is_stuck,
                                   is_vanishing, predicted_class_share, vanishing_marks)
from helpers import train_events


def _run(cfg):
    end, events = train_events(cfg)
    return end, [e.grad_norm for e in events if e.kind == "layers"]


def test_predicted_class_share_reads_the_confusion_matrix():
    confusion = [[1, 9, 0], [0, 5, 0], [0, 3, 2]]  # rows true, columns predicted
    top_share, class_share = predicted_class_share(confusion)
    assert top_share == pytest.approx(17 / 20) and class_share == pytest.approx(5 / 20)


def test_a_constant_network_is_stuck_and_a_learned_one_is_not():
    """Oracle: all-zero logits give a uniform softmax (cross-entropy exactly ln C) and predict class 0,
    so accuracy is class 0's share; a network that learned digits is far from both."""
    y = datasets.load_dataset("digits").y_test
    k = 10
    logits = torch.zeros(len(y), k)
    loss = float(F.cross_entropy(logits, y))
    acc = float((logits.argmax(dim=1) == y).float().mean())
    confusion = torch.bincount(y * k + logits.argmax(dim=1), minlength=k * k).reshape(k, k).tolist()
    top, share = predicted_class_share(confusion)
    assert top == 1.0 and loss == pytest.approx(math.log(k))
    assert is_stuck(acc, loss, k, confusion=confusion) and acc == pytest.approx(share)
    assert not is_stuck(share + 0.1, loss, k, confusion=confusion)  # it learned something after all
    assert not is_stuck(acc, loss - 0.5, k, confusion=confusion)  # a loss below ln C is knowledge
    assert not is_stuck(float("nan"), loss, k)
    # without a confusion matrix (still training) a balanced guess stands in: 1/classes
    assert is_stuck(1 / k, math.log(k), k) and not is_stuck(share + 0.1, math.log(k), k)


def _chain_gradients(activation: str, depth: int, width: int = 6) -> list[float]:
    """Weight-gradient norms (input layer first) of ``depth`` hidden layers and a linear output layer, all
    width x width with orthogonal weights (they keep a gradient's size), every pre-activation at ``z0`` (biases
    set so) and every layer's input of the same norm: theory says each hidden layer scales the gradient by the
    activation's slope at z0, so layer l's norm is slope^(layers between it and the output) x the output's."""
    torch.manual_seed(0)
    z0 = 0.0 if activation == "sigmoid" else 1.0  # sigmoid at its steepest; ReLU where it is active
    act = torch.sigmoid if activation == "sigmoid" else torch.relu
    layers = [nn.Linear(width, width).double() for _ in range(depth + 1)]
    x = torch.full((width,), float(act(torch.tensor(z0))), dtype=torch.float64)  # same norm as every hidden output
    h = x
    with torch.no_grad():
        for layer in layers:
            nn.init.orthogonal_(layer.weight)
            layer.bias.copy_(z0 - layer.weight @ h)
            h = act(layer(h))
    h = x
    for layer in layers[:-1]:
        h = act(layer(h))
    (layers[-1](h) * torch.arange(1.0, width + 1, dtype=torch.float64)).sum().backward()
    return [float(layer.weight.grad.norm()) for layer in layers]


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
def test_a_sigmoid_chain_quarters_the_gradient_per_layer_and_is_marked_past_three_layers(depth):
    """Autograd oracle for the threshold's theory: at sigmoid's steepest each layer passes 1/4 of the gradient,
    so a layer k sigmoid layers below the output gets 4^-k of its gradient; 1/64 = three such layers."""
    norms = _chain_gradients("sigmoid", depth)
    for layer, norm in enumerate(norms):
        below = depth - layer  # sigmoid layers between this layer and the output
        assert norm / norms[-1] == pytest.approx(SIGMOID_MAX_SLOPE ** below, rel=1e-9)
    marks = vanishing_marks([norms])[0]
    for layer, marked in enumerate(marks):  # a layer exactly three sigmoid layers down sits on the line: rounding
        if depth - layer != SIGMOID_LAYERS:
            assert marked == (depth - layer > SIGMOID_LAYERS), (layer, norms)
    assert VANISHING_RATIO == SIGMOID_MAX_SLOPE ** SIGMOID_LAYERS
    assert is_vanishing([norms] * EARLY_LOG_POINTS) == (depth > SIGMOID_LAYERS)


def test_a_relu_chain_keeps_its_gradient_at_any_depth_and_is_never_marked():
    """ReLU's slope is 1 where it is active: with size-keeping weights no layer's gradient shrinks."""
    norms = _chain_gradients("relu", 12)
    assert [n / norms[-1] for n in norms] == pytest.approx([1.0] * len(norms), rel=1e-9)
    assert not any(vanishing_marks([norms])[0]) and not is_vanishing([norms] * EARLY_LOG_POINTS)


def test_a_run_is_vanishing_when_its_first_layer_is_marked_at_most_early_log_points():
    low, high = [VANISHING_RATIO / 2, 1.0, 1.0], [2 * VANISHING_RATIO, 1.0, 1.0]
    assert vanishing_marks([low, high]) == [[True, False, False], [False, False, False]]
    assert is_vanishing([low, low, low, high, high]) and not is_vanishing([low, low, high, high, high])
    assert not is_vanishing([high] * EARLY_LOG_POINTS + [low] * 50)  # later points are not "early"
    assert is_vanishing([low] * EARLY_LOG_POINTS + [high] * 50)  # a run that escapes later still started vanishing
    # no gradient in the output layer, or no number at all, says nothing; one layer has nothing to compare
    assert vanishing_marks([[0.0, 0.0], [math.nan, 1.0], [1e-9, math.inf]]) == [[False, False]] * 3
    assert not is_vanishing([[1.0]] * 5) and not is_vanishing([])


def test_deep_sigmoid_on_digits_is_stuck_and_vanishing_relu_he_is_neither():
    """LESSONS A on digits (SGD lr 0.2, width 10): sigmoid x4 learns nothing and its first layer's gradient
    is a tiny share of the output layer's; ReLU + He at the same depth learns and keeps its gradients."""
    base = A_BASE.replace(dataset="digits", hidden=(10,) * 4, epochs=3, log_every=10)
    sigmoid, sig_grads = _run(base)
    assert is_stuck(sigmoid.test_acc, sigmoid.test_loss, 10, confusion=sigmoid.confusion)
    assert is_vanishing(sig_grads)
    relu, relu_grads = _run(base.replace(activation="relu", init="he"))
    assert relu.test_acc > 0.2 and relu.test_loss < math.log(10) - 0.3
    assert not is_stuck(relu.test_acc, relu.test_loss, 10, confusion=relu.confusion)
    assert not is_vanishing(relu_grads)


@pytest.mark.slow
def test_lessons_a_sigmoid_x4_on_mnist_is_marked(shared_mnist):
    """The stuck sigmoid x4 of LESSONS A (first/last gradient ratio ~3e-3, missed by the old 1e-3 mark)."""
    end, grads = _run(A_BASE.replace(hidden=(10,) * 4, epochs=1))
    assert is_stuck(end.test_acc, end.test_loss, 10, confusion=end.confusion) and is_vanishing(grads)
