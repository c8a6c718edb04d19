"""The Vanishing gradients page (AppTest) and the grid figure builders in app/records/grid.py and app/figures/grid.py.

AppTest never fires ``run_every`` timers, so a test waits for the job itself and reruns the page.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import open_page as open_app_page
from apptest_helpers import texts
from app.figures import grid as gf
from app.records import grid as gr
from app.records.run import reduce_events
from core.engine.config import RunConfig
from core.lab.grid import GridConfig, run_grid
from core.engine.data import load_dataset
from core.lessons import sentences as lessons
from core.lessons import verdicts
from core.lessons.presets import A_BASE, A_FALLBACK, A_LESSON_FIXES_DEPTH, get_preset

PAGE = "../pages/vanishing.py"


def open_page() -> AppTest:
    return open_app_page(PAGE)


def charts(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {str(s["layout"].get("title", {}).get("text", "")): s for s in specs}


def chart(at: AppTest, title_start: str) -> dict:
    found = [spec for title, spec in charts(at).items() if title.startswith(title_start)]
    assert found, f"no chart {title_start!r}; charts: {list(charts(at))}"
    return found[0]


def tiny_grid(at: AppTest) -> AppTest:
    """2 activations x 2 depths on the moons toy set, 3 epochs."""
    at.selectbox(key="vg_dataset").set_value("moons").run()
    at.multiselect(key="vg_activations").set_value(["sigmoid", "relu"]).run()
    at.slider(key="vg_depths").set_value((1, 2)).run()
    at.number_input(key="vg_epochs").set_value(3).run()
    assert not at.exception, at.exception
    return at


# --- the page ---------------------------------------------------------------------------------------
def test_page_renders_with_the_lesson_defaults(isolated_cache):
    at = open_page()
    assert at.multiselect(key="vg_activations").value == ["sigmoid", "tanh", "relu"]
    assert at.slider(key="vg_depths").value == (1, 8)
    assert at.number_input(key="vg_width").value == 10 and at.number_input(key="vg_lr").value == 0.2
    assert at.selectbox(key="vg_optimizer").value == "sgd" and at.number_input(key="vg_batch").value == 32
    assert "24 networks" in texts(at.caption)
    assert not at.get("plotly_chart")  # nothing trains until asked
    assert core.serve.jobs.get_manager().counts() == {"queued": 0, "running": 0}


def test_preset_fills_the_controls_with_mnist(isolated_cache, shared_mnist):
    at = open_page()
    at.number_input(key="vg_epochs").set_value(2).run()
    at.multiselect(key="vg_activations").set_value(["gelu"]).run()
    at.button(key="vg_preset").click().run()
    assert not at.exception
    assert at.selectbox(key="vg_dataset").value == "mnist"
    assert at.multiselect(key="vg_activations").value == ["sigmoid", "tanh", "relu"]
    assert at.slider(key="vg_depths").value == (1, 8) and at.number_input(key="vg_epochs").value == 5
    assert at.number_input(key="vg_batch").value == 32 and at.number_input(key="vg_lr").value == 0.2
    assert not at.warning


def test_preset_falls_back_to_digits_with_a_notice(isolated_cache, no_mnist):
    at = open_page()
    at.button(key="vg_preset").click().run()
    assert at.selectbox(key="vg_dataset").value == "digits"
    # the lesson's Digits settings (an epoch of Digits is ~36 steps): the phenomenon still shows there
    assert at.number_input(key="vg_epochs").value == dict(A_FALLBACK.overrides)["epochs"]
    assert at.slider(key="vg_fix_depth").value == A_LESSON_FIXES_DEPTH  # where the plain network is stuck
    assert "MNIST is not available" in texts(at.warning)
    assert f"{dict(A_FALLBACK.overrides)['epochs']} epochs instead of" in texts(at.warning)
    # the lesson box says what a stuck network scores on the dataset actually used (computed from its test set)
    shares = load_dataset("digits").y_test.bincount(minlength=10).float() / len(load_dataset("digits").y_test)
    lesson_box = texts(at.info).replace("\\", "")
    assert f"between {shares.min():.3f} and {shares.max():.3f}" in lesson_box and "0.10" not in lesson_box


def test_too_many_networks_is_explained(isolated_cache):
    at = open_page()
    at.multiselect(key="vg_activations").set_value(["sigmoid", "tanh", "relu", "gelu"]).run()
    at.slider(key="vg_depths").set_value((1, 20)).run()
    assert "at most 60" in texts(at.error) and at.button(key="vg_train").disabled


def test_tiny_grid_finishes_with_one_value_per_cell(isolated_cache):
    at = tiny_grid(open_page())
    at.button(key="vg_train").click().run()
    assert not at.exception
    key = at.session_state["vg_grid_job"]
    assert key == GridConfig(base=RunConfig(dataset="moons", epochs=3, batch_size=32, optimizer="sgd", lr=0.2,
                                            val_fraction=0.1, log_every=10),
                             activations=("sigmoid", "relu"), depths=(1, 2), width=10).key()
    assert core.serve.jobs.get_manager().wait(key, timeout=300).status == "finished"
    at.run()
    assert not at.exception, at.exception
    heat = chart(at, "Accuracy per network")["data"][0]
    assert heat["y"] == ["sigmoid", "relu"] and heat["x"] == ["1", "2"]
    values = np.array(heat["z"], dtype=float)
    assert values.shape == (2, 2) and np.isfinite(values).all() and ((0 <= values) & (values <= 1)).all()
    losses = chart(at, "Loss of every network")
    assert "ln 2" in losses["layout"]["title"]["text"]
    assert len([t for t in losses["data"] if t.get("name") == "validation"]) == 4
    assert chart(at, "Gradient norm per layer over time")
    assert chart(at, "First layer: how far each weight moved")
    table = at.dataframe[0].value
    assert table["network"].tolist() == ["sigmoid x1", "sigmoid x2", "relu x1", "relu x2"]
    assert (table["status"] == "finished").all()
    assert at.button(key="vg_train").label == "Train the grid again"
    # Issue 26.1: the fixes' depth is read against the grid's own stuck marks (the table's), here x4, not in the grid.
    marks = table.set_index("network")["stuck"]
    stuck = [d for d in (1, 2) if marks[f"sigmoid x{d}"]]
    notes = (texts(at.warning) + texts(at.info)).replace("\\", "")
    if stuck:
        assert "The grid above has no sigmoid x4." in notes and f"Stuck there: {', '.join(f'x{d}' for d in stuck)}." in notes
        at.button(key="vg_fix_stuck").click().run()
        assert at.slider(key="vg_fix_depth").value == stuck[0]
    else:
        assert "No sigmoid network of the grid above is stuck" in notes


def test_a_cell_opens_in_the_playground_from_the_store(isolated_cache):
    at = tiny_grid(open_page())
    at.button(key="vg_train").click().run()
    core.serve.jobs.get_manager().wait(at.session_state["vg_grid_job"], timeout=300)
    at.run()
    at.selectbox(key="vg_cell").set_value("relu x2").run()
    at.button(key="vg_open").click().run()
    assert not at.exception, at.exception
    assert "From cache" in texts(at.info)  # the cell was filed under its own key: no training
    assert core.serve.jobs.get_manager().counts() == {"queued": 0, "running": 0}


def test_fixes_train_side_by_side(isolated_cache):
    at = tiny_grid(open_page())
    at.slider(key="vg_fix_depth").set_value(3).run()
    at.button(key="vg_train_fixes").click().run()
    assert not at.exception
    key = at.session_state["vg_fixes_job"]
    assert core.serve.jobs.get_manager().wait(key, timeout=300).status == "finished"
    at.run()
    profile = chart(at, "Gradient norm per layer at the latest log point")
    names = [t["name"] for t in profile["data"]]
    assert names[:3] == ["sigmoid", "relu", "relu + he"] and any("batchnorm" in n for n in names)
    assert all(len(t["x"]) == 4 for t in profile["data"])  # 3 hidden layers + the output layer
    # Issue 26.6: every finished version's first / last gradient is in the table, right after the loss (at the
    # table's right end, behind the long collapse causes, it was out of sight).
    (table,) = [d.value for d in at.dataframe if "first / last layer gradient" in d.value]
    columns = list(table.columns)
    assert columns.index("first / last layer gradient") == columns.index("loss") + 1
    assert columns.index("collapse cause") == len(columns) - 1
    ratios = table.set_index("network")["first / last layer gradient"]
    assert len(ratios) == len(names) == len(get_preset("A-fixes").runs), ratios  # every version of the preset
    assert all(math.isfinite(r) and r >= 0 for r in ratios), ratios


# --- the figure builders ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stuck_grid_events():
    """Digits, width 10, SGD lr 0.2, 8 epochs: sigmoid x1 learns, sigmoid x8 is stuck."""
    base = RunConfig(dataset="digits", epochs=8, batch_size=32, optimizer="sgd", lr=0.2, log_every=10)
    grid = GridConfig(base=base, depths=(1, 8), variants=(("sigmoid", {"activation": "sigmoid"}),
                                                          ("relu", {"activation": "relu", "init": "he"})))
    events: list = []
    assert run_grid(grid, events.append).status == "finished"
    return events


def test_reduce_grid_places_cells_by_row_and_depth(stuck_grid_events):
    grid = gr.reduce_grid(stuck_grid_events)
    assert grid.rows == ["sigmoid", "relu"] and grid.depths == [1, 8] and grid.status == "finished"
    assert grid.done_cells == 4 and grid.cell_at("relu", 8).label == "relu x8"
    prefix = gr.reduce_grid(stuck_grid_events[:len(stuck_grid_events) // 2])
    assert prefix.status == "running" and len(prefix.cells) == 4 and prefix.done_cells < 4


def test_stuck_cell_is_majority_share_and_ln_classes(stuck_grid_events):
    grid = gr.reduce_grid(stuck_grid_events)
    stuck, learned = grid.cell_at("sigmoid", 8), grid.cell_at("sigmoid", 1)
    assert stuck.stuck and not learned.stuck
    answers, share = stuck.top_prediction
    assert answers > 0.9  # one answer for (almost) every input ...
    assert stuck.latest["acc"] == pytest.approx(share, abs=0.02)  # ... so its accuracy is that class's share
    assert stuck.latest["loss"] == pytest.approx(math.log(10), abs=verdicts.STUCK_LOSS)
    assert learned.latest["acc"] > 0.6 and learned.top_prediction[0] < 0.5
    heat = gf.accuracy_heatmap_figure(grid)
    assert heat.data[0].text[0][1].endswith("⊘") and not heat.data[0].text[0][0].endswith("⊘")
    table = gr.cells_table(grid)
    assert table["stuck"].tolist()[:2] == [False, True]
    # the stuck network's first layer gets a far weaker gradient, relative to its output layer, than the shallow one's
    assert 20 * table.loc[1, "first / last layer gradient"] < table.loc[0, "first / last layer gradient"]
    # the note explains the report's 0.0099 next to the true score: what the report's metric prints for this network
    note = gr.stuck_note(grid)
    assert "share of the class it predicts" in note and "about 0.10" not in note
    assert f"would print {stuck.latest['acc'] / 10:.4f}" in note


def test_gradient_band_marks_the_vanishing_layers(stuck_grid_events):
    grid = gr.reduce_grid(stuck_grid_events)
    names, steps, norms, vanished = gr.vanishing_mask(grid.cell_at("sigmoid", 8).view)
    assert vanished[0].all() and not vanished[-1].any()  # first layer always far below the output layer
    assert vanished.T.tolist() == verdicts.vanishing_marks(norms.T.tolist())  # one row per layer, one column per step
    fig = gf.gradient_band_figure(grid.cell_at("sigmoid", 8).view, "sigmoid x8")
    marks = fig.data[1]
    assert len(marks.x) == int(vanished.sum()) and "vanishing" in marks.name
    # issue 26.10: one ✕ per log point painted a solid bar over the cells; now at most MAX_MARKS_PER_ROW show per
    # layer, and every stretch of steps with a vanished cell still shows one
    stride = -(-len(steps) // gf.MAX_MARKS_PER_ROW)
    assert len(steps) > gf.MAX_MARKS_PER_ROW  # enough log points that the marks must thin out
    for row, layer in enumerate(fig.data[0].y):
        shown = [x for x, y, size in zip(marks.x, marks.y, marks.marker.size) if y == layer and size > 0]
        blocks = {c // stride for c in np.nonzero(vanished[row])[0]}  # stretches of steps holding a vanished cell
        assert len(shown) == len(blocks) <= gf.MAX_MARKS_PER_ROW, layer
    assert len(gf.gradient_band_figure(grid.cell_at("sigmoid", 1).view).data) == 1  # nothing marked
    profile = gf.gradient_profile_figure([(c.label, c.view) for c in grid.cells])
    assert [len(t.x) for t in profile.data] == [2, 9, 2, 9]


@pytest.fixture(scope="module")
def lesson_grid() -> gr.GridView:
    """LESSONS A's grid as a server without MNIST trains it (digits, the fallback's epochs): sigmoid and ReLU with
    1, 2 and 4 hidden layers of 10, SGD lr 0.2, batch 32."""
    base = A_BASE.replace(dataset="digits", **dict(A_FALLBACK.overrides))
    grid = GridConfig(base=base, activations=("sigmoid", "relu"), depths=(1, 2, 4))
    events: list = []
    assert run_grid(grid, events.append).status == "finished"
    return gr.reduce_grid(events)


def test_every_cell_mark_agrees_with_the_sentences_that_name_it(lesson_grid):
    """The ⊘ on a cell, the table, the note under the grid and the fixes/seeds sentences read one stuck verdict;
    the hover's and the table's "vanishing" is the band chart's ✕ on the first layer at most early log points."""
    grid, epochs = lesson_grid, lesson_grid.cells[0].config["epochs"]
    said = lessons.stuck_verdicts([(c.label, c.view.finished) for c in grid.cells])
    assert set(said.values()) == {True, False}  # both verdicts occur here, so agreeing means something
    heat = gf.accuracy_heatmap_figure(grid).data[0]
    table = gr.cells_table(grid).set_index("network")
    for r, row in enumerate(grid.rows):
        for c, depth in enumerate(grid.depths):
            cell = grid.cell_at(row, depth)
            assert heat.text[r][c].endswith("⊘") == said[cell.label] == cell.stuck == table.loc[cell.label, "stuck"]
            band = gf.gradient_band_figure(cell.view, cell.label)
            first_layer = band.data[0].y[0]
            marks = band.data[1] if len(band.data) > 1 else None
            marked = {x for x, y in zip(marks.x, marks.y) if y == first_layer} if marks is not None else set()
            early = band.data[0].x[:verdicts.EARLY_LOG_POINTS]
            on_chart = 2 * sum(step in marked for step in early) > len(early)
            assert cell.vanishing == on_chart == table.loc[cell.label, "vanishing"], cell.label
            assert ("vanishing" in heat.customdata[r][c]) == cell.vanishing
    note = gr.stuck_note(grid)
    assert f"({sum(said.values())} here)" in note and said[note.split("For example ")[1].split(" gives")[0]]
    baseline = "sigmoid x4"
    text = lessons.fixes_sentence(said, baseline, epochs).lower()
    assert (f"({baseline}) is stuck" in text) == said[baseline]
    learned = text.split(" learned.")[0].rsplit(". ", 1)[-1] if " learned." in text else ""
    still = text.split(" stay")[0].rsplit(". ", 1)[-1] if " stay" in text else ""
    for label in (label for label in said if label != baseline):
        assert (label in learned, label in still) == (not said[label], said[label]), (label, text)
    seeds = lessons.seeds_sentence({i: said[c.label] for i, c in enumerate(grid.cells)}, epochs)
    assert f"{sum(said.values())} of {len(said)} seeds got stuck" in seeds


