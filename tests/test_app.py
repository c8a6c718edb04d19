"""AppTest tests of the dashboard (pages render, presets, training, validation, cached replay, URL)
plus unit tests of the pure reducers and figure builders in app/."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
import core.serve.runners
from apptest_helpers import new_app, open_with_query, texts
from helpers import plotly_values, train_events
from app.figures import run as figures
from app.records import run as runview
from app.views import jobs as jobs_view
from app.views.run import group_key
from app.forms.url import MAX_NOTICE_CHARS
from core.engine.config import RunConfig
from core.lessons.presets import get_preset
from core.serve import identity

REPO = Path(__file__).resolve().parents[1]
# A digits run that learns a lot in a few seconds on a CPU.
DIGITS_QUERY = {"epochs": "5", "log_every": "10"}


@pytest.fixture
def app_env(isolated_cache):
    """Isolated run store and a fresh job manager, shared by the test and the AppTest script."""
    return isolated_cache


def metric(at: AppTest, label: str) -> float:
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}; metrics: {[m.label for m in at.metric]}"
    return float(found[0].value.replace(",", "").split()[0])


def wait_for_result(at: AppTest, timeout: float = 240) -> AppTest:
    """AppTest never fires run_every timers: rerun until the final metrics appear."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.label == "Test accuracy" for m in at.metric):
            return at
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
    raise AssertionError("the run did not finish in time; status: " + texts(at.info) + texts(at.error))


def page_files() -> list[str]:
    import app.main as main  # noqa: F401  (imports streamlit only)

    return [p.file for p in main.PAGES if (REPO / "pages" / p.file).is_file()]


# --- pages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", page_files())
def test_every_page_renders_without_exception(app_env, page):
    at = new_app()
    assert not at.exception
    at.switch_page(f"../pages/{page}").run()
    assert not at.exception, at.exception
    assert at.title, f"{page} has no title"


def test_sidebar_shows_device_and_queue(app_env):
    at = new_app()
    status = texts(at.sidebar.caption)
    assert "Training on CPU" in status or "Training on GPU" in status
    assert "0 running, 0 queued" in status


# --- widgets, presets, URL -------------------------------------------------------------------------
def test_widgets_show_schema_defaults_grouped(app_env):
    at = new_app()
    assert [e.label for e in at.sidebar.expander] == ["Data", "Architecture", "Regularization", "Optimization"]
    assert at.sidebar.selectbox(key="cfg_dataset").value == "digits"
    assert at.sidebar.text_input(key="cfg_hidden").value == "64,64"
    assert at.sidebar.number_input(key="cfg_lr").value == pytest.approx(1e-3)
    assert at.sidebar.number_input(key="cfg_epochs").value == 10
    assert at.query_params == {} or all(not v for v in at.query_params.values())


def test_preset_picker_fills_the_widgets(app_env, no_mnist):
    at = new_app()
    at.sidebar.selectbox(key="gl_preset").select("A-fixes").run()
    assert not at.exception
    assert at.sidebar.text_input(key="cfg_hidden").value == "10,10,10,10"
    assert at.sidebar.text_input(key="cfg_activation").value == "sigmoid"
    assert at.sidebar.selectbox(key="cfg_optimizer").value == "sgd"
    assert at.sidebar.number_input(key="cfg_lr").value == pytest.approx(0.2)
    assert at.sidebar.number_input(key="cfg_batch_size").value == 32
    # MNIST is not here: the preset lands on digits with the lesson's Digits settings, and the page says so
    fallback = get_preset("A-fixes").fallback
    assert at.sidebar.number_input(key="cfg_epochs").value == dict(fallback.overrides)["epochs"]
    assert at.sidebar.selectbox(key="cfg_dataset").value == "digits"
    notice = texts(at.warning).replace("\\", "")
    assert "MNIST is not available on this server" in notice and fallback.why in notice
    assert "Lesson A" in texts(at.info) and "On Digits" in texts(at.info)
    # the family's runs are selectable by label
    run_box = at.sidebar.selectbox(key="gl_preset_run")
    assert "relu + he" in run_box.options
    run_box.select(2).run()
    assert at.sidebar.text_input(key="cfg_activation").value == "relu"
    assert at.sidebar.selectbox(key="cfg_init").value == "he"
    assert at.query_params["init"] == "he" and "activation" not in at.query_params  # relu is the default


