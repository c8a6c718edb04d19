"""The job view: progress, live charts and final results of one job, by job key.

``job_view(key)`` draws inside an ``st.fragment`` that polls ``snapshot(key, since=n)`` every
``poll_seconds`` while the job is queued or running, and is declared without ``run_every`` once
the job has ended (the fragment triggers one full rerun at that moment), so idle sessions on a
finished run cost the server nothing. Session state holds only a per-key list of the events
seen so far (references to the manager's event objects, not copies).

Reduced views and figures are cached process-wide per (job, run, number of events): the 30
students watching one shared run reduce and draw each new batch of events once, not 30 times.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from core.config import TOY_DATASETS
from core.jobs import TERMINAL, get_manager

from . import figures
from .runview import RunView, config_json, metrics_csv, reduce_events
from .widgets import plain

POLL_SECONDS = 0.5
LAYERS_POLL_SECONDS = 1.5
FEEDS = "gl_feeds"
MAX_FEEDS = 8


@dataclass
class Feed:
    """What this session has seen of one job."""

    events: list = field(default_factory=list)
    status: str = "queued"
    from_cache: bool = False
    saved_at: float | None = None
    error: str = ""
    queue_position: int | None = None
    replayed: bool = False  # already ended when this session first saw it: a stored result, not a live run

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def token(self) -> Any:
        """Identifies one run of a key (a forced re-train reuses the key)."""
        if not self.events:
            return None
        first = self.events[0]
        return getattr(first, "started_at", None) or getattr(first, "message", None)


def refresh(key: str) -> Feed | None:
    """Fetch the job's new events into this session's feed; None when the key is unknown."""
    feeds: OrderedDict = st.session_state.setdefault(FEEDS, OrderedDict())
    feed = feeds.get(key)
    manager = get_manager()
    snap = manager.snapshot(key, since=len(feed.events) if feed else 0)
    if snap is None:
        feeds.pop(key, None)
        return None
    restarted = feed is not None and (snap.n_events < len(feed.events) or (
        feed.done and (snap.status != feed.status or snap.saved_at != feed.saved_at)))
    if feed is None or restarted:
        if restarted:
            snap = manager.snapshot(key, since=0)
        feed = Feed(replayed=snap.done)
    feed.events.extend(snap.events)
    feed.status, feed.from_cache, feed.saved_at = snap.status, snap.from_cache, snap.saved_at
    feed.error, feed.queue_position = snap.error, snap.queue_position
    feeds[key] = feed
    feeds.move_to_end(key)
    while len(feeds) > MAX_FEEDS:
        feeds.popitem(last=False)
    return feed


def forget(key: str) -> None:
    """Drop this session's feed of ``key`` (e.g. before training it again)."""
    st.session_state.get(FEEDS, {}).pop(key, None)


# --- process-wide caches of reduced views and figures ------------------------------------------------
_cache_lock = threading.Lock()
_views: OrderedDict = OrderedDict()
_figures: OrderedDict = OrderedDict()


def _lru_get(cache: OrderedDict, key: Any, build: Callable[[], Any], limit: int) -> Any:
    with _cache_lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = build()
    with _cache_lock:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


def view_of(key: str, feed: Feed) -> RunView:
    n = len(feed.events)
    return _lru_get(_views, (key, feed.token, n), lambda: reduce_events(feed.events[:n]), 64)


def cached_figure(view_key: tuple, name: Any, build: Callable[[], Any]) -> Any:
    return _lru_get(_figures, (view_key, name), build, 512)


# --- drawing -------------------------------------------------------------------------------------
def job_view(key: str, poll_seconds: float = POLL_SECONDS, results: bool = True,
             layers_poll_seconds: float = LAYERS_POLL_SECONDS) -> Feed | None:
    """Draw one job (progress, charts, results); polls while it runs. Returns the session's feed.

    Two sibling fragments poll while the job runs: progress and curves every ``poll_seconds``,
    the per-layer diagnostics every ``layers_poll_seconds`` (less browser work per update).
    """
    feed = refresh(key)
    if feed is None:
        st.info("This run is not known on this server (it may have been removed from the run store).")
        return None
    running = not feed.done
    st.fragment(run_every=poll_seconds if running else None)(_curves_fragment)(key, running, results)
    st.fragment(run_every=layers_poll_seconds if running else None)(_layers_fragment)(key, running)
    if results and not running and feed.status in ("finished", "cancelled", "diverged"):
        view = view_of(key, feed)
        if view.finished is not None:
            _test_details(key, view, (key, feed.token, len(feed.events)))
    return st.session_state.get(FEEDS, {}).get(key)


