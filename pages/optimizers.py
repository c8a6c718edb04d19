"""Optimizers (LESSONS D): the six update rules written out, a 2-D race, the real race, and the loss surface."""
from __future__ import annotations

import inspect

import pandas as pd
import streamlit as st

from app.figures import optimizers as figs
from app.forms import url
from app.forms.fields import knob_widget, shown
from app.records import optimizers as records
from app.text import plain
from app.views.compare import comparison_view, family_states
from app.views.jobs import job_state, polling_fragment, status_line, train_button
from core import race
from core.config import OPTIMIZERS, ConfigError, RunConfig, knob_of
from core.grid import GridConfig
from core.optimizers import RULES
from core.presets import get_preset
from core.surface import DIRECTIONS, MAX_RESOLUTION, SurfaceConfig, surface_grid

PAGE = "optimizers"
POLL_SECONDS = 1.5
SURFACE_JOB = "opt_surface_job"
MAX_RACE_STEPS = 1000

st.title("Optimizers")
st.caption("Six ways to turn a gradient into a step. Each rule is written out below as the formula and as the "
           "tensor code that trains the networks on this page (it matches torch.optim to float precision). Race "
           "them on a 2-D function, then on a real network, then look at the real network's loss surface and "
           "the path its optimizer took.")

# --- 1. the rules ----------------------------------------------------------------------------------------
st.subheader("1 · The update rules", divider="gray")
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
for tab, name in zip(st.tabs([TITLES[n] for n in OPTIMIZERS]), OPTIMIZERS):
    formula, knobs = FORMULAS[name]
    left, right = tab.columns([2, 3])
    left.latex(formula)
    left.markdown("\n".join(f"- {'$' + SYMBOLS[k] + '$ ' if SYMBOLS[k] else ''}**{knob_of(k).label}** (`{k}`): "
                            f"{plain(knob_of(k).help)}" for k in knobs) + "\n- $g$: the gradient of the batch loss.")
    right.code(inspect.getsource(RULES[name]), language="python")

# --- 2. the 2-D race -------------------------------------------------------------------------------------
st.subheader("2 · A race on a 2-D function", divider="gray")
st.caption("Every optimizer starts from the same point and runs the code above on a 2-parameter 'network' whose "
           "loss is the function drawn. Adaptive rules (RMSProp, Adam, Nadam) take steps of about their learning "
           "rate in each coordinate, so they get their own learning rate.")


RACE_KEYS = {"fn": "opt_fn", "kappa": "opt_kappa", "x0": "opt_x0", "y0": "opt_y0", "optimizers": "opt_chosen",
             "lr": "opt_lr", "lr_adaptive": "opt_lr_adaptive", "momentum": "opt_momentum", "rms_alpha": "opt_rms_alpha",
             "beta1": "opt_beta1", "beta2": "opt_beta2", "steps": "opt_steps"}


def _race_defaults(name: str = "rosenbrock", kappa: float = 10.0) -> dict:
    fn = race.surface(name, kappa)
    lr, lr_adaptive = race.default_lrs(name)
    return {"fn": name, "kappa": kappa, "x0": fn.start[0], "y0": fn.start[1], "optimizers": list(OPTIMIZERS),
            "lr": lr, "lr_adaptive": lr_adaptive, "momentum": 0.9, "rms_alpha": 0.99, "beta1": 0.9, "beta2": 0.999,
            "steps": race.DEFAULT_STEPS}


def _load_race(settings: dict) -> None:
    for name, key in RACE_KEYS.items():
        st.session_state[key] = settings[name]


def _on_function() -> None:
    """A new function brings its own start point and learning rates (the other settings stay)."""
    fresh = _race_defaults(st.session_state["opt_fn"], st.session_state.get("opt_kappa", 10.0))
    for name in ("x0", "y0", "lr", "lr_adaptive"):
        st.session_state[RACE_KEYS[name]] = fresh[name]


query = url.incoming_query(PAGE)
if query is not None:  # a link or the first visit
    knob_ranges = {n: (float(knob_of(n).lo), float(knob_of(n).hi)) for n in ("momentum", "rms_alpha", "beta1", "beta2")}
    settings, notices = records.race_from_query(
        query, _race_defaults(), race.FUNCTIONS, OPTIMIZERS,
        {"kappa": race.KAPPAS, "lr": race.LEARNING_RATES, "lr_adaptive": race.LEARNING_RATES},
        {**knob_ranges, "steps": (10, MAX_RACE_STEPS)})
    own = _race_defaults(settings["fn"], settings["kappa"])  # what the link leaves out follows its function
    for name in ("x0", "y0", "lr", "lr_adaptive"):
        if name not in query:
            settings[name] = own[name]
    box = race.surface(settings["fn"], settings["kappa"])
    if not (box.x_range[0] <= settings["x0"] <= box.x_range[1] and box.y_range[0] <= settings["y0"] <= box.y_range[1]):
        settings["x0"], settings["y0"] = box.start
        notices.append("The link's start point lies outside this function's box; its default start is used.")
    _load_race(settings)
    url.link_notices(notices)
