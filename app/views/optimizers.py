"""The Optimizers lesson's drawn parts (read-only): the rules beside their code, the 2-D race, the real
race's comparisons, and the loss surface with its path."""
from __future__ import annotations

import inspect

import pandas as pd
import streamlit as st

from core.lab import race
from core.engine.config import OPTIMIZERS
from core.engine.optimizers import RULES
from core.lab.surface import surface_grid
from core.lessons import sentences

from ..figures import optimizers as figs
from ..records import optimizers as records
from ..text import plain
from .compare import comparison_view, family_states
from .jobs import job_state, polling_fragment, status_line

POLL_SECONDS = 1.5


def rules_view() -> None:
    """One tab per optimizer: its formula and knobs beside the tensor code that runs it."""
    for tab, name in zip(st.tabs([records.TITLES[n] for n in OPTIMIZERS]), OPTIMIZERS):
        left, right = tab.columns([2, 3])
        left.latex(records.FORMULAS[name][0])
        left.markdown(records.rule_knobs_markdown(name))
        right.code(inspect.getsource(RULES[name]), language="python", wrap_lines=True)  # every line in view


@st.cache_data(max_entries=64, show_spinner=False)
def _race(fn_name: str, kappa: float, start: tuple[float, float], racers: dict, steps: int):
    surface = race.surface(fn_name, kappa)
    return race.race(surface, start, racers, steps), race.loss_grid(surface)


def race_view(settings: dict, upto: int) -> None:
    """The race's paths on the function's contours, the losses, the function, the end points, the theory."""
    fn = race.surface(settings["fn"], settings["kappa"])
    results, grid = _race(settings["fn"], settings["kappa"], (settings["x0"], settings["y0"]),
                          records.race_racers(settings), settings["steps"])
    left, right = st.columns([3, 2])
    left.plotly_chart(figs.race_contour_figure(fn, grid, results, upto), key="opt_race_contour")
    right.plotly_chart(figs.race_loss_figure(results, upto), key="opt_race_loss")
    st.latex(fn.formula)
    if results:
        st.dataframe(pd.DataFrame(records.race_rows(results)), hide_index=True)
    if settings["fn"] == "quadratic":
        st.caption(sentences.quadratic_theory(settings["kappa"]))


def families_view(grids: dict) -> None:
    """Each trained family's comparison; the CE-vs-MSE sentence once both of its runs have finished."""
    for slot, (heading, _, grid) in grids.items():
        if st.session_state.get(slot) != grid.key():
            continue
        st.markdown(f"**{heading}**")
        runs = records.grid_runs(grid)
        comparison_view(runs, prefix=f"{slot}_cmp")
        if slot == "opt_losses":
            states, _, _ = family_states(runs)
            if all(s is not None and s.done for s in states):
                summaries = [sentences.loss_run_summary(r["label"], s.events) for r, s in zip(runs, states)]
                if all(summaries):
                    st.info(plain(sentences.losses_sentence(*summaries)), icon="💡")


def _surface_part(key: str, polling: bool) -> None:
    state = job_state(key)
    if state is None:
        st.warning("This loss surface is no longer in the run store; compute it again.")
        return
    started, rows = surface_grid(state.events)
    status_line(state, what="loss surface", started=started is not None, progress=False)
    evals = [e.event for e in state.events if e.kind == "cell" and e.event.kind == "eval"]
    filled = sum(r is not None for r in rows)
    if started is None:
        if not state.done:
            st.caption("Training and recording the weights…" + (
                f" step {evals[-1].step}, validation accuracy {evals[-1].val_acc:.3f}" if evals else ""))
        return
    st.progress(filled / len(rows), text=f"{filled} of {len(rows)} rows of the grid evaluated")
    shares = ", ".join(f"{s:.1%}" for s in started.explained_by_direction)
    st.caption(plain(f"Loss on {started.n_examples} training examples. The plane holds {started.explained:.1%} of "
                     f"the path's variance (per direction: {shares}). Loss at the final weights: "
                     f"{started.final_loss:.4f}."))
    left, right = st.columns(2)
    left.plotly_chart(figs.loss_surface_contour_figure(started.xs, started.ys, rows, started.path),
                      key=f"opt_surface_contour_{polling}")
    if filled:
        right.plotly_chart(figs.loss_surface_3d_figure(started.xs, started.ys, rows, started.path_losses,
                                                       started.path), key=f"opt_surface_3d_{polling}")


def surface_view(key: str | None) -> None:
    """The loss surface job live: training, then the grid filling in row by row, with the path on it."""
    if key:
        polling_fragment(key, lambda polling: _surface_part(key, polling), every=POLL_SECONDS, name="opt_surface")
