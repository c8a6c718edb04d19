"""Display reductions for the Optimizers lesson (pure: settings and events in, configs, numbers and
tables out): the rules' formulas, the 2-D race's settings and table, a family grid's job ids, the
loss-surface setup. The lesson's families and sentences live in core.lessons."""
from __future__ import annotations

from typing import Sequence

from app.text import plain
from core.lab import race
from core.engine.config import OPTIMIZERS, knob_of
from core.engine.task import clipped
from core.lab.grid import GridConfig

# --- the update rules written out -------------------------------------------------------------------
FORMULAS = {
    "sgd": (r"\theta \leftarrow \theta - \eta\,(g + \lambda\theta)", ("lr", "weight_decay")),
    "momentum": (r"v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \eta\, v", ("lr", "momentum", "weight_decay")),
    "nesterov": (r"v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \eta\,(g + \mu v)",
                 ("lr", "momentum", "weight_decay")),
    "rmsprop": (r"s \leftarrow \alpha s + (1-\alpha)\,g^2, \quad b \leftarrow \mu_b b + \frac{g}{\sqrt{s}+\epsilon},"
                r"\quad \theta \leftarrow \theta - \eta\, b", ("lr", "rms_alpha", "rms_momentum", "weight_decay")),
    "adam": (r"m \leftarrow \beta_1 m + (1-\beta_1) g,\; v \leftarrow \beta_2 v + (1-\beta_2) g^2,\;"
             r"\theta \leftarrow \theta - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)}+\epsilon}",
             ("lr", "beta1", "beta2", "weight_decay", "weight_decay_mode")),
    "nadam": (r"\mu_t = \beta_1\big(1 - \tfrac12\,0.96^{0.004\,t}\big),\;"
              r"\theta \leftarrow \theta - \eta\Big(\frac{(1-\mu_t)\,g}{1-\prod_{i\le t}\mu_i}"
              r"+ \frac{\mu_{t+1}\, m}{1-\prod_{i\le t+1}\mu_i}\Big)\Big/\Big(\sqrt{\tfrac{v}{1-\beta_2^t}}+\epsilon\Big)",
              ("lr", "beta1", "beta2", "weight_decay", "weight_decay_mode")),
}
SYMBOLS = {"lr": r"\eta", "momentum": r"\mu", "rms_alpha": r"\alpha", "rms_momentum": r"\mu_b", "beta1": r"\beta_1",
           "beta2": r"\beta_2", "weight_decay": r"\lambda", "weight_decay_mode": ""}
TITLES = {"sgd": "SGD", "momentum": "Momentum", "nesterov": "Nesterov", "rmsprop": "RMSProp", "adam": "Adam",
          "nadam": "Nadam"}


def rule_knobs_markdown(name: str) -> str:
    """The rule's knobs as a Markdown list: symbol, label, field name and meaning (from the schema)."""
    lines = [f"- {'$' + SYMBOLS[k] + '$ ' if SYMBOLS[k] else ''}**{knob_of(k).label}** (`{k}`): {plain(knob_of(k).help)}"
             for k in FORMULAS[name][1]]
    return "\n".join(lines) + "\n- $g$: the gradient of the batch loss."


# --- the 2-D race -------------------------------------------------------------------------------------
MAX_RACE_STEPS = 1000
RACE_KNOBS = ("momentum", "rms_alpha", "beta1", "beta2")


def race_defaults(name: str = "rosenbrock", kappa: float = 10.0) -> dict:
    """The race's settings for a function: its own start point and learning rates, the schema's knob defaults."""
    fn = race.surface(name, kappa)
    lr, lr_adaptive = race.default_lrs(name)
    return {"fn": name, "kappa": kappa, "x0": fn.start[0], "y0": fn.start[1], "optimizers": list(OPTIMIZERS),
            "lr": lr, "lr_adaptive": lr_adaptive, "momentum": 0.9, "rms_alpha": 0.99, "beta1": 0.9, "beta2": 0.999,
            "steps": race.DEFAULT_STEPS}


