"""The Optimizers lesson's drawn parts (read-only): the rules beside their code, the 2-D race, the real
race's comparisons, and the loss surface with its path."""
from __future__ import annotations

import inspect

import pandas as pd
import streamlit as st

from core.lab import race
from core.engine.config import OPTIMIZERS
from core.engine.optimizers import RULES
from core.lab.surface import SurfaceConfig, surface_grid
from core.lessons import families, sentences

from ..figures import optimizers as figs
from ..records import optimizers as records
from ..text import FALLBACK_DATASET, dataset_title, plain
from .charts import plotly_chart
from .compare import comparison_view, family_states
from .data import dataset_fallback_notice
from .jobs import config_status, job_state, polling_fragment, status_line

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
    plotly_chart(figs.race_contour_figure(fn, grid, results, upto), "opt_race_contour", left)
    plotly_chart(figs.race_loss_figure(results, upto), "opt_race_loss", right)
    st.latex(fn.formula)
    if results:
        st.dataframe(pd.DataFrame(records.race_rows(results)), hide_index=True)
    if settings["fn"] == "quadratic":
        st.caption(sentences.quadratic_theory(settings["kappa"]))


CURVES_WORDS = ("The same network, seed, initial weights and batches under each optimizer: the curves differ only by "
                "the update rule. Click a variant in a legend to hide it, double-click to show it alone.")
WEIGHTS_WORDS = ("Where each optimizer left the weights. Adaptive rules (RMSProp, Adam, Nadam) divide each weight's "
                 "step by the root of its own recent squared gradients; SGD, momentum and Nesterov do not.")


def lesson_data_notice() -> str:
    """The one notice when the lesson's data is missing here (its networks train on Digits instead); returns
    the title of the dataset they train on."""
    fallback = families.optimizers_fallback()
    if fallback is None:
        return dataset_title("fashion-mnist")
    missing, why = fallback
    dataset_fallback_notice(missing, changed=why)
    return dataset_title(FALLBACK_DATASET)


def _race_sentence(runs: list[dict]) -> None:
    states, _, _ = family_states(runs)
    names = [records.TITLES.get(r["label"], r["label"]) for r in runs]
    finals = {name: sentences.gap_run(s.events) if s is not None else None for name, s in zip(names, states)}
    ended = {name: s.status for name, s in zip(names, states) if s is not None and s.done and finals[name] is None}
    st.info(plain(sentences.race_sentence({name: run.val if run else None for name, run in finals.items()},
                                          ended)), icon="ℹ️")


def families_view(grids: dict) -> None:
    """Each family this server has trained (or is training), for a link or a fresh browser too; the winner
    sentence of the six and the CE-vs-MSE sentence once their runs have finished."""
    for slot, (heading, _, grid) in grids.items():
        if config_status(grid) is None:
            continue
        st.markdown(f"**{heading}**")
        runs = records.grid_runs(grid)
        if slot == "opt_six":
            _race_sentence(runs)
        comparison_view(runs, prefix=f"{slot}_cmp", curves_words=CURVES_WORDS, weights_words=WEIGHTS_WORDS)
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
    plotly_chart(figs.loss_surface_contour_figure(started.xs, started.ys, rows, started.path),
                 f"opt_surface_contour_{polling}", left)
    if filled:
        plotly_chart(figs.loss_surface_3d_figure(started.xs, started.ys, rows, started.path_losses,
                                                 started.path), f"opt_surface_3d_{polling}", right)


def surface_view(surface: SurfaceConfig, key: str | None) -> None:
    """The loss surface job ``key`` live: training, then the grid filling in row by row, with the path on it
    (with a note when it is not the surface of the settings above)."""
    if key and key != surface.key():
        st.info("This is the loss surface you computed last; the settings above have changed since.", icon="ℹ️")
    if key:
        polling_fragment(key, lambda polling: _surface_part(key, polling), every=POLL_SECONDS, name="opt_surface")
