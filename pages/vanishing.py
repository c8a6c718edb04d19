"""Vanishing gradients (LESSONS A): a grid of activations x depths trained as one job, watched live."""
from __future__ import annotations

import streamlit as st

from app.forms.grid import fixes_form, grid_form
from app.forms.reported import as_reported_switch
from app.forms.url import link_notices
from app.text import dataset_label, plain, plural
from app.views.data import dataset_fallback_notice
from app.views.grid import cell_runs, finished_cells, fixes_view, grid_view, lesson_box, stuck_by_depth
from app.views.jobs import shown_job, train_button
from core.lessons import families
from core.lessons import sentences as lessons
from core.lessons.presets import A_FALLBACK

GRID_JOB, FIXES_JOB, SEEDS_JOB = "vg_grid_job", "vg_fixes_job", "vg_seeds_job"  # session state holds job keys only

st.title("Vanishing gradients")
st.caption("Why do deep sigmoid networks stop learning? Train a whole table of networks at once, one per "
           "activation and depth, all with the same seed (the same data order and initial weights drawn the same "
           "way), and watch which ones get stuck, and where in the network the gradient disappears.")

as_reported = as_reported_switch()

st.subheader("1 · The networks", divider="gray")
form = grid_form()
link_notices(form.notices)
if form.dataset_fallback:
    dataset_fallback_notice(form.dataset_fallback, "vg_dataset", changed=A_FALLBACK.why)
grid = form.grid
if form.lesson:
    lesson_box(grid)
col_button, col_text = st.columns([1, 4], vertical_alignment="center")
with col_button:
    train_button(grid, GRID_JOB, key="vg_train", label="Train the grid",
                 help="Trains every network of the table in one batched job. A grid trained before loads at once.")
with col_text:
    if grid is not None:
        base, lo, hi = grid.base, min(grid.depths), max(grid.depths)
        st.caption(plain(f"{grid.n_cells} networks: {', '.join(grid.activations)} x {lo}–{hi} hidden layers of "
                         f"{grid.width} units, {dataset_label(base.dataset)}, {base.optimizer} lr {base.lr:g}, batch "
                         f"{base.batch_size}, {plural(base.epochs, 'epoch')}, seed {base.seed}. They train together, "
                         "each exactly as it would alone."))
    else:
        st.error(plain(form.problem))

grid_shown = shown_job(grid, GRID_JOB)
if grid_shown is not None:
    if grid is None or grid_shown != grid.key():
        st.info("These are the results of the grid you trained last; the settings above have changed since.", icon="ℹ️")
    grid_view(grid_shown, as_reported)

st.subheader("2 · Fixes for a deep sigmoid network", divider="gray")
form = fixes_form(form, stuck_by_depth(grid_shown, grid))
if form.fixes is not None:
    st.caption(plain("The same network side by side, same seed: sigmoid as it is; ReLU; ReLU with He initialization; "
                     "Xavier initialization; BatchNorm or LayerNorm after every hidden layer; a quarter of the learning "
                     "rate; ReLU in the lower half of the layers with sigmoid above, whose first layers' gradient passes "
                     "half as many sigmoid derivatives (each at most 1/4) on its way down: compare its bars with "
                     f"sigmoid's in the gradient chart. {form.fix_depth} hidden layers of {grid.width} units, the data "
                     "and optimizer settings from above."))
train_button(form.fixes, FIXES_JOB, key="vg_train_fixes", label="Train the fixes",
             help="Trains the deep sigmoid network and its fixes in one job (batched where the versions allow).")
fixes = form.fixes
shown = shown_job(fixes, FIXES_JOB)
if fixes is not None:
    epochs = fixes.base.epochs
    st.markdown(plain(lessons.fixes_sentence(lessons.stuck_verdicts(finished_cells(shown))
                                             or {label: None for label, _ in fixes.cells()}, "sigmoid", epochs,
                                             lessons.collapse_verdicts(cell_runs(shown)))))
if shown is not None:
    fixes_view(shown, as_reported)

st.subheader("3 · Is it the seed?", divider="gray")
seeds = families.seeds_grid(fixes.base) if fixes is not None else None
if seeds is not None:
    st.caption(plain(f"The plain sigmoid network of the fixes ({form.fix_depth} hidden layers) trained with seeds "
                     f"{', '.join(str(c.seed) for _, c in seeds.cells())}: other initial weights and another batch "
                     "order, everything else the same, in one job."))
train_button(seeds, SEEDS_JOB, key="vg_train_seeds", label="Train the seeds",
             help="Trains the deep sigmoid network once per seed, in one job.")
shown = shown_job(seeds, SEEDS_JOB)
if seeds is not None:
    ends = finished_cells(shown)
    stuck = families.stuck_by_seed(seeds, lessons.stuck_verdicts(ends))
    plateau = families.stuck_by_seed(seeds, lessons.plateau_verdicts(ends))
    collapsed = families.stuck_by_seed(seeds, lessons.collapse_verdicts(cell_runs(shown)))
    st.markdown(plain(lessons.seeds_sentence(stuck, seeds.base.epochs, plateau, collapsed)))
if shown is not None:
    fixes_view(shown, as_reported)
