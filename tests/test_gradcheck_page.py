"""AppTest of the Gradient check page (its checks are jobs on the manager's workers), the figures it draws,
and the Playground's backprop knob."""
from __future__ import annotations

import json
import threading

import pytest

from streamlit.testing.v1 import AppTest

from apptest_helpers import MAIN, new_app, texts
from app.figures.gradcheck import layer_bars_figure, scatter_figure
from core.engine.config import RunConfig
import core.lab.gradcheck.numeric
from core.lab.gradcheck.mistakes import FLOAT32_SEEDS
from core.lab.gradcheck.numeric import check_gradients
from core.lab.gradcheck.options import AT_CHOICES
from core.lab.gradcheck.result import GOOD, SUSPECT
from core.serve.jobs import get_manager
from core.lessons.sentences import check_verdict

PAGE = "../pages/gradcheck.py"


@pytest.fixture
def app_env(isolated_cache):
    return isolated_cache


def settle(at):
    """Wait for every job the page started, then rerun it (what its polling fragments do by themselves)."""
    manager = get_manager()
    for key in list(manager._jobs):
        manager.wait(key, timeout=300)
    at.run(timeout=120)
    assert not at.exception, at.exception
    return at


def check(at):
    """Press Check the gradients and wait for the job."""
    at.button(key="gc_check").click().run(timeout=120)
    assert not at.exception, at.exception
    return settle(at)


def open_check(query: dict | None = None, press: bool = True):
    """The page opened straight from a link holding ``query`` (and, with ``press``, its check done)."""
    at = AppTest.from_file(str(MAIN), default_timeout=180)
    at.switch_page(PAGE)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return check(at) if press else at


def overall(at) -> float:
    found = [m for m in at.metric if m.label.startswith("Relative difference")]
    assert found, texts(at.error)
    return float(found[0].value)


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_page_checks_the_b_network_and_draws_the_lines(app_env, no_mnist):
    at = open_check()
    at.button(key="gc_seed_check").click().run(timeout=120)
    settle(at)
    assert "Fashion" in texts(at.warning)  # fashion3 is not here: the offline fallback is named
    assert overall(at) < GOOD
    bars, scatter = charts(at)[:2]
    assert [round(s["y0"], 12) for s in bars["layout"]["shapes"]] == [1e-7, 1e-5]
    assert bars["layout"]["yaxis"]["type"] == "log"
    assert bars["data"][0]["x"] == ["fc1", "fc2", "fc3", "fc4"]
    assert len(scatter["data"]) == 5  # the diagonal and one trace per layer
    page = texts(at.markdown)
    assert "backprop is right here" in page
    assert "0.9999999999998282" in page.replace("\\", "")
    # the seed's section: float32 at every seed of the job, its count of ≈1 read from the table the page shows
    table = next(t.value for t in at.dataframe if "≈1" in t.value.columns)
    float32 = table[table["check"].str.startswith("float32")]
    assert len(float32) == FLOAT32_SEEDS
    count = int((1 - float32["all entries"] < 1e-3).sum())
    assert f"at {count} of {FLOAT32_SEEDS}" in page
    assert ("likely cause" in page) == (count == 0)


def test_float32_with_eps_1e7_reads_near_one(app_env, no_mnist):
    at = open_check()
    at.radio(key="gc_precision").set_value("float32")
    at.select_slider(key="gc_eps").set_value(1e-7).run(timeout=120)
    check(at)
    assert overall(at) > 0.5
    assert at.query_params["precision"] == "float32" and float(at.query_params["eps"]) == 1e-7


def test_the_seeds_mistake_is_one_switch(app_env, no_mnist):
    at = open_check()
    at.toggle(key="gc_mistake_toggle").set_value(True).run(timeout=120)
    check(at)
    assert overall(at) == 1.0
    assert at.query_params["mistake"] == "perturb_copy"


def test_a_planted_bug_is_pointed_at(app_env, no_mnist):
    at = open_check()
    at.radio(key="gc_backprop").set_value("by_hand").run(timeout=120)
    at.selectbox(key="gc_bug").select("transposed_weight").run(timeout=120)
    at.selectbox(key="gc_bug_layer").select(3).run(timeout=120)
    check(at)
    assert "fc3 is the layer nearest the output above 1e\\-5" in texts(at.markdown)
    bars = charts(at)[0]
    assert bars["data"][0]["marker"]["color"][2] != bars["data"][0]["marker"]["color"][3]


