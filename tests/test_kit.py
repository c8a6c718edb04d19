"""The lesson kit's shared parts: URL round-trips of grid and comparison configs, the bad-link fallback
on every page, the shared train button's error path, links that reopen a setup (lesson, preset, run)."""
from __future__ import annotations

import json
import tracemalloc

import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import new_app, open_with_query, texts
from app.forms import url
from app.forms.compare import FAMILY_PRESETS
from app.records.jobs import JobState, status_message
from app.records.run import Progress
from app.text import ago, epoch_text, number, plural
from core.engine.config import ConfigError, RunConfig
from core.lab.compare import ComparisonConfig
from core.engine.task import MAX_JSON_DEPTH, clipped, first_few, parse_json, shortened
from core.lab.grid import GridConfig
from core.lessons.families import VANISHING_LESSON, VANISHING_QUICK, fixes_grid
from core.lessons.presets import PRESETS


# --- configs in the URL (pure) ------------------------------------------------------------------------
GRIDS = [VANISHING_QUICK, VANISHING_LESSON, fixes_grid(RunConfig(hidden=(10,) * 4, lr=0.2, seed=7)),
         GridConfig(base=RunConfig(dataset="moons", epochs=3), activations=("relu",), depths=(1, 3, 7), width=32),
         GridConfig(base=RunConfig(), inits=("he", "xavier"), norms=("none", "layernorm")),
         GridConfig.from_runs(list(PRESETS["E-eight-networks"].runs))]


@pytest.mark.parametrize("grid", GRIDS, ids=range(len(GRIDS)))
def test_grid_config_round_trips_through_the_query_string(grid):
    query = grid.to_query()
    assert all(isinstance(v, str) for v in query.values())
    back = GridConfig.from_query(query)
    assert back == grid and back.key() == grid.key() and back.cells() == grid.cells()


@pytest.mark.parametrize("query, field", [({"depths": "one-eight"}, "depths"), ({"width": "wide"}, "width"),
                                          ({"activations": "sigmoid,swish"}, "activations"),
                                          ({"variants": "[not json"}, "variants"), ({"lr": "fast"}, "lr")])
def test_bad_grid_query_names_the_setting(query, field):
    with pytest.raises(ConfigError) as err:
        GridConfig.from_query(query)
    assert field in err.value.problems


@pytest.mark.parametrize("query, field", [({"depths": "1-5000000"}, "depths"), ({"depths": "1-" + "9" * 60}, "depths"),
                                          ({"depths": "0,1,2," + ",".join(["25"] * 50)}, "depths"),
                                          ({"depths": ",".join(map(str, range(10_000)))}, "depths"),
                                          ({"depths": "8-1"}, "depths"), ({"width": "9" * 5000}, "width"),
                                          ({"activations": ",".join(["swish"] * 10_000)}, "activations"),
                                          ({"variants": "[" * 5000}, "variants"), ({"variants": '{"a":1}'}, "variants"),
                                          ({"variants": "[1,2]"}, "variants"), ({"variants": "[" + "9" * 5000 + "]"}, "variants"),
                                          ({"variants": "[" + ",".join(['["a",{}]'] * 10_000) + "]"}, "variants")])
def test_a_hostile_grid_query_is_refused_in_a_few_words(query, field):
    with pytest.raises(ConfigError) as err:
        GridConfig.from_query(query)
    assert field in err.value.problems and len(str(err.value)) < 300


@pytest.mark.parametrize("variants", ["[" * 5000, '{"a":1}', "[1,2]", '"text"', "[" + ",".join(['["a",{}]'] * 10_000) + "]"])
def test_a_hostile_comparison_query_is_refused_in_a_few_words(variants):
    with pytest.raises(ConfigError) as err:
        ComparisonConfig.from_query({"variants": variants})
    assert "variants" in err.value.problems and len(str(err.value)) < 300


