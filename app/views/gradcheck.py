"""Gradient-check views: run a check (cached process-wide), say which weights it checked, draw its chart,
scatter, table and notes, and the seed's 0.99999 beside the correct check."""
from __future__ import annotations

import json

import streamlit as st

from core.engine.config import RunConfig
from core.engine.data import DatasetUnavailable
from core.lessons.presets import get_preset
from core.lab.gradcheck import CheckOptions, GradCheck, NoStoredWeights, RunGone, check_gradients, check_stored_run, \
    seed_variants
from core.lessons.sentences import check_verdict, checked_weights_text, seed_check_lines
from core.serve.jobs import get_manager

from ..figures.gradcheck import layer_bars_figure, scatter_figure
from ..text import FALLBACK_DATASET, dataset_available, dataset_title, plain

CHART = {"displaylogo": False}


@st.cache_data(max_entries=64, show_spinner=False)
def _check(config_json: str, options_json: str, run_key: str | None, version: str | None = None) -> GradCheck | str:
    """A finished check, or the message of why it cannot run (same inputs, same result: cached for everyone;
    ``version``, the stored run's, makes a run trained again a new check)."""
    options = CheckOptions.from_query(json.loads(options_json))
    try:
        if run_key:
            return check_stored_run(run_key, get_manager().store, at=options.at, **options.kwargs())
        return check_gradients(RunConfig.from_json(config_json), **options.kwargs())
    except (RunGone, NoStoredWeights) as exc:
        return exc.args[0]
    except (ValueError, DatasetUnavailable) as exc:
        return str(exc)
    except Exception as exc:  # anything else: a plain message on the page, never a traceback
        return f"The check could not run: {type(exc).__name__}: {exc}"


@st.cache_data(max_entries=8, show_spinner=False)
def _seed(config_json: str) -> dict[str, GradCheck]:
    return seed_variants(RunConfig.from_json(config_json))


def run_check(cfg: RunConfig, options: CheckOptions, run_key: str | None = None) -> GradCheck | None:
    """Run (or fetch) the check; a problem is shown as a plain error and gives None."""
    version = (get_manager().store.meta(run_key) or {}).get("version") if run_key else None
    with st.spinner("Computing finite differences…"):
        result = _check(cfg.to_json(), json.dumps(options.to_query(), sort_keys=True), run_key, version)
    if isinstance(result, str):
        st.error(plain(result), icon="⚠️")
        return None
    return result


def check_view(result: GradCheck) -> None:
    """Which weights, summary, notes, per-layer bar chart, scatter and table of one check."""
    s = result.settings
    st.markdown(plain(checked_weights_text(s)))
    st.metric("Relative difference, all checked entries", f"{result.overall:.2e}",
              help="‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖) over every checked entry at once.")
    st.markdown(plain(check_verdict(result)))
    st.caption(plain(f"{s['dtype']}, ε = {s['eps']:.0e}, {s['examples']} examples, backprop {s['backprop']}, "
                     f"checked at {s['where']}; {result.checked} of {result.total} entries."))
    for note in result.notes:
        st.info(plain(note), icon="ℹ️")
    left, right = st.columns(2)
    left.plotly_chart(layer_bars_figure(result.table()), key="gc_bars", config=CHART)
    right.plotly_chart(scatter_figure(result.pairs), key="gc_scatter", config=CHART)
    st.dataframe(result.table(), hide_index=True, width="stretch",
                 column_config={"rel diff": st.column_config.NumberColumn(format="%.2e")})


def seed_view() -> None:
    """The B network's check done right and with each suspected cause of the seed's printed value."""
    cfg = get_preset("B-regularization").config
    if not dataset_available(cfg.dataset):
        st.caption(plain(f"{dataset_title(cfg.dataset)} is not on this server: the same network is checked on "
                         f"{dataset_title(FALLBACK_DATASET)} (64 inputs instead of 784)."))
        cfg = cfg.replace(dataset=FALLBACK_DATASET)
    with st.spinner("Checking the B network three ways…"):
        variants = _seed(cfg.to_json())
    rows = []
    for label, result in variants.items():
        row = {"check": label, "all entries": result.overall, "1 − value": 1 - result.overall}
        row |= {r.layer: r.rel_diff for r in result.layers}
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.3e") for k in rows[0] if k != "check"})
    for line in seed_check_lines(*variants.values()):
        st.markdown(plain(line))