def test_preset_keeps_mnist_when_the_files_are_here(app_env, shared_mnist):
    at = new_app()
    at.sidebar.selectbox(key="gl_preset").select("A-sigmoid-depth").run()
    assert at.sidebar.selectbox(key="cfg_dataset").value == "mnist"
    assert "not available" not in texts(at.warning)


def test_url_round_trip_and_seed(app_env):
    at = new_app({"seed": "7", "hidden": "32", "lr": "0.01"})
    assert at.sidebar.number_input(key="cfg_seed").value == 7
    assert at.sidebar.text_input(key="cfg_hidden").value == "32"
    at.sidebar.number_input(key="cfg_epochs").set_value(3).run()
    assert at.query_params["epochs"] == "3" and at.query_params["seed"] == "7"
    assert RunConfig.from_query(at.query_params) == RunConfig(seed=7, hidden=(32,), lr=0.01, epochs=3)


def test_a_bad_value_in_a_link_is_ignored_and_the_valid_ones_kept(app_env):
    """Issue 26.10: one bad value threw away every valid one; now each bad value is named in its own notice."""
    at = new_app({"lr": "fast", "batch_size": "1.5", "hidden": "32,16", "seed": "7", "colour": "blue"})
    assert not at.exception
    notices = [w.value.replace("\\", "") for w in at.warning]
    assert len(notices) == 3 and all(len(n) <= MAX_NOTICE_CHARS for n in notices)
    assert any("lr = 'fast' was ignored" in n and "Learning rate (lr) must be a number" in n for n in notices)
    assert any("batch_size = '1.5' was ignored" in n for n in notices) and any("colour" in n for n in notices)
    assert at.sidebar.number_input(key="cfg_lr").value == pytest.approx(RunConfig().lr)
    assert at.sidebar.text_input(key="cfg_hidden").value == "32,16"
    assert at.sidebar.number_input(key="cfg_seed").value == 7


def test_a_new_visitor_on_a_stored_run_sees_the_setup_and_is_told_it_is_stored(app_env):
    """Issue 26.10: a new visitor landed on someone's stored run with only "Train again" and its curves."""
    query = {"epochs": "1", "hidden": "8"}
    first = new_app(query)
    first.button(key="train").click().run()
    manager = core.serve.jobs.get_manager()
    for key in list(manager._jobs):
        assert manager.wait(key, timeout=120).status == "finished"
    first.run()
    assert "The data" not in [s.value for s in first.subheader]  # the one who trained it sees the result
    visitor = new_app(query)
    assert not visitor.exception
    assert visitor.button(key="train").label == "Train again"
    assert "The data" in [s.value for s in visitor.subheader]
    assert "A stored result of exactly these settings" in texts(visitor.info)


def test_a_new_visitor_on_someones_live_run_goes_straight_to_it(app_env):
    """Someone else's run under way: the visitor is told it is shared and sees it live, without the data preview
    first (which a stored result gets): each new page costs the server less while a class watches one run."""
    query = {"epochs": "300", "hidden": "8", "batch_size": "8"}
    first = new_app(query)
    first.button(key="train").click().run()
    manager = core.serve.jobs.get_manager()
    (key,) = list(manager._jobs)
    try:
        assert not manager.snapshot(key).done
        visitor = new_app(query)
        assert not visitor.exception
        assert "already training exactly these settings" in texts(visitor.info)
        assert "The data" not in [s.value for s in visitor.subheader]
    finally:
        manager.cancel(key, everyone=True)


def test_depth_in_a_link_means_that_many_hidden_layers_of_the_width(app_env):
    at = new_app({"depth": "3", "hidden": "32"})
    assert not at.exception and not at.warning
    assert at.sidebar.text_input(key="cfg_hidden").value == "32,32,32"
    at = new_app({"depth": "deep"})
    assert "hidden=" in texts(at.warning).replace("\\", "") and at.sidebar.text_input(key="cfg_hidden").value == "64,64"


def test_unavailable_dataset_in_link_falls_back_to_digits(app_env, no_mnist):
    at = new_app({"dataset": "mnist"})
    assert at.sidebar.selectbox(key="cfg_dataset").value == "digits"
    assert "Not on this server: MNIST and Fashion-MNIST" in texts(at.sidebar.caption)
    assert "MNIST is not available on this server" in texts(at.warning).replace("\\", "")
    assert at.query_params["dataset"] == "mnist"  # the link keeps what the user chose (issue 8)


