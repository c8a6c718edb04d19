"""A single run says what happened (issue 26.5, 26.6): the Playground's outcome sentence from the lessons' verdicts,
ln C on the loss chart with an axis that keeps a flat loss flat, one chance level while training and after, a
clock that says what it counts, and the noise of an accuracy scored on a handful of examples."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import new_app, texts
from app.figures import run as figures
from app.records.jobs import progress_text
from app.records.run import reduce_events
from app.text import training_clock
from core.engine.catalog import load_dataset
from core.engine.config import RunConfig
from core.lessons import verdicts
from core.lessons.noise import Scored, noise_margin
from core.lessons.presets import get_preset
from core.lessons.sentences import run_outcome
from helpers import plotly_values, train_events

# Digits, 6 sigmoid layers of 10 at SGD lr 0.2: it learns nothing in a few epochs (lesson A's deep sigmoid).
STUCK = RunConfig(dataset="digits", hidden=(10,) * 6, activation="sigmoid", optimizer="sgd", lr=0.2, batch_size=32,
                  epochs=3, log_every=20)
LEARNS = RunConfig(dataset="digits", epochs=3, log_every=20)


@pytest.fixture(scope="module")
def stuck_run():
    end, events = train_events(STUCK)
    assert end.kind == "finished"
    assert verdicts.is_stuck(end.test_acc, end.test_loss, 10, confusion=end.confusion)  # the premise
    return end, events


@pytest.fixture(scope="module")
def learning_run():
    end, events = train_events(LEARNS)
    assert end.kind == "finished"
    return end, events


def test_a_stuck_run_is_said_stuck_with_the_class_it_answers(stuck_run):
    end, events = stuck_run
    text = run_outcome(events)
    rows = [sum(r) for r in end.confusion]
    answers, share = verdicts.predicted_class_share(end.confusion)
    assert "this network is stuck" in text and f"{answers:.0%} of its test answers are one class" in text
    assert f"test accuracy {end.test_acc:.3f} is that class's share of the test set ({share:.3f})" in text
    assert ("below the chance line" in text) == (share < max(rows) / sum(rows))
    assert f"{end.test_loss:.4f} sits at ln 10 = {math.log(10):.4f}" in text
    assert run_outcome(events[:-1]) is None  # no outcome before the end


def test_a_learning_run_is_said_to_have_learned_beyond_the_noise(learning_run):
    end, events = learning_run
    rows = [sum(r) for r in end.confusion]
    chance = max(rows) / sum(rows)
    margin = noise_margin(Scored(end.test_acc, sum(rows)))
    assert end.test_acc - chance > margin  # the premise: a 64-64 ReLU network learns the digits
    text = run_outcome(events)
    assert "this network has learned" in text
    assert f"test accuracy {end.test_acc:.3f} against {chance:.3f}" in text and f"±{margin:.3f}" in text


def test_the_loss_chart_draws_ln_c_and_keeps_a_flat_loss_flat(stuck_run):
    _, events = stuck_run
    fig = figures.loss_figure(reduce_events(events))
    (line,) = [s for s in fig.layout.shapes if s.y0 == s.y1 == pytest.approx(math.log(10))]
    assert line.yref == "y" and "ln 10" in line.label.text
    low, high = fig.layout.yaxis.range
    values = np.concatenate([plotly_values(t.y) for t in fig.data]).astype(float)
    values = values[np.isfinite(values)]
    assert low == 0 and high >= max(values.max(), math.log(10))
    # The stuck loss hugs ln 10: on this axis its wiggle is a sliver of the height, not a full-height oscillation.
    assert (values.max() - values.min()) / (high - low) < 0.2


def test_the_loss_chart_beside_mse_puts_ln_c_on_the_cross_entropy_axis():
    _, events = train_events(LEARNS.replace(loss="mse", epochs=1))
    fig = figures.loss_figure(reduce_events(events))
    (line,) = fig.layout.shapes
    assert line.yref == "y2" and line.y0 == pytest.approx(math.log(10))
    assert fig.layout.yaxis2.range[1] >= math.log(10) and fig.layout.yaxis.range[0] == 0


def test_chance_is_one_number_while_training_and_when_done(stuck_run):
    """Issue 26.6: 1/classes while training, the test set's largest class once done; now always the latter."""
    _, events = stuck_run
    y_test = load_dataset("digits").y_test
    truth = float(y_test.bincount().max()) / len(y_test)
    running = reduce_events([e for e in events if e.kind != "finished"])
    done = reduce_events(events)
    assert running.finished is None and done.finished is not None
    assert running.chance_accuracy == pytest.approx(truth) and done.chance_accuracy == pytest.approx(truth)
    for view in (running, done):
        (line,) = figures.accuracy_figure(view).layout.shapes
        assert line.y0 == pytest.approx(truth)


