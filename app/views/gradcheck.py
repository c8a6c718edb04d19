"""Gradient-check views: run a check (cached process-wide), say which weights it checked, draw its chart,
scatter, table and notes, and the seed's 0.99999 beside the correct check."""
from __future__ import annotations

import json

import streamlit as st

from core.engine.config import RunConfig
from core.engine.data import DatasetUnavailable
from core.lessons.presets import get_preset
from core.lab.gradcheck import GOOD, SEED_VALUE, SUSPECT, CheckOptions, GradCheck, NoStoredWeights, RunGone, \
    check_gradients, check_stored_run, seed_variants
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


def verdict_text(result: GradCheck) -> str:
    worst = max(result.layers, key=lambda r: r.rel_diff)
    if worst.rel_diff < GOOD:
        return f"Every layer reads below 1e-7 (worst: {worst.layer}, {worst.rel_diff:.1e}): backprop is right here."
    wrong = result.first_wrong_layer()
    if wrong is None:
        text = f"No layer is above 1e-5, but {worst.layer} reads {worst.rel_diff:.1e}, above 1e-7: doubtful."
        if result.settings.get("dtype") == "float64":
            text += (" In float64 this is often rounding, not a bug: a layer whose gradients are tiny (a sigmoid "
                     "network's first layers) loses digits in J(θ+ε) − J(θ−ε), an error that shrinks like 1/ε. Move ε "
                     "up tenfold (to 1e-5, then 1e-4): if the difference falls about tenfold each time, it was "
                     "rounding and backprop is right; a bug keeps it high at every ε.")
        return text
    return (f"{wrong} is the layer nearest the output above 1e-5 ({next(r for r in result.layers if r.layer == wrong).rel_diff:.1e}). "
            "Backprop runs from the output down, so a backward bug first shows at its own layer (and taints "
            "every layer below it).")


def weights_text(settings: dict) -> str:
    """Which weights a check ran on, in words."""
    run = settings.get("run")
    if run is None:
        return f"Weights checked: the network above, at its {settings['where']}."
    if settings.get("at") == "final":
        return (f"Weights checked: stored run {run} at its final weights, after {settings['step']} training steps "
                "(loaded from the run store).")
    return f"Weights checked: stored run {run} at its initialization (the run's seed and init, not what it learned)."


def check_view(result: GradCheck) -> None:
    """Which weights, summary, notes, per-layer bar chart, scatter and table of one check."""
    s = result.settings
    st.markdown(plain(weights_text(s)))
    st.metric("Relative difference, all checked entries", f"{result.overall:.2e}",
              help="‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖) over every checked entry at once.")
    st.markdown(plain(verdict_text(result)))
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
    right, float32, copy_ = variants.values()
    copy_ones = all(r.rel_diff == 1.0 for r in copy_.layers)
    float32_zero = [r.layer for r in float32.layers if r.numeric_norm == 0]
    lines = [f"The seed printed {SEED_VALUE!r} = 1 − {1 - SEED_VALUE:.1e}. A relative difference of 1 − δ with a "
             "tiny δ means one gradient is about δ times the other: effectively zero."]
    lines.append(f"Done right, this network reads {right.overall:.1e} "
                 f"({'below' if right.overall < GOOD else 'above'} 1e-7).")
    if copy_ones:
        lines.append("Perturbing a copy of the weights makes every numeric entry exactly 0 (the model never sees "
                     "the perturbation), so every layer and the whole network read exactly 1. The seed's value agrees "
                     "to 12 digits; its last digits say its numeric gradient was about 1e-13 of backprop's rather "
                     "than exactly 0.")
    lines.append(f"float32 with ε = 1e-7: in {', '.join(float32_zero) or 'no layer'} the loss change rounds to "
                 f"nothing (numeric gradient 0, difference 1), but the whole network reads {float32.overall:.3f}, "
                 "because the output layer's loss changes survive float32's rounding.")
    if copy_ones and float32.overall < 1 - SUSPECT:
        lines.append("So the likely cause of the seed's 0.99999 is a perturbation that never reached the model "
                     "(a copy); float32 with ε = 1e-7 alone does not give ≈1 for the whole network.")
    for line in lines:
        st.markdown(plain(line))
