"""core.lessons.verdicts: "stuck" from what was learned, "vanishing" from the gradient profile, "collapsed" from the
answers with its cause from the probes, against oracles: a constant network's softmax, autograd through sigmoid/ReLU
chains whose gradient ratio theory gives, and autograd through a trained network's dead units."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.engine import data as datasets
from core.engine.models import build_model
from core.lab.grid import GridConfig, cell_events, run_grid
from core.lessons import sentences
from core.lessons.presets import A_BASE, get_preset
from core.lessons.verdicts import (COLLAPSED_ANSWERS, DEAD_SHARE, Collapse, DEAD_UNITS, EARLY_LOG_POINTS, SATURATED_SHARE,
                                   SATURATION, SIGMOID_LAYERS, SIGMOID_MAX_SLOPE, VANISHING, VANISHING_RATIO, collapse,
                                   is_collapsed, is_stuck, is_vanishing, predicted_class_share, run_collapse,
                                   vanishing_marks)
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


# --- collapsed ---------------------------------------------------------------------------------------
def _one_class_confusion(answers: int, total: int = 100, k: int = 10) -> list[list[int]]:
    """Balanced true classes; ``answers`` of ``total`` predictions go to class 0 (at least its own examples), the
    rest each to its true class."""
    per_class = total // k
    confusion = [[0] * k for _ in range(k)]
    confusion[0][0] = per_class
    others = total - answers
    for t in range(1, k):
        right = min(per_class, others)
        confusion[t][t], confusion[t][0] = right, per_class - right
        others -= right
    return confusion


def test_collapsed_is_nine_in_ten_answers_one_class_whatever_the_loss():
    """By definition: at least COLLAPSED_ANSWERS of the answers to one class; and then the accuracy can be at most
    that class's share plus the other answers, whichever of them are right."""
    for answers in (100, 95, 90, 89, 60, 10):
        confusion = _one_class_confusion(answers)
        top, share = predicted_class_share(confusion)
        assert top == pytest.approx(answers / 100)
        assert is_collapsed(confusion) == (answers / 100 >= COLLAPSED_ANSWERS), answers
        accuracy = sum(confusion[t][t] for t in range(10)) / 100
        assert accuracy <= share + (1 - top) + 1e-12
    assert not is_collapsed(None) and not is_collapsed([]) and not is_collapsed([[0, 0], [0, 0]])


def test_the_cause_of_a_collapse_follows_from_the_probes():
    """Hand-built probes whose answer follows from the definitions: the dead share counts for ReLU only, the
    saturated share for sigmoid/tanh only, vanishing is the existing rule on the early log points; the worst layer
    over the threshold is named (hidden layers counted from 1, the output layer has no share)."""
    flat = _one_class_confusion(100)
    healthy = [[1.0, 1.0, 1.0]] * EARLY_LOG_POINTS
    vanished = [[VANISHING_RATIO / 4, 0.5, 1.0]] * EARLY_LOG_POINTS
    shares = [0.1, DEAD_SHARE + 0.2, DEAD_SHARE, None]
    dead = collapse(flat, "relu", shares, healthy)
    assert dead.causes == (DEAD_UNITS,) and dead.dead == (2, pytest.approx(DEAD_SHARE + 0.2)) and dead.answers == 1.0
    saturated = collapse(flat, "sigmoid", shares, healthy)
    assert saturated.causes == (SATURATION,) and saturated.saturated == (2, pytest.approx(SATURATED_SHARE + 0.2))
    assert collapse(flat, "tanh", [0.1, 0.2, None], vanished).causes == (VANISHING,)
    assert collapse(flat, "relu", shares, vanished).causes == (DEAD_UNITS, VANISHING)
    assert collapse(flat, "gelu", shares, healthy).causes == ()  # no share is measured for gelu: no named cause
    below = [DEAD_SHARE - 0.01, math.nan, None]
    assert collapse(flat, "relu", below, healthy).causes == () and collapse(flat, "sigmoid", below, healthy).causes == ()
    assert collapse(_one_class_confusion(80), "relu", shares, vanished) is None  # causes without a collapse: none
    no_cause = collapse(flat, "sigmoid", [], [])
    assert no_cause.causes == () and "none that the probes show" in sentences.collapse_cause_words(no_cause)