def test_the_clock_says_it_counts_training_time_only(stuck_run):
    end, events = stuck_run
    view = reduce_events(events)
    text = progress_text(view.progress(), done=True)
    assert training_clock(end.elapsed) in text and "queue and data loading not counted" in text
    assert "elapsed" not in text


# --- the Playground (AppTest) ----------------------------------------------------------------------------
def wait_done(at: AppTest, timeout: float = 600) -> AppTest:
    key = at.session_state["gl_job"]
    assert core.serve.jobs.get_manager().wait(key, timeout=timeout).status == "finished"
    at.run()
    assert not at.exception, at.exception
    return at


def test_playground_answers_the_tanh_x14_preset_and_draws_ln_c(isolated_cache, no_mnist):
    """Issue 26.5: "A · tanh, many layers" asks "does it learn?"; the page answers from the result."""
    here, missing = get_preset("A-tanh-deep").for_server()
    assert missing == "mnist"
    at = new_app({**here.config.to_query(), "preset": "A-tanh-deep"})
    assert "does it learn?" in texts(at.info).replace("\\", "")
    at.button(key="train").click().run()
    wait_done(at)
    snap = core.serve.jobs.get_manager().snapshot(at.session_state["gl_job"])
    end = snap.events[-1]
    stuck = verdicts.is_stuck(end.test_acc, end.test_loss, 10, confusion=end.confusion)
    said = next(str(m.value) for m in at.markdown if "What happened" in str(m.value)).replace("\\", "")
    assert ("this network is stuck" in said) == stuck and f"{end.test_acc:.3f}" in said
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    loss = next(s for s in specs if str(s["layout"]["title"]["text"]).startswith("Loss"))
    assert [s["y0"] for s in loss["layout"]["shapes"]] == [pytest.approx(math.log(10))]
    assert loss["layout"]["yaxis"]["range"][0] == 0


def test_playground_warns_that_a_tiny_validation_set_is_coarse(isolated_cache):
    """Issue 26.6: validation accuracy from a handful of images comes with its step and noise margin."""
    at = new_app({"epochs": "2", "log_every": "20", "val_fraction": "0.005"})
    at.button(key="train").click().run()
    wait_done(at)
    end = core.serve.jobs.get_manager().snapshot(at.session_state["gl_job"]).events
    started = next(e for e in end if e.kind == "started")
    n_val, val_acc = int(started.dataset["n_val"]), end[-1].val_acc
    assert 0 < n_val < 100
    warning = texts(at.warning).replace("\\", "")  # Markdown escapes
    assert f"Validation accuracy {val_acc:.3f} is scored on only {n_val} examples" in warning
    assert f"±{noise_margin(Scored(val_acc, n_val)):.3f}" in warning and "Test accuracy" not in warning


def test_playground_gives_no_caveat_for_a_large_validation_set(isolated_cache):
    at = new_app({"epochs": "1", "log_every": "20"})
    at.button(key="train").click().run()
    wait_done(at)
    assert not [w for w in at.warning if "scored on only" in str(w.value)]
