"""The Run library: filters, the config diff, the validation ranking, the selection kept as run keys (pure),
and the page (AppTest): two runs compared, more than the bound refused, an evicted run said so, an upload and
its runs seen only by the browser that uploaded it."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import streamlit
from PIL import Image
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import MAIN, open_page, texts
from app.views import jobs as jobs_view
from app.views import library as library_views
from helpers import train_events
from app.figures.library import val_ranking_figure
from app.records import library as lib
from core.engine.config import RunConfig
from core.lessons.presets import PRESETS
from core.serve.store import run_summary
from core.serve import identity, owners
from core.serve.budget import Refused

LESSON_B = PRESETS["B-overfit"].runs[1]  # ('L1 ...', its config): Fashion-MNIST, Adam
assert (LESSON_B[1].dataset, LESSON_B[1].optimizer) == ("fashion-mnist", "adam")


def row(cfg: RunConfig, key: str, **meta) -> lib.LibraryRow:
    return lib.library_rows([(cfg, {"key": key, **meta})])[0]


@pytest.fixture
def rows() -> list[lib.LibraryRow]:
    return lib.library_rows([(RunConfig(), {"key": "plain"}),
                             (RunConfig(dataset="moons", optimizer="sgd"), {"key": "moons"}),
                             (LESSON_B[1], {"key": "lesson"})])


# --- filters -------------------------------------------------------------------------------------
def test_lesson_runs_are_labelled_and_their_fallbacks_too():
    assert row(LESSON_B[1], "k").lesson == "Lesson B" and row(LESSON_B[1], "k").label == f"Lesson B · {LESSON_B[0]}"
    label, fallback = PRESETS["B-overfit"].on_fallback().runs[1]
    assert row(fallback, "k").label == f"Lesson B · {label} (on Digits)"
    assert row(RunConfig(seed=123), "k").lesson == ""


def test_filters_keep_exactly_the_matching_runs(rows):
    keys = lambda chosen: [r.key for r in lib.filter_rows(rows, chosen)]  # noqa: E731
    assert keys(lib.LibraryFilter()) == ["plain", "moons", "lesson"]
    assert keys(lib.LibraryFilter(datasets=("moons",))) == ["moons"]
    assert keys(lib.LibraryFilter(lessons=("Lesson B",))) == ["lesson"]
    assert keys(lib.LibraryFilter(lessons=(lib.NO_LESSON,))) == ["plain", "moons"]
    assert keys(lib.LibraryFilter(optimizers=("sgd",))) == ["moons"]
    assert keys(lib.LibraryFilter(optimizers=("adam",))) == ["plain", "lesson"]
    assert keys(lib.LibraryFilter(lessons=(lib.NO_LESSON,), optimizers=("adam",))) == ["plain"]  # both must hold
    assert keys(lib.LibraryFilter(datasets=("moons",), lessons=("Lesson B",))) == []


def test_filter_options_are_what_is_stored(rows):
    options = lib.filter_options(rows)
    assert options["lessons"] == ["Lesson B", lib.NO_LESSON]
    assert options["datasets"] == ["digits", "fashion-mnist", "moons"] and options["optimizers"] == ["adam", "sgd"]


def test_filter_round_trips_through_the_link():
    chosen = lib.LibraryFilter(datasets=("digits", "moons"), lessons=("Lesson B",))
    query = lib.filter_to_query(chosen)
    assert query == {"dataset": "digits,moons", "lesson": "Lesson B"}
    assert lib.filter_from_query(query) == chosen and lib.filter_from_query({}) == lib.LibraryFilter()


# --- comparing -----------------------------------------------------------------------------------
def test_config_diff_shows_only_the_knobs_that_differ():
    a, b, c = RunConfig(), RunConfig(seed=2, lr=0.01), RunConfig(seed=2, optimizer="momentum", momentum=0.5)
    diff = lib.config_diff([row(a, "a"), row(b, "b")], ["a", "b"])
    assert diff["setting"].tolist() == ["Seed", "Learning rate"]  # schema order; nothing else differs
    assert diff["a"].tolist() == ["0", "0.001"] and diff["b"].tolist() == ["2", "0.01"]
    diff = lib.config_diff([row(a, "a"), row(c, "c")], ["a", "c"])
    assert diff["setting"].tolist() == ["Seed", "Optimizer", "Momentum"]
    assert diff["a"].tolist()[2] == "0.9 (unused)" and diff["c"].tolist()[2] == "0.5"  # Adam has no momentum knob
    assert lib.config_diff([row(a, "a"), row(a, "b")], ["a", "b"]).empty


def test_compare_labels_are_distinct():
    a, b = RunConfig(), RunConfig(seed=2, lr=0.01)
    assert lib.compare_labels([row(a, "a"), row(b, "b")]) == ["lr 0.001 · seed 0", "lr 0.01 · seed 2"]
    c = RunConfig(seed=2, optimizer="sgd", lr=0.05, batch_size=32, epochs=3)
    assert lib.compare_labels([row(a, "a"), row(c, "c")]) == ["adam · lr 0.001 · seed 0", "sgd · lr 0.05 · seed 2"]
    d = RunConfig(seed=2, optimizer="sgd", lr=0.05, batch_size=32, epochs=4)  # differs from c in epochs only
    assert lib.compare_labels([row(a, "a"), row(c, "c"), row(d, "d")]) == [
        "#1 adam · lr 0.001 · seed 0", "#2 sgd · lr 0.05 · seed 2", "#3 sgd · lr 0.05 · seed 2"]
    lesson = [row(cfg, str(i)) for i, (_, cfg) in enumerate(PRESETS["B-overfit"].runs)]
    assert lib.compare_labels(lesson) == [f"Lesson B · {label}" for label, _ in PRESETS["B-overfit"].runs]
    assert lib.shared_words(lib.compare_labels(lesson)) == ([label for label, _ in PRESETS["B-overfit"].runs],
                                                            "Lesson B")
    assert lib.shared_words(["Lesson B · L1 (on Digits)", "Lesson B · none (on Digits)"]) == (
        ["L1", "none"], "Lesson B, on Digits")
    assert lib.shared_words(["Lesson B · x", "Lesson C · x"]) == (["Lesson B · x", "Lesson C · x"], "")


def test_compare_bound():
    assert lib.compare_problem(lib.MAX_COMPARE) is None and lib.compare_problem(0) is None
    problem = lib.compare_problem(lib.MAX_COMPARE + 2)
    assert f"at most {lib.MAX_COMPARE}" in problem and "Unselect 2" in problem


# --- the ranking ---------------------------------------------------------------------------------
def test_ranking_is_best_first_and_leaves_out_runs_without_validation():
    runs = [row(RunConfig(seed=1), "low", val_acc=0.5, best_val_acc=0.6, best_val_epoch=2.0, saved_at=1),
            row(RunConfig(seed=2), "high", val_acc=0.9, best_val_acc=0.95, best_val_epoch=3.0, saved_at=2),
            row(RunConfig(seed=3), "old", val_acc=0.7, saved_at=3),  # stored before the best was kept
            row(RunConfig(seed=4), "failed", status="failed", saved_at=4)]
    ranking = lib.val_ranking(runs)
    assert ranking["key"].tolist() == ["high", "old", "low"]
    assert ranking["val_acc"].tolist() == [0.95, 0.7, 0.6] and ranking["best_known"].tolist() == [True, False, True]
    fig = val_ranking_figure(ranking, top=2)
    assert "top 2 of 3" in fig.layout.title.text
    assert [x for trace in fig.data for x in trace.x] == [0.95, 0.7]  # one trace: every run is on digits


def test_summary_keeps_the_best_epoch_end_validation_accuracy():
    cfg = RunConfig(dataset="moons", hidden=(8,), epochs=4, lr=0.05, log_every=3)
    _, events = train_events(cfg)
    evals = [e for e in events if e.kind == "eval"]
    ends = [e for e in evals if abs(e.epoch - round(e.epoch)) < 1e-9]
    assert len(ends) == cfg.epochs and len(evals) > len(ends)  # mid-epoch points are left out
    summary = run_summary("k", cfg.to_dict(), events)
    assert summary["best_val_acc"] == max(e.val_acc for e in ends) >= summary["val_acc"] == ends[-1].val_acc
    assert summary["best_val_epoch"] in {e.epoch for e in ends if e.val_acc == summary["best_val_acc"]}


# --- the selection, kept as run keys -------------------------------------------------------------
def test_selection_follows_its_runs_when_the_table_moves():
    shown = ["a", "b", "c"]
    assert lib.picked_keys([0, 2], None, shown, []) == ["a", "c"]  # the user picked rows of the table shown
    assert lib.picked_keys([0, 2], [0, 2], ["new", *shown], ["a", "c"]) == ["a", "c"]  # unchanged: same runs
    kept, rows, gone = lib.selection_update(["a", "c"], ["new", "a", "b", "c"], {"new", "a", "b", "c"})
    assert (kept, rows, gone) == (["a", "c"], [1, 3], 0)  # a new run on top moves the selection down
    kept, rows, gone = lib.selection_update(["a", "c"], ["b", "c"], {"b", "c"})
    assert (kept, rows, gone) == (["c"], [1], 1)  # "a" left the store
    assert lib.selection_update(["a"], ["b"], {"a", "b"}) == ([], [], 0)  # filtered out, still stored


# --- the page ------------------------------------------------------------------------------------
def store_runs(configs: list[RunConfig]) -> list[str]:
    manager = core.serve.jobs.get_manager()
    keys = []
    for cfg in configs:
        assert manager.wait(manager.submit(cfg), timeout=240).status == "finished"
        keys.append(cfg.key())
    return keys


def tiny(seed: int, **changes) -> RunConfig:
    return RunConfig(dataset="moons", hidden=(4,), epochs=2, log_every=20, seed=seed, **changes)


def select(at, keys: list[str]):
    """Select the table rows of ``keys`` (as a click on their rows would)."""
    table = at.dataframe[0]
    order = [cfg_key for cfg_key in at.session_state["gl_library_shown"]]
    at.session_state[table.key] = {"selection": {"rows": [order.index(k) for k in keys], "columns": []}}
    return at.run()


def chart_titles(at) -> dict[str, dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {str(s["layout"].get("title", {}).get("text", "")): s for s in specs}


def test_two_selected_runs_are_overlaid_with_their_differences(isolated_cache):
    keys = store_runs([tiny(1), tiny(2, lr=0.01)])
    at = open_page("../pages/library.py")
    assert len(at.dataframe[0].value) == 2 and "Best validation accuracy per run, best first (2 runs)" in chart_titles(at)
    select(at, keys)
    assert not at.exception, at.exception
    charts = chart_titles(at)
    loss = charts["Loss: validation (solid) vs train (dashed)"]
    assert len(loss["data"]) == 4  # two runs, validation and train each
    assert {t["name"] for t in loss["data"]} == {"lr 0.001 · seed 1", "lr 0.01 · seed 2"}
    assert "Accuracy: validation (solid) vs train (dashed)" in charts
    diff = at.dataframe[1].value
    assert diff["setting"].tolist() == ["Seed", "Learning rate"]
    assert "Open in Playground" not in [b.label for b in at.button]  # only for exactly one run
    select(at, keys[:1])
    assert at.button(key="library_table_open").label == "Open in Playground" and len(at.dataframe) == 1


def test_more_runs_than_the_bound_are_not_compared(isolated_cache):
    keys = store_runs([tiny(seed) for seed in range(lib.MAX_COMPARE + 1)])
    at = select(open_page("../pages/library.py"), keys)
    assert not at.exception, at.exception
    assert f"{lib.MAX_COMPARE + 1} runs are selected: at most {lib.MAX_COMPARE}" in texts(at.warning)
    assert "Loss: validation (solid) vs train (dashed)" not in chart_titles(at) and len(at.dataframe) == 1


def test_a_selected_run_evicted_since_is_said_so(isolated_cache):
    old, new = store_runs([tiny(1), tiny(2)])
    at = select(open_page("../pages/library.py"), [old])
    assert "seed 1" in texts(at.caption)
    store = core.serve.jobs.get_manager().store
    stored = store.get(new)
    store.size_limit = stored.meta["bytes"]  # room for one run: saving `new` again evicts `old`
    store.put(new, stored.meta["config"], stored.events)
    assert old not in store
    at.run()
    assert not at.exception, at.exception
    assert "1 selected run is no longer stored" in texts(at.warning)
    assert len(at.dataframe[0].value) == 1 and at.session_state["gl_library_picked"] == []


def test_filters_narrow_the_table_and_reach_the_link(isolated_cache):
    store_runs([tiny(1), tiny(2, optimizer="sgd", lr=0.1)])
    at = open_page("../pages/library.py")
    at.multiselect(key="library_optimizer").select("sgd").run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["optimizer"].tolist() == ["sgd"] and at.query_params["optimizer"] == "sgd"


# --- private uploads (issue 20) -------------------------------------------------------------------
def three_classes_zip() -> bytes:
    """An image-folder zip of three classes, eight 8x8 pictures each."""
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for k, name in enumerate(PRIVATE_CLASSES):
            for i in range(8):
                pixels = (rng.random((8, 8)) * 40).astype(np.uint8)
                pixels[k * 2:k * 2 + 3, :] = 255
                png = io.BytesIO()
                Image.fromarray(pixels, "L").save(png, format="PNG")
                archive.writestr(zipfile.ZipInfo(f"{name}/{i}.png", (2020, 1, 1, 0, 0, 0)), png.getvalue())
    return out.getvalue()


PRIVATE_CLASSES = ("antelope", "beetle", "capybara")


def page_words(at) -> str:
    """Every text a viewer can read on the page: captions, notices, markdown, picker options, tables."""
    words = [texts(at.caption), texts(at.markdown), texts(at.info), texts(at.warning), texts(at.success)]
    words += [" ".join(map(str, w.options)) for w in (*at.selectbox, *at.multiselect)]
    words += [d.value.to_string() for d in at.dataframe]
    return "\n".join(words).replace("\\", "")


def open_data_link(query: dict):
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.switch_page("../pages/data.py")
    at.query_params.update(query)
    return at.run()


def test_an_upload_its_title_and_its_runs_are_private_to_its_browser(isolated_cache, monkeypatch):
    owner = open_page("../pages/regularization.py")
    owner.file_uploader(key="reg_upload_file").set_value(("ok_three_classes.zip", three_classes_zip(),
                                                          "application/zip")).run()
    assert not owner.exception, owner.exception
    browser = owner.session_state["gl_browser_id"]
    ((name, title),) = owners.owned(browser).items()
    assert "ok_three_classes.zip" in title
    manager = core.serve.jobs.get_manager()
    private = RunConfig(dataset=name, hidden=(4,), epochs=1, log_every=5)
    assert manager.wait(manager.submit(private, session="owner", browser=browser), timeout=240).status == "finished"
    (public,) = store_runs([tiny(1)])
    owner.query_params.clear()  # a page switch in the browser leaves the address without the last page's link
    owner.switch_page("../pages/library.py").run()
    assert set(owner.session_state["gl_library_shown"]) == {private.key(), public}
    assert "ok_three_classes.zip" in page_words(owner)  # the dataset filter offers it by its title

    other = open_page("../pages/library.py")  # another browser
    assert other.session_state["gl_library_shown"] == [public]
    assert "ok_three_classes" not in page_words(other)
    link = open_data_link({"dataset": name})  # another browser follows a link to the upload
    assert not link.exception, link.exception
    assert "is not yours" in texts(link.warning).replace("\\", "")
    assert not any(c in page_words(link) for c in PRIVATE_CLASSES) and "ok_three_classes" not in page_words(link)
    with pytest.raises(Refused, match="not yours"):
        manager.submit(private.replace(seed=3), session="other", browser=link.session_state["gl_browser_id"])

    monkeypatch.setattr(jobs_view, "request_cookie", lambda: identity.sign(browser))  # the owner, reloaded
    mine = open_data_link({"dataset": name})
    assert all(c in page_words(mine) for c in PRIVATE_CLASSES) and "not yours" not in page_words(mine)


def test_the_same_upload_by_two_browsers_keeps_each_ones_title_across_a_restart(isolated_cache, monkeypatch):
    name = "upload:0123456789abcdef"
    owners.grant(name, "alice", "Your upload “a.zip”")
    owners.grant(name, "bob", "Your upload “b.zip”")
    monkeypatch.setattr(owners, "_loaded", {})  # a restart reads the file again
    assert owners.owned("alice") == {name: "Your upload “a.zip”"} and owners.owned("bob") == {name: "Your upload “b.zip”"}
    assert not owners.may_use(name, "carol") and not owners.may_use(name, None)
    assert owners.may_use("mnist", "carol") and owners.owned("carol") == {}
    assert (isolated_cache / "uploads" / owners.FILE).stat().st_mode & 0o077 == 0


def test_the_library_shows_a_spinner_while_it_reads_the_store(isolated_cache, monkeypatch):
    """Issue 26.10: the page looked empty for seconds while the store was read; now a spinner says what happens."""
    open_spinners: list[str] = []
    seen: list[list[str]] = []
    real_spinner, real_runs = streamlit.spinner, library_views.stored_runs

    def spinner(text="", **kw):
        context = real_spinner(text, **kw)

        class Recorded:
            def __enter__(self):
                open_spinners.append(text)
                return context.__enter__()

            def __exit__(self, *exc):
                open_spinners.pop()
                return context.__exit__(*exc)
        return Recorded()

    def runs():
        seen.append(list(open_spinners))
        return real_runs()

    monkeypatch.setattr(streamlit, "spinner", spinner)
    monkeypatch.setattr(library_views, "stored_runs", runs)
    at = open_page("../pages/library.py")
    assert not at.exception, at.exception
    assert seen and all(any("Reading the runs stored" in text for text in during) for during in seen)