else:
    url.restore("opt_race_saved", _race_defaults(), RACE_KEYS.get)

c1, c2, c3, c4 = st.columns(4)
fn_name = c1.selectbox("Function", race.FUNCTIONS, key="opt_fn", on_change=_on_function,
                       format_func=lambda n: race.surface(n).title.split(" (")[0])
kappa = c1.select_slider("Condition number κ", race.KAPPAS, key="opt_kappa",
                         disabled=fn_name != "quadratic", help="Curvature ratio of the quadratic's two axes.")
fn = race.surface(fn_name, kappa)
x0 = c2.number_input("Start x", *map(float, fn.x_range), key="opt_x0", step=0.1)
y0 = c2.number_input("Start y", *map(float, fn.y_range), key="opt_y0", step=0.1)
chosen = c3.multiselect("Optimizers", OPTIMIZERS, key="opt_chosen")
lr = c3.select_slider("Learning rate (SGD, momentum, Nesterov)", race.LEARNING_RATES, key="opt_lr")
lr_adaptive = c3.select_slider("Learning rate (RMSProp, Adam, Nadam)", race.LEARNING_RATES, key="opt_lr_adaptive")


def _knob_slider(column, name: str) -> float:
    k = knob_of(name)
    return column.slider(k.label, float(k.lo), float(k.hi), step=0.001, format="%.3f", key=f"opt_{name}", help=k.help)


momentum = _knob_slider(c4, "momentum")
rms_alpha = _knob_slider(c4, "rms_alpha")
beta1 = _knob_slider(c4, "beta1")
beta2 = _knob_slider(c4, "beta2")
steps = c1.slider("Steps", 10, MAX_RACE_STEPS, step=10, key="opt_steps")
race_settings = {name: st.session_state[key] for name, key in RACE_KEYS.items()}
url.remember("opt_race_saved", race_settings)
url.write_query(PAGE, records.race_query(race_settings))


@st.cache_data(max_entries=64, show_spinner=False)
def _race(fn_name: str, kappa: float, start: tuple[float, float], chosen: tuple[str, ...], lr: float,
          lr_adaptive: float, momentum: float, rms_alpha: float, beta1: float, beta2: float, steps: int):
    knobs = {"momentum": momentum, "rms_alpha": rms_alpha, "beta1": beta1, "beta2": beta2}
    racers = {o: {"optimizer": o, "lr": lr_adaptive if o in race.ADAPTIVE else lr, **knobs} for o in chosen}
    surface = race.surface(fn_name, kappa)
    return race.race(surface, start, racers, steps), race.loss_grid(surface)


results, grid = _race(fn_name, kappa, (x0, y0), tuple(chosen), lr, lr_adaptive, momentum, rms_alpha, beta1, beta2,
                      steps)
upto = st.slider("Show the paths up to step", 0, steps, steps, key="opt_upto")
left, right = st.columns([3, 2])
left.plotly_chart(figs.race_contour_figure(fn, grid, results, upto), key="opt_race_contour")
right.plotly_chart(figs.race_loss_figure(results, upto), key="opt_race_loss")
st.latex(fn.formula)
if results:
    st.dataframe(pd.DataFrame([{"optimizer": r.label, "final x": r.path[-1, 0], "final y": r.path[-1, 1],
                                "final loss": r.losses[-1],
                                "diverged at step": r.diverged_at if r.diverged_at is not None else "—"}
                               for r in results]), hide_index=True)
if fn_name == "quadratic":
    gd_step, gd_rate = race.optimal_gd(kappa)
    hb_step, hb_momentum, hb_rate = race.optimal_heavy_ball(kappa)
    st.caption(f"Theory for κ = {kappa:g}: gradient descent with its best step {gd_step:.3g} shrinks the distance "
               f"to the minimum by (κ−1)/(κ+1) = {gd_rate:.3f} per step; heavy-ball momentum with step "
               f"{hb_step:.3g} and μ = {hb_momentum:.3f} by (√κ−1)/(√κ+1) = {hb_rate:.3f}.")

# --- 3. the real race ------------------------------------------------------------------------------------
st.subheader("3 · The real race: Fashion-MNIST", divider="gray")
st.caption("The LESSONS D network (3 hidden layers of 128 ReLU units, Xavier init) trained six times, once per "
           "optimizer, in one batched job: the same seed, the same batches and the same initial weights.")
epochs_knob = knob_of("epochs")
e1, e2 = st.columns(2)
epochs = e1.number_input("Epochs", int(epochs_knob.lo), int(epochs_knob.hi), 1, key="opt_epochs",
                         help="The preset trains 5 epochs; one epoch already separates the optimizers.")
ours = e2.toggle("Train with our from-scratch rules (optimizer_impl = ours)", key="opt_ours",
                 help="The same formulas, run by the code above instead of torch.optim: the curves should match.")


SCHEDULE_KNOBS = ("lr_schedule", "lr_step_every_epochs", "lr_gamma", "warmup_epochs")
for name in SCHEDULE_KNOBS:
    st.session_state.setdefault(f"opt_{name}", getattr(RunConfig(), name))