@pytest.mark.parametrize("key, value, message", [
    ("cfg_lr", 0.0, "Learning rate (lr) = 0 is out of range: allowed (0, 1000]"),
    ("cfg_hidden", "64,abc", "Hidden layers must be whole numbers like 128,64"),
    ("cfg_hidden", "5000", "each width must be in [1, 4096]"),
])
def test_invalid_value_shows_the_schema_message(app_env, key, value, message):
    at = new_app()
    widget = at.sidebar.number_input(key=key) if key == "cfg_lr" else at.sidebar.text_input(key=key)
    widget.set_value(value).run()
    assert not at.exception
    errors = texts(at.sidebar.error).replace("\\", "")
    assert message in errors
    assert at.button(key="train").disabled


def test_invalid_combination_is_reported_next_to_the_widget(app_env):
    at = new_app({"dataset": "spiral"})
    at.sidebar.selectbox(key="cfg_arch").select("cnn").run()
    assert not at.exception
    assert "needs an image dataset" in texts(at.sidebar.error)
    assert at.button(key="train").disabled


# --- training, cached replay -------------------------------------------------------------------------
def test_train_digits_job_finishes_with_learned_result(app_env):
    at = new_app(DIGITS_QUERY)
    assert at.button(key="train").label == "Train"
    at.button(key="train").click().run()
    assert not at.exception
    key = at.session_state["gl_job"]
    assert key == RunConfig(epochs=5, log_every=10).key()
    wait_for_result(at)
    acc = metric(at, "Test accuracy")
    assert acc > 0.8, f"a 64-64 MLP learns 8x8 digits far above chance (0.1); got {acc}"
    assert metric(at, "Parameters") > 0
    snap = core.serve.jobs.get_manager().snapshot(key)
    assert snap.status == "finished" and not snap.from_cache
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [str(c["layout"].get("title", {}).get("text", "")) for c in charts]
    assert any(t.startswith("Loss") for t in titles) and not any("Confusion" in t for t in titles)  # closed
    at.session_state[group_key("test")] = True  # the reader opens "Results on the test set"
    at.run()
    titles = [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]
    assert any("Confusion" in t for t in titles) and any("Misclassified" in t for t in titles)
    loss = next(c for c in charts if str(c["layout"].get("title", {}).get("text", "")).startswith("Loss"))
    train_trace = next(t for t in loss["data"] if t["name"] == "train")
    evals = [e for e in snap.events if e.kind == "eval"]
    assert len(evals) > 1  # the chart draws the run's log points, against epochs
    np.testing.assert_allclose(plotly_values(train_trace["x"]), [e.epoch for e in evals], rtol=1e-6)
    np.testing.assert_allclose(plotly_values(train_trace["y"]), [e.train_loss for e in evals], rtol=1e-5)
    assert [b.label for b in at.get("download_button")] == ["Download metrics (CSV)", "Download config (JSON)",
                                                         "Download the trained model (.zip)"]
    assert at.button(key="train").label == "Train again"
    assert "From cache" not in texts(at.info)  # this session watched it train
    # "Train again" really trains again (force), and the page follows the new run
    first = snap.saved_at
    at.button(key="train").click().run()
    assert core.serve.jobs.get_manager().snapshot(key).saved_at != first
    wait_for_result(at)
    assert core.serve.jobs.get_manager().wait(key, timeout=120).saved_at > first


def test_a_run_that_ends_before_the_page_first_reads_it_is_not_called_a_replay(app_env, monkeypatch):
    """A run faster than the first draw after Train (a tiny net on a warm worker) was trained by this
    session: the page must not say it came from the cache."""
    def until_done(key, timeout=0.4):
        core.serve.jobs.get_manager().wait(key, timeout=120)  # the job ends before the page draws it

    monkeypatch.setattr(jobs_view, "wait_for_first_point", until_done)
    at = new_app(RunConfig(epochs=1, hidden=(8,), seed=4).to_query())
    at.button(key="train").click().run()
    assert not at.exception
    assert core.serve.jobs.get_manager().snapshot(at.session_state["gl_job"]).done
    assert "From cache" not in texts(at.info)
    again = new_app(RunConfig(epochs=1, hidden=(8,), seed=4).to_query())  # another session: a replay
    assert "From cache, trained" in texts(again.info)


