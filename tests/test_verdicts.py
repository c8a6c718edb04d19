"""core.lessons.verdicts: "stuck" from what was learned, "vanishing" from the early gradient profile."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.engine import data as datasets
from core.lessons.presets import A_BASE
from core.lessons.verdicts import early_gradient_ratio, is_stuck, is_vanishing, predicted_class_share
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
    assert is_stuck(acc, loss, k, share)
    assert not is_stuck(share + 0.1, loss, k, share)  # it learned something after all
    assert not is_stuck(acc, loss - 0.5, k, share)  # a loss below ln C is knowledge
    assert not is_stuck(float("nan"), loss, k)


def test_early_gradient_ratio_is_the_geometric_mean_of_first_over_last():
    rows = [[1e-4, 5.0, 1.0], [1e-2, 3.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert early_gradient_ratio(rows, first=2) == pytest.approx(1e-3)
    assert is_vanishing(rows, first=2) and not is_vanishing(rows, first=4)  # later points are not "early"
    assert math.isnan(early_gradient_ratio([[1.0]]))


def test_deep_sigmoid_on_digits_is_stuck_and_vanishing_relu_he_is_neither():
    """LESSONS A on digits (SGD lr 0.2, width 10): sigmoid x4 learns nothing and its first layer's gradient
    is a tiny share of the output layer's; ReLU + He at the same depth learns and keeps its gradients."""
    base = A_BASE.replace(dataset="digits", hidden=(10,) * 4, epochs=3, log_every=10)
    sigmoid, sig_grads = _run(base)
    assert is_stuck(sigmoid.test_acc, sigmoid.test_loss, 10, predicted_class_share(sigmoid.confusion)[1])
    assert is_vanishing(sig_grads)
    relu, relu_grads = _run(base.replace(activation="relu", init="he"))
    assert relu.test_acc > 0.2 and relu.test_loss < math.log(10) - 0.3
    assert not is_stuck(relu.test_acc, relu.test_loss, 10, predicted_class_share(relu.confusion)[1])
    assert not is_vanishing(relu_grads)


@pytest.mark.slow
def test_lessons_a_sigmoid_x4_on_mnist_is_marked(shared_mnist):
    """The stuck sigmoid x4 of LESSONS A (first/last gradient ratio ~5e-3, missed by the old 1e-3 mark)."""
    end, grads = _run(A_BASE.replace(hidden=(10,) * 4, epochs=1))
    share = predicted_class_share(end.confusion)[1]
    assert is_stuck(end.test_acc, end.test_loss, 10, share) and is_vanishing(grads)
