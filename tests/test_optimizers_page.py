"""The Optimizers page (AppTest) and its pure parts: race figures, the CE-vs-MSE sentence, the surface figures."""
from __future__ import annotations

import numpy as np
import pytest

from apptest_helpers import open_page, open_with_query, texts
from app.figures import optimizers as figs
from core.lab import race
from core.engine.config import OPTIMIZERS, knob_of
from core.engine.events import Evaluation, LayerStats, RunStarted
from core.engine.optimizers import RULES
from core.lessons import sentences

PAGE = "../pages/optimizers.py"


def test_page_shows_every_rule_as_math_beside_its_code_and_draws_the_race(isolated_cache):
    at = open_page(PAGE)
    codes = [c.value for c in at.code]
    for name in OPTIMIZERS:
        assert any(f"def {name}(" in code for code in codes), name
    assert len(at.latex) >= len(OPTIMIZERS) + 1  # six rules + the race function
    assert len(at.get("plotly_chart")) >= 2  # race contour + loss chart
    frame = at.dataframe[0].value
    assert list(frame["optimizer"]) == list(OPTIMIZERS)
    words = texts(at.markdown).replace("\\", "")
    for knob in ("lr", "momentum", "rms_alpha", "rms_momentum", "beta1", "beta2", "weight_decay"):
        assert knob_of(knob).help in words, knob  # every knob's meaning is shown beside its rule


def test_changing_the_race_function_and_optimizers_redraws(isolated_cache):
    at = open_page(PAGE)
    at.selectbox(key="opt_fn").set_value("quadratic").run()
    assert not at.exception
    assert any("(κ−1)/(κ+1)" in c.value for c in at.caption)
    at.multiselect(key="opt_chosen").set_value(["sgd", "adam"]).run()
    assert not at.exception
    assert list(at.dataframe[0].value["optimizer"]) == ["sgd", "adam"]
    # the start point moved with the function: the table's paths start at the quadratic's default start
    assert at.number_input(key="opt_x0").value == race.quadratic().start[0]


def test_race_figures_hold_one_path_per_optimizer_up_to_the_chosen_step():
    fn = race.surface("rosenbrock")
    results = race.race(fn, fn.start, {o: {"optimizer": o, "lr": 1e-3} for o in RULES}, steps=50)
    fig = figs.race_contour_figure(fn, race.loss_grid(fn, n=21), results, upto=10)
    lines = [t for t in fig.data if t.type == "scatter" and t.mode == "lines"]
    assert [t.name for t in lines] == list(RULES)
    assert all(len(t.x) == 11 for t in lines)
    loss = figs.race_loss_figure(results, upto=None)
    assert [len(t.y) for t in loss.data] == [51] * len(RULES)


def _events(acc: float, grad: float, step: int = 100, n_val: int = 6000) -> list:
    started = RunStarted("k", {}, "cpu", "cpu", 10, 10, step, ["fc1", "fc2"], [[4, 4], [10, 4]],
                         {"classes": [str(i) for i in range(10)], "n_train": 54_000, "n_val": n_val}, 0.0, {})
    return [started, LayerStats(10, 0.1, ["fc1", "fc2"], [grad, grad], [0.0, 0.0], [0.0, 0.0], [None, None]),
            Evaluation(step, 1.0, 0.5, acc, 0.5, acc, 0.0, 1.0)]


def test_loss_sentence_follows_the_numbers():
    ce = sentences.loss_run_summary("cross-entropy", _events(0.85, 0.4))
    mse = sentences.loss_run_summary("mse", _events(0.70, 0.1))
    text = sentences.losses_sentence(ce, mse)
    assert "4.0x smaller with MSE" in text and "Cross-entropy ended ahead" in text and "0.850" in text
    reverse = sentences.losses_sentence(sentences.loss_run_summary("ce", _events(0.6, 0.1)),
                                        sentences.loss_run_summary("mse", _events(0.7, 0.3)))
    assert "not smaller with MSE" in reverse and "MSE ended ahead" in reverse
    assert sentences.loss_run_summary("x", []) is None
    assert sentences.loss_run_summary("x", _events(0.85, 0.4)[1:]) is None  # no start: no split sizes
    level = sentences.losses_sentence(sentences.loss_run_summary("ce", _events(0.883, 0.4)),
                                      sentences.loss_run_summary("mse", _events(0.882, 0.1)))
    assert "ended level" in level and "ended ahead:" not in level  # 6 images of 6000 are noise


