"""The Regularization page (AppTest) and its parts: the family editor, the comparison, the uploader.

AppTest drives the page through app/main.py like a browser session would. It never fires
``run_every`` timers, so a test waits for the jobs itself and then reruns the page.
"""
from __future__ import annotations

import io
import json
import zipfile
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from apptest_helpers import MAIN, new_app, open_with_query, texts
from apptest_helpers import open_page as open_app_page
from helpers import train_events
from app.figures import compare as compare_figures
from app.forms import compare
from app.forms import upload as upload_ui
from app.records import compare as records
from app.records.run import reduce_events
from app.views.compare import family_states
from core.engine.config import RunConfig
from core.engine.probes import HIST_BINS
from core.lab.compare import family_from_runs, variant_configs
from core.lessons.families import TOUR_VARIANTS
from core.lessons.presets import PRESETS
from core.serve import owners

PAGE = "../pages/regularization.py"
CLASSES = ("circles", "squares", "**stripes** <b>bold")  # no "/": it would split the path


def open_page() -> AppTest:
    return open_app_page(PAGE)


def variant_labels(at: AppTest) -> list[str]:
    return at.data_editor[0].value["variant"].tolist()


def shapes_zip(classes=CLASSES, per_class: int = 12) -> bytes:
    """An image-folder zip: ``shapes/<class>/<i>.png`` with a different drawing per class (fixed file
    times, so the same call gives the same bytes)."""
    entry = lambda name: zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # noqa: E731
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for k, name in enumerate(classes):
            for i in range(per_class):
                pixels = (rng.random((16, 16)) * 40).astype(np.uint8)
                pixels[k * 5:k * 5 + 5, :] = 255  # a bright band whose height depends on the class
                png = io.BytesIO()
                Image.fromarray(pixels, "L").save(png, format="PNG")
                archive.writestr(entry(f"shapes/{name}/{i:02d}.png"), png.getvalue())
        archive.writestr(entry("shapes/notes.txt"), "not an image")
    return out.getvalue()


# --- pure parts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["B-regularization", "C-kaggle-mnist", "E-eight-networks"])
def test_lesson_families_round_trip_through_base_and_variant_rows(preset):
    runs = PRESETS[preset].runs
    base, rows = family_from_runs(runs)
    family, problems = variant_configs(base, rows)
    assert not problems
    assert family == list(runs)


def test_variant_rows_report_bad_values_by_row():
    base = RunConfig(dataset="digits", hidden=(16,))
    rows = [{"variant": "ok", "dropout": 0.2}, {"variant": "", "l1": -1.0}, {"variant": "ok", "hidden": "8,abc"}]
    family, problems = variant_configs(base, rows)
    assert [label for label, _ in family] == ["ok"]
    assert problems[0].startswith("Row 2 (variant 2): L1 lambda (l1) = -1")
    assert problems[1].startswith("Row 3 (ok (2)): Hidden layers must be whole numbers")
    assert family[0][1] == base.replace(dropout=0.2)


def test_a_run_with_one_evaluation_is_drawn_as_points():
    """A 1-epoch run has one evaluation: its overlay draws markers at it (a line through one point draws nothing,
    which left the class board's chart empty)."""
    _, events = train_events(RunConfig(dataset="digits", hidden=(8,), epochs=1, log_every=1000))
    one = reduce_events(events)
    assert len(one.evals) == 1
    _, events = train_events(RunConfig(dataset="digits", hidden=(8,), epochs=2, log_every=1000))
    fig = compare_figures.overlay_figure([("one", one), ("two", reduce_events(events))], "acc")
    modes = [t.mode for t in fig.data]
    assert modes[:2] == ["markers", "markers"] and modes[2:] == ["lines", "lines"]
    assert list(fig.data[0].y) == [one.evals["val_acc"][0]]


