"""The grid views of the Vanishing-gradients lesson: a grid job live (accuracy table, loss small
multiples, inside one network, final table) and the fixes of a deep sigmoid network side by side."""
from __future__ import annotations

import streamlit as st

from core.engine.config import RunConfig
from core.lab.grid import GridConfig
from core.lessons.sentences import stuck_share_on
from core.lessons.verdicts import VANISHING_TEXT

from ..figures import grid as gf
from ..figures.compare import overlay_figure
from ..figures.run import weight_heatmaps_figure
from ..records.grid import GridView, cells_table, default_cell, grid_progress, reduce_grid, stuck_note
from ..records.jobs import JobState
from ..records.reported import SWITCH_HELP, reported_label, with_as_reported
from ..records.run import LogPoint
from ..text import dataset_label, plain
from .charts import plotly_chart
from .jobs import cached, job_state, polling_fragment, status_line
from .links import open_in_playground, open_preset_in_playground

POLL_SECONDS = 1.5
_four = st.column_config.NumberColumn(format="%.4f")
TABLE_COLUMNS = {"accuracy": _four, "loss": _four, "ln(classes)": _four,
                 "most predicted class: share of answers": st.column_config.NumberColumn(format="percent"),
                 "its share of the test set": _four,
                 "first / last layer gradient": st.column_config.NumberColumn(format="%.1e")}


REPORTED_COLUMNS = {reported_label("accuracy"): st.column_config.NumberColumn(format="%.4f", help=SWITCH_HELP)}


GRADIENT_COLUMNS = ["first / last layer gradient", "vanishing"]  # right after the loss: in view without scrolling
LAST_COLUMNS = ["collapse cause"]  # long text: last, so it cannot push the numbers out of the table's view


def shown_cells_table(grid: GridView, as_reported: bool):
    """The cells table, with each accuracy as the coursework's reports computed it beside it when asked; the gradient
    columns right after the loss and the long collapse causes last (the table is wider than the page: the gradient
    column had fallen out of sight at its right end)."""
    table = cells_table(grid)
    middle = [c for c in table.columns if c not in GRADIENT_COLUMNS + LAST_COLUMNS]
    at = middle.index("loss") + 1
    table = table[middle[:at] + GRADIENT_COLUMNS + middle[at:] + LAST_COLUMNS]
    return with_as_reported(table, "accuracy", [c.n_classes for c in grid.cells]) if as_reported else table


def _chart(fig, key: str) -> None:
    plotly_chart(fig, key)


def grid_of(state: JobState) -> GridView:
    n = len(state.events)
    return cached(state.version, "grid_view", lambda: reduce_grid(state.events[:n]), 64)


def grid_status(state: JobState, grid: GridView, cancel_help: str) -> None:
    """The grid's status line: outcome and cache note (shared), networks done, its own notes."""
    status_line(state, None, what="grid", progress=False, started=grid.started is not None, cancel_help=cancel_help)
    fraction, text = grid_progress(grid)
    st.progress(fraction, text=text)
    if grid.started is not None:
        for note in grid.started.notes:
            st.caption(plain(note))


def _stuck(grid: GridView, vkey: tuple) -> None:
    note = cached(vkey, "stuck_note", lambda: stuck_note(grid))
    if note:
        st.caption(plain(note))


def grid_view(key: str, as_reported: bool = False) -> None:
    """A grid job, polled while it trains (``as_reported``: accuracies also as the coursework's reports computed
    them, in the heatmap's hover and the cells table)."""
    if job_state(key) is None:
        st.info("This grid is not known on this server any more (it may have been removed from the run store).")
        return
    polling_fragment(key, lambda polling: _grid_part(key, polling, as_reported), every=POLL_SECONDS, name=f"grid_{key}")


def _grid_part(key: str, polling: bool, as_reported: bool = False) -> None:
    state = job_state(key)
    if state is None:
        return
    grid, vkey = grid_of(state), state.version
    grid_status(state, grid, "Stop every network of this grid; what they learned so far stays.")
    _chart(cached(vkey, ("acc_heat", as_reported), lambda: gf.accuracy_heatmap_figure(grid, as_reported)),
           f"vg_heat_{key}")
    st.caption("Each square is one network: brighter = more accurate. Read a row left to right to see what depth "
               "does to one activation. Networks that learned nothing stand out as dark squares.")
    _stuck(grid, vkey)
    _chart(cached(vkey, "loss_multiples", lambda: gf.loss_multiples_figure(grid)), f"vg_losses_{key}")
    st.caption("The loss of every network as it trains. A curve that stays flat on the dotted line never got a "
               "useful gradient into its first layers.")
    if not grid.cells:
        return
    st.subheader("Inside one network", divider="gray")
    labels = [c.label for c in grid.cells]
    if st.session_state.get("vg_cell") not in labels:
        st.session_state["vg_cell"] = default_cell(grid)
    chosen = st.selectbox("Network", labels, key="vg_cell")
    cell = grid.cells[labels.index(chosen)]
    left, right = st.columns(2)
    with left:
        _chart(cached(vkey, ("band", cell.index), lambda: gf.gradient_band_figure(cell.view, cell.label)),
               f"vg_band_{key}")
        st.caption(f"How strong the learning signal is in each layer over time (log colour scale). ✕ marks layers "
                   f"whose gradient is below {VANISHING_TEXT} of the output layer's: they have practically "
                   "stopped learning. With sigmoid the signal shrinks at every layer on its way back to the input "
                   "(sigmoid's slope is at most 1/4).")
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

            _chart(cached(vkey, ("first_layer", cell.index), first_layer_figure), f"vg_first_{key}")
            st.caption("How far each weight of the first layer moved from its initial value (log colour scale). "
                       "The coursework printed these numbers; in a stuck network they stay tiny.")
    if not polling:
        table = cached(vkey, ("cells_table", as_reported), lambda: shown_cells_table(grid, as_reported))
        st.dataframe(table, hide_index=True, width="stretch", key=f"vg_table_{key}",
                     placeholder="n/a", column_config=TABLE_COLUMNS | REPORTED_COLUMNS)
        st.caption("Final test metrics of every network. A stuck network gives (almost) every input the same "
                   "answer: its accuracy is that class's share of the test set and its loss ln(classes). Collapsed: "
                   "at least 9 in 10 test answers are one class, whatever the loss; its cause is read from the layer "
                   "probes (dead ReLU units, vanishing gradients, saturated sigmoid/tanh units). The last "
                   f"column: how much weaker the first layer's gradient is than the output layer's; vanishing: it "
                   f"was below {VANISHING_TEXT} of it (✕ in the gradient chart) at most of the first log points.")
        if st.button("Open this network in the Playground", key="vg_open", icon="🧪",
                     help="Its result is stored on its own, so it replays there at once."):
            open_in_playground(RunConfig.from_dict(cell.config))


