"""The run view: one training job drawn live (progress, curves, inside the network, results).

:func:`job_view` draws a job key. Above the fold, in a fragment that polls every
``poll_seconds`` while the job runs: the status line, the final metrics, a 2-D set's decision
regions over its training points (redrawn at each log interval) and the loss and accuracy curves. The rest sits in :data:`GROUPS`, expanders whose charts are built (and sent
to the browser) only while open: the per-step loss, inside the network (polling every
``layers_poll_seconds`` while it runs) and, once done, the test-set details. Reduced views and
figures are cached process-wide per job data version.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import streamlit as st

from core.engine.config import TOY_DATASETS, RunConfig
from core.engine.catalog import load_dataset
from core.engine.events import weights_status
from core.engine.export import take_home_zip
from core.engine.train import training_examples
from core.lessons.noise import Scored
from core.lessons.sentences import REPORTED_BUG, coarse_accuracy_words, run_outcome
from core.serve.jobs import get_manager

from ..figures import run as figures
from ..records.jobs import JobState
from ..records.reported import SUFFIX, SWITCH_HELP, as_reported
from ..records.run import RunView, config_json, loss_caption, metrics_csv, scored_accuracies, weight_histories
from ..text import number, plain
from .charts import plotly_chart
from .jobs import cached, job_state, polling_fragment, run_view, status_line
from .library import batched_with

POLL_SECONDS = 0.5
LAYERS_POLL_SECONDS = 1.5
# The groups drawn on demand: name -> expander label. Their open state is kept per session (not per
# run), so a group opened once stays open for the next run.
GROUPS = {"steps": "Training loss per step",
          "inside": "Inside the network: gradient norms, dead or saturated units, weight change",
          "test": "Results on the test set: confusion matrix, misclassified examples"}
LESSON_GROUPS = {"A": frozenset({"inside"})}  # lesson -> the groups holding its evidence (A: gradient norms)


def group_key(name: str) -> str:
    """The session-state key of a group's expander (True while open)."""
    return f"gl_run_group_{name}"


def job_view(key: str, poll_seconds: float = POLL_SECONDS, results: bool = True,
             layers_poll_seconds: float = LAYERS_POLL_SECONDS, opened: Iterable[str] = (),
             lesson: str | None = None, as_reported: bool = False) -> JobState | None:
    """Draw one run job (progress, curves, groups on demand); polls while it runs. Returns its state.

    ``opened``: names of :data:`GROUPS` open at first, besides those holding ``lesson``'s evidence
    (:data:`LESSON_GROUPS`); the reader can open or close any. ``as_reported``:
    the summary also shows the test accuracy as the coursework's reports computed it (app/forms/reported.py).
    """
    state = job_state(key)
    if state is None:
        st.info("This run is not known on this server (it may have been removed from the run store).")
        return None
    opened = set(opened) | LESSON_GROUPS.get(lesson or "", set())
    polling_fragment(key, lambda polling: _curves_part(key, results, as_reported), every=poll_seconds, name=f"curves_{key}")
    _group("steps", opened, lambda: polling_fragment(key, lambda polling: _steps_part(key), every=poll_seconds,
                                                      name=f"steps_{key}"))
    _group("inside", opened, lambda: polling_fragment(key, lambda polling: inside_network(key),
                                                       every=layers_poll_seconds, name=f"layers_{key}"))
    state = job_state(key)
    if results and state is not None and state.done and state.status in ("finished", "cancelled", "diverged", "paused"):
        view = run_view(state)
        if view.finished is not None:
            _group("test", opened, lambda: _test_details(key, view, state.version))
            _downloads(key, view)
    elif results and state is not None and not state.done:
        st.caption("Once the run finishes, its trained model can be downloaded here: weights, config and a "
                   "plain-PyTorch script that scores it on the test set.")
    return state


def _group(name: str, opened: set[str], draw: Callable[[], None]) -> None:
    """An expander that runs ``draw`` only while open (opening or closing it reruns the page)."""
    box = st.expander(GROUPS[name], expanded=name in opened, key=group_key(name), on_change="rerun")
    if box.open:
        with box:
            draw()


def _curves_part(key: str, results: bool, as_reported: bool = False) -> None:
    state = job_state(key)
    if state is None:
        return
    view = run_view(state)
    status_line(state, view)
    if results and view.finished is not None:
        _summary(view, batched_with(key))
        n = len(state.events)
        outcome = cached(state.version, "outcome", lambda: run_outcome(state.events[:n]))
        if outcome:
            st.markdown(f"**What happened.** {plain(outcome)}")
        if as_reported:
            _as_reported(view)
    _curves(key, view, state)