def test_comparison_figures_and_table_from_two_runs(isolated_cache):
    views, snapshots = [], []
    for label, l1 in (("none", 0.0), ("<b>L1</b>", 0.002)):
        _, events = train_events(RunConfig(dataset="digits", hidden=(16,), epochs=3, lr=0.01, log_every=10, l1=l1))
        views.append((label, reduce_events(events)))
        snapshots.append(records.weight_snapshot(events))
    assert snapshots[0].sizes == [64 * 16, 16 * 10] and len(snapshots[0].hists[0]) == HIST_BINS
    assert snapshots[1].overall_near_zero > snapshots[0].overall_near_zero
    loss = compare_figures.overlay_figure(views, "loss")
    assert len(loss.data) == 4 and {t.line.dash for t in loss.data} == {None, "dash"}
    assert all("<b>" not in t.name for t in loss.data) and loss.data[2].name == "&lt;b&gt;L1&lt;/b&gt;"
    gap = compare_figures.gap_figure(views)
    ev = views[0][1].evals
    assert np.allclose(gap.data[0].y, ev["train_acc"] - ev["val_acc"])
    hist = compare_figures.weight_hist_figure(list(zip([v[0] for v in views], snapshots)))
    assert len(hist.data) == 4  # 2 runs x 2 layers
    table = records.results_table(views, snapshots)
    assert table["variant"].tolist() == ["none", "<b>L1</b>"]
    assert (table["test acc"] > 0.5).all() and table.loc[0, "weights ≈ 0"] < table.loc[1, "weights ≈ 0"]
    assert table.loc[0, "gap"] == pytest.approx(table.loc[0, "train acc"] - table.loc[0, "val acc"])


def test_handle_upload_good_bad_and_broken(isolated_cache, monkeypatch):
    good = upload_ui.handle_upload("shapes.zip", shapes_zip())
    assert good.ok and good.name.startswith("upload:") and "3 classes, 36 examples" in good.title
    assert good.skipped == {"not an image": 1}
    assert upload_ui.handle_upload("shapes.zip", shapes_zip()).from_cache
    bad = upload_ui.handle_upload("evil.zip", b"PK\x03\x04 this is no zip")
    assert not bad.ok and "damaged or not a zip" in bad.error
    csv = upload_ui.handle_upload("digits.csv", b"label,a,b\n1,0,300\n")
    assert not csv.ok and "outside 0-255" in csv.error

    def crash(*args, **kwargs):
        raise RuntimeError("engine bug")

    monkeypatch.setattr(upload_ui.uploads, "prepare_zip", crash)
    broken = upload_ui.handle_upload("shapes.zip", shapes_zip(per_class=11))
    assert not broken.ok and "could not be read" in broken.error and "engine bug" not in broken.error


# --- the page ---------------------------------------------------------------------------------------
def test_page_renders_with_every_technique_loaded(isolated_cache):
    at = open_page()
    assert at.title[0].value == "Regularization"
    assert variant_labels(at) == [label for label, _ in TOUR_VARIANTS]
    frame = at.data_editor[0].value
    assert set(frame["norm"]) == {"none", "batchnorm", "layernorm"} and set(frame["dropout_impl"]) == {"torch",
                                                                                                        "inverted"}
    assert at.button(key="reg_train").label == "Train 8 variants" and not at.button(key="reg_train").disabled
    assert at.selectbox(key="reg_dataset").value == "digits"


@pytest.mark.parametrize("button, preset", [("reg_load_B", "B-regularization"), ("reg_load_C", "C-kaggle-mnist"),
                                            ("reg_load_E", "E-eight-networks"), ("reg_load_B-overfit", "B-overfit")])
def test_lesson_buttons_fill_the_variant_table(isolated_cache, shared_fashion, shared_mnist, button, preset):
    at = open_page()
    at.button(key=button).click().run()
    assert not at.exception, at.exception
    runs = PRESETS[preset].runs
    assert variant_labels(at) == [label for label, _ in runs]
    base, _ = family_from_runs(runs)
    assert at.text_input(key="reg_hidden").value == ",".join(map(str, base.hidden))
    assert at.selectbox(key="reg_dataset").value == base.dataset
    assert at.number_input(key="reg_epochs").value == base.epochs
    assert f"Lesson {PRESETS[preset].lesson}" in texts(at.info)
    assert at.button(key="reg_train").label == f"Train {len(runs)} variants"
    assert not at.warning  # the data is here: no fallback


