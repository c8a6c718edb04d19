"""Vanishing gradients (LESSONS A): a grid of activations x depths trained as one job, watched live."""
from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from app import grid_figures as gf
from app import live, widgets
from app.compare_figures import overlay_figure
from app.figures import weight_heatmaps_figure
from app.runview import LogPoint
from core.config import ACTIVATIONS, BUILTIN_DATASETS, INITS, MAX_HIDDEN_LAYERS, NORMS, OPTIMIZERS, ConfigError, RunConfig
from core.grid import MAX_CELLS, GridConfig, fixes_grid
from core.jobs import get_manager

POLL_SECONDS = 1.5
GRID_JOB, FIXES_JOB = "vg_grid_job", "vg_fixes_job"  # session state holds job keys only
FALLBACK = "vg_dataset_fallback"
DATASETS = [d for d in BUILTIN_DATASETS if d != "fashion3"]
BIG_DATASETS = ("mnist", "fashion-mnist")
DEFAULTS = {"vg_dataset": "mnist", "vg_activations": ["sigmoid", "tanh", "relu"], "vg_depths": (1, 8),
            "vg_width": 10, "vg_lr": 0.2, "vg_optimizer": "sgd", "vg_epochs": 1, "vg_batch": 32,
            "vg_init": "default", "vg_norm": "none", "vg_seed": 0}
# LESSONS A, as the coursework ran it: MNIST, width 10, SGD lr 0.2, batch 32, 5 epochs
LESSON_A = {**DEFAULTS, "vg_epochs": 5}

st.title("Vanishing gradients")
st.caption("Why do deep sigmoid networks stop learning? Train a whole table of networks at once, one per "
           "activation and depth, all with the same seed (the same data order and initial weights drawn the same "
           "way), and watch which ones get stuck, and where in the network the gradient disappears.")


def _use_dataset(values: dict) -> dict:
    """MNIST is the lesson's dataset; where its files are missing, fall back to digits and say so."""
    if values["vg_dataset"] != "digits" and not widgets.dataset_available(values["vg_dataset"]):
        st.session_state[FALLBACK] = values["vg_dataset"]
        return {**values, "vg_dataset": "digits"}
    return values


def _load(values: dict) -> None:
    st.session_state.pop(FALLBACK, None)
    for key, value in _use_dataset(values).items():
        st.session_state[key] = value


if "vg_dataset" not in st.session_state:  # first visit (or after a page switch dropped the widgets)
    _load(st.session_state.get("vg_saved", DEFAULTS))

# --- controls --------------------------------------------------------------------------------------
st.subheader("1 · The networks", divider="gray")
st.button("LESSONS A preset", icon=":material/school:", on_click=_load, args=(LESSON_A,), key="vg_preset",
          help="The coursework's setup: MNIST, sigmoid/tanh/ReLU with 1–8 hidden layers of 10 units, "
               "SGD lr 0.2, batch 32, 5 epochs.")
if FALLBACK in st.session_state:
    missing = st.session_state[FALLBACK]
    st.warning(widgets.plain(f"{widgets.DATASET_TITLES.get(missing, missing)} is not available on this server "
                             "(its files are not in the data folder), so this page uses "
                             f"{widgets.dataset_label('digits')} instead: the same lesson on 8x8 digits."),
               icon=":material/warning:")
left, mid, right = st.columns(3)
with left:
    st.selectbox("Dataset", DATASETS, key="vg_dataset", format_func=widgets.dataset_label)
    st.multiselect("Activations", list(ACTIVATIONS), key="vg_activations",
                   help="One row of the table per activation, after every hidden layer.")
    st.slider("Hidden layers (depths)", 0, MAX_HIDDEN_LAYERS, key="vg_depths",
              help="One column per depth in this range.")
with mid:
    st.number_input("Width (units per hidden layer)", 1, 256, key="vg_width")
    st.number_input("Learning rate", 1e-5, 10.0, key="vg_lr", format="%.4g", step=0.01)
    st.selectbox("Optimizer", list(OPTIMIZERS), key="vg_optimizer")
    st.number_input("Epochs", 1, 50, key="vg_epochs")