def test_cached_config_renders_without_starting_a_job(app_env, monkeypatch):
    cfg = RunConfig(epochs=2, log_every=10)
    manager = core.serve.jobs.get_manager()
    trained = manager.wait(manager.submit(cfg), timeout=120)
    assert trained.status == "finished"
    # A fresh server process: only the run store remembers the run. Training now would be a bug.
    monkeypatch.setattr(core.serve.jobs, "_manager", None)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached config must not train")

    monkeypatch.setattr(core.serve.runners, "train", no_training)  # where the manager's runner trains
    at = new_app(cfg.to_query())
    assert not at.exception
    assert "From cache, trained" in texts(at.info)
    assert metric(at, "Test accuracy") > 0.5
    assert at.button(key="train").label == "Train again"
    assert core.serve.jobs.get_manager().counts() == {"queued": 0, "running": 0}
    assert core.serve.jobs.get_manager().snapshot(cfg.key()).from_cache


def wait_for_status(at: AppTest, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        shown = (texts(at.warning) + texts(at.error)).replace("\\", "")
        if text in shown:
            return shown
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never shown; info: {texts(at.info)}")


def test_diverged_run_is_shown_plainly_with_the_reason(app_env):
    at = new_app({"activation": "linear", "optimizer": "sgd", "lr": "10", "epochs": "2"})
    at.button(key="train").click().run()
    shown = wait_for_status(at, "Diverged.")
    assert "learning rate (10) is probably too high" in shown
    assert at.get("plotly_chart")  # the curves up to the blow-up are still drawn


def test_cancelled_run_keeps_its_history(app_env):
    at = new_app({"epochs": "200", "log_every": "5"})
    at.button(key="train").click().run()
    key = at.session_state["gl_job"]
    assert at.button(key="train").label == "Training…" and at.button(key="train").disabled
    at.button(key=f"cancel_{key}").click().run()
    shown = wait_for_status(at, "Cancelled")
    assert "Cancelled** at step" in shown and shown.lower().count("cancelled") == 1  # said once (issue 8)
    titles = [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]
    assert any(t.startswith("Loss") for t in titles)
    assert at.button(key="train").label == "Train"  # a cancelled run can be trained again


def test_a_reloaded_page_cancels_its_own_run(app_env, monkeypatch):
    """Issue 20: after a reload (a new session carrying the cookie the first page set), Cancel stops the run:
    the session before the reload is the same browser, not "another session still watching"."""
    query = {"epochs": "200", "log_every": "5"}
    first = new_app(query)
    browser = first.session_state["gl_browser_id"]
    cookie = identity.sign(browser)
    assert any(f"gl_browser={cookie};" in h.proto.body for h in first.get("html"))  # the page set it
    first.button(key="train").click().run()
    key = first.session_state["gl_job"]
    monkeypatch.setattr(jobs_view, "request_cookie", lambda: cookie)  # the reload's request carries it
    reloaded = new_app(query)
    assert reloaded.session_state["gl_browser_id"] == browser and not reloaded.get("html")
    assert "other browser" not in (reloaded.button(key=f"cancel_{key}").help or "")
    reloaded.button(key=f"cancel_{key}").click().run()
    assert "Cancelled** at step" in wait_for_status(reloaded, "Cancelled")
    assert core.serve.jobs.get_manager().snapshot(key).status == "cancelled"


def test_failed_run_shows_the_message(app_env, monkeypatch):
    def broken(cfg, callbacks=(), cancel=None, key=None, **_):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(core.serve.runners, "train", broken)
    at = new_app({"seed": "5"})
    at.button(key="train").click().run()
    shown = wait_for_status(at, "Failed.")
    assert "the GPU caught fire" in shown


def test_library_lists_stored_runs(app_env):
    manager = core.serve.jobs.get_manager()
    manager.wait(manager.submit(RunConfig(epochs=1, seed=3)), timeout=120)
    at = new_app()
    at.switch_page("../pages/library.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 1 and table["dataset"][0] == "digits" and table["test accuracy"][0] > 0.2  # chance is 0.1


def test_toy_set_shows_decision_regions(app_env):
    cfg = RunConfig(dataset="moons", hidden=(16,), epochs=20, lr=0.01, log_every=20)
    manager = core.serve.jobs.get_manager()
    assert manager.wait(manager.submit(cfg), timeout=120).status == "finished"
    at = new_app(cfg.to_query())
    titles = [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]
    assert "Decision regions after training" in titles
    assert metric(at, "Test accuracy") > 0.8


# --- pure reducers and figures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moons_events():
    return train_events(RunConfig(dataset="moons", hidden=(8, 8), epochs=3, lr=0.01, log_every=5))[1]


def test_reduce_events_tables(moons_events):
    view = runview.reduce_events(moons_events)
    assert view.status == "finished" and view.done
    assert list(view.evals.columns) == runview.EVAL_COLUMNS and len(view.evals) >= 3
    assert view.step_losses["step"].tolist() == list(range(1, len(view.step_losses) + 1))
    assert set(view.layers["layer"]) == set(view.layer_names) == {"fc1", "fc2", "fc3"}
    names, steps, matrix = runview.layer_matrix(view, "grad_norm")
    assert matrix.shape == (3, len(steps)) and np.all(matrix > 0)
    assert len(view.log_points) == len(steps) and view.log_points[0].heatmaps[0].shape == (8, 2)
    assert view.progress().fraction == 1.0
    final = view.final_metrics().set_index("split")
    assert final.loc["test", "accuracy"] == pytest.approx(view.finished.test_acc)
    csv = runview.metrics_csv(view)
    assert csv.splitlines()[0].startswith("row,step,epoch,train_loss") and "final" in csv
    assert json.loads(runview.config_json(view))["dataset"] == "moons"


def test_prefix_of_events_is_a_running_view(moons_events):
    view = runview.reduce_events(moons_events[:4])
    assert view.status == "running" and not view.done and view.finished is None
    prog = view.progress(now=view.started.started_at + 1.0)
    assert 0 < prog.fraction < 1 and prog.elapsed == pytest.approx(1.0)


def test_figures_build_from_a_run(moons_events):
    view = runview.reduce_events(moons_events)
    loss = figures.loss_figure(view)
    assert [t.name for t in loss.data] == ["train", "validation"] and len(loss.data[0].x) == len(view.evals)
    assert figures.grad_norm_figure(view).layout.yaxis.type == "log"
    heat = figures.layer_heatmap_figure(view, "weight_delta")
    assert np.asarray(heat.data[0].z).shape == (3, len(view.evals))
    assert len(figures.weight_heatmaps_figure(view.log_points[-1], view.layer_names).data) == 3
    fin = view.finished
    assert np.asarray(figures.confusion_figure(fin.confusion, view.classes).data[0].z).sum() == 300
    boundary = figures.toy_scatter_figure(np.zeros((4, 2)), np.array([0, 1, 0, 1]), view.classes, grid=fin.decision_grid)
    assert boundary.data[0].type == "heatmap"
    empty = figures.loss_figure(runview.reduce_events(moons_events[:1]))
    assert "Waiting" in empty.layout.annotations[0].text


def test_user_class_names_are_plain_text_in_figures():
    evil = ['<a href="javascript:alert(1)">x</a>', "<b>bold</b>", "**md** [link](http://e.x)"]
    images = np.zeros((3, 1, 8, 8), dtype=np.uint8)
    grid = figures.examples_figure(images, evil)
    texts_ = [a.text for a in grid.layout.annotations]
    assert all("<a" not in t and "<b>" not in t for t in texts_) and "&lt;b&gt;bold&lt;/b&gt;" in texts_[1]
    conf = figures.confusion_figure([[1, 0, 0], [0, 1, 0], [0, 0, 1]], evil)
    assert all("<" not in t for t in conf.layout.xaxis.ticktext)


def test_the_data_page_names_every_class_beside_its_bar(app_env, shared_fashion):
    """Issue 26.9: the tenth bar label (Ankle Boot) was cut off under the class-count chart; the names now stand
    beside horizontal bars, on an axis that makes room for them."""
    at = open_with_query("data", {"dataset": "fashion-mnist"})
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Examples per class"))
    table = next(d.value for d in at.dataframe if "class" in d.value.columns)
    bars = spec["data"][0]
    assert bars["orientation"] == "h" and spec["layout"]["yaxis"]["automargin"] is True
    assert spec["layout"]["yaxis"]["ticktext"] == table["class"].tolist() and "Ankle Boot" in table["class"].tolist()
    assert bars["x"] == table["train + validation"].tolist()