def race_from_link(query: dict) -> tuple[dict, list[str]]:
    """The race's settings from a link: what the link leaves out follows its function; a start point
    outside the function's box is replaced by the default start (and named in the notices)."""
    knob_ranges = {n: (float(knob_of(n).lo), float(knob_of(n).hi)) for n in RACE_KNOBS}
    settings, notices = race_from_query(
        query, race_defaults(), race.FUNCTIONS, OPTIMIZERS,
        {"kappa": race.KAPPAS, "lr": race.LEARNING_RATES, "lr_adaptive": race.LEARNING_RATES},
        {**knob_ranges, "steps": (10, MAX_RACE_STEPS)})
    own = race_defaults(settings["fn"], settings["kappa"])
    for name in ("x0", "y0", "lr", "lr_adaptive"):
        if name not in query:
            settings[name] = own[name]
    box = race.surface(settings["fn"], settings["kappa"])
    if not (box.x_range[0] <= settings["x0"] <= box.x_range[1] and box.y_range[0] <= settings["y0"] <= box.y_range[1]):
        settings["x0"], settings["y0"] = box.start
        notices.append("The link's start point lies outside this function's box; its default start is used.")
    return settings, notices


def race_racers(settings: dict) -> dict[str, dict]:
    """One racer per chosen optimizer: the adaptive rules get their own learning rate."""
    knobs = {n: settings[n] for n in RACE_KNOBS}
    return {o: {"optimizer": o, "lr": settings["lr_adaptive"] if o in race.ADAPTIVE else settings["lr"], **knobs}
            for o in settings["optimizers"]}


def race_rows(results: Sequence) -> list[dict]:
    """The race's end points, one row per optimizer."""
    return [{"optimizer": r.label, "final x": r.path[-1, 0], "final y": r.path[-1, 1], "final loss": r.losses[-1],
             "diverged at step": r.diverged_at if r.diverged_at is not None else "—"} for r in results]


# --- the real race: a family grid's cells (the families: core.lessons.families) -----------------------
def grid_runs(grid: GridConfig) -> list[dict]:
    """The grid's cells as the comparison view's job ids."""
    return [{"label": label, "key": cfg.key(), "grid": grid.key(), "cell": i} for i, (label, cfg) in enumerate(grid.cells())]


# --- the loss surface -----------------------------------------------------------------------------------
# --- the 2-D race's settings in the URL -------------------------------------------------------------
RACE_FLOATS = ("kappa", "x0", "y0", "lr", "lr_adaptive", "momentum", "rms_alpha", "beta1", "beta2")


def race_query(settings: dict) -> dict[str, str]:
    """The race's settings as query-string values (``optimizers`` comma-separated)."""
    out = {k: repr(float(settings[k])) for k in RACE_FLOATS}
    out.update(fn=settings["fn"], steps=str(int(settings["steps"])), optimizers=",".join(settings["optimizers"]))
    return out


def race_from_query(query: dict, defaults: dict, functions: Sequence[str], optimizers: Sequence[str],
                    choices: dict[str, Sequence[float]], ranges: dict[str, tuple[float, float]]) -> tuple[dict, list[str]]:
    """Settings from a link: each known value that parses and is allowed replaces the default; the
    others are named in the notices (the rest of the link still loads)."""
    settings, bad, unknown = dict(defaults), [], []
    for name, raw in query.items():
        try:
            if name == "fn":
                if raw not in functions:
                    raise ValueError
                settings["fn"] = raw
            elif name == "optimizers":
                chosen = [o for o in str(raw).split(",") if o]
                if any(o not in optimizers for o in chosen):
                    raise ValueError
                settings["optimizers"] = chosen
            elif name == "steps":
                value = int(raw)
                lo, hi = ranges["steps"]
                if not lo <= value <= hi:
                    raise ValueError
                settings["steps"] = value
            elif name in RACE_FLOATS:
                value = float(raw)
                if name in choices and value not in choices[name]:
                    raise ValueError
                if name in ranges and not ranges[name][0] <= value <= ranges[name][1]:
                    raise ValueError
                settings[name] = value
            else:
                unknown.append(name)
        except (TypeError, ValueError):
            bad.append(f"{clipped(name, 40)}={clipped(raw, 40)}")
    notices = []
    if unknown:
        notices.append(f"The link had settings this version does not know, which were ignored: {', '.join(unknown)}.")
    if bad:
        notices.append(f"Some of the link's race settings are not allowed and were replaced by defaults: {', '.join(bad)}.")
    return settings, notices
