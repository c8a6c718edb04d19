"""Figures and words for a sweep's Optuna study: Optuna's own Plotly figures, relabelled for the lesson."""
from __future__ import annotations

import math
from urllib.parse import urlencode

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from core.lab.sweep.space import SweepConfig, format_gflop, trial_config
from core.lab.sweep.study import best_so_far, trial_rows

OBJECTIVE = "Validation accuracy"


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def history_figure(studies: list[tuple[str, optuna.Study]]) -> go.Figure:
    """Each trial's validation accuracy and the best so far (Optuna's optimization history);
    several studies are overlaid, named by ``label``."""
    fig = optuna.visualization.plot_optimization_history([s for _, s in studies], target_name=OBJECTIVE)
    names = {s.study_name: label for label, s in studies}
    for trace in fig.data:
        for name, label in names.items():
            if trace.name and name in trace.name:
                trace.name = trace.name.replace(name, label)
    fig.update_layout(title="Best validation accuracy so far", xaxis_title="Trial", yaxis_title=OBJECTIVE,
                      height=380, margin=dict(t=50, b=40))
    return fig


def study_figures(study: optuna.Study) -> dict[str, go.Figure | str]:
    """Parallel coordinates, parameter importances and slice plots; a sentence where a figure needs
    more finished trials."""
    n = len(completed(study))
    out: dict[str, go.Figure | str] = {}
    if n < 2:
        need = "at least two finished trials"
        return {"parallel": f"Parallel coordinates appear after {need}.",
                "importance": f"Parameter importances appear after {need}.",
                "slice": f"Slice plots appear after {need}."}
    out["parallel"] = optuna.visualization.plot_parallel_coordinate(study, target_name=OBJECTIVE)
    try:
        out["importance"] = optuna.visualization.plot_param_importances(study, target_name=OBJECTIVE)
    except (RuntimeError, ValueError) as exc:  # e.g. every finished trial has the same value
        out["importance"] = f"Parameter importances cannot be computed yet ({exc})."
    out["slice"] = optuna.visualization.plot_slice(study, target_name=OBJECTIVE)
    for fig in out.values():
        if isinstance(fig, go.Figure):
            fig.update_layout(margin=dict(t=50, b=40))
    return out


def playground_link(sweep: SweepConfig, params: dict) -> str:
    """The Playground (the app's default page) with the trial's config in the URL."""
    return "/?" + urlencode(trial_config(sweep.base, params).to_query())


def trial_table(sweep: SweepConfig, study: optuna.Study) -> pd.DataFrame:
    rows = []
    for row in trial_rows(study):
        item = {"trial": row["number"], "state": row["state"].lower(), "val acc": row["value"],
                "test acc": row["test_acc"], "outcome": row["outcome"]}
        item.update({k: v for k, v in row["params"].items()})
        item["playground"] = playground_link(sweep, row["params"]) if row["params"] else None
        rows.append(item)
    return pd.DataFrame(rows)


def explain_space(sweep: SweepConfig, trial_gflop: float, cap: float) -> str:
    """Grid against random against Bayesian search, from this space's numbers (seed 003 Q4)."""
    grid = sweep.grid_size
    budget = sweep.n_trials
    words = [f"One trial costs about {format_gflop(trial_gflop)} (6 x parameters x training examples x epochs, "
             f"averaged over the space); this sweep's {budget} trials about {format_gflop(budget * trial_gflop)} "
             f"(this server allows {format_gflop(cap)} per sweep)."]
    if math.isfinite(grid):
        share = budget / grid
        words.append(f"The space has {grid:,.0f} points. **Grid search** would train every one: about "
                     f"{format_gflop(grid * trial_gflop)}, {grid / budget:,.1f} times this budget." if grid > budget
                     else f"The space has {grid:,.0f} points: **grid search** can train every one within the budget.")
        if grid > budget:
            words.append(f"With {budget} trials a grid covers {share:.1%} of its points, in a fixed order: most "
                         "values of the later knobs are never tried.")
    else:
        words.append("A continuous range (log-uniform) has infinitely many points, so **grid search** is out; a "
                     "grid over a few listed values would try each of them only with a few partners.")
    words.append(f"**Random search** draws {budget} points independently: every knob gets about {budget} different "
                 "combinations, and a knob that matters is explored as well as if it were the only one.")
    words.append("**Bayesian search (TPE)** starts with random points, then models which values led to good "
                 "accuracy and draws more there: it can find a good region with fewer trials, but it learns "
                 "only from trials that have finished, so it asks few at a time.")
    return "\n\n".join(words)


def compare_samplers(studies: list[tuple[str, optuna.Study]]) -> str:
    """A conclusion written from two studies with the same budget."""
    summary = []
    for label, study in studies:
        values = [t.value for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not values:
            return "The comparison appears when both samplers have finished trials."
        curve = best_so_far(values)
        best = curve[-1]
        first = next(i for i, v in enumerate(curve) if v >= best - 0.005) + 1
        summary.append((label, best, first, len(values)))
    (a, best_a, first_a, n_a), (b, best_b, first_b, n_b) = summary
    if abs(best_a - best_b) < 0.005:
        verdict = f"Both reached about the same best accuracy ({best_a:.2%} vs {best_b:.2%})"
    else:
        winner, loser = (summary[0], summary[1]) if best_a > best_b else (summary[1], summary[0])
        verdict = f"{winner[0]} found the better trial ({winner[1]:.2%} against {loser[1]:.2%})"
    return (f"{verdict}. {a} came within half a point of its best after {first_a} of {n_a} finished trials, "
            f"{b} after {first_b} of {n_b}. With one seed and a small budget this is one draw, not a law: "
            "try another sampler seed before concluding.")


def transfer_table(top: list[tuple[optuna.trial.FrozenTrial, object]], mnist_ends: dict[int, object]) -> pd.DataFrame:
    rows = []
    for i, (trial, cfg) in enumerate(top):
        end = mnist_ends.get(i)
        rows.append({"trial": trial.number, "config": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                                 for k, v in trial.params.items()),
                     "Fashion val acc": trial.value, "Fashion test acc": trial.user_attrs.get("test_acc"),
                     "MNIST test acc": getattr(end, "test_acc", None) if end is not None else None,
                     "MNIST status": getattr(end, "status", "training") if end is not None else "training"})
    return pd.DataFrame(rows)