def test_a_typed_lesson_link_without_fashion_fills_the_form_with_its_digits_settings(isolated_cache, no_mnist):
    at = new_app()
    at.query_params["lesson"] = "B-overfit"
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    here, _ = PRESETS["B-overfit"].for_server(available=lambda name: False)
    assert at.selectbox(key="reg_dataset").value == "digits"
    assert at.number_input(key="reg_epochs").value == here.config.epochs != PRESETS["B-overfit"].config.epochs
    assert "500 of the 8x8 digits" in texts(at.warning)


def test_lesson_b_overfit_without_fashion_trains_its_digits_settings_and_says_so(isolated_cache, no_mnist):
    at = open_page()
    at.button(key="reg_load_B-overfit").click().run()
    assert not at.exception, at.exception
    here, missing = PRESETS["B-overfit"].for_server(available=lambda name: False)
    assert missing == "fashion-mnist" and at.selectbox(key="reg_dataset").value == "digits"
    assert variant_labels(at) == [label for label, _ in here.runs]
    assert "MNIST is not available" in texts(at.warning)
    assert "On Digits" in texts(at.info) and "500 of the 8x8 digits" in texts(at.warning)


def test_lesson_c_without_mnist_falls_back_to_digits_with_a_warning(isolated_cache, no_mnist):
    at = open_page()
    at.button(key="reg_load_C").click().run()
    assert at.selectbox(key="reg_dataset").value == "digits"
    assert "MNIST is not available on this server" in texts(at.warning).replace("\\", "")
    assert variant_labels(at)[1] == "layernorm + dropout 0.5"
    assert not at.button(key="reg_train").disabled


def test_tiny_comparison_trains_and_fills_the_results_table(isolated_cache):
    at = open_page()
    # keep "none" and "L1", delete the other six rows through the editor's own edit state
    at.session_state[at.data_editor[0].key] = {"edited_rows": {}, "added_rows": [], "deleted_rows": [2, 3, 4, 5, 6, 7]}
    at.text_input(key="reg_hidden").set_value("32")
    at.number_input(key="reg_epochs").set_value(4)
    at.run()
    assert at.button(key="reg_train").label == "Train 2 variants"
    at.button(key="reg_train").click().run()
    assert not at.exception, at.exception
    family = at.session_state["reg_family"]
    assert [r["label"] for r in family] == ["none", "L1 0.0005"]
    expected = RunConfig(dataset="digits", hidden=(32,), epochs=4, batch_size=32, val_fraction=0.2, log_every=20)
    assert [r["key"] for r in family] == [expected.key(), expected.replace(l1=0.0005).key()]
    # two new variants of one shape: ONE grid job trains them batched, then files each under its run key
    (grid_key,) = {run["grid"] for run in family}
    assert [run["cell"] for run in family] == [0, 1]
    manager = core.serve.jobs.get_manager()
    grid = manager.wait(grid_key, timeout=240)
    assert grid.status == "finished", grid.error
    assert grid.events[0].kind == "grid_started" and grid.events[0].batched == [[0, 1]]
    for run in family:
        assert manager.store.meta(run["key"])["status"] == "finished"
    at.run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "test acc" in d.value.columns)
    assert table["variant"].tolist() == ["none", "L1 0.0005"]
    assert (table["status"] == "finished").all()
    assert (table["test acc"] > 0.5).all() and (table["val acc"] > 0.5).all(), table  # chance is ~0.1
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Generalization gap") for t in titles)
    assert any(t.startswith("Weights of every layer") for t in titles)
    assert "Chance level" in texts(at.caption)
    assert at.button(key="reg_train").label == "Train 2 variants again"  # issue 26.9: like every other page