with right:
    st.number_input("Batch size", 1, 4096, key="vg_batch")
    st.selectbox("Initialization", list(INITS), key="vg_init",
                 help="default = PyTorch's; xavier suits sigmoid/tanh, he suits ReLU.")
    st.selectbox("Normalization", list(NORMS), key="vg_norm")
    st.number_input("Seed", 0, 2**31 - 1, key="vg_seed")

values = {key: st.session_state[key] for key in DEFAULTS}
st.session_state["vg_saved"] = values
lo, hi = values["vg_depths"]
grid = problem = None
try:
    base = RunConfig(dataset=values["vg_dataset"], epochs=int(values["vg_epochs"]), batch_size=int(values["vg_batch"]),
                     optimizer=values["vg_optimizer"], lr=float(values["vg_lr"]), init=values["vg_init"],
                     norm=values["vg_norm"], seed=int(values["vg_seed"]), val_fraction=0.1,
                     log_every=100 if values["vg_dataset"] in BIG_DATASETS else 10)
    grid = GridConfig(base=base, activations=tuple(values["vg_activations"]), depths=tuple(range(lo, hi + 1)),
                      width=int(values["vg_width"]))
    if not values["vg_activations"]:
        grid, problem = None, "Pick at least one activation."
except ConfigError as exc:
    problem = " ".join(exc.problems.values())

manager = get_manager()


def _submit(config: GridConfig, job_key: str, force: bool) -> None:
    try:
        key = manager.submit(config, force=force)
    except Exception as exc:  # e.g. a device that vanished: say so, no traceback
        st.session_state["vg_error"] = f"Could not start training: {exc}"
        return
    live.forget(key)
    st.session_state[job_key] = key


def train_button(config: GridConfig | None, job_key: str, label: str, key: str, help: str) -> None:
    current = manager.snapshot(config.key()) if config is not None else None
    busy = current is not None and current.status in ("queued", "running")
    again = current is not None and current.status in ("finished", "diverged")
    st.button("Training…" if busy else f"{label} again" if again else label, type="primary", key=key,
              icon=":material/play_arrow:", disabled=config is None or busy, on_click=_submit,
              args=(config, job_key, again), help=help)


col_button, col_text = st.columns([1, 4], vertical_alignment="center")
with col_button:
    train_button(grid, GRID_JOB, "Train the grid", "vg_train",
                 "Trains every network of the table in one batched job. A grid trained before loads at once.")
with col_text:
    if grid is not None:
        st.caption(widgets.plain(
            f"{grid.n_cells} networks: {', '.join(grid.activations)} x {lo}–{hi} hidden layers of {grid.width} units, "
            f"{widgets.dataset_label(base.dataset)}, {base.optimizer} lr {base.lr:g}, batch {base.batch_size}, "
            f"{base.epochs} epoch{'s' if base.epochs != 1 else ''}, seed {base.seed}. They train together, each "
            "exactly as it would alone."))
    else:
        st.error(widgets.plain(f"{problem} (at most {MAX_CELLS} networks per grid)."))
if "vg_error" in st.session_state:
    st.error(widgets.plain(st.session_state.pop("vg_error")))


# --- the grid, live ----------------------------------------------------------------------------------
_four = st.column_config.NumberColumn(format="%.4f")
TABLE_COLUMNS = {"accuracy": _four, "loss": _four, "ln(classes)": _four,
                 "most predicted class: share of answers": st.column_config.NumberColumn(format="percent"),
                 "its share of the test set": _four,
                 "first / last layer gradient": st.column_config.NumberColumn(format="%.1e")}

