"""Gradient-check views: a check job's status and result (which weights it checked, its chart, scatter, table
and notes), and the seed's 0.99999 beside the correct check. Checks compute on the job manager's workers;
the page only reads their results."""
from __future__ import annotations

import streamlit as st

from core.lab.gradcheck.mistakes import SEED_VALUE, SEED_VARIANTS
from core.lab.gradcheck.result import GOOD, SUSPECT, GradCheck
from core.lab.gradcheck.task import GradCheckConfig

from ..figures.gradcheck import layer_bars_figure, scatter_figure
from ..records.jobs import JobState
from ..text import plain
from .jobs import config_status, job_state, polling_fragment, status_line

CHART = {"displaylogo": False}
POLL_SECONDS = 1.0


def check_result(state: JobState | None) -> GradCheck | None:
    """The check a finished job holds (None while it runs, or when it failed)."""
    done = next((e for e in state.events if e.kind == "gradcheck"), None) if state is not None else None
    return GradCheck.from_event(done) if done is not None else None


def _check_part(key: str) -> None:
    state = job_state(key)
    if state is None:
        return
    status_line(state, None, what="gradient check", progress=False, started=True,
                cancel_help="Stop waiting for this check (a check that has started finishes first).")
    if not state.done:
        st.caption("Computing finite differences on the server's workers…")
        return
    result = check_result(state)
    if result is not None:
        check_view(result)


def check_job_view(check: GradCheckConfig | None, last_key: str | None) -> None:
    """The check of the form's settings when this server has it (done or under way), else this session's last."""
    shown = check.key() if check is not None and config_status(check) is not None else last_key
    if shown is None:
        st.caption("Press **Check the gradients** to compare backprop with finite differences for these settings.")
        return
    if check is None or shown != check.key():
        st.info("These are the results of your last check. The settings above have changed since: press "
                "**Check the gradients** to check them.", icon="ℹ️")
    polling_fragment(shown, lambda polling: _check_part(shown), every=POLL_SECONDS, name="gc_check")


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


def seed_view(checks: tuple[GradCheckConfig, ...]) -> None:
    """The seed's three checks once this server has them (done or under way)."""
    if all(config_status(check) is None for check in checks):
        st.caption("Press **Check the B network three ways** to see them side by side.")
        return
    keys = [check.key() for check in checks]
    polling_fragment(keys, lambda polling: _seed_part(keys), every=POLL_SECONDS, name="gc_seed")


def _seed_part(keys: list[str]) -> None:
    states = [job_state(key) for key in keys]
    if any(state is None or not state.done for state in states):
        st.caption("Checking the B network three ways on the server's workers…")
        return
    results = [check_result(state) for state in states]
    if any(result is None for result in results):
        for state in states:
            status_line(state, None, what="gradient check", progress=False, started=True)
        return
    seed_table(dict(zip(SEED_VARIANTS, results)))


def seed_table(variants: dict[str, GradCheck]) -> None:
    """The B network's check done right and with each suspected cause of the seed's printed value."""
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
