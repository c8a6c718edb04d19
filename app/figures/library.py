"""The Run library's ranking: validation accuracy of the listed runs, best first (pure Plotly spec).

Run names may hold user text (an uploaded dataset's title): they reach Plotly only through
:func:`app.text.plain_label`.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..records.library import TOP_RUNS
from ..text import dataset_title, plain_label, plural, utc_time
from .compare import variant_color
from .run import base_layout, figure_from_spec, waiting_figure

BAR_PX = 22  # height per bar


def val_ranking_figure(ranking: pd.DataFrame, top: int = TOP_RUNS) -> go.Figure:
    """Horizontal bars of :func:`~app.records.library.val_ranking` (already best first), the first ``top``;
    one colour per dataset, accuracies on different datasets are not comparable."""
    shown = ranking.head(top)
    count = f"top {top} of {len(ranking)}" if len(ranking) > top else plural(len(ranking), "run")
    title = f"Best validation accuracy per run, best first ({count})"
    height = 170 + BAR_PX * max(len(shown), 3)  # the legend sits under the axis title
    layout = base_layout(title, height, x_title="validation accuracy", showlegend=True,
                         xaxis={"tickformat": ".0%", "range": [0, 1.02]})
    if shown.empty:
        return waiting_figure(layout, "No run with a validation accuracy")
    positions = list(range(len(shown)))
    layout["yaxis"] = {"tickvals": positions, "ticktext": [plain_label(n, 44) for n in shown["name"]],
                       "autorange": "reversed", "automargin": True, "tickfont": {"size": 11}}
    colors = {name: variant_color(i) for i, name in enumerate(dict.fromkeys(ranking["dataset"]))}
    data = []
    for dataset, color in colors.items():
        part = [(p, row) for p, row in zip(positions, shown.itertuples()) if row.dataset == dataset]
        if not part:
            continue
        data.append({"type": "bar", "orientation": "h", "name": plain_label(dataset_title(dataset), 40),
                     "y": [p for p, _ in part], "x": [row.val_acc for _, row in part],
                     "marker": {"color": color}, "texttemplate": "%{x:.1%}", "textposition": "inside",
                     "insidetextanchor": "end", "textfont": {"size": 11},
                     "customdata": [[plain_label(row.name, 60), _when(row), utc_time(row.saved_at)]
                                    for _, row in part],
                     "hovertemplate": "%{customdata[0]}<br>validation accuracy %{x:.2%} %{customdata[1]}"
                                      "<br>trained %{customdata[2]} UTC<extra></extra>"})
    return figure_from_spec(data, layout)


def _when(row) -> str:
    if not row.best_known:
        return "(final; this run was stored before the best epoch was kept)"
    return f"(epoch {row.epoch:g})" if row.epoch == row.epoch and row.epoch is not None else ""
