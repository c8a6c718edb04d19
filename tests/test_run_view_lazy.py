"""The run view draws the summary and the loss/accuracy curves first; its other charts sit in expanders
that build nothing while closed (issue 10.5). Figure builders are counted by wrapping them."""
from __future__ import annotations

import json
from collections import Counter

import pytest

import core.serve.jobs
from apptest_helpers import new_app
from helpers import train_events
from app.figures import run as figures
from app.records.run import reduce_events
from app.views.run import GROUPS, group_key
from core.engine.config import RunConfig
from core.lessons.presets import PRESETS

# Which builders draw which part of the view.
ABOVE = ("loss_figure", "accuracy_figure")
BUILDERS = {"steps": ("step_loss_figure",),
            "inside": ("grad_norm_figure", "saturation_figure", "layer_heatmap_figure", "weight_heatmaps_figure",
                       "weight_histories_figure"),
            "test": ("confusion_figure", "misclassified_figure")}
TITLES = {"steps": "Training loss per step", "inside": "Gradient norm per layer (log scale)",
          "test": "Confusion matrix (test set)"}


@pytest.fixture
def built(monkeypatch) -> Counter:
    """Counts the calls of every run-figure builder the view uses."""
    calls: Counter = Counter()
    for name in ABOVE + sum(BUILDERS.values(), ()):
        original = getattr(figures, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(figures, name, counted)
    return calls


DATA_PREVIEW = ("One example per class", "Examples per class")  # the data preview's charts


def titles(at) -> list[str]:
    return [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]


def trained(cfg: RunConfig) -> RunConfig:
    manager = core.serve.jobs.get_manager()
    assert manager.wait(manager.submit(cfg), timeout=240).status == "finished"
    return cfg


def test_closed_groups_build_no_figures_and_opening_one_builds_them(isolated_cache, built):
    cfg = trained(RunConfig(epochs=1, log_every=10, seed=21))
    at = new_app(cfg.to_query())
    assert not at.exception, at.exception
    assert [e.label for e in at.expander if e.label in GROUPS.values()] == list(GROUPS.values())
    assert all(built[name] == 1 for name in ABOVE), built
    assert not any(built[name] for names in BUILDERS.values() for name in names), built
    shown = titles(at)
    assert any(t.startswith("Loss (train") for t in shown) and any(t.startswith("Accuracy") for t in shown)
    run_charts = [t for t in shown if not t.startswith(DATA_PREVIEW)]  # a new visitor sees the data first
    assert len(run_charts) == 2 and len(shown) - len(run_charts) == len(DATA_PREVIEW), shown
    assert any(m.label == "Test accuracy" for m in at.metric)  # the summary is above the fold

    opened: set[str] = set()
    for group in ("inside", "steps", "test"):
        at.session_state[group_key(group)] = True
        at.run()
        assert not at.exception, at.exception
        opened.add(group)
        for name, builders in BUILDERS.items():
            assert all(bool(built[b]) == (name in opened) for b in builders), (group, built)
            assert any(t.startswith(TITLES[name]) for t in titles(at)) == (name in opened), titles(at)
    assert any(t.startswith("Misclassified") for t in titles(at))
    at.session_state[group_key("inside")] = False  # closed again: its charts leave the page
    at.run()
    assert not any(t.startswith(TITLES["inside"]) for t in titles(at))
    assert [b.label for b in at.get("download_button")] == ["Download metrics (CSV)", "Download config (JSON)",
                                                         "Download the trained model (.zip)"]


def test_lesson_a_opens_inside_the_network(isolated_cache, no_mnist):
    """Vanishing gradients are seen in the per-layer gradient norms: a lesson A preset shows them at once."""
    preset = PRESETS["A-sigmoid-depth"]
    here, missing = preset.for_server()
    assert missing == "mnist"  # no MNIST here: the preset trains on its Digits fallback
    cfg = trained(here.config)
    at = new_app({**cfg.to_query(), "preset": preset.name, "run": "0"})  # the preset's shared link
    assert not at.exception, at.exception
    info = "\n".join(str(i.value) for i in at.info)
    assert "Lesson A" in info and "From cache" in info and "changed some settings" not in info
    shown = titles(at)
    assert any(t.startswith(TITLES["inside"]) for t in shown) and not any(t.startswith(TITLES["test"]) for t in shown)


def test_chance_is_a_layout_line_and_long_lines_use_webgl(isolated_cache):
    cfg = RunConfig(epochs=12, batch_size=32, log_every=10, hidden=(16,), seed=4)
    _, events = train_events(cfg)
    view = reduce_events(events)
    assert len(view.step_losses) > figures.GL_POINTS >= len(view.evals)  # the two sides of the threshold
    acc = figures.accuracy_figure(view)
    assert [t.name for t in acc.data] == ["train", "validation"]  # no trace for the chance level
    (line,) = acc.layout.shapes
    assert line.y0 == line.y1 == pytest.approx(view.chance_accuracy) and (line.x0, line.x1, line.xref) == (0, 1, "paper")
    assert {t.type for t in acc.data} == {"scatter"}
    assert {t.type for t in figures.step_loss_figure(view).data} == {"scattergl"}