def _steps_part(key: str) -> None:
    state = job_state(key)
    if state is not None:
        _chart(cached(state.version, "steps", lambda: figures.step_loss_figure(run_view(state))), f"steps_{key}")


def inside_network(key: str) -> None:
    """Job ``key``'s per-layer gradient norms, dead or saturated units, weight change (maps and histograms)."""
    state = job_state(key)
    if state is None:
        return
    _layers(key, run_view(state), state.version, live=not state.done, events=state.events)


def _chart(fig, key: str, **kwargs) -> None:
    plotly_chart(fig, key, **kwargs)


def _curves(key: str, view: RunView, state: JobState) -> None:
    """Loss and accuracy; on a 2-D set its decision regions first."""
    vkey = state.version
    if view.config.get("dataset") in TOY_DATASETS:
        regions, left, right = st.columns(3)
        with regions:
            _decision_boundary(key, view, state)
    else:
        left, right = st.columns(2)
    with left:
        _chart(cached(vkey, "loss", lambda: figures.loss_figure(view)), f"loss_{key}")
    with right:
        _chart(cached(vkey, "acc", lambda: figures.accuracy_figure(view)), f"acc_{key}")


def _layers(key: str, view: RunView, vkey: tuple, live: bool, events: list) -> None:
    st.caption("One line or row per weight layer, input layer first. Layers whose gradients are orders of "
               "magnitude smaller than the others (dark rows in the maps) barely learn: that is the vanishing "
               "gradient problem. Saturated or dead units pass almost no gradient back.")
    left, right = st.columns(2)
    with left:
        _chart(cached(vkey, "grad", lambda: figures.grad_norm_figure(view)), f"grad_{key}")
    with right:
        _chart(cached(vkey, "sat", lambda: figures.saturation_figure(view)), f"sat_{key}")
    left, right = st.columns(2)
    with left:
        _chart(cached(vkey, "hm_delta", lambda: figures.layer_heatmap_figure(view, "weight_delta")),
               f"hmd_{key}")
    with right:
        _chart(cached(vkey, "hm_grad", lambda: figures.layer_heatmap_figure(view, "grad_norm")),
               f"hmg_{key}")
    _chart(cached(vkey, "hist_time", lambda: figures.weight_histories_figure(weight_histories(events))),
           f"histt_{key}")
    points = view.log_points
    if not points:
        return
    if live or len(points) == 1:
        point = points[-1]
        if live:
            st.caption("Weight change at the latest log point; once the run ends you can pick any logged step.")
    else:
        steps = [p.step for p in points]
        chosen = st.select_slider("Weight change at logged step", steps, value=steps[-1], key=f"wstep_{key}",
                                  format_func=lambda s: f"step {s}",
                                  help="|W − W₀| of every layer at this step (averaged down to at most 64×64).")
        point = points[steps.index(chosen)] if chosen in steps else points[-1]
    shapes = view.started.layer_shapes if view.started is not None else None
    _chart(cached(vkey, ("wm", point.step),
                         lambda: figures.weight_heatmaps_figure(point, view.layer_names, shapes)), f"wm_{key}")


def _summary(view: RunView, group: int = 1) -> None:
    """Final metrics in one row, right under the progress bar."""
    fin = view.finished
    chance = view.chance_accuracy
    cols = iter(st.columns(7 if view.shows_true_ce else 6))

    def metric(label: str, value: float | None, fmt: str = "{:.3f}", help: str | None = None) -> None:
        next(cols).metric(label, number(value, fmt), help=help)

    chance_help = f"Always guessing the most common class scores {chance:.3f}." if chance is not None else None
    metric("Test accuracy", fin.test_acc, help=chance_help)
    metric("Validation accuracy", fin.val_acc)
    metric("Train accuracy", fin.train_acc)
    if view.shows_true_ce:  # the loss it trained on, and beside it the true cross-entropy
        metric(f"Test loss ({view.loss_name})", fin.test_loss, "{:.4f}",
               help=f"The loss this run trained on: {view.loss_name}, not the true cross-entropy.")
        metric("Test cross-entropy (true)", view.final_ce()["test"], "{:.4f}",
               help="The true cross-entropy of the same predictions (softmax applied once).")
    else:
        metric("Test loss", fin.test_loss, "{:.4f}")
    metric("Parameters", view.started.n_params if view.started is not None else None, "{:,}")
    if group > 1:  # a lane of a batched group: the recorded time is the whole group's, not this network's
        metric("Time per epoch", None, help=f"Trained batched together with {group - 1} other "
               f"network{'s' if group > 2 else ''} in one model: the group took {number(view.seconds_per_epoch, '{:.2f}')} s "
               "per epoch, so this network has no time of its own.")
    else:
        metric("Time per epoch", view.seconds_per_epoch, "{:.2f} s")
    if fin.test_acc is not None and chance is not None:
        st.caption(f"Chance level (always guessing the most common test class): {chance:.3f}. {loss_caption(view)}")
    elif view.shows_true_ce:
        st.caption(loss_caption(view))
    coarse = [coarse_accuracy_words(split, Scored(acc, n)) for split, acc, n in scored_accuracies(view)]
    if any(coarse):
        st.warning(plain(" ".join(c for c in coarse if c)), icon="⚠️")