def test_every_collapsed_mark_agrees_with_the_sentences_that_name_it(lesson_grid):
    """The ↯ on a cell, its hover, the table's collapsed column and cause, the note under the grid and the
    fixes/seeds sentences read one collapse verdict (core.lessons.verdicts.run_collapse) and name the same cause."""
    grid, epochs = lesson_grid, lesson_grid.cells[0].config["epochs"]
    said = lessons.collapse_verdicts([(c.label, c.events) for c in grid.cells])
    assert {v is None for v in said.values()} == {True, False}  # both verdicts occur here
    heat = gf.accuracy_heatmap_figure(grid).data[0]
    table = gr.cells_table(grid).set_index("network")
    note = gr.stuck_note(grid)
    groups = lessons.collapse_groups(said)
    named = {label for labels, _ in groups for label in labels}
    for labels, found in groups:  # runs that read the same are said together, each once
        assert lessons.collapse_group_text(labels, found) in note
        assert all(lessons.collapse_cause_words(said[label]) == lessons.collapse_cause_words(found) for label in labels)
    for r, row in enumerate(grid.rows):
        for c, depth in enumerate(grid.depths):
            cell = grid.cell_at(row, depth)
            found = said[cell.label]
            assert cell.collapse == found
            assert (gr.COLLAPSED_MARK in heat.text[r][c]) == (found is not None) == table.loc[cell.label, "collapsed"]
            assert ("collapsed" in heat.customdata[r][c]) == (found is not None)
            assert (cell.label in named) == (found is not None), cell.label
            if found is not None:
                cause = lessons.collapse_cause_words(found)
                assert table.loc[cell.label, "collapse cause"] == cause and cause in heat.customdata[r][c]
    stuck = lessons.stuck_verdicts([(c.label, c.view.finished) for c in grid.cells])
    text = lessons.fixes_sentence(stuck, "sigmoid x4", epochs, said)
    seeds = lessons.seeds_sentence({i: stuck[c.label] for i, c in enumerate(grid.cells)}, epochs, None,
                                   {i: said[c.label] for i, c in enumerate(grid.cells)})
    for labels, found in groups:
        assert lessons.collapse_group_text(labels, found) in text
    for labels, found in lessons.collapse_groups({i: said[c.label] for i, c in enumerate(grid.cells)},
                                                 lambda seed: f"Seed {seed}"):
        assert lessons.collapse_group_text(labels, found) in seeds
    pending = lessons.fixes_sentence({label: None for label in stuck}, "sigmoid x4", epochs, said)
    assert "collapsed" not in pending  # before every result is in, only what is tested