def test_refusals_name_a_few_offenders_and_how_many():
    assert first_few(["a", "b"]) == "'a', 'b'"
    assert first_few([str(i) for i in range(1000)], 3) == "'0', '1', '2' and 997 more (1,000 in all)"
    assert len(shortened("x" * 10**6)) < 80 and clipped("y" * 500, 100).startswith("y" * 100)
    nested = 5
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = [nested]
    assert parse_json(json.dumps([nested]), "X") == [nested]  # MAX_JSON_DEPTH levels are fine, one more is not
    with pytest.raises(ConfigError, match="nests too deeply"):
        parse_json(json.dumps([[nested]]), "X")


@pytest.mark.parametrize("name", list(FAMILY_PRESETS))
def test_comparison_config_round_trips_and_keeps_the_family(name):
    runs = FAMILY_PRESETS[name].runs
    cmp = ComparisonConfig.from_runs(runs)
    assert [cfg for _, cfg in cmp.family()] == [cfg for _, cfg in runs]  # the rows rebuild every run exactly
    back = ComparisonConfig.from_query(cmp.to_query())
    assert back == cmp and back.key() == cmp.key() and back.family() == cmp.family()
    assert ComparisonConfig.from_dict(cmp.to_dict()) == cmp


def test_comparison_config_rejects_bad_variants():
    base = RunConfig()
    with pytest.raises(ConfigError):
        ComparisonConfig(base, (("x", {"colour": "red"}),))
    with pytest.raises(ConfigError):
        ComparisonConfig(base, (("x", {"dropout": 2.0}),))
    with pytest.raises(ConfigError):
        ComparisonConfig.from_query({"variants": "{]"})


# --- wording (pure) ------------------------------------------------------------------------------------
def test_words_and_numbers_read_right():
    assert plural(1, "minute") == "1 minute" and plural(2, "minute") == "2 minutes" and plural(1200, "step") == "1,200 steps"
    assert ago(61) == "61 seconds ago" and ago(100) == "1 minute ago" and ago(3000) == "50 minutes ago"
    assert epoch_text(10.0, 10) == "Epoch 10 of 10" and epoch_text(3.45, 10) == "Epoch 3.5 of 10"
    assert number(None) == "n/a" and number(float("nan")) == "n/a" and number(0.5) == "0.500"


def test_cancelled_status_says_where_it_stopped_once():
    progress = Progress(step=847, total_steps=3000, epoch=2.8, total_epochs=10, elapsed=12.0, eta=0.0)
    level, text = status_message(JobState("k", "cancelled"), progress, reason="cancelled at step 847")
    assert level == "warning" and text.lower().count("cancelled") == 1 and "847 of 3,000" in text
    capped = "Stopped by the server: it trained longer than 60 minutes (GRADIENT_LAB_MAX_JOB_MINUTES)"
    level, text = status_message(JobState("k", "cancelled"), progress, reason=f"{capped}; cancelled at step 847")
    assert level == "warning" and "GRADIENT_LAB_MAX_JOB_MINUTES" in text and "847 of 3,000" in text  # the server's why
    dropped = "Dropped from the full queue (GRADIENT_LAB_MAX_QUEUED = 64) before it started"
    assert dropped in status_message(JobState("k", "cancelled", error=dropped))[1]  # no events: the job's error
    level, text = status_message(JobState("k", "queued", queue_position=1))
    assert "1 run ahead" in text
    level, text = status_message(JobState("k", "diverged"), reason="the loss is NaN.")
    assert text == "**Diverged.** The loss is NaN."


# --- pages (AppTest) -----------------------------------------------------------------------------------
BAD_LINKS = [
    ("playground", {"lr": "fast", "colour": "blue"}, lambda at: at.sidebar.number_input(key="cfg_lr").value == 1e-3),
    ("vanishing", {"depths": "one-eight", "colour": "blue"}, lambda at: at.slider(key="vg_depths").value == (1, 8)),
    ("regularization", {"variants": "[oops", "colour": "blue"},
     lambda at: at.data_editor[0].value["variant"].tolist()[0] == "none"),
    ("data", {"dataset": "no-such-set", "colour": "blue"}, lambda at: at.selectbox(key="data_dataset").value == "digits"),
    ("library", {"colour": "blue"}, lambda at: at.title[0].value == "Run library"),
]