def wait_for_first_point(key: str, timeout: float = 0.4) -> None:
    """Right after submitting: wait (briefly) for the first log point, so the first draw has it."""
    deadline = time.monotonic() + timeout
    manager = get_manager()
    while time.monotonic() < deadline:
        snap = manager.snapshot(key)
        if snap is None or snap.done or any(e.kind == "eval" for e in snap.events[-8:]):
            return
        time.sleep(0.02)


def _current(key: str, polling: bool) -> tuple[Feed, RunView, tuple] | None:
    feed = refresh(key)
    if feed is None:
        return None
    if polling and feed.done:
        st.rerun()  # a full rerun declares the fragments again without run_every: polling stops
    return feed, view_of(key, feed), (key, feed.token, len(feed.events))


def _curves_fragment(key: str, polling: bool, results: bool) -> None:
    current = _current(key, polling)
    if current is None:
        return
    feed, view, vkey = current
    _status(key, view, feed)
    _progress(view, feed)
    if results and view.finished is not None:
        _summary(view)
    _curves(key, view, vkey)


def _layers_fragment(key: str, polling: bool) -> None:
    current = _current(key, polling)
    if current is None:
        return
    feed, view, vkey = current
    _layers(key, view, vkey, live=not feed.done)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} seconds ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} minutes ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} hours ago"
    return f"{seconds / 86400:.0f} days ago"


def cache_label(saved_at: float | None) -> str:
    if not saved_at:
        return "From cache"
    when = dt.datetime.fromtimestamp(saved_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"From cache, trained {_ago(max(0.0, time.time() - saved_at))} ({when})"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _status(key: str, view: RunView, feed: Feed) -> None:
    status = feed.status
    reason = plain(view.reason or feed.error)
    if status == "queued":
        ahead = feed.queue_position or 0
        st.info(f"Queued: {ahead} run{'s' if ahead != 1 else ''} ahead of this one. It starts by itself.", icon=":material/hourglass_top:")
    elif status == "running" and view.started is None:
        st.info("Starting: loading the data and building the network…", icon=":material/hourglass_top:")
    elif status == "cancelled":
        st.warning(f"**Cancelled.** {reason}. The charts show the run up to that point.", icon=":material/stop_circle:")
    elif status == "diverged":
        st.error(f"**Diverged.** {reason}.", icon=":material/trending_up:")
    elif status == "failed":
        st.error(f"**Failed.** {reason}", icon=":material/error:")
    if feed.replayed and feed.saved_at:
        st.info(f"{cache_label(feed.saved_at)}: this exact configuration was trained before on this server, so its "
                "stored result is shown without training again.", icon=":material/inventory_2:")
    if not feed.done:
        if st.button("Cancel", key=f"cancel_{key}", icon=":material/stop_circle:", help="Stop this run; its history is kept."):
            get_manager().cancel(key)


def _progress(view: RunView, feed: Feed) -> None:
    prog = view.progress()
    if prog is None:
        return
    device = view.started.device_name if view.started is not None else ""
    parts = [f"Epoch {min(prog.epoch, prog.total_epochs):.1f} of {prog.total_epochs}",
             f"step {prog.step:,} of {prog.total_steps:,}", f"{fmt_seconds(prog.elapsed)} elapsed"]
    if not feed.done:
        parts.append("estimating time left…" if prog.eta is None else f"about {fmt_seconds(prog.eta)} left")
    parts.append(f"device: {device}")
    st.progress(prog.fraction, text=" · ".join(parts))


def _chart(fig, key: str, **kwargs) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False}, **kwargs)


def _curves(key: str, view: RunView, vkey: tuple) -> None:
    cols = st.columns(3)
    with cols[0]:
        _chart(cached_figure(vkey, "loss", lambda: figures.loss_figure(view)), f"loss_{key}")
    with cols[1]:
        _chart(cached_figure(vkey, "acc", lambda: figures.accuracy_figure(view)), f"acc_{key}")
    with cols[2]:
        _chart(cached_figure(vkey, "steps", lambda: figures.step_loss_figure(view)), f"steps_{key}")