def test_the_lessons_stuck_sigmoid_is_marked_vanishing_and_learning_relu_is_not(lesson_grid):
    """Issue 21.7: the one "vanishing" marks the lesson's own stuck sigmoid x4 (✕ on its first layer) and
    nothing in a ReLU network that learns, nor in the shallow sigmoid one that learns."""
    stuck = lesson_grid.cell_at("sigmoid", 4)
    assert stuck.stuck and stuck.vanishing
    band = gf.gradient_band_figure(stuck.view, stuck.label)
    assert band.data[0].y[0] in band.data[1].y and "1/64" in band.data[1].name
    for cell in [lesson_grid.cell_at("relu", d) for d in lesson_grid.depths] + [lesson_grid.cell_at("sigmoid", 1)]:
        end = cell.view.finished
        assert end.test_acc > 3 / 10 and end.test_loss < 0.75 * math.log(10), cell.label  # it learned
        assert not cell.vanishing and len(gf.gradient_band_figure(cell.view, cell.label).data) == 1, cell.label


def test_figures_wait_politely_before_data():
    empty = gr.reduce_grid([])
    for fig in (gf.accuracy_heatmap_figure(empty), gf.loss_multiples_figure(empty)):
        assert fig.layout.annotations and "Waiting" in fig.layout.annotations[0].text
    assert gr.cells_table(empty).empty


def test_a_network_with_no_gradient_anywhere_says_so_instead_of_an_empty_chart(stuck_grid_events):
    """A dead ReLU network's norms are all exactly 0: the band says nothing flows back, not a blank chart."""
    cell = gr.reduce_grid(stuck_grid_events).cell_at("sigmoid", 8)
    dead = [dataclasses.replace(e, grad_norm=[0.0] * len(e.grad_norm)) if e.kind == "layers" else e for e in cell.events]
    said = [a.text for a in gf.gradient_band_figure(reduce_events(dead)).layout.annotations]
    assert said == [gf.NO_GRADIENT]
    assert gf.NO_GRADIENT not in [a.text for a in gf.gradient_band_figure(cell.view).layout.annotations]
