"""The Sweeps page (AppTest): form from the schema, explanation, a live sweep, two samplers, bad input.

AppTest never fires ``run_every`` timers, so a test waits for the job itself and reruns the page.
"""
from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import MAIN, open_page, texts
from core.engine.config import RunConfig
from core.lab.sweep.space import SweepConfig, trial_config
from core.lab.sweep.study import load_study
from core.lessons.families import SWEEP_PRESETS

PAGE = "../pages/sweeps.py"


@pytest.fixture
def page(isolated_cache, tmp_path, monkeypatch, request) -> AppTest:
    """The page, its studies in SQLite, or on the tests' PostgreSQL server when parametrized (indirect) so."""
    on_postgres = getattr(request, "param", "sqlite") == "postgresql"
    db = request.getfixturevalue("postgres_url") if on_postgres else f"sqlite:///{tmp_path / 'studies.db'}"
    monkeypatch.setenv("GRADIENT_LAB_SWEEP_DB", db)
    return open_page(PAGE)


def digits(at: AppTest, trials: int = 4) -> AppTest:
    at.selectbox(key="sw_preset").set_value("digits-sweep").run()
    at.number_input(key="sw_epochs").set_value(2).run()
    at.number_input(key="sw_trials").set_value(trials).run()
    assert not at.exception, at.exception
    return at


def wait(at: AppTest, *keys: str) -> AppTest:
    for key in keys:
        assert core.serve.jobs.get_manager().wait(key, timeout=240).status == "finished"
    return at.run()


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_page_explains_the_space_from_its_numbers(page, shared_fashion):  # the D space is a Fashion-MNIST space
    at = page
    at.selectbox(key="sw_preset").set_value("D-sweep").run()
    words = texts(at.markdown)
    grid = SWEEP_PRESETS["D-sweep"].sweep.grid_size
    assert f"{grid:,.0f} points" in words and "Grid search" in words and "Random search" in words
    assert "TPE" in words
    # the URL holds the sweep, and it round-trips
    assert SweepConfig.from_query(at.query_params.to_dict() if hasattr(at.query_params, "to_dict")
                                  else {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}
                                  ) == SWEEP_PRESETS["D-sweep"].sweep


def test_a_preset_whose_dataset_is_missing_says_so_once(isolated_cache, no_mnist, tmp_path, monkeypatch):
    """Issue 26.9: "Fashion-MNIST (not on this server) is not available on this server"."""
    monkeypatch.setenv("GRADIENT_LAB_SWEEP_DB", f"sqlite:///{tmp_path / 'studies.db'}")
    at = open_page(PAGE)
    at.selectbox(key="sw_preset").set_value("D-sweep").run()
    assert not at.exception, at.exception
    warning = texts(at.warning).replace("\\", "")
    assert "Fashion-MNIST is not available on this server" in warning and "(not on this server)" not in warning


@pytest.mark.parametrize("page", ["sqlite", "postgresql"], indirect=True)
def test_a_sweep_runs_live_with_figures_and_a_trial_table_and_continues_its_study(page):
    at = digits(page)
    at.button(key="sw_run").click().run()
    sweep = SweepConfig.from_json(at.session_state["sw_job"])
    at = wait(at, sweep.key())
    assert not at.exception, at.exception
    assert "finished" in texts(at.markdown)
    captions = texts(at.caption).replace("\\", "")
    assert "saves every finished trial" in captions and "sqlite" not in captions and "studies.db" not in captions
    titles = [str(s["layout"].get("title", {}).get("text", "")) for s in charts(at)]
    assert "Best validation accuracy so far" in titles
    assert any("Parallel Coordinate" in t for t in titles) and any("Slice" in t for t in titles)
    history = next(s for s in charts(at) if s["layout"]["title"]["text"] == "Best validation accuracy so far")
    best = next(t for t in history["data"] if "Best" in t.get("name", ""))["y"]
    assert all(b >= a for a, b in zip(best, best[1:])) and max(best) > 0.5  # digits: chance is 0.1
    table = at.dataframe[0].value
    assert len(table) == 4 and table["val acc"].max() == pytest.approx(max(best))
    row = table.iloc[0]
    params = {k: row[k] for k in ("activation", "depth", "lr", "optimizer", "width")}
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
    link = row["playground"]
    query = {k: v[0] for k, v in parse_qs(link.removeprefix("/?")).items()}
    assert RunConfig.from_query(query) == trial_config(sweep.base, params)  # the link opens this trial's run
    # a larger budget continues the same study: the four trials kept, two more asked
    at.number_input(key="sw_trials").set_value(6).run()
    at.button(key="sw_run").click().run()
    more = SweepConfig.from_json(at.session_state["sw_job"])
    assert more.study_name() == sweep.study_name() and more.key() != sweep.key()
    at = wait(at, more.key())
    assert not at.exception, at.exception
    longer = at.dataframe[0].value
    assert len(longer) == 6 and list(longer["val acc"][:4]) == pytest.approx(list(table["val acc"]))
    stored = load_study(more, os.environ["GRADIENT_LAB_SWEEP_DB"])  # the study lives in the database configured
    assert [t.value for t in stored.trials] == pytest.approx(list(longer["val acc"]))


