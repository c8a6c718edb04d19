"""The switch "Show accuracy as the coursework reports computed it": on, every place that shows a run's accuracy
shows the reports' number beside the true one, labelled, and that number is printed_as_reported(true accuracy,
classes) of the same run (the oracle: core.lessons.sentences); off, nothing changes."""
from __future__ import annotations

import re
import time

import pytest

import core.serve.jobs
from apptest_helpers import new_app, texts
from helpers import train_events
from app.figures import grid as gf
from app.records import grid as gr
from app.records.compare import results_table
from app.records.reported import SUFFIX, SWITCH_KEY, SWITCH_LABEL, reported_label
from app.records.run import reduce_events
from app.views.grid import shown_cells_table
from core.__main__ import main
from core.engine.config import RunConfig
from core.engine.data import load_dataset
from core.lab.grid import GridConfig, run_grid
from core.lessons.sentences import printed_as_reported

TINY = dict(dataset="digits", hidden=(16,), epochs=2, lr=0.05, log_every=20)


@pytest.fixture(scope="module")
def grid():
    """A two-cell digits grid, trained for real."""
    base = RunConfig(dataset="digits", epochs=2, batch_size=32, optimizer="sgd", lr=0.2, log_every=20)
    config = GridConfig(base=base, depths=(1, 3), variants=(("sigmoid", {"activation": "sigmoid"}),))
    events: list = []
    assert run_grid(config, events.append).status == "finished"
    return gr.reduce_grid(events)


def test_the_cells_table_and_heatmap_show_both_numbers_labelled(grid):
    plain = shown_cells_table(grid, False)
    assert sorted(plain.columns) == sorted(gr.cells_table(grid).columns)  # off: the table's own columns, none added
    table = shown_cells_table(grid, True)
    label = reported_label("accuracy")
    columns = list(table.columns)
    assert columns.index(label) == columns.index("accuracy") + 1  # beside the truth
    for cell, (_, row) in zip(grid.cells, table.iterrows()):
        assert row["accuracy"] == cell.view.finished.test_acc
        assert row[label] == pytest.approx(printed_as_reported(cell.view.finished.test_acc, len(cell.view.classes)))
    off = gf.accuracy_heatmap_figure(grid).data[0].customdata
    on = gf.accuracy_heatmap_figure(grid, as_reported=True).data[0].customdata
    cell = grid.cells[0]
    hover = next(h for row in on for h in row if h.startswith(cell.label))
    assert f"test accuracy {cell.view.finished.test_acc:.4f}" in hover
    assert f"test accuracy {SUFFIX} {printed_as_reported(cell.view.finished.test_acc, 10):.4f}" in hover
    assert not any(SUFFIX in h for row in off for h in row)


def test_the_comparison_results_table_shows_both_numbers_labelled():
    runs = []
    for label, l2 in (("none", 0.0), ("L2", 0.01)):
        _, events = train_events(RunConfig(**TINY, l2=l2))
        runs.append((label, reduce_events(events)))
    assert reported_label("test acc") not in results_table(runs).columns
    table = results_table(runs, as_reported=True)
    columns = list(table.columns)
    label = reported_label("test acc")
    assert columns.index(label) == columns.index("test acc") + 1
    for (_, view), (_, row) in zip(runs, table.iterrows()):
        assert row["test acc"] == view.finished.test_acc
        assert row[label] == pytest.approx(printed_as_reported(view.finished.test_acc, len(view.classes)))


def test_the_cli_prints_both_numbers_labelled_on_request(isolated_cache, tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(RunConfig(**TINY).to_json())
    assert main(["run", "--config", str(path), "--quiet"]) == 0
    assert "as reported" not in capsys.readouterr().out
    assert main(["run", "--config", str(path), "--quiet", "--as-reported"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key=(\S+)", out).group(1)
    end = next(e for e in core.serve.jobs.get_manager().snapshot(key).events if e.kind == "finished")
    classes = load_dataset("digits").n_classes
    for split, acc in (("train", end.train_acc), ("validation", end.val_acc), ("test", end.test_acc)):
        line = next(line for line in out.splitlines() if line.split()[:1] == [split])
        assert f"accuracy {acc:.4f}  as reported (A/B) {printed_as_reported(acc, classes):.4f}" in line
    assert "divided by the number of classes" in out and f"({classes} classes)" in out


def test_the_playground_switch_shows_both_numbers_and_keeps_its_state_across_pages(isolated_cache):
    at = new_app({"epochs": "2", "log_every": "20", "hidden": "[16]"})
    assert at.toggle(key=SWITCH_KEY).label == SWITCH_LABEL and at.toggle(key=SWITCH_KEY).value is False
    at.button(key="train").click().run()
    key = at.session_state["gl_job"]
    core.serve.jobs.get_manager().wait(key, timeout=240)
    deadline = time.monotonic() + 120
    while not any(m.label == "Test accuracy" for m in at.metric) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert not at.exception, at.exception
    assert not any(SUFFIX in m.label for m in at.metric)  # off: the summary as it was
    at.toggle(key=SWITCH_KEY).set_value(True).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    end = next(e for e in core.serve.jobs.get_manager().snapshot(key).events if e.kind == "finished")
    assert metrics["Test accuracy (true)"] == f"{end.test_acc:.4f}"
    assert metrics[f"Test accuracy {SUFFIX}"] == f"{printed_as_reported(end.test_acc, 10):.4f}"
    assert "reports of lessons A and B" in texts(at.caption)
    at.switch_page("../pages/vanishing.py").run()  # one switch per session: the next page finds it on
    assert not at.exception, at.exception
    assert at.toggle(key=SWITCH_KEY).value is True
    at.toggle(key=SWITCH_KEY).set_value(False).run()
    at.switch_page("../pages/regularization.py").run()
    assert not at.exception, at.exception
    assert at.toggle(key=SWITCH_KEY).value is False