@pytest.mark.parametrize("page, query, at_defaults", BAD_LINKS, ids=[b[0] for b in BAD_LINKS])
def test_bad_link_ignores_each_bad_value_by_name(isolated_cache, page, query, at_defaults):
    at = open_with_query(page, query)
    notice = texts(at.warning).replace("\\", "")
    assert "colour" in notice  # the unknown setting is named
    for name in set(query) - {"colour"}:  # so is each bad value, and the rest of the link is kept (issue 26.10)
        assert f"{name} = " in notice and "was ignored, the rest of the link is kept" in notice
    assert at_defaults(at)
    assert "colour" not in at.query_params  # the page's own link replaces the bad one


DEEP = "[" * 5000 + "]" * 5000
HUGE = "9" * 60
HOSTILE_LINKS = [  # (page, query): what a load and fault probe sent (issue 20); each must give a short notice
    ("vanishing", {"depths": "1-5000000"}),
    ("vanishing", {"depths": f"1-{HUGE}"}),
    ("vanishing", {"depths": ",".join(map(str, range(30_000)))}),
    ("vanishing", {"variants": DEEP}),
    ("vanishing", {"variants": '{"a":1}'}),
    ("vanishing", {"variants": "[" + ",".join(f'["v{i}",{{}}]' for i in range(10_000)) + "]"}),
    ("vanishing", {"fix_depth": HUGE, "width": HUGE}),
    ("vanishing", {"activations": ",".join(["swish"] * 50_000)}),
    ("regularization", {"variants": DEEP}),
    ("regularization", {"variants": '{"a":1}'}),
    ("regularization", {"variants": "[1,2]"}),
    ("regularization", {"variants": "[" + ",".join(['["a",{"l2":"x"}]'] * 10_000) + "]"}),
    ("playground", {"dataset": "x" * 200_000, "lr": HUGE}),
    ("data", {"dataset": "x" * 200_000, "seed": HUGE}),
    ("sweeps", {"space_lr": "l:1:" + HUGE, "sweep_trials": HUGE}),
    ("gradcheck", {"examples": "1e999", "eps": "x" * 100_000}),
    ("gradcheck", {"stored_run": "x" * 100_000}),
    ("playground", {"preset": "x" * 100_000, "run": HUGE * 100}),
    ("optimizers", {"steps": HUGE * 100, "lr": "1e999", "fn": "x" * 100_000}),
]


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, at.exception
    shown = "\n".join(str(getattr(e, "value", "")) for e in [*at.main, *at.sidebar])
    assert "Traceback" not in shown and 'File "' not in shown and ".py\", line" not in shown


@pytest.mark.parametrize("page, query", HOSTILE_LINKS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(HOSTILE_LINKS)])
def test_a_hostile_link_gives_a_short_notice_and_the_defaults(isolated_cache, page, query):
    at = open_with_query(page, query)
    _no_traceback(at)
    notices = [w.value for w in at.warning]
    assert any(words in n for n in notices for words in ("not valid", "ignored", "not allowed")), notices
    assert all(len(n) <= url.MAX_NOTICE_CHARS + 100 for n in notices)  # bounded, whatever the link holds
    assert sum(len(str(v)) for v in at.query_params.values()) < 2000  # the page's own link replaced the bad one


def _peak_bytes(page: str, query: dict) -> int:
    tracemalloc.start()
    try:
        open_with_query(page, query)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_hostile_depth_range_costs_no_more_memory_than_a_plain_link(isolated_cache):
    """1-5000000 built a 5M-element list and a 44 MB message; now it costs what a plain link costs."""
    for depths in ("1-8", "1-50"):  # both paths once first: imports and caches warmed up
        open_with_query("vanishing", {"depths": depths})
    plain = _peak_bytes("vanishing", {"depths": "1-8"})
    hostile = _peak_bytes("vanishing", {"depths": "1-5000000"})
    assert hostile < 1.5 * plain, (hostile, plain)


@pytest.mark.parametrize("page, button, slot", [("playground", "train", "gl_job"),
                                                 ("vanishing", "vg_train", "vg_grid_job"),
                                                 ("regularization", "reg_train", "reg_family")])