def test_a_trained_family_shows_at_once_on_its_link_in_a_fresh_session(isolated_cache):
    """Issue 26.3: a link (or a fresh browser) shows the stored results without pressing Train."""
    at = open_page()
    at.session_state[at.data_editor[0].key] = {"edited_rows": {}, "added_rows": [], "deleted_rows": [2, 3, 4, 5, 6, 7]}
    at.text_input(key="reg_hidden").set_value("16")
    at.number_input(key="reg_epochs").set_value(2)
    at.run()
    link = dict(at.query_params)
    assert "3 · Compare" not in [s.value for s in at.subheader]  # nothing trained yet
    at.button(key="reg_train").click().run()
    family = at.session_state["reg_family"]
    (grid_key,) = {run["grid"] for run in family}
    assert core.serve.jobs.get_manager().wait(grid_key, timeout=240).status == "finished"
    fresh = open_with_query("regularization", link)
    assert "3 · Compare" in [s.value for s in fresh.subheader]
    table = next(d.value for d in fresh.dataframe if "test acc" in d.value.columns)
    assert table["variant"].tolist() == [r["label"] for r in family]
    assert table["status"].str.startswith("finished").all()


def test_stored_variants_are_served_and_only_new_ones_train(isolated_cache):
    base = RunConfig(dataset="digits", hidden=(16,), epochs=2, log_every=20)
    manager = core.serve.jobs.get_manager()
    assert manager.wait(manager.submit(base), timeout=120).status == "finished"
    family = [("none", base), ("L2", base.replace(l2=0.001)), ("dropout", base.replace(dropout=0.2))]
    entries = compare.submit_family(family)
    assert "grid" not in entries[0] and manager.snapshot(entries[0]["key"]).status == "finished"
    assert entries[1]["grid"] == entries[2]["grid"] and [e["cell"] for e in entries[1:]] == [0, 1]
    grid = manager.wait(entries[1]["grid"], timeout=240)
    assert grid.status == "finished", grid.error
    assert grid.events[0].alone == [1]  # dropout draws its own masks: it trains on its own in the same job
    feeds, notes, _ = family_states(entries)
    assert [f.status for f in feeds] == ["finished"] * 3 and any("dropout" in n for n in notes)
    assert [f.events[0].config["l2"] for f in feeds] == [0.0, 0.001, 0.0]
    again = compare.submit_family(family)  # everything is stored now: no grid, nothing trains
    assert all("grid" not in e for e in again) and manager.counts() == {"queued": 0, "running": 0}
    forced = compare.submit_family(family, force=True)  # "again": every variant trains, as one grid
    assert len({e.get("grid") for e in forced}) == 1 and None not in {e.get("grid") for e in forced}
    assert manager.wait(forced[0]["grid"], timeout=240).status == "finished"


def test_upload_through_the_page_shows_the_preview_and_feeds_the_picker(isolated_cache):
    at = open_page()
    at.file_uploader(key="reg_upload_file").set_value(("shapes.zip", shapes_zip(), "application/zip")).run()
    assert not at.exception, at.exception
    assert "3 classes, 36 examples" in texts(at.success).replace("\\", "")
    class_table = next(d.value for d in at.dataframe if "class" in d.value.columns)
    assert class_table["class"].tolist() == sorted(CLASSES) and class_table["train + validation"].sum() > 0
    examples = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                    if "example" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    shown = [a["text"] for a in examples["layout"]["annotations"]]
    assert "circles" in shown and not any("<b>" in t for t in shown)  # class names are plain text
    skipped = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert skipped.to_dict("records") == [{"reason": "not an image", "files": 1}]
    ((name, title),) = owners.owned(at.session_state["gl_browser_id"]).items()  # the uploading browser's
    upload = {"name": name, "title": title}
    at.button(key="reg_upload_use").click().run()
    assert at.session_state["reg_dataset"] == upload["name"]  # (the label depends on session state: read the key)
    assert upload["title"] in at.selectbox(key="reg_dataset").options
    # the Playground's picker offers it too
    at.switch_page("../pages/playground.py").run()
    assert not at.exception, at.exception
    assert upload["title"] in at.sidebar.selectbox(key="cfg_dataset").options