def _chart(fig, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


def _grid_view(key: str) -> tuple[live.Feed, gf.GridView, tuple] | None:
    feed = live.refresh(key)
    if feed is None:
        return None
    vkey = (key, feed.token, len(feed.events))
    return feed, live.cached_figure(vkey, "grid_view", lambda: gf.reduce_grid(feed.events[:vkey[2]])), vkey


def _status(key: str, feed: live.Feed, view: gf.GridView) -> None:
    total = len(view.cells)
    first = next((c.view for c in view.cells if c.view.started is not None), None)
    progress = first.progress() if first is not None else None
    parts = [f"{view.done_cells} of {total} networks done"] if total else ["starting"]
    if progress is not None:
        parts += [f"epoch {min(progress.epoch, progress.total_epochs):.1f} of {progress.total_epochs}",
                  f"{live.fmt_seconds(progress.elapsed)} elapsed"]
    if feed.status == "queued":
        st.info("Queued behind other training jobs; it starts by itself.", icon=":material/hourglass_top:")
    st.progress(progress.fraction if progress is not None else 0.0, text=" · ".join(parts))
    if feed.replayed and feed.saved_at:
        st.info(f"{live.cache_label(feed.saved_at)}: this exact grid was trained before, so its stored result is "
                "shown without training again.", icon=":material/inventory_2:")
    if view.started is not None:
        for note in view.started.notes:
            st.caption(widgets.plain(note))
    if feed.status == "failed":
        st.error(widgets.plain(f"Failed: {feed.error}"), icon=":material/error:")
    if not feed.done and st.button("Cancel", key=f"vg_cancel_{key}", icon=":material/stop_circle:",
                                   help="Stop every network of this grid; what they learned so far stays."):
        manager.cancel(key)


def _stuck_note(view: gf.GridView) -> None:
    stuck = [c for c in view.cells if c.stuck]
    if not stuck:
        return
    k = stuck[0].n_classes
    example = next((c for c in stuck if c.top_prediction is not None), None)
    detail = ""
    if example is not None:
        answers, share = example.top_prediction
        detail = (f" For example {example.label} gives {answers:.0%} of the test inputs the same answer, so its "
                  f"accuracy ({example.latest['acc']:.3f}) is just that class's share of the test set ({share:.3f}).")
    st.caption(widgets.plain(
        f"⊘ marks a stuck network ({len(stuck)} here): its loss sits at ln {k} = {math.log(k):.4f}, the loss of "
        f"guessing uniformly, and its accuracy near 1/{k}.{detail} (The coursework printed 0.0099 for such "
        "networks: a bug in how accuracy was counted; a 10-class model that learned nothing scores about 0.10.)"))


def _grid_fragment(key: str, polling: bool) -> None:
    current = _grid_view(key)
    if current is None:
        st.info("This grid is not known on this server any more (it may have been removed from the run store).")
        return
    feed, view, vkey = current
    if polling and feed.done:
        st.rerun()  # a full rerun declares the fragment again without run_every: polling stops
    _status(key, feed, view)
    _chart(live.cached_figure(vkey, "acc_heat", lambda: gf.accuracy_heatmap_figure(view)), f"vg_heat_{key}")
    st.caption("Each square is one network: brighter = more accurate. Read a row left to right to see what depth "
               "does to one activation. Networks that learned nothing stand out as dark squares.")
    _stuck_note(view)
    _chart(live.cached_figure(vkey, "loss_multiples", lambda: gf.loss_multiples_figure(view)), f"vg_losses_{key}")
    st.caption("The loss of every network as it trains. A curve that stays flat on the dotted line never got a "
               "useful gradient into its first layers.")
    if not view.cells:
        return
    st.subheader("Inside one network", divider="gray")
    labels = [c.label for c in view.cells]
    stuck = [c.label for c in view.cells if c.stuck]
    default = stuck[-1] if stuck else max(view.cells, key=lambda c: (c.row == view.rows[0], c.depth)).label
    if st.session_state.get("vg_cell") not in labels:
        st.session_state["vg_cell"] = default
    chosen = st.selectbox("Network", labels, key="vg_cell")
    cell = view.cells[labels.index(chosen)]
    left, right = st.columns(2)
    with left:
        _chart(live.cached_figure(vkey, ("band", cell.index), lambda: gf.gradient_band_figure(cell.view, cell.label)),
               f"vg_band_{key}")
        st.caption(f"How strong the learning signal is in each layer over time (log colour scale). ✕ marks layers "
                   f"whose gradient is below {gf.VANISHING_RATIO:g} of the output layer's: they have practically "
                   "stopped learning. With sigmoid the signal shrinks at every layer on its way back to the input.")
    with right:
        points = cell.view.log_points
        if points:
            point = points[-1]
            first = LogPoint(point.step, point.epoch, point.heatmaps[:1])
            shapes = cell.view.started.layer_shapes[:1] if cell.view.started is not None else None
            def first_layer_figure():
                fig = weight_heatmaps_figure(first, cell.view.layer_names[:1], shapes, 1)
                fig.layout.title.text = f"First layer: how far each weight moved, |W − W₀| (log10), step {point.step}"
                return fig

            _chart(live.cached_figure(vkey, ("first_layer", cell.index), first_layer_figure), f"vg_first_{key}")
            st.caption("How far each weight of the first layer moved from its initial value (log colour scale). "
                       "The coursework printed these numbers; in a stuck network they stay tiny.")
    if not polling:
        st.dataframe(gf.cells_table(view), hide_index=True, width="stretch", key=f"vg_table_{key}",
                     column_config=TABLE_COLUMNS)
        st.caption("Final test metrics of every network. A stuck network gives (almost) every input the same "
                   "answer: its accuracy is that class's share of the test set and its loss ln(classes). The last "
                   "column: how much weaker the first layer's gradient is than the output layer's.")
        cfg = next((RunConfig.from_dict(c.config) for c in view.cells if c.label == chosen), None)
        if cfg is not None and st.button("Open this network in the Playground", key="vg_open",
                                         icon=":material/science:",
                                         help="Its result is stored on its own, so it replays there at once."):
            widgets.request_config(cfg)
            st.switch_page(Path(__file__).with_name("playground.py"))


def shown_job(config: GridConfig | None, job_key: str) -> str | None:
    """The grid of the current settings when it is known (live or stored), else the one this session ran last."""
    if config is not None and manager.snapshot(config.key()) is not None:
        return config.key()
    return st.session_state.get(job_key)


shown = shown_job(grid, GRID_JOB)
if shown is not None:
    if grid is None or shown != grid.key():
        st.info("These are the results of the grid you trained last; the settings above have changed since.",
                icon=":material/info:")
    feed = live.refresh(shown)
    running = feed is not None and not feed.done
    st.fragment(run_every=POLL_SECONDS if running else None)(_grid_fragment)(shown, running)

# --- the fixes ------------------------------------------------------------------------------------------
st.subheader("2 · Fixes for a deep sigmoid network", divider="gray")
fix_depth = st.slider("Depth of the network to fix", 1, MAX_HIDDEN_LAYERS, value=max(hi, 1), key="vg_fix_depth")
fixes = None
if grid is not None:
    fixes = fixes_grid(base.replace(hidden=(grid.width,) * fix_depth, activation="sigmoid"))
    st.caption(widgets.plain(
        "The same network side by side, same seed: sigmoid as it is; ReLU; ReLU with He initialization; Xavier "
        "initialization; BatchNorm or LayerNorm after every hidden layer; a quarter of the learning rate. "
        f"{fix_depth} hidden layers of {grid.width} units, the data and optimizer settings from above."))
train_button(fixes, FIXES_JOB, "Train the fixes", "vg_train_fixes",
             "Trains the deep sigmoid network and its fixes together, in one batched job.")


def _fixes_fragment(key: str, polling: bool) -> None:
    current = _grid_view(key)
    if current is None:
        return
    feed, view, vkey = current
    if polling and feed.done:
        st.rerun()
    _status(key, feed, view)
    runs = [(c.label, c.view) for c in view.cells]
    left, right = st.columns(2)
    with left:
        _chart(live.cached_figure(vkey, "profile", lambda: gf.gradient_profile_figure(runs)), f"vg_profile_{key}")
        st.caption("The gradient each layer receives, input layer on the left. Plain sigmoid falls off steeply "
                   "towards the input; each fix keeps the early layers' gradient within reach of the last ones'.")
    with right:
        _chart(live.cached_figure(vkey, "fix_acc", lambda: overlay_figure(runs, "acc")), f"vg_fixacc_{key}")
        st.caption("Accuracy of each version over time (solid: validation, dashed: train).")
    _stuck_note(view)
    if not polling:
        st.dataframe(gf.cells_table(view), hide_index=True, width="stretch", key=f"vg_fixtable_{key}",
                     column_config=TABLE_COLUMNS)


fixes_shown = shown_job(fixes, FIXES_JOB)
if fixes_shown is not None:
    feed = live.refresh(fixes_shown)
    running = feed is not None and not feed.done
    st.fragment(run_every=POLL_SECONDS if running else None)(_fixes_fragment)(fixes_shown, running)