schedule_columns = st.columns(len(SCHEDULE_KNOBS))
knob_widget("lr_schedule", "opt_lr_schedule", container=schedule_columns[0],
            help_extra="Applied to every network of the family: too high, too low, or decayed.")
schedule = {"lr_schedule": st.session_state["opt_lr_schedule"]}
for column, name in zip(schedule_columns[1:], SCHEDULE_KNOBS[1:]):
    if shown(name, schedule):
        schedule[name] = knob_widget(name, f"opt_{name}", container=column)


def _grid(family: list) -> GridConfig:
    """The family as one grid job (batched lanes: same seed, batches and initial weights)."""
    return GridConfig.from_runs(family)


def _runs(grid: GridConfig) -> list[dict]:
    """The grid's cells as the comparison view's job ids."""
    return [{"label": label, "key": cfg.key(), "grid": grid.key(), "cell": i} for i, (label, cfg) in enumerate(grid.cells())]


def _family(preset: str) -> list:
    impl = "ours" if ours else "torch"
    return [(label, cfg.replace(epochs=int(epochs), optimizer_impl=impl, **schedule))
            for label, cfg in get_preset(preset).runs]


try:
    adam = dict(get_preset("D-optimizers").runs)["adam"].replace(epochs=int(epochs), **schedule)
    GRIDS = {"opt_six": ("Six optimizers", "Train the six optimizers", _grid(_family("D-optimizers"))),
             "opt_losses": ("Cross-entropy vs MSE", "Train cross-entropy vs MSE", _grid(_family("D-losses"))),
             "opt_impl": ("Ours vs PyTorch (Adam)", "Train Adam: ours vs PyTorch",
                          _grid([("adam · torch", adam), ("adam · ours", adam.replace(optimizer_impl="ours"))]))}
except ConfigError as exc:
    st.error(plain(f"These settings cannot train: {exc}"))
    GRIDS = {}
for column, (slot, (heading, label, grid)) in zip(st.columns(max(len(GRIDS), 1)), GRIDS.items()):
    with column:
        train_button(grid, slot, key=f"{slot}_train", label=label)

for slot, (heading, label, grid) in GRIDS.items():
    if st.session_state.get(slot) != grid.key():
        continue
    st.markdown(f"**{heading}**")
    runs = _runs(grid)
    comparison_view(runs, prefix=f"{slot}_cmp")
    if slot == "opt_losses":
        states, _, _ = family_states(runs)
        if all(s is not None and s.done for s in states):
            summaries = [records.loss_run_summary(r["label"], s.events) for r, s in zip(runs, states)]
            if all(summaries):
                st.info(plain(records.losses_sentence(*summaries)), icon="💡")

# --- 4. the loss surface ---------------------------------------------------------------------------------
st.subheader("4 · The loss surface of a real network, with its path", divider="gray")
st.caption("The trained network's training loss (on a fixed subset of training examples) over a plane through its "
           "final weights. Random directions are filter-normalized (Li et al. 2018): each filter of a direction "
           "has the norm of that filter of the weights. PCA directions are the two along which the weights moved "
           "most during training; the path is projected onto the plane either way.")
NETWORKS = {"E #2: 128-64 ReLU, Adam": get_preset("E2").config}
NETWORKS.update({f"D: 3 x 128, {label}": cfg for label, cfg in get_preset("D-optimizers").runs})
s1, s2, s3 = st.columns(3)
network = s1.selectbox("Network", list(NETWORKS), key="opt_surface_net")
batchnorm = s1.toggle("With BatchNorm", key="opt_surface_bn")
directions = s2.radio("Directions", DIRECTIONS, index=1, key="opt_surface_dirs", horizontal=True,
                      format_func=lambda d: {"random": "random (filter-normalized)", "pca": "PCA of the path"}[d])
resolution = s2.select_slider("Grid points per axis", list(range(11, MAX_RESOLUTION + 1, 10)), value=41,
                              key="opt_surface_res")
surface_epochs = s3.number_input("Epochs", int(epochs_knob.lo), int(epochs_knob.hi), 2, key="opt_surface_epochs")
log_every = s3.number_input("Record the weights every (steps)", 10, 1000, 100, step=10, key="opt_surface_log",
                            help="Each log point adds one point to the path (and to the PCA).")
run_cfg = NETWORKS[network].replace(epochs=int(surface_epochs), log_every=int(log_every),
                                    norm="batchnorm" if batchnorm else "none")
surface_cfg = SurfaceConfig(run=run_cfg, directions=directions, resolution=int(resolution))
train_button(surface_cfg, SURFACE_JOB, key="opt_surface_go", label="Compute the loss surface",
             help="Trains the network (recording its weights), then evaluates the loss at every grid point.")


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


if st.session_state.get(SURFACE_JOB):
    job_key = st.session_state[SURFACE_JOB]
    polling_fragment(job_key, lambda polling: _surface_part(job_key, polling), every=POLL_SECONDS, name="opt_surface")