def test_surface_figures_leave_unfilled_rows_blank():
    xs, ys = [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]
    rows = [[1.0, 2.0, 3.0], None, [1.0, 1.0, 1.0]]
    contour = figs.loss_surface_contour_figure(xs, ys, rows, [[0.5, 0.5], [0.0, 0.0]])
    z = np.array(contour.data[0].z, dtype=float)
    assert np.isnan(z[1]).all() and z[0, 1] == pytest.approx(np.log(2.0))
    surface = figs.loss_surface_3d_figure(xs, ys, rows, [1.5, 1.0], [[0.5, 0.5], [0.0, 0.0]])
    assert surface.data[1].z[-1] == pytest.approx(0.0)


def test_the_race_reopens_from_its_link_and_a_bad_link_names_what_was_replaced(isolated_cache):
    at = open_page(PAGE)
    at.selectbox(key="opt_fn").set_value("quadratic").run()
    at.select_slider(key="opt_kappa").set_value(100.0).run()
    at.multiselect(key="opt_chosen").set_value(["momentum", "nadam"]).run()
    assert not at.exception
    link = dict(at.query_params)
    fresh = open_with_query("optimizers", link)
    assert fresh.selectbox(key="opt_fn").value == "quadratic"
    assert fresh.select_slider(key="opt_kappa").value == 100.0
    assert fresh.multiselect(key="opt_chosen").value == ["momentum", "nadam"]
    bad = open_with_query("optimizers", {"fn": "himmelblau", "steps": "many", "lr": "0.3", "colour": "red"})
    notice = texts(bad.warning).replace("\\", "")
    assert "colour" in notice and "fn=himmelblau" in notice and "steps=many" in notice and "lr=0.3" in notice
    assert bad.selectbox(key="opt_fn").value == "rosenbrock" and bad.slider(key="opt_steps").value == race.DEFAULT_STEPS
    assert "colour" not in bad.query_params


def test_a_finished_loss_surface_is_drawn_with_its_path_and_variance(isolated_cache):
    from core.engine.config import RunConfig
    from core.serve.jobs import get_manager
    from core.lab.surface import SurfaceConfig

    cfg = SurfaceConfig(run=RunConfig(dataset="digits", hidden=(16,), epochs=1, log_every=5, lr=0.01),
                        directions="pca", resolution=5, n_examples=100)
    manager = get_manager()
    key = manager.submit(cfg)
    assert manager.wait(key, timeout=300).status == "finished"
    at = open_page(PAGE)
    at.session_state["opt_surface_job"] = key
    at.run()
    assert not at.exception, at.exception
    words = texts(at.caption).replace("\\", "")
    assert "of the path's variance" in words and "Loss at the final weights" in words
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # race contour + loss, surface contour + 3-D


def test_train_buttons_submit_the_d_families_as_one_grid_job_each(isolated_cache, monkeypatch):
    import core.serve.jobs
    from core.lab.grid import GridConfig

    submitted = []

    def record(self, config, force=False, session=None, browser=None):
        submitted.append(config)
        return config.key()

    monkeypatch.setattr(core.serve.jobs.JobManager, "submit", record)
    at = open_page(PAGE)
    at.toggle(key="opt_ours").set_value(True).run()
    at.button(key="opt_six_train").click().run()
    assert not at.exception, at.exception
    (grid,) = submitted
    assert isinstance(grid, GridConfig)
    cells = grid.cells()
    assert [cfg.optimizer for _, cfg in cells] == list(OPTIMIZERS)
    assert {cfg.optimizer_impl for _, cfg in cells} == {"ours"} and {cfg.epochs for _, cfg in cells} == {1}
    assert len({(cfg.seed, cfg.batch_size, cfg.dataset) for _, cfg in cells}) == 1  # same data stream and init seed
    at.selectbox(key="opt_lr_schedule").set_value("step").run()
    at.number_input(key="opt_lr_gamma").set_value(0.25).run()
    at.button(key="opt_losses_train").click().run()
    assert not at.exception, at.exception
    cells = submitted[-1].cells()
    assert [cfg.loss for _, cfg in cells] == ["cross_entropy", "mse"]
    assert {(cfg.lr_schedule, cfg.lr_gamma) for _, cfg in cells} == {("step", 0.25)}