def cell_runs(key: str | None) -> list[tuple[str, list]]:
    """(label, the cell's own events) for every cell of a grid job: what the collapse verdicts read."""
    state = job_state(key) if key is not None else None
    if state is None:
        return []
    return [(c.label, c.events) for c in grid_of(state).cells]


def finished_cells(key: str | None) -> list[tuple[str, object]]:
    """(label, the cell's RunFinished or None while it trains) for every cell of a grid job."""
    state = job_state(key) if key is not None else None
    if state is None:
        return []
    return [(c.label, c.view.finished) for c in grid_of(state).cells]


def stuck_by_depth(key: str | None, grid: GridConfig | None, activation: str = "sigmoid") -> dict[int, bool] | None:
    """depth -> whether the grid job ``key`` left ``grid``'s network with ``activation`` (its base settings,
    ``grid.width`` units per hidden layer) stuck (core.lessons.verdicts.is_stuck on the test metrics, as the ⊘
    marks), shallowest first; None when the job holds no such network or until every one of them has finished."""
    state = job_state(key) if key is not None and grid is not None else None
    if state is None:
        return None
    network = grid.base.replace(activation=activation)
    cells = [c for c in grid_of(state).cells if c.depth and set(c.config.get("hidden", [])) == {grid.width}
             and RunConfig.from_dict(c.config).replace(hidden=network.hidden) == network]
    if not cells or any(c.view.finished is None or c.view.finished.test_acc is None for c in cells):
        return None
    return {c.depth: c.stuck for c in sorted(cells, key=lambda c: c.depth)}


def fixes_view(key: str, as_reported: bool = False) -> None:
    """The fixes grid job, polled while it trains (``as_reported``: as in :func:`grid_view`)."""
    if job_state(key) is None:
        return
    polling_fragment(key, lambda polling: _fixes_part(key, polling, as_reported), every=POLL_SECONDS, name=f"fixes_{key}")


def _fixes_part(key: str, polling: bool, as_reported: bool = False) -> None:
    state = job_state(key)
    if state is None:
        return
    grid, vkey = grid_of(state), state.version
    grid_status(state, grid, "Stop every version of this network; what they learned so far stays.")
    runs = [(c.label, c.view) for c in grid.cells]
    left, right = st.columns(2)
    with left:
        _chart(cached(vkey, "profile", lambda: gf.gradient_profile_figure(runs)), f"vg_profile_{key}")
        st.caption("The gradient each layer receives, input layer on the left. Compare how far each version's "
                   "early layers fall below its last ones: a network whose first layers get almost no gradient "
                   "cannot learn there.")
    with right:
        _chart(cached(vkey, "fix_acc", lambda: overlay_figure(runs, "acc")), f"vg_fixacc_{key}")
        st.caption("Accuracy of each version over time (solid: validation, dashed: train).")
    _stuck(grid, vkey)
    if not polling:
        table = cached(vkey, ("cells_table", as_reported), lambda: shown_cells_table(grid, as_reported))
        st.dataframe(table, hide_index=True, width="stretch",
                     key=f"vg_fixtable_{key}", placeholder="n/a", column_config=TABLE_COLUMNS | REPORTED_COLUMNS)


def lesson_box(grid: GridConfig) -> None:
    """Lesson A's box over the grid: the coursework's setup, what a stuck network scores on the data in use, and
    the way to the report's tanh x14, beyond the grid."""
    st.info("**Lesson A: activations and vanishing gradients.** The coursework's grid: sigmoid, tanh and ReLU "
            "with 1–8 hidden layers of 10 units, SGD lr 0.2, batch 32. "
            + plain(stuck_share_on(grid.base.dataset, dataset_label(grid.base.dataset)))
            + " The report also saw tanh stuck at 14 layers, beyond this grid: open that network on its own.", icon="🎓")
    if st.button("Open tanh x14 in the Playground", key="vg_tanh14", icon="🧪",
                 help="The lesson's tanh network with 14 hidden layers, as its preset in the Playground."):
        open_preset_in_playground("A-tanh-deep")