def test_a_copy_perturbed_over_a_planted_bug_gets_one_diagnosis(app_env, no_mnist):
    """Issue 26.8: with the copy on and a bug in fc1 every layer reads 1; the headline blamed a backward bug at the
    output layer while the box blamed the copy. Both now name the copy, and the headline the hidden fc1 bug."""
    at = open_check(press=False)
    at.radio(key="gc_backprop").set_value("by_hand").run(timeout=120)
    at.selectbox(key="gc_bug").select("missing_activation_derivative").run(timeout=120)
    at.selectbox(key="gc_bug_layer").select(1).run(timeout=120)
    at.toggle(key="gc_mistake_toggle").set_value(True).run(timeout=120)
    check(at)
    assert overall(at) == 1.0
    headline = texts(at.markdown).replace("\\", "")
    assert "seeds' mistake" in headline and "fc1" in headline and "nearest the output" not in headline
    assert "copy was perturbed" in texts(at.info)


def test_dropout_is_off_unless_switched_on(app_env):
    at = open_check({"dataset": "blobs", "hidden": "8,8", "dropout": "0.5", "activation": "tanh"})
    assert "Dropout is switched off" in texts(at.info)
    assert overall(at) < GOOD
    at.toggle(key="gc_dropout_on").set_value(True).run(timeout=120)
    check(at)
    assert "Dropout is ON" in texts(at.info)
    assert overall(at) > 100 * SUSPECT


def test_large_layers_are_sampled_and_the_page_says_how_many(app_env):
    at = open_check({"dataset": "digits", "arch": "cnn", "hidden": "16", "examples": "4"})
    notes = texts(at.info).replace("\\", "")
    assert "Sampled" in notes and "entries" in notes
    assert overall(at) < GOOD


def test_a_stored_run_that_no_longer_exists_gives_a_clear_message(app_env):
    at = open_check({"dataset": "blobs", "stored_run": "run-0123456789abcdef01234567"})
    assert "no longer exists" in texts(at.error)


def test_a_stored_run_with_weights_is_checked_at_the_chosen_weights(app_env):
    cfg = RunConfig(dataset="digits", hidden=(16,), activation="tanh", epochs=1, batch_size=64, seed=2)
    manager = get_manager()
    key = manager.submit(cfg)
    assert manager.wait(key, timeout=300).status == "finished"
    at = open_check({"dataset": "digits", "stored_run": key})
    assert at.radio(key="gc_at").options == list(AT_CHOICES.values())
    assert f"stored run {key} at its initialization" in texts(at.markdown).replace("\\", "")
    init = overall(at)
    at.radio(key="gc_at").set_value("final").run(timeout=120)
    check(at)
    page = texts(at.markdown).replace("\\", "")
    step = manager.store.meta(key)["step"]
    assert f"stored run {key} at its final weights, after {step} training steps" in page
    assert at.query_params["at"] == "final" and at.query_params["stored_run"] == key
    assert overall(at) < GOOD and overall(at) != init
    shared = open_check({"dataset": "digits", "stored_run": key, "at": "final"}, press=False)
    assert shared.radio(key="gc_at").value == "final" and overall(shared) == overall(at)  # the stored check, replayed
    assert "stored result is shown" in texts(shared.info)



def test_a_link_asking_for_weights_a_run_does_not_have_checks_it_at_initialization(app_env):
    cfg = RunConfig(dataset="blobs", hidden=(4,), activation="tanh")
    get_manager().store.put(cfg.key(), cfg.to_dict(), [])  # a summary without stored weights
    at = open_check({"dataset": "blobs", "stored_run": cfg.key(), "at": "final"}, press=False)
    assert "gc_at" not in [r.key for r in at.radio]  # the choice is offered only where weights are stored
    assert "asked for this run's final weights" in texts(at.warning).replace("\\", "")
    check(at)
    assert "at its initialization" in texts(at.markdown).replace("\\", "")
    assert "at" not in at.query_params
    assert overall(at) < GOOD