def test_train_button_shows_why_it_could_not_start(isolated_cache, monkeypatch, page, button, slot):
    def no_device(self, config, force=False, session=None, browser=None):
        raise RuntimeError("CUDA device 0 went away")

    monkeypatch.setattr(core.serve.jobs.JobManager, "submit", no_device)
    at = open_with_query(page, {"dataset": "moons"} if page == "vanishing" else {})
    at.button(key=button).click().run()
    assert not at.exception, at.exception
    assert "Could not start training: CUDA device 0 went away" in texts(at.error).replace("\\", "")
    assert slot not in at.session_state  # nothing half-started is remembered
    assert not at.button(key=button).disabled  # and the student can try again


def test_a_shared_playground_link_restores_the_lesson_preset(isolated_cache):
    at = new_app()
    at.sidebar.selectbox(key="gl_preset").select("A-fixes").run()
    at.sidebar.selectbox(key="gl_preset_run").select(2).run()
    link = dict(at.query_params)
    assert link["preset"] == "A-fixes" and link["run"] == "2"
    fresh = new_app(link)
    assert fresh.sidebar.selectbox(key="gl_preset").value == "A-fixes"
    assert fresh.sidebar.selectbox(key="gl_preset_run").value == 2
    assert fresh.sidebar.selectbox(key="cfg_init").value == "he"
    assert "Lesson A" in texts(fresh.info) and "changed some settings" not in texts(fresh.info)


@pytest.mark.parametrize("page, change, read", [
    ("vanishing", lambda at: at.number_input(key="vg_width").set_value(14), lambda at: at.number_input(key="vg_width").value == 14),
    ("regularization", lambda at: at.number_input(key="reg_epochs").set_value(7), lambda at: at.number_input(key="reg_epochs").value == 7),
    ("data", lambda at: at.number_input(key="data_seed").set_value(5), lambda at: at.number_input(key="data_seed").value == 5),
])
def test_every_page_reopens_from_its_link(isolated_cache, page, change, read):
    at = open_with_query(page, {})
    change(at).run()
    assert not at.exception, at.exception
    fresh = open_with_query(page, dict(at.query_params))
    assert read(fresh), dict(at.query_params)


def test_lesson_button_is_in_the_link(isolated_cache, shared_mnist):
    at = open_with_query("regularization", {})
    at.button(key="reg_load_C").click().run()
    assert at.query_params["lesson"] == "C"
    fresh = open_with_query("regularization", dict(at.query_params))
    assert "Lesson C" in texts(fresh.info)
    assert fresh.data_editor[0].value["variant"].tolist() == [label for label, _ in PRESETS["C-kaggle-mnist"].runs]


def test_open_in_playground_works_from_a_direct_link(isolated_cache):
    cfg = RunConfig(epochs=1, seed=11, hidden=(24,))
    manager = core.serve.jobs.get_manager()
    manager.wait(manager.submit(cfg), timeout=120)
    at = open_with_query("library", {})  # the session starts on the library (a bookmark), not the Playground
    table = at.dataframe[0]
    at.session_state[table.key] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="library_table_open").click().run()
    assert not at.exception, at.exception
    assert at.sidebar.number_input(key="cfg_seed").value == 11
    assert at.sidebar.text_input(key="cfg_hidden").value == "24"
    assert "From cache" in texts(at.info)


def test_a_batched_lane_does_not_claim_the_groups_time(isolated_cache):
    grid = GridConfig(base=RunConfig(dataset="moons", epochs=2, log_every=20), activations=("relu", "tanh"), depths=(1,))
    manager = core.serve.jobs.get_manager()
    snap = manager.wait(manager.submit(grid), timeout=240)
    assert snap.status == "finished" and snap.events[0].batched == [[0, 1]]
    label, cell = grid.cells()[0]
    at = new_app(cell.to_query())  # the cell alone, opened in the Playground
    assert not at.exception, at.exception
    epoch_time = next(m for m in at.metric if m.label == "Time per epoch")
    assert epoch_time.value == "n/a" and "batched together with 1 other network" in epoch_time.help
    at.switch_page("../pages/library.py").run()
    table = at.dataframe[0].value
    assert set(table["trained"]) == {"batched with 1 other"} and table["s/epoch"].isna().all()
    assert sorted(table["label"]) == sorted(lb for lb, _ in grid.cells())