def _as_reported(view: RunView) -> None:
    """The test accuracy as the reports of lessons A and B computed it, beside the true one, labelled."""
    fin, k = view.finished, len(view.classes)
    true, left, right = st.columns([2, 2, 4])
    true.metric("Test accuracy (true)", number(fin.test_acc, "{:.4f}"), help="Correct answers / examples.")
    left.metric(f"Test accuracy {SUFFIX}", number(as_reported(fin.test_acc, k), "{:.4f}"), help=SWITCH_HELP)
    if fin.test_acc is not None and k:
        right.caption(plain(f"The reports of lessons A and B would have printed {as_reported(fin.test_acc, k):.4f} "
                            f"for this run's true test accuracy {fin.test_acc:.4f}: {REPORTED_BUG}."))


def _test_details(key: str, view: RunView, vkey: tuple) -> None:
    fin = view.finished
    table = view.final_metrics()
    st.dataframe(table, hide_index=True, width=560 if view.shows_true_ce else 420, placeholder="n/a",
                 column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns if c != "split"})
    classes = view.classes
    left, right = st.columns(2)
    if fin.confusion:
        with left:
            _chart(cached(vkey, "confusion", lambda: figures.confusion_figure(fin.confusion, classes)),
                   f"conf_{key}")
    images = getattr(fin, "misclassified_images", None)
    if images is not None and len(images):
        _chart(cached(vkey, "wrong", lambda: figures.misclassified_figure(images, fin.misclassified, classes)),
               f"wrong_{key}", width="content")
    elif fin.misclassified == [] and fin.test_acc is not None:
        st.caption("No misclassified test examples.")


def _downloads(key: str, view: RunView) -> None:
    with st.container(horizontal=True):
        st.download_button("Download metrics (CSV)", metrics_csv(view), file_name=f"{key}-metrics.csv",
                           mime="text/csv", on_click="ignore", key=f"csv_{key}", icon="⬇️")
        st.download_button("Download config (JSON)", config_json(view), file_name=f"{key}-config.json",
                           mime="application/json", on_click="ignore", key=f"json_{key}", icon="⬇️")
        _model_download(key)


def _model_download(key: str) -> None:
    """The trained model to take home (core.engine.export), built only when asked for; or why there is none."""
    meta = get_manager().store.meta(key)
    stored, why = weights_status(meta) if meta is not None else (False, "the run is not in the run store")
    if not stored:
        st.caption(plain(f"No trained model to download: {why}."))
        return
    st.download_button("Download the trained model (.zip)", lambda: take_home_zip(get_manager().read_run(key)),
                       file_name=f"{key}-model.zip", mime="application/zip", on_click="ignore", key=f"model_{key}",
                       icon="⬇️", help="The trained weights (safetensors: they load without pickle), the config JSON, "
                                       "the test set and evaluate.py, a plain-PyTorch script that rebuilds the "
                                       "network and prints its test accuracy (needs torch and safetensors).")


def _decision_boundary(key: str, view: RunView, state: JobState) -> None:
    """The class regions of the latest log point over the run's training points (their labels as trained on)."""
    try:
        cfg = RunConfig.from_dict(view.config, strict=False)  # a run stored by another version still draws
        x, y = cached(("training points", cfg.key()), "points", lambda: training_points(cfg))
    except Exception as exc:  # the data went away, or a config this version cannot read: say so, keep the rest
        st.caption(plain(f"Cannot draw the data: {exc}"))
        return
    grid, boundary = view.decision_grid, view.boundary
    if grid is None:
        title = "Training points (the regions appear after the first log interval)" if not state.done else \
            "Training points (this run has no decision grid recorded)"
    elif view.status == "finished":
        title = "Decision regions after training"
    else:
        step = boundary.step if boundary is not None else view.end.step
        title = f"Decision regions at step {step:,}"
    drawn = (state.key, state.token, boundary.step if boundary is not None else None, grid is None, title)
    _chart(cached(drawn, "boundary", lambda: figures.toy_scatter_figure(x, y, view.classes, title, grid)),
           f"boundary_{key}")


def training_points(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    x, y = training_examples(cfg, load_dataset(cfg.dataset, cfg.data_noise))
    return x.numpy(), y.numpy()