# --- item 7: the race's own sentence, written from the results --------------------------------------
def test_race_sentence_names_the_winner_only_beyond_the_noise_margin():
    from core.lessons.noise import Scored, noise_margin

    n = 500
    best, second, last = Scored(0.90, n), Scored(0.80, n), Scored(0.30, n)
    text = sentences.race_sentence({"SGD": last, "Adam": best, "Momentum": second})
    assert "Adam won" in text and f"{best.acc - second.acc:.3f} ahead of the runner-up Momentum" in text
    assert f"±{noise_margin(best, second):.3f}" in text and "SGD (0.300) ended behind" in text
    # a difference inside the margin is no difference: no winner is named
    margin = noise_margin(Scored(0.90, n), Scored(0.90, n))
    close = Scored(0.90 - margin / 2, n)
    level = sentences.race_sentence({"Adam": Scored(0.90, n), "Nadam": close})
    assert "Adam won" not in level and "No optimizer won" in level and "ended level" in level
    assert f"±{noise_margin(Scored(0.90, n), close):.3f}" in level
    # while one still trains, only the question is asked; one that diverged is named, without an accuracy
    assert " won" not in sentences.race_sentence({"Adam": best, "SGD": None})
    diverged = sentences.race_sentence({"Adam": best, "RMSProp": second, "SGD": None}, {"SGD": "diverged"})
    assert "Adam won" in diverged and "SGD diverged" in diverged


def test_the_trained_race_shows_on_a_fresh_page_with_its_winner_and_its_own_words(isolated_cache, no_mnist):
    """The six trained once (job manager, offline: Digits) show on a fresh session at once; the sentence names
    the optimizer whose final validation accuracy is highest in the stored events, and the captions are the
    race's, not the Regularization page's."""
    import core.serve.jobs
    from app.records.optimizers import TITLES, grid_runs
    from core.engine.config import RunConfig
    from core.lab.grid import cell_events
    from core.lessons import families

    grids = families.optimizer_family_grids(1, False, {"lr_schedule": RunConfig().lr_schedule})
    grid = grids["opt_six"][2]
    assert grid.base.dataset == "digits"  # no Fashion-MNIST here: the fallback
    manager = core.serve.jobs.get_manager()
    snap = manager.wait(manager.submit(grid), timeout=600)
    assert snap.status == "finished"
    cells = cell_events(manager.snapshot(grid.key()).events)
    finals = {}
    for run in grid_runs(grid):
        end = next(e for e in reversed(cells[run["cell"]]) if e.kind == "finished")
        finals[TITLES[run["label"]]] = end.val_acc
    winner = max(finals, key=finals.get)

    at = open_page(PAGE)  # a fresh session: nobody pressed Train in it
    infos = texts(at.info).replace("\\", "")
    assert f"{finals[winner]:.3f}" in infos and (f"{winner} won" in infos or "ended level" in infos)
    words = texts(at.caption)
    assert "L1 drives" not in words and "Overfitting shows" not in words and "adaptive rules" in words.lower()
    assert texts(at.warning).count("is not available on this server") == 1


def test_near_zero_axis_ticks_read_differently_at_small_shares():
    """Issue 26.7: shares of at most 1.2% read "0%, 0%, 0%, 1%, 1%" with a whole-percent format."""
    from app.figures.compare import SHARE_TICKS, share_tickformat

    for largest in (0.012, 0.0047, 0.0009, 0.3, 1.0):
        decimals = int(share_tickformat(largest)[1:-1])
        ticks = [k * largest / SHARE_TICKS for k in range(SHARE_TICKS + 1)]
        labels = [f"{100 * t:.{decimals}f}%" for t in ticks]
        assert len(set(labels)) == len(labels), (largest, labels)
    assert share_tickformat(0.0) == ".0%"