def test_hostile_upload_shows_the_error_and_the_page_keeps_working(isolated_cache):
    at = open_page()
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("cats/../../etc/passwd.png", b"\x89PNG not really")
    at.file_uploader(key="reg_upload_file").set_value(("evil.zip", evil.getvalue(), "application/zip")).run()
    assert not at.exception, at.exception
    assert "climbs out of its folder" in texts(at.error).replace("\\", "")
    assert owners.owned(at.session_state["gl_browser_id"]) == {}
    assert at.title[0].value == "Regularization" and not at.button(key="reg_train").disabled
    at.button(key="reg_load_B").click().run()  # the rest of the page still works
    assert not at.exception and variant_labels(at)[0] == "none"


def test_playground_picker_uploads_and_selects_your_data(isolated_cache):
    at = AppTest.from_file(str(MAIN), default_timeout=60).run()
    uploader = at.sidebar.file_uploader(key="cfg_dataset_upload_file")
    uploader.set_value(("shapes.zip", shapes_zip(), "application/zip")).run()
    assert not at.exception, at.exception
    classes = next(d.value for d in at.sidebar.dataframe if "class" in d.value.columns)
    assert classes["class"].tolist() == sorted(CLASSES)
    at.sidebar.button(key="cfg_dataset_upload_use").click().run()
    assert not at.exception, at.exception
    name = at.session_state["cfg_dataset"]
    assert name.startswith("upload:") and at.query_params["dataset"] in (name, [name])
    assert RunConfig.from_query({"dataset": name}).dataset == name  # a shareable link, cached like any run


def test_a_lesson_link_is_short_and_reopens_the_same_family(isolated_cache):
    """Issue 26.10: Regularization links ran to 657 characters; the lesson's own variants are now left out."""
    at = open_page()
    at.button(key="reg_load_E").click().run()
    at.number_input(key="reg_epochs").set_value(3).run()
    query = dict(at.query_params)
    full = compare.ComparisonConfig.from_runs(compare.runs_here("E")[0]).to_query()
    assert "variants" not in query and len(urlencode(query)) < len(urlencode(full)) // 4
    again = new_app()
    again.query_params.update(query)
    again.switch_page(PAGE).run()
    assert not again.exception and not again.warning
    assert variant_labels(again) == variant_labels(at) and again.number_input(key="reg_epochs").value == 3
    assert dict(again.query_params) == query


def test_a_link_cut_short_keeps_its_valid_settings_and_says_it_was_cut(isolated_cache):
    whole = compare.ComparisonConfig(RunConfig(epochs=3, seed=5), (("none", {}), ("L2", {"l2": 0.01})))
    query = {k: v[:len(v) - 4] if k == "variants" else v for k, v in whole.to_query().items()}
    at = new_app()
    at.query_params.update(query)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    notice = texts(at.warning).replace("\\", "")
    assert "looks cut off" in notice and "Unterminated" not in notice and "char" not in notice
    assert at.number_input(key="reg_epochs").value == 3 and at.number_input(key="reg_seed").value == 5


CENTERED_WIDTH = 736  # px: Streamlit's centered layout's main column (46rem), where the variant table lives


def test_the_variant_columns_fit_the_page_so_none_is_cut_off():
    """Issue 26.9: the rightmost columns (learning rate, hidden, MLP / CNN) were cut off at the table's edge."""
    columns = compare._variant_columns()
    assert list(columns) == list(compare.ROW_COLUMNS)
    widths = [column["width"] for column in columns.values()]
    assert all(isinstance(w, int) for w in widths) and sum(widths) <= CENTERED_WIDTH