def test_the_page_computes_no_check_in_its_script_thread(app_env, monkeypatch):
    threads = []
    real = core.lab.gradcheck.numeric.check_gradients  # what a check job's seeds call

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(core.lab.gradcheck.numeric, "check_gradients", recording)
    at = open_check({"dataset": "blobs", "hidden": "6", "activation": "tanh"}, press=False)
    assert threads == [] and not at.metric  # opening the page computes nothing
    check(at)
    assert overall(at) < GOOD
    assert threads and all(name.startswith("gl-worker-") for name in threads), threads
    key = at.session_state["gc_job"]
    assert key.startswith("gradcheck-") and get_manager().snapshot(key).kind == "gradcheck"


def test_a_hostile_link_is_refused_by_the_budget_naming_the_cap(app_env):
    at = open_check({"dataset": "digits", "hidden": ",".join(["4096"] * 20)}, press=False)
    at.button(key="gc_check").click().run(timeout=120)
    assert not at.exception
    refusal = texts(at.error).replace("\\", "")
    assert "gradient check would need about" in refusal and "GRADIENT_LAB_MAX_JOB_MEMORY_MB" in refusal
    assert get_manager().counts() == {"queued": 0, "running": 0} and not at.metric


def test_a_bad_link_falls_back_with_a_notice(app_env, no_mnist):
    at = open_check({"eps": "lots", "hidden": "abc", "examples": "12"}, press=False)
    notices = [w.value.replace("\\", "") for w in at.warning]  # said once each, when the link is read
    assert any("eps = 'lots' was ignored" in n for n in notices) and any("hidden = 'abc'" in n for n in notices)
    assert at.query_params["examples"] == "12"  # the valid setting is kept (issue 26.10)
    check(at)
    assert overall(at) < GOOD


def test_by_hand_on_a_network_it_does_not_cover_says_why(app_env):
    at = open_check({"dataset": "blobs", "hidden": "4", "norm": "batchnorm", "backprop": "by_hand"})
    assert "plain MLP" in texts(at.error)


def test_figures_are_plain_specs_of_a_check():
    result = check_gradients(RunConfig(dataset="blobs", hidden=(5, 5), activation="tanh"), backprop="by_hand",
                             bugs={0: "mean_sum_mismatch"}, n_examples=8)
    bars = layer_bars_figure(result.table()).to_dict()
    assert bars["data"][0]["marker"]["color"][0] != bars["data"][0]["marker"]["color"][2]  # fc1 red, fc3 green
    assert bars["data"][0]["y"][0] > SUSPECT > bars["data"][0]["y"][2]
    scatter = scatter_figure(result.pairs).to_dict()
    assert sum(len(trace["x"]) for trace in scatter["data"][1:]) == len(result.pairs)


def test_playground_offers_by_hand_backprop_and_names_what_it_needs(app_env):
    at = new_app({"backprop": "by_hand", "optimizer": "sgd", "lr": "0.1"})
    assert not at.exception
    assert at.sidebar.selectbox(key="cfg_backprop").value == "by_hand"
    assert not texts(at.sidebar.error)
    at.sidebar.selectbox(key="cfg_optimizer").select("adam").run()  # the by-hand net trains with any of the six rules
    assert not texts(at.sidebar.error) and not at.button(key="train").disabled
    at.sidebar.selectbox(key="cfg_norm").select("batchnorm").run()
    assert "by_hand" in texts(at.sidebar.error).replace("\\", "")
    assert at.button(key="train").disabled


def test_a_doubtful_float64_check_of_sigmoid_points_at_epsilon_and_falls_when_eps_grows():
    """A central difference's rounding error scales like (float64 step) / ε: on a sigmoid network,
    whose first layer's gradients are tiny, a tenfold larger ε lowers that layer's reading about
    tenfold until it reads right, and a doubtful verdict says to try exactly that."""
    cfg = RunConfig(dataset="digits", hidden=(64, 32, 16), activation="sigmoid", seed=1)
    readings = [check_gradients(cfg, eps=eps) for eps in (1e-7, 1e-6, 1e-5, 1e-4)]
    first = [r.layers[0].rel_diff for r in readings]
    assert all(3 < a / b < 30 for a, b in zip(first, first[1:])), first
    assert readings[-1].layers[0].rel_diff < GOOD and "right here" in check_verdict(readings[-1])
    for r in readings:
        if GOOD <= max(x.rel_diff for x in r.layers) <= SUSPECT:
            assert "Move ε up tenfold" in check_verdict(r)