def _dead_units_oracle(cfg, events, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From the run's final weights, on its whole test set: which units of hidden layer ``layer`` (1 = first) never
    fire, and the autograd gradient of the test loss on that layer's incoming weight rows."""
    ds = datasets.load_dataset(cfg.dataset)
    model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
    state = next(e for e in events if e.kind == "weights").weights
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    outputs = {}
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    relus[layer - 1].register_forward_hook(lambda module, args, out: outputs.setdefault("h", out))
    x = datasets.batch_features(ds.x_test).reshape(len(ds.y_test), -1)
    F.cross_entropy(model(x), ds.y_test).backward()
    never_fires = (outputs["h"] <= 0).all(dim=0)
    return never_fires, linears[layer - 1].weight.grad.norm(dim=1)


def test_relu_x8_on_digits_collapses_by_dead_units_whose_weights_get_no_gradient():
    """LESSONS A's ReLU x8 on the offline Digits (the lesson's fallback settings): it collapses, and the probes name
    dead units. Autograd oracle on its final weights: the named layer has at least DEAD_SHARE of its units silent on
    every test input, and exactly those units' incoming weights get zero gradient, so they cannot come back."""
    cfg = get_preset("A-relu-deep").on_fallback().config
    end, events = train_events(cfg)
    found = run_collapse(events)
    assert found is not None and DEAD_UNITS in found.causes and found.answers >= COLLAPSED_ANSWERS
    assert end.test_acc <= found.class_share + (1 - found.answers) + 1e-9
    never_fires, row_grads = _dead_units_oracle(cfg, events, found.dead[0])
    assert float(never_fires.float().mean()) >= DEAD_SHARE
    assert (row_grads[never_fires] == 0).all() and (row_grads[~never_fires] > 0).any()
    text = sentences.collapse_text("relu x8", found)
    assert text.startswith("Relu x8 collapsed") and "dead units" in text and f"hidden layer {found.dead[0]}" in text


def test_a_network_that_learns_has_not_collapsed():
    """ReLU + He at the same depth on Digits learns: its answers spread over the classes."""
    cfg = get_preset("A-relu-deep").on_fallback().config.replace(init="he", hidden=(10,) * 4)
    end, events = train_events(cfg)
    assert end.test_acc > 0.5 and run_collapse(events) is None
    assert predicted_class_share(end.confusion)[0] < COLLAPSED_ANSWERS


def _preset_cells(name: str):
    grid = GridConfig.from_runs(get_preset(name).runs)
    events: list = []
    assert run_grid(grid, events.append).status == "finished"
    return [(label, cell_events(events)[i]) for i, (label, _) in enumerate(grid.cells())]


@pytest.mark.slow
def test_lessons_a_relu_x8_on_mnist_collapses_by_dead_units(shared_mnist):
    """LESSONS A's ReLU x8 on MNIST (the preset, and seeds 1-3 of it). The issue saw 95% of the answers one class;
    how a dying network ends is chaotic (on this machine seed 0 ends with nearly 100% or 69% of its answers one
    class, depending on the number of CPU threads, and seed 3 may diverge), so what is asserted is the relation:
    every seed whose answers are nearly all one class is marked collapsed, each by dead units (a ReLU layer at least
    half dead), and at least one seed collapses. The issue's other observation holds for every seed that finishes: by the end at least half
    of some layer's units are dead. A seed that diverges instead has no test answers and no verdict."""
    preset = get_preset("A-relu-deep")
    label, cfg = preset.runs[0]
    grid = GridConfig.from_runs([(f"{label}, seed {s}", cfg.replace(seed=s)) for s in (0, 1, 2, 3)])
    events: list = []
    assert run_grid(grid, events.append).status == "finished"
    found = {}
    for i, (name, _) in enumerate(grid.cells()):
        cell = cell_events(events)[i]
        end, layers = cell[-1], [e for e in cell if e.kind == "layers"]
        if not end.confusion:  # diverged at lr 0.2 (no test, so no verdict): the ReLU's other failure
            assert end.status == "diverged" and run_collapse(cell) is None, (name, end.status)
            continue
        found[name] = run_collapse(cell)
        assert (found[name] is not None) == (predicted_class_share(end.confusion)[0] >= COLLAPSED_ANSWERS), name
        if found[name] is not None:
            assert DEAD_UNITS in found[name].causes, (name, found[name])
        assert max(s for s in layers[-1].saturation if s is not None) >= DEAD_SHARE, name
    assert any(found.values())
    said = sentences.collapsed_sentence(found)
    groups = sentences.collapse_groups(found)
    assert {name for names, _ in groups for name in names} == {name for name, c in found.items() if c is not None}
    assert all(sentences.collapse_group_text(names, collapsed) in said for names, collapsed in groups)


@pytest.mark.slow
def test_lessons_a_sigmoid_x4_seed_2_on_mnist_collapses_by_vanishing_gradients(shared_mnist):
    """LESSONS A's seeds of the deep sigmoid network on MNIST: seed 2 gives nearly all answers one class, and the
    probes name vanishing gradients (no dead units: sigmoid has none; no saturated layer). The seeds sentence names
    exactly the collapsed seeds and their cause."""
    cells = _preset_cells("A-sigmoid-seeds")
    found = {int(label[-1]): run_collapse(events) for label, events in cells}
    assert found[2] is not None and found[2].causes == (VANISHING,)
    stuck = {int(label[-1]): is_stuck(events[-1].test_acc, events[-1].test_loss, 10, confusion=events[-1].confusion)
             for label, events in cells}
    text = sentences.seeds_sentence(stuck, A_BASE.epochs, None, found)
    groups = sentences.collapse_groups(found, lambda seed: f"Seed {seed}")
    assert {name for names, _ in groups for name in names} == {f"Seed {s}" for s, c in found.items() if c is not None}
    for names, collapsed in groups:
        assert sentences.collapse_group_text(names, collapsed) in text, text
    assert any("Seed 2" in names and "vanishing gradients" in sentences.collapse_group_text(names, collapsed)
               for names, collapsed in groups)


def test_collapsed_runs_that_read_the_same_are_said_once_together():
    """Five networks collapsed by the same cause at the same shares read as one sentence naming all five; a
    network with another cause gets its own; a run that did not collapse is not named."""
    same = Collapse(answers=1.0, class_share=0.07, vanishing=True)
    other = Collapse(answers=0.97, class_share=0.07, dead=(7, 0.6), vanishing=True)
    found = {"sigmoid": same, "relu": other, "relu + he": None, "sigmoid + xavier": same,
             "sigmoid + layernorm": Collapse(answers=1.0, class_share=0.07, vanishing=True)}
    said = sentences.collapsed_sentence(found)
    assert said.count("collapsed:") == 2 and said.count("Cause:") == 2
    assert said.startswith("Sigmoid, sigmoid + xavier and sigmoid + layernorm collapsed: 100% of each one's")
    assert "Relu collapsed: 97% of its test answers" in said and "relu + he" not in said
    assert sentences.collapsed_sentence({"relu + he": None}) == ""