def test_same_budget_two_samplers_overlays_and_concludes(page):
    at = digits(page, trials=4)
    at.button(key="sw_pair_run").click().run()
    pair = [SweepConfig.from_json(t) for t in at.session_state["sw_pair"]]
    assert [c.sampler for c in pair] == ["random", "tpe"]
    at = wait(at, *(c.key() for c in pair))
    assert not at.exception, at.exception
    history = next(s for s in charts(at) if s["layout"]["title"]["text"] == "Best validation accuracy so far")
    names = {t.get("name", "") for t in history["data"]}
    assert any("Random search" in n for n in names) and any("TPE" in n for n in names)
    assert "Conclusion" in texts(at.markdown)


def test_bad_input_gets_a_clear_message_and_no_run(page, monkeypatch):
    at = digits(page)
    at.multiselect(key="sw_knobs").set_value([]).run()
    assert "search space is empty" in texts(at.error)
    assert at.button(key="sw_run").disabled
    at.multiselect(key="sw_knobs").set_value(["lr"]).run()
    at.radio(key="sw_kind_lr").set_value("log").run()
    at.number_input(key="sw_hi_lr").set_value(5000.0).run()
    assert "Learning rate (lr) = 5000 is out of range" in texts(at.error).replace("\\", "")
    monkeypatch.setenv("GRADIENT_LAB_MAX_SWEEP_COST", "0.001")
    at.number_input(key="sw_hi_lr").set_value(0.1).run()
    assert "above this server" in texts(at.error).replace("\\", "") and at.button(key="sw_run").disabled


@pytest.mark.slow
def test_transfer_trains_the_top_three_on_mnist_as_one_job(page, shared_fashion, shared_mnist):
    at = page
    at.selectbox(key="sw_preset").set_value("D-sweep-lecture").run()
    at.number_input(key="sw_trials").set_value(3).run()
    at.button(key="sw_run").click().run()
    sweep = SweepConfig.from_json(at.session_state["sw_job"])
    assert sweep.base.dataset == "fashion-mnist"
    at = wait(at, sweep.key())
    at.button(key="sw_transfer_run").click().run()
    key, numbers = at.session_state["sw_transfer"]
    assert len(numbers) == 3 and key.startswith("grid-")  # one (batched) grid job for the three
    at = wait(at, key)
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert list(table["trial"]) == numbers and table["Fashion val acc"].is_monotonic_decreasing
    assert (table["MNIST status"] == "finished").all()
    assert table["MNIST test acc"].max() > 0.5  # 10 digits: chance is 0.1


def test_a_shared_link_loads_its_sweep(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_SWEEP_DB", f"sqlite:///{tmp_path / 'studies.db'}")
    sweep = SWEEP_PRESETS["digits-sweep"].sweep.replace(sampler="tpe", trials=7)
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.switch_page(PAGE)
    at.query_params.update(sweep.to_query())
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["sw_sampler"] == "tpe" and at.session_state["sw_trials"] == 7
    assert sorted(at.session_state["sw_knobs"]) == sorted(d.name for d in sweep.space)
    assert at.session_state["sw_saved"] == sweep.to_json()  # the form rebuilt exactly the linked sweep