def _layers(key: str, view: RunView, vkey: tuple, live: bool) -> None:
    st.subheader("Inside the network", divider="gray")
    st.caption("One line or row per weight layer, input layer first. Layers whose gradients are orders of "
               "magnitude smaller than the others (dark rows in the maps) barely learn: that is the vanishing "
               "gradient problem. Saturated or dead units pass almost no gradient back.")
    left, right = st.columns(2)
    with left:
        _chart(cached_figure(vkey, "grad", lambda: figures.grad_norm_figure(view)), f"grad_{key}")
    with right:
        _chart(cached_figure(vkey, "sat", lambda: figures.saturation_figure(view)), f"sat_{key}")
    left, right = st.columns(2)
    with left:
        _chart(cached_figure(vkey, "hm_delta", lambda: figures.layer_heatmap_figure(view, "weight_delta")),
               f"hmd_{key}")
    with right:
        _chart(cached_figure(vkey, "hm_grad", lambda: figures.layer_heatmap_figure(view, "grad_norm")),
               f"hmg_{key}")
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
    _chart(cached_figure(vkey, ("wm", point.step),
                         lambda: figures.weight_heatmaps_figure(point, view.layer_names, shapes)), f"wm_{key}")


def _summary(view: RunView) -> None:
    """Final metrics in one row, right under the progress bar."""
    fin = view.finished
    chance = view.chance_accuracy
    cols = st.columns(6)

    def metric(col, label: str, value: float | None, fmt: str = "{:.3f}", help: str | None = None) -> None:
        col.metric(label, "n/a" if value is None else fmt.format(value), help=help)

    chance_help = f"Always guessing the most common class scores {chance:.3f}." if chance is not None else None
    metric(cols[0], "Test accuracy", fin.test_acc, help=chance_help)
    metric(cols[1], "Validation accuracy", fin.val_acc)
    metric(cols[2], "Train accuracy", fin.train_acc)
    metric(cols[3], "Test loss", fin.test_loss, "{:.4f}")
    metric(cols[4], "Parameters", view.started.n_params if view.started is not None else None, "{:,}")
    metric(cols[5], "Time per epoch", view.seconds_per_epoch, "{:.2f} s")
    if fin.test_acc is not None and chance is not None:
        st.caption(f"Chance level (always guessing the most common test class): {chance:.3f}. "
                   "Losses are data losses, without the L1/L2 penalty.")


def _test_details(key: str, view: RunView, vkey: tuple) -> None:
    fin = view.finished
    st.subheader("Results on the test set", divider="gray")
    st.dataframe(view.final_metrics(), hide_index=True, width=420,
                 column_config={"loss": st.column_config.NumberColumn(format="%.4f"),
                                "accuracy": st.column_config.NumberColumn(format="%.4f")})
    classes = view.classes
    left, right = st.columns(2)
    if fin.confusion:
        with left:
            _chart(cached_figure(vkey, "confusion", lambda: figures.confusion_figure(fin.confusion, classes)),
                   f"conf_{key}")
    if view.config.get("dataset") in TOY_DATASETS:
        with right:
            _decision_boundary(key, view, vkey, getattr(fin, "decision_grid", None))
    images = getattr(fin, "misclassified_images", None)
    if images is not None and len(images):
        _chart(cached_figure(vkey, "wrong", lambda: figures.misclassified_figure(images, fin.misclassified, classes)),
               f"wrong_{key}", width="content")
    elif fin.misclassified == [] and fin.test_acc is not None:
        st.caption("No misclassified test examples.")
    with st.container(horizontal=True):
        st.download_button("Download metrics (CSV)", metrics_csv(view), file_name=f"{key}-metrics.csv",
                           mime="text/csv", on_click="ignore", key=f"csv_{key}", icon=":material/download:")
        st.download_button("Download config (JSON)", config_json(view), file_name=f"{key}-config.json",
                           mime="application/json", on_click="ignore", key=f"json_{key}", icon=":material/download:")


def _decision_boundary(key: str, view: RunView, vkey: tuple, grid: dict | None) -> None:
    from core.data import load_dataset

    cfg = view.config
    try:
        ds = load_dataset(cfg["dataset"], cfg.get("data_noise", 0.1))
    except Exception as exc:  # the data went away: say so, keep the rest of the page
        st.caption(plain(f"Cannot draw the data: {exc}"))
        return
    import numpy as np

    x = np.concatenate([ds.x.numpy(), ds.x_test.numpy()])
    y = np.concatenate([ds.y.numpy(), ds.y_test.numpy()])
    title = "Decision regions after training" if grid else "Data (this run has no decision grid recorded)"
    _chart(cached_figure(vkey, "boundary", lambda: figures.toy_scatter_figure(x, y, ds.classes, title, grid)),
           f"boundary_{key}")
